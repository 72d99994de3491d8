"""What delivery status notifications and abuse reports share: RFC 6522 ``multipart/report`` parts.

Both name the message they are about by enclosing it, whole (``message/rfc822``) or its header only
(``text/rfc822-headers``); its ``Message-ID`` is ``<message_key@domain>`` when carecast sent it. Both
may carry dates in RFC 5322 form. Values read here stay in memory: only the message key, a time and
hashed identities leave.
"""

from __future__ import annotations

from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from carecast.engagement.feedback import as_utc

_HEADERS = BytesParser(policy=policy.compat32)


def find_part(message: Message, content_type: str) -> Message | None:
    """The first part of this content type, at any depth."""
    return next((part for part in message.walk() if part.get_content_type() == content_type), None)


def fields_of(part: Message | None) -> Message | None:
    """The header fields a ``message/*`` report part holds (the email parser reads its body as a message)."""
    if part is None or not part.is_multipart():
        return None
    payload = part.get_payload()
    return payload[0] if payload and isinstance(payload[0], Message) else None


def original_message_id(report: Message) -> str | None:
    """The ``Message-ID`` of the message a report is about, from its enclosed copy or header."""
    for part in report.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            original = fields_of(part)
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            original = _HEADERS.parsebytes(part.get_payload(decode=True) or b"", headersonly=True)
        else:
            continue
        if original is not None and original.get("Message-ID"):
            return str(original.get("Message-ID"))
    return None


def report_reference(report: Message, fields: Message | None) -> str:
    """What tells one report from another about the same message: its own Message-ID, else when the
    original arrived, else the report's date."""
    for value in (report.get("Message-ID"), fields and fields.get("Arrival-Date"), report.get("Date")):
        if value:
            return str(value).strip()
    return ""


def mail_date(*candidates: object) -> datetime | None:
    """The first candidate that is an RFC 5322 date, in UTC."""
    for value in candidates:
        if not value:
            continue
        try:
            return as_utc(parsedate_to_datetime(str(value)))
        except (ValueError, TypeError, OverflowError, IndexError):
            continue
    return None
