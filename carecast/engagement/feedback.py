"""What every feedback parser produces: a normalized, PHI-free ``FeedbackEvent``, or why an item was not one.

Sources differ (Amazon SES event JSON, RFC 3464 delivery status notifications, RFC 5965 abuse
reports, the endpoint's own clicks and unsubscribes) but the store needs the same few facts from each:
what happened (``kind``, with ``detail`` for the bounce class, the complaint's feedback type, the
unsubscribe's scope or the declared link name), when, which message it is about, and an identity
stable enough that the same event seen twice is stored once.

Nothing here may carry PHI: no address, subject, URL or message text. A message is named by our
``message_key`` (read from a ``Message-ID`` of the form ``<message_key@domain>``), by the provider's
opaque message id, or, for the endpoint's events, by what an authentic link token says (the patient's
pseudonym, campaign and purpose). The provider identity is kept only as a SHA-256 (``event_id``).

Each parsed item ends as exactly one of: a ``FeedbackEvent``; ``Ignored`` (well-formed but not
engagement, such as an out-of-office reply or a "not spam" report); ``Rejected`` (unparseable). The
reasons are fixed names, never a value taken from the input.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple, get_args

Kind = Literal["send", "delivery", "bounce", "complaint", "reject", "delay", "open", "click", "unsubscribe"]
KINDS: tuple[Kind, ...] = get_args(Kind)
Source = Literal["ses", "dsn", "arf", "one_click_post", "page_post", "endpoint"]
"""Where an event was seen: a provider's feedback, or the engagement endpoint (the unsubscribe page's
two forms, and ``endpoint`` for its other routes)."""
SOURCES: tuple[Source, ...] = get_args(Source)

BounceClass = Literal["hard", "soft", "undetermined"]
COMPLAINT_FEEDBACK_TYPES = ("abuse", "fraud", "other")
"""RFC 5965 feedback types that are a recipient's complaint (any unregistered type counts as ``other``)."""
NOT_COMPLAINTS = ("not-spam", "virus", "auth-failure")
"""Registered feedback types that are not a complaint about the mail: the user said it is not spam, or
a receiving system reports a virus or an authentication failure (RFC 6650, RFC 6591)."""

_MESSAGE_ID = re.compile(r"\s*<([0-9a-f]{32})@[^\s<>@]+>\s*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class TokenRecipient:
    """Who an authentic link token names: the patient's pseudonym, the campaign and its purpose."""

    patient_key: str
    campaign: str
    purpose: str


class FeedbackEvent(NamedTuple):
    """One engagement event, normalized and free of PHI.

    It names its message by ``message_key`` or ``provider_message_id`` (resolved through the send
    ledger), or, for the endpoint's events, by ``recipient``. One that names none of them is counted as
    unmatched when recorded. A named tuple, not a dataclass: a million of them are made per large
    batch, at a quarter of the cost; ``EngagementEvents.record`` checks the kind and source."""

    event_id: str
    """128 bits (32 hex digits) of the SHA-256 of the event's identity at its source: the same event
    seen twice has the same id."""
    kind: Kind
    occurred_at: datetime
    source: Source
    detail: str | None = None
    """Bounce class (hard/soft/undetermined), complaint feedback type, unsubscribe scope (purpose/all),
    declared link name of a click, ``rendering_failure`` for a reject; None otherwise."""
    message_key: str | None = None
    provider_message_id: str | None = None
    recipient: TokenRecipient | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """Well-formed, but not engagement (an auto-reply, a "not spam" report, an SNS control message)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Could not be parsed as feedback; the reason is a fixed name, never a value from the input."""

    reason: str


Parsed = FeedbackEvent | Ignored | Rejected


def event_id(*identity: str) -> str:
    """The stored id of an event from the parts that identify it at its source: 128 bits of SHA-256,
    so a collision is not a concern at any volume, and the store's unique index stays small."""
    return hashlib.sha256("\x1f".join(identity).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def endpoint_event(
    kind: Kind, recipient: TokenRecipient, occurred_at: datetime, source: Source, detail: str | None = None
) -> FeedbackEvent:
    """An event the endpoint saw for an authentic token. Its identity is what the event says and the
    UTC day, so a replayed request, a scanner re-fetching a link or the same choice made twice on one
    day is one event (for an unsubscribe, the same id the first version of the store gave it)."""
    day = occurred_at.astimezone(UTC).date().isoformat()
    identity = event_id(kind, recipient.patient_key, recipient.campaign, recipient.purpose, detail or "", day)
    return FeedbackEvent(identity, kind, occurred_at, source, detail, recipient=recipient)


def message_key_of(message_id: str | None) -> str | None:
    """Our message key from a ``Message-ID`` we wrote (``<message_key@domain>``); None for any other."""
    match = _MESSAGE_ID.fullmatch(message_id) if isinstance(message_id, str) else None
    return match.group(1) if match else None


def complaint_detail(feedback_type: str | None) -> str | None:
    """The detail of a complaint with this feedback type, or None when the report is not a complaint.

    A provider that calls something a complaint without a type (SES does, for some mailbox providers)
    gives ``unspecified``; an unregistered type counts as ``other``, as RFC 5965 asks."""
    if feedback_type is None or not feedback_type.strip():
        return "unspecified"
    normalized = feedback_type.strip().lower()
    if normalized in NOT_COMPLAINTS:
        return None
    return normalized if normalized in COMPLAINT_FEEDBACK_TYPES else "other"


def safe_name(value: object) -> str | None:
    """A declared name (a link's, a tag's) when it looks like one; None for anything that could be a value."""
    return value if isinstance(value, str) and _SAFE_NAME.fullmatch(value) else None


def as_utc(moment: datetime) -> datetime:
    """An aware UTC time; a time without an offset is taken as UTC."""
    if moment.tzinfo is UTC:
        return moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
