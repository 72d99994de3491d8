"""The engagement endpoint: one-click unsubscribe (RFC 8058) and its page, tracked clicks and the
optional open pixel, as a Starlette app. First party only: no page loads anything from elsewhere.

Routes (the token is the last path segment of a link in a message):

* ``POST /u/{token}`` with body ``List-Unsubscribe=One-Click``: the mailbox provider's one-click
  unsubscribe. Suppresses the token's purpose at once and answers 200 with a tiny plain page.
* ``GET /u/{token}``: a page with a form, never an unsubscribe by itself, because mail scanners and
  link previewers fetch every link in a message. The form works without JavaScript.
* ``POST /u/{token}/confirm`` with ``scope=purpose`` or ``scope=all``: the patient's choice.
* ``GET /c/{token}``: a tracked link. The token names the campaign and the *name* of one of its
  declared links; the click is recorded and the answer redirects (303) to the URL the campaign
  declares under that name, so no token can redirect anywhere else (no open redirect). ``HEAD``
  (what link checkers send) redirects without recording.
* ``GET /o/{token}``: the open pixel (a 1x1 GIF), recorded as an open; never for treatment mail.

Forged, garbled or foreign tokens, and tokens of another kind, get a plain 400 page that never
echoes the token. Expired tokens are refused (410) without acting on them: links stay valid for
``tracking.LINK_TTL`` (180 days, well past the 30 days CAN-SPAM asks of an opt-out); the expired
unsubscribe page still tells the patient how to opt out (the stream's unsubscribe mailbox).

Replays are harmless: an event's id is a hash of what it says and its UTC day, and the store is
insert-or-ignore (see ``events.py``), so a repeated request changes nothing and answers the same.

No PHI leaves here: pages name the organisation, the campaign and its purpose, never the patient;
error pages say nothing about the token; nothing is logged here. The token sits in the URL path,
so uvicorn's access log must stay off (``carecast serve`` turns it off). Every response carries a
strict CSP (no scripts, no external resources, forms only to this origin), ``no-referrer`` (the
site a click lands on never sees the token), ``nosniff`` and ``no-store``.

Token keys are loaded once when the app is built: restart the endpoint after
``rotate_link_token_key`` so tokens from the new key verify.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carecast.crypto.kms import Kms
from carecast.engagement.events import EngagementEvents, Unsubscribe
from carecast.engagement.feedback import TokenRecipient, endpoint_event
from carecast.home import CarecastHome
from carecast.link_tokens import ExpiredToken, InvalidToken, LinkTokens, TokenClaims
from carecast.project import Project

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_ENCODED = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS.items()]
_OURS = {name for name, _ in _ENCODED}
ONE_CLICK = ("List-Unsubscribe", "One-Click")
MAX_BODY_BYTES = 4096
"""Both forms are a few dozen bytes; anything longer is not one of them."""

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "button{font:inherit;padding:.5rem 1rem;margin:.25rem 0;display:block}"
)


class _SecurityHeaders:
    """Pure ASGI middleware: the security headers on every response, whatever produced it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in _OURS]
                message["headers"] = kept + _ENCODED
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=SECURITY_HEADERS)


def _invalid_link() -> Response:
    return PlainTextResponse(
        "This link is not valid. Please use the link in the most recent email you received.\n",
        status_code=400,
        headers=SECURITY_HEADERS,
    )


_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A transparent 1x1 GIF."""


@dataclass(frozen=True)
class CampaignEndpoint:
    """What the endpoint needs of one campaign: no patient data, only what its messages link to."""

    organisation: str = "us"
    links: Mapping[str, str] = field(default_factory=dict)
    opt_out_mailto: str | None = None
    """The stream's unsubscribe mailbox, offered when an unsubscribe link has expired."""


def endpoint_campaigns(project: Project) -> dict[str, CampaignEndpoint]:
    """Campaign name -> its organisation, declared links and opt-out mailbox, from the project files."""
    campaigns = {}
    for name, campaign in project.campaigns.items():
        stream = project.stream_of(campaign)
        mailto = stream.unsubscribe.mailto if stream.unsubscribe is not None else None
        campaigns[name] = CampaignEndpoint(stream.sender.organisation, dict(campaign.links), mailto)
    return campaigns


async def _form(request: Request) -> dict[str, str] | None:
    """A small url-encoded body as a dict (first value wins), or None when it is too large."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def build_app(
    home: CarecastHome,
    kms: Kms,
    now: Callable[[], datetime] | None = None,
    campaigns: Mapping[str, CampaignEndpoint] | None = None,
) -> Starlette:
    """The endpoint for a data home. ``now`` (a clock) is for tests; ``campaigns`` (from
    ``endpoint_campaigns``) gives each campaign's organisation, declared links and opt-out mailbox."""
    tokens = LinkTokens.load_or_create(kms, home.keys)
    clock = now or (lambda: datetime.now(UTC))
    known = dict(campaigns or {})

    def settings(claims: TokenClaims) -> CampaignEndpoint:
        return known.get(claims.campaign, CampaignEndpoint())

    def claims_of(token: str, kind: str) -> TokenClaims | Response:
        """The claims of an authentic, unexpired token of this kind, or the answer refusing it."""
        try:
            claims = tokens.verify(token, now=clock())
        except ExpiredToken as expired:
            return (
                _expired(expired.claims, settings(expired.claims)) if expired.claims.kind == kind else _invalid_link()
            )
        except InvalidToken:
            return _invalid_link()
        return claims if claims.kind == kind else _invalid_link()

    def record(claims: TokenClaims, kind: str, source: str, detail: str | None) -> None:
        recipient = TokenRecipient(claims.patient_key, claims.campaign, claims.purpose)
        with EngagementEvents(home.state_db) as events:
            events.record([endpoint_event(kind, recipient, clock(), source, detail)])

    def unsubscribe(claims: TokenClaims, scope: str, source: str) -> None:
        event = Unsubscribe(claims.patient_key, claims.campaign, claims.purpose, scope, source, clock())
        with EngagementEvents(home.state_db) as events:
            events.record_unsubscribe(event)

    def one_click(request: Request) -> Response:
        claims = claims_of(request.path_params["token"], "unsubscribe")
        if isinstance(claims, Response):
            return claims
        unsubscribe(claims, "purpose", "one_click_post")
        return PlainTextResponse("You are unsubscribed.\n", headers=SECURITY_HEADERS)

    async def one_click_post(request: Request) -> Response:
        form = await _form(request)
        if form is None or form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
            return PlainTextResponse(
                "Expected List-Unsubscribe=One-Click (RFC 8058).\n", status_code=400, headers=SECURITY_HEADERS
            )
        return await _in_thread(one_click, request)

    def confirm_page(request: Request) -> Response:
        token = request.path_params["token"]
        claims = claims_of(token, "unsubscribe")
        if isinstance(claims, Response):
            return claims
        organisation = html.escape(settings(claims).organisation)
        purpose = html.escape(claims.purpose)
        body = (
            f"<p>You are about to stop email from {organisation} sent as part of "
            f"<strong>{html.escape(claims.campaign)}</strong> ({purpose} messages).</p>"
            f'<form method="post" action="/u/{html.escape(token)}/confirm">'
            f'<button type="submit" name="scope" value="purpose">Stop only {purpose} email</button>'
            f'<button type="submit" name="scope" value="all">Stop all email from {organisation}</button>'
            "</form><p>Nothing changes until you press one of the buttons.</p>"
        )
        return _page("Unsubscribe", body)

    async def confirm(request: Request) -> Response:
        form = await _form(request)
        scope = (form or {}).get("scope")
        if scope not in ("purpose", "all"):
            return PlainTextResponse("Choose what to unsubscribe from.\n", status_code=400, headers=SECURITY_HEADERS)
        return await _in_thread(confirmed, request, scope)

    def confirmed(request: Request, scope: str) -> Response:
        claims = claims_of(request.path_params["token"], "unsubscribe")
        if isinstance(claims, Response):
            return claims
        unsubscribe(claims, scope, "page_post")
        organisation = html.escape(settings(claims).organisation)
        what = f"{html.escape(claims.purpose)} email" if scope == "purpose" else f"any email from {organisation}"
        return _page("You are unsubscribed", f"<p>You will not receive {what} any more.</p>")

    def click(request: Request) -> Response:
        claims = claims_of(request.path_params["token"], "click")
        if isinstance(claims, Response):
            return claims
        target = settings(claims).links.get(claims.link or "")
        if target is None:  # the campaign no longer declares this link: never guess a destination
            return _page("Link no longer available", "<p>This link is no longer available.</p>", status=404)
        if request.method == "GET":
            record(claims, "click", "endpoint", claims.link)
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    def open_pixel(request: Request) -> Response:
        claims = claims_of(request.path_params["token"], "open")
        if isinstance(claims, Response):
            return claims
        if claims.purpose != "treatment":  # no pixel is ever issued for treatment mail; never count one
            record(claims, "open", "endpoint", None)
        return Response(_PIXEL, media_type="image/gif", headers=SECURITY_HEADERS)

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("Not found.\n", status_code=404, headers=SECURITY_HEADERS)

    async def http_error(_request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return PlainTextResponse(f"Error {status}.\n", status_code=status, headers=SECURITY_HEADERS)

    return Starlette(
        routes=[
            Route("/u/{token}", one_click_post, methods=["POST"]),
            Route("/u/{token}", confirm_page, methods=["GET"]),
            Route("/u/{token}/confirm", confirm, methods=["POST"]),
            Route("/c/{token}", click, methods=["GET", "HEAD"]),
            Route("/o/{token}", open_pixel, methods=["GET"]),
        ],
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={404: not_found, HTTPException: http_error, Exception: http_error},
    )


def _expired(claims: TokenClaims, campaign: CampaignEndpoint) -> Response:
    """An authentic token past its expiry: refused, acting on nothing; an opt-out is still offered."""
    if claims.kind != "unsubscribe" or campaign.opt_out_mailto is None:
        return _page("Link expired", "<p>This link has expired.</p>", status=410)
    mailbox = html.escape(campaign.opt_out_mailto)
    return _page(
        "Link expired",
        f"<p>This unsubscribe link has expired. To stop email from {html.escape(campaign.organisation)}, use the "
        f"unsubscribe link in a more recent email, or write to <strong>{mailbox}</strong>.</p>",
        status=410,
    )


async def _in_thread(function: Callable[..., Response], *args: object) -> Response:
    """SQLite and token verification block: run them off the event loop (sync routes already are)."""
    return await run_in_threadpool(function, *args)
