"""One outbox row to signed RFC 5322 bytes: the stream's identity, the headers its kind requires, DKIM.

Every header is built from the campaign, the stream and opaque values (the message key, the
unsubscribe token); only ``To`` names the patient. On a marketing stream each message carries
``List-Unsubscribe`` with an https one-click URL and a mailto (RFC 2369) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), both signed by DKIM as RFC 8058
requires. Transactional mail carries neither: a patient cannot unsubscribe from their care.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

from carecast.campaigns import Campaign
from carecast.mail import build_message
from carecast.mail.dkim import DkimSigner
from carecast.streams import Stream


class Composer:
    def __init__(
        self,
        campaign: Campaign,
        stream: Stream,
        signer: DkimSigner | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.stream = stream
        self.signer = signer
        self.clock = clock
        self.mail_from = stream.sender.envelope_from
        self._domain = stream.sender.domain
        self._fixed: dict[str, str] = {}
        if stream.sender.reply_to:
            self._fixed["Reply-To"] = stream.sender.reply_to
        if stream.feedback_id:
            # Gmail's Feedback-ID: campaign:purpose:stream:sender, no patient data.
            self._fixed["Feedback-ID"] = f"{campaign.name}:{campaign.purpose}:{stream.name}:{stream.feedback_id}"

    def headers(self, unsubscribe_token: str) -> dict[str, str]:
        unsubscribe = self.stream.unsubscribe
        if unsubscribe is None:
            return self._fixed
        if not unsubscribe_token:
            raise ValueError("a marketing message needs its unsubscribe token")
        one_click = f"{unsubscribe.url}/{unsubscribe_token}"
        mailto = f"mailto:{unsubscribe.mailto}?subject={quote(f'unsubscribe {unsubscribe_token}')}"
        return {
            **self._fixed,
            "List-Unsubscribe": f"<{one_click}>, <{mailto}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    def compose(self, row: dict) -> bytes:
        """``row``: message_key, to_addr, subject, body_text, body_html, unsubscribe_token."""
        raw = build_message(
            from_addr=self.stream.sender.from_address,
            to_addr=row["to_addr"],
            subject=row["subject"],
            text=row["body_text"],
            html=row["body_html"],
            message_id=message_id(row["message_key"], self._domain),
            date=self.clock(),
            extra_headers=self.headers(row.get("unsubscribe_token") or ""),
        )
        return raw if self.signer is None else self.signer.sign(raw)


def message_id(message_key: str, domain: str) -> str:
    """Derived from the idempotency key: a re-sent message would carry the same Message-ID."""
    return f"<{message_key}@{domain}>"
