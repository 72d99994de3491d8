"""Deliver an outbox through a transport, one ledger batch at a time.

Per batch: reserve every message durably, send them, then commit their outcomes durably. A crash
between the two leaves the batch *reserved*; the next run holds those messages (in doubt) instead
of sending them again, so a crash can never produce a duplicate. Deferred messages (4xx, dropped
connection) were never accepted and are retried by the next run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Protocol

import pyarrow as pa

from carecast.campaigns import Campaign
from carecast.ledger import FINAL_STATES, Ledger, Planned
from carecast.mail import SendOutcome, build_message

BATCH_SIZE = 200
OUTBOX_COLUMNS = ("message_key", "patient_key", "variant", "to_addr", "subject", "body_text", "body_html")


class Transport(Protocol):
    def send(self, raw_message: bytes, mail_from: str, recipient: str) -> SendOutcome: ...


@dataclass(frozen=True)
class DeliveryReport:
    """Counts only: safe for metadata and logs."""

    outbox: int
    attempted: int
    held_in_doubt: int
    skipped_final: int
    states: dict[str, int]


def _batches(outbox: pa.Table, size: int) -> Iterator[list[dict]]:
    for batch in outbox.to_batches(max_chunksize=size):
        yield batch.to_pylist()


def deliver_outbox(
    outbox: pa.Table,
    campaign: Campaign,
    send_date: str,
    ledger: Ledger,
    transport: Transport,
    batch_size: int = BATCH_SIZE,
) -> DeliveryReport:
    held = ledger.hold_in_doubt(campaign.name, send_date)
    known = ledger.states(campaign.name, send_date)
    sender = campaign.sender
    envelope_from = parseaddr(sender.from_address)[1]
    domain = envelope_from.rsplit("@", 1)[-1]
    extra_headers = {"Reply-To": sender.reply_to} if sender.reply_to else None
    attempted = skipped = 0
    for rows in _batches(outbox.select(list(OUTBOX_COLUMNS)), batch_size):
        pending = [row for row in rows if known.get(row["message_key"]) not in FINAL_STATES]
        skipped += len(rows) - len(pending)
        if not pending:
            continue
        ledger.reserve(
            campaign.name,
            campaign.purpose,
            send_date,
            [Planned(row["message_key"], row["patient_key"], row["variant"]) for row in pending],
        )
        outcomes: list[tuple[str, str, int]] = []
        bounced_keys: list[str] = []
        for row in pending:
            raw = build_message(
                from_addr=sender.from_address,
                to_addr=row["to_addr"],
                subject=row["subject"],
                text=row["body_text"],
                html=row["body_html"],
                message_id=f"<{row['message_key']}@{domain}>",
                date=datetime.now(UTC),
                extra_headers=extra_headers,
            )
            outcome = transport.send(raw, envelope_from, row["to_addr"])
            outcomes.append((row["message_key"], outcome.status, outcome.smtp_code))
            if outcome.status == "bounced":
                bounced_keys.append(row["patient_key"])
        ledger.commit(outcomes)
        if bounced_keys:
            ledger.suppress(bounced_keys, "hard_bounce", "all", source="smtp")
        attempted += len(pending)
    return DeliveryReport(
        outbox=outbox.num_rows,
        attempted=attempted,
        held_in_doubt=held,
        skipped_final=skipped,
        states=ledger.counts(campaign.name, send_date),
    )
