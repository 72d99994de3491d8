"""SMTP bounces as RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``).

Each per-recipient block of the ``message/delivery-status`` part is one event, classified by its
``Action`` and ``Status`` (RFC 3463 enhanced status codes):

* ``failed`` with a 5.x.x status: a hard bounce (the address or the domain refuses for good);
* ``failed`` with a 4.x.x status: a soft bounce (the MTA gave up retrying a temporary failure);
* ``failed`` without a readable status: an undetermined bounce;
* ``delayed``: a delay (still being retried), never a bounce;
* ``delivered``, ``relayed``, ``expanded``: a delivery.

The message is the one the report encloses (``message/rfc822`` or ``text/rfc822-headers``), found by
its ``Message-ID``; the time is the block's ``Last-Attempt-Date``, else the report's ``Date`` (when the
MTA gave up or warned), else the ``Arrival-Date`` of the original. Recipient addresses, diagnostic
texts and the human-readable part are never read.

Identity: the original Message-ID, the kind, the status, the report's own Message-ID (else its arrival
date) and the block's position, so the same report ingested twice is one event per recipient.
"""

from __future__ import annotations

import re
from email.message import Message

from carecast.engagement.feedback import FeedbackEvent, Parsed, Rejected, event_id, message_key_of
from carecast.engagement.report_mime import find_part, mail_date, original_message_id, report_reference

_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})")
_DELIVERED = ("delivered", "relayed", "expanded")


def parse_dsn(report: Message) -> list[Parsed]:
    status_part = find_part(report, "message/delivery-status")
    payload = status_part.get_payload() if status_part is not None else []
    # Blank lines separate the blocks, so a trailing one parses as an empty block: not a recipient.
    blocks = [block for block in payload if isinstance(block, Message) and block.keys()]
    if len(blocks) < 2:
        return [Rejected("dsn_without_recipient_status")]
    per_message, recipients = blocks[0], blocks[1:]
    original = original_message_id(report)
    message_key = message_key_of(original)
    reference = report_reference(report, per_message)
    parsed: list[Parsed] = []
    for index, fields in enumerate(recipients):
        classified = _classify(str(fields.get("Action", "")), str(fields.get("Status", "")))
        occurred = mail_date(fields.get("Last-Attempt-Date"), report.get("Date"), per_message.get("Arrival-Date"))
        if classified is None:
            parsed.append(Rejected("unknown_dsn_action"))
        elif occurred is None:
            parsed.append(Rejected("no_date"))
        else:
            kind, detail, status = classified
            identity = event_id("dsn", original or "", kind, status, reference, str(index))
            parsed.append(FeedbackEvent(identity, kind, occurred, "dsn", detail, message_key=message_key))
    return parsed


def _classify(action: str, status_field: str) -> tuple[str, str | None, str] | None:
    """(kind, detail, status) for a recipient block, or None for an action RFC 3464 does not define."""
    action = action.strip().lower()
    match = _STATUS.match(status_field)
    status = ".".join(match.groups()) if match else ""
    if action == "failed":
        bounce_class = {"5": "hard", "4": "soft"}.get(status[:1], "undetermined")
        return "bounce", bounce_class, status
    if action == "delayed":
        return "delay", None, status
    if action in _DELIVERED:
        return "delivery", None, status
    return None
