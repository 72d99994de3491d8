"""The engagement endpoint: one-click unsubscribe (RFC 8058) and a confirm page, as a Starlette app.

Routes (the token is the last segment of the stream's unsubscribe URL, ``.../u/<token>``):

* ``POST /u/{token}`` with body ``List-Unsubscribe=One-Click``: the mailbox provider's one-click
  unsubscribe. Suppresses the token's purpose at once and answers 200 with a tiny plain page.
* ``GET /u/{token}``: a page with a form, never an unsubscribe by itself, because mail scanners and
  link previewers fetch every link in a message. The form works without JavaScript.
* ``POST /u/{token}/confirm`` with ``scope=purpose`` or ``scope=all``: the patient's choice.

Expired tokens are still honoured for unsubscribing: RFC 8058 and CAN-SPAM ask that an opt-out keep
working, and an authentic token proves which patient and purpose it was issued for however old it is
(expiry bounds how long links are *promised* to work, at least 30 days; it is not a reason to keep
mailing someone who asked to stop). Forged, garbled or foreign tokens, and tokens of another kind, get
a plain 400 page that never echoes the token.

Replays are harmless: the event id is a hash of what the event says and both writes are
insert-or-ignore (see ``events.py``), so a repeated POST changes nothing and still answers 200.

No PHI leaves here: pages name the organisation, the campaign and its purpose, never the patient;
error pages say nothing about the token; nothing is logged here. The token sits in the URL path,
so uvicorn's access log must stay off (``carecast serve`` turns it off). Every response carries a
strict CSP (no scripts, no external resources, forms only to this origin), ``no-referrer``,
``nosniff`` and ``no-store``.

Token keys are loaded once when the app is built: restart the endpoint after
``rotate_link_token_key`` so tokens from the new key verify.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carecast.crypto.kms import Kms
from carecast.engagement.events import EngagementEvents, Unsubscribe
from carecast.home import CarecastHome
from carecast.link_tokens import ExpiredToken, InvalidToken, LinkTokens, TokenClaims

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
        "This unsubscribe link is not valid. Please use the link in the most recent email you received.\n",
        status_code=400,
        headers=SECURITY_HEADERS,
    )


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
    organisations: Mapping[str, str] | None = None,
) -> Starlette:
    """The endpoint for a data home. ``now`` (a clock) is for tests; ``organisations`` maps a campaign
    name to the organisation its stream sends for, shown on the page (default: "us")."""
    tokens = LinkTokens.load_or_create(kms, home.keys)
    clock = now or (lambda: datetime.now(UTC))
    names = dict(organisations or {})

    def claims_of(token: str) -> TokenClaims | None:
        """The unsubscribe claims of an authentic token, expired or not; None for anything else."""
        try:
            claims = tokens.verify(token, now=clock())
        except ExpiredToken as expired:
            claims = expired.claims
        except InvalidToken:
            return None
        return claims if claims.kind == "unsubscribe" else None

    def record(claims: TokenClaims, scope: str, source: str) -> None:
        event = Unsubscribe(claims.patient_key, claims.campaign, claims.purpose, scope, source, clock())
        with EngagementEvents(home.state_db) as events:
            events.record_unsubscribe(event)

    def one_click(request: Request) -> Response:
        claims = claims_of(request.path_params["token"])
        if claims is None:
            return _invalid_link()
        record(claims, "purpose", "one_click_post")
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
        claims = claims_of(token)
        if claims is None:
            return _invalid_link()
        organisation = html.escape(names.get(claims.campaign, "us"))
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
        claims = claims_of(request.path_params["token"])
        if claims is None:
            return _invalid_link()
        record(claims, scope, "page_post")
        organisation = html.escape(names.get(claims.campaign, "us"))
        what = f"{html.escape(claims.purpose)} email" if scope == "purpose" else f"any email from {organisation}"
        return _page("You are unsubscribed", f"<p>You will not receive {what} any more.</p>")

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
        ],
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={404: not_found, HTTPException: http_error, Exception: http_error},
    )


async def _in_thread(function: Callable[..., Response], *args: object) -> Response:
    """SQLite and token verification block: run them off the event loop (sync routes already are)."""
    return await run_in_threadpool(function, *args)
