"""An append-only store of engagement events in ``state.db``, keyed by the patient's HMAC pseudonym.

Only an unsubscribe is recorded so far. Recording one writes the event *and* the suppression the
audience builder and the pre-send check read, in one SQLite transaction: no unsubscribe is kept
without its suppression, nor a suppression from the endpoint without its event.

The store subclasses ``Ledger`` (itself a ``StateDb``) rather than ``StateDb`` directly because the
``suppressions`` table belongs to the ledger: sharing its connection is what makes the two writes one
transaction, and ``Ledger.suppress`` stays the only code that writes suppressions.

Events are idempotent: ``event_id`` hashes what the event says (kind, patient key, campaign, purpose,
scope and the UTC day), so a replayed request, a mail scanner re-posting, or the one-click POST and
the page's button on the same day for the same scope are one event, and ``insert or ignore`` keeps
the first. The source of the first is the one kept. Rows are never updated or deleted here. No PHI:
the pseudonym, campaign and purpose names, and times only; never a token, an address or an id.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from carecast.ledger import Ledger

Source = Literal["one_click_post", "page_post"]
Scope = Literal["purpose", "all"]
SOURCES: tuple[Source, ...] = get_args(Source)
SCOPES: tuple[Scope, ...] = get_args(Scope)
UNSUBSCRIBED = "unsubscribed"
"""The suppression reason the audience builder and the delivery check honour."""

_EVENTS_SCHEMA = """
create table if not exists engagement_events (
    event_id text primary key,
    patient_key text not null,
    campaign text not null,
    purpose text not null,
    kind text not null check (kind in ('unsubscribe')),
    source text not null check (source in ('one_click_post', 'page_post')),
    scope text not null check (scope in ('purpose', 'all')),
    occurred_at text not null
);
create index if not exists engagement_events_patient on engagement_events (patient_key, kind);
"""


@dataclass(frozen=True)
class Unsubscribe:
    """What an authentic unsubscribe token says, plus what the patient chose. No PHI."""

    patient_key: str
    campaign: str
    purpose: str
    scope: Scope
    source: Source
    occurred_at: datetime

    @property
    def event_id(self) -> str:
        day = self.occurred_at.astimezone(UTC).date().isoformat()
        fields = ("unsubscribe", self.patient_key, self.campaign, self.purpose, self.scope, day)
        return hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()


class EngagementEvents(Ledger):
    SCHEMA = Ledger.SCHEMA + _EVENTS_SCHEMA

    def record_unsubscribe(self, event: Unsubscribe) -> bool:
        """Write the event and its suppression in one transaction; True when the event is new.

        The suppression's purpose is the campaign's purpose, or ``all`` for "all email from us"."""
        if event.scope not in SCOPES or event.source not in SOURCES:
            raise ValueError("unknown unsubscribe scope or source")
        occurred = event.occurred_at.astimezone(UTC).isoformat(timespec="seconds")
        with self._transaction():
            cursor = self._connection.execute(
                "insert or ignore into engagement_events values (?, ?, ?, ?, 'unsubscribe', ?, ?, ?)",
                (event.event_id, event.patient_key, event.campaign, event.purpose, event.source, event.scope, occurred),
            )
            purpose = event.purpose if event.scope == "purpose" else "all"
            self.suppress([event.patient_key], UNSUBSCRIBED, purpose, source=f"engagement:{event.source}")
        return cursor.rowcount == 1

    def count(self, patient_key: str, kind: str = "unsubscribe") -> int:
        row = self._connection.execute(
            "select count(*) from engagement_events where patient_key = ? and kind = ?", (patient_key, kind)
        ).fetchone()
        return row[0]

    def _transaction(self):
        """The ledger's transaction, or nothing when one is open already (``suppress`` inside ours)."""
        if self._connection.in_transaction:
            return contextlib.nullcontext()
        return super()._transaction()
