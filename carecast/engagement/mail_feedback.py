"""One received email (an ``.eml`` file) as feedback: a bounce report, a complaint, or neither.

A ``multipart/report`` (at any depth, since some relays forward reports inside another message) is
read by its ``report-type``: ``delivery-status`` (RFC 3464) or ``feedback-report`` (RFC 5965); other
reports (read receipts, RFC 8098) are ignored. Anything else is an auto-reply (ignored, see
``auto_reply.py``), a person's reply (ignored: a reply is not an event carecast acts on), or not an
email at all (rejected).
"""

from __future__ import annotations

import email
from email import policy
from email.utils import collapse_rfc2231_value

from carecast.engagement.arf import parse_arf
from carecast.engagement.auto_reply import is_auto_reply
from carecast.engagement.dsn import parse_dsn
from carecast.engagement.feedback import Ignored, Parsed, Rejected
from carecast.engagement.report_mime import find_part

_ESSENTIAL_HEADERS = ("From", "Date", "Message-ID")


def parse_mail(data: bytes) -> list[Parsed]:
    try:
        message = email.message_from_bytes(data, policy=policy.compat32)
        if not any(message.get(name) for name in _ESSENTIAL_HEADERS):
            return [Rejected("not_an_email")]
        report = find_part(message, "multipart/report")
        if report is not None:
            report_type = collapse_rfc2231_value(report.get_param("report-type", "")).strip().lower()
            if report_type == "delivery-status":
                return parse_dsn(report)
            if report_type == "feedback-report":
                return parse_arf(report)
            return [Ignored("other_report")]
        return [Ignored("auto_reply" if is_auto_reply(message) else "not_feedback")]
    except Exception:  # hostile input: how the email package fails on it is not specified anywhere
        return [Rejected("unparseable_email")]
