"""Complaints as RFC 5965 abuse reports (``multipart/report; report-type=feedback-report``).

Mailbox providers' feedback loops (Yahoo, AOL, Microsoft JMRP, Comcast, …) send one report per
"this is spam" click. Its ``Feedback-Type`` decides: ``abuse``, ``fraud``, ``other`` (and any
unregistered type, as RFC 5965 asks) are a complaint; ``not-spam``, ``virus`` and ``auth-failure`` are
not a recipient's complaint and are ignored. The message is the enclosed original (whole or headers
only, as AOL's redacted reports send it), found by its ``Message-ID``; the time is the report's
``Date`` (when the recipient complained), else when the original arrived (``Arrival-Date``, or Yahoo's
``Received-Date``). ``Original-Rcpt-To``, ``Source-IP`` and
the human-readable part are never read.

Identity: the original Message-ID, the feedback type and the report's own Message-ID (else the
arrival date).
"""

from __future__ import annotations

from email.message import Message

from carecast.engagement.feedback import (
    FeedbackEvent,
    Ignored,
    Parsed,
    Rejected,
    complaint_detail,
    event_id,
    message_key_of,
)
from carecast.engagement.report_mime import fields_of, find_part, mail_date, original_message_id, report_reference


def parse_arf(report: Message) -> list[Parsed]:
    fields = fields_of(find_part(report, "message/feedback-report"))
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower() if fields is not None else ""
    if not feedback_type:
        return [Rejected("arf_without_feedback_type")]
    detail = complaint_detail(feedback_type)
    if detail is None:
        return [Ignored("not_a_complaint")]
    occurred = mail_date(report.get("Date"), fields.get("Arrival-Date"), fields.get("Received-Date"))
    if occurred is None:
        return [Rejected("no_date")]
    original = original_message_id(report)
    identity = event_id("arf", original or "", "complaint", feedback_type, report_reference(report, fields))
    return [FeedbackEvent(identity, "complaint", occurred, "arf", detail, message_key=message_key_of(original))]
