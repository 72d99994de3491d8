"""The opaque links one campaign run's messages carry: unsubscribe, tracked clicks, the open pixel.

Each recipient gets one token per purpose of a link, issued in bulk (``LinkTokens.issue_many``): the
token names the patient only by pseudonym, plus the campaign, purpose and (for a click) the link's
*name*; the endpoint redirects a click to the URL the campaign declares under that name, so a token
can never send anyone elsewhere. URLs in messages are the stream's first-party endpoint only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from carecast.campaigns import Campaign
from carecast.link_tokens import LinkTokens
from carecast.streams import Stream

LINK_TTL = timedelta(days=180)
"""How long the links in a message keep working: well past the 30 days an opt-out must, and long
enough for a reminder read months later; expired links are refused by the endpoint."""


@dataclass(frozen=True)
class RecipientLinks:
    """Per recipient, in the recipients' order: the tokens its message carries (None: not carried)."""

    unsubscribe: list[str] | None
    clicks: dict[str, list[str]]
    """Link name -> one token per recipient; empty when the campaign does not track clicks."""
    opens: list[str] | None


def issue_recipient_links(
    tokens: LinkTokens, campaign: Campaign, stream: Stream, patient_keys: list[str], now: datetime | None = None
) -> RecipientLinks:
    def issue(kind: str, link: str | None = None) -> list[str]:
        return tokens.issue_many(patient_keys, campaign.name, campaign.purpose, kind, link, ttl=LINK_TTL, now=now)

    return RecipientLinks(
        unsubscribe=issue("unsubscribe") if stream.unsubscribe is not None else None,
        clicks={name: issue("click", name) for name in campaign.links} if campaign.track_clicks else {},
        opens=issue("open") if campaign.open_pixel else None,
    )


def click_url(stream: Stream, token: str) -> str:
    return f"{stream.tracking_url}/c/{token}"


def open_pixel_url(stream: Stream, token: str) -> str:
    return f"{stream.tracking_url}/o/{token}"
