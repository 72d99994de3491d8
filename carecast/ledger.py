"""The send ledger: reserve (durable) -> send -> commit (durable), keyed by message key.

It lives in SQLite (``state.db``) and holds no PHI: messages are named by their idempotency key and
patients by their keyed hash. A message reserved but never committed (the process died while
sending) is *in doubt*: it may or may not have reached the server, so it is held for an operator and
never re-sent automatically.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from carecast.state_db import StateDb

FINAL_STATES = ("delivered", "bounced", "held")
_SCHEMA = """
create table if not exists send_ledger (
    message_key text primary key,
    campaign text not null,
    send_date text not null,
    patient_key text not null,
    purpose text,
    variant text not null,
    state text not null check (state in ('reserved', 'delivered', 'bounced', 'deferred', 'held')),
    smtp_code integer,
    attempts integer not null default 0,
    updated_at text not null
);
create index if not exists send_ledger_campaign on send_ledger (campaign, send_date, state);
create table if not exists campaign_stages (
    campaign text not null,
    send_date text not null,
    stage text not null,
    counts_json text not null,
    recorded_at text not null,
    primary key (campaign, send_date, stage)
);
create table if not exists suppressions (
    patient_key text not null,
    reason text not null,
    purpose text not null,
    source text not null,
    created_at text not null,
    primary key (patient_key, reason, purpose)
);
"""


@dataclass(frozen=True)
class Planned:
    message_key: str
    patient_key: str
    variant: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger(StateDb):
    SCHEMA = _SCHEMA

    def __init__(self, path: Path):
        super().__init__(path)
        self._add_purpose_column()

    def _add_purpose_column(self) -> None:
        """Ledgers written before frequency caps lack the purpose; their rows count for no purpose."""
        columns = {row[1] for row in self._connection.execute("pragma table_info(send_ledger)")}
        if "purpose" not in columns:
            self._connection.execute("alter table send_ledger add column purpose text")
        self._connection.execute(
            "create index if not exists send_ledger_purpose on send_ledger (purpose, send_date, patient_key)"
        )

    def states(self, campaign: str, send_date: str) -> dict[str, str]:
        rows = self._connection.execute(
            "select message_key, state from send_ledger where campaign = ? and send_date = ?", (campaign, send_date)
        )
        return dict(rows.fetchall())

    def hold_in_doubt(self, campaign: str, send_date: str) -> int:
        """Mark messages left reserved by a crashed run as held; return how many."""
        cursor = self._connection.execute(
            "update send_ledger set state = 'held', updated_at = ?"
            " where campaign = ? and send_date = ? and state = 'reserved'",
            (_now(), campaign, send_date),
        )
        return cursor.rowcount

    def reserve(self, campaign: str, purpose: str, send_date: str, batch: Iterable[Planned]) -> None:
        now = _now()
        with self._transaction():
            self._connection.executemany(
                """
                insert into send_ledger
                    (message_key, campaign, purpose, send_date, patient_key, variant, state, attempts, updated_at)
                values (?, ?, ?, ?, ?, ?, 'reserved', 1, ?)
                on conflict (message_key) do update
                    set state = 'reserved', attempts = attempts + 1, updated_at = excluded.updated_at
                    where send_ledger.state = 'deferred'
                """,
                [(p.message_key, campaign, purpose, send_date, p.patient_key, p.variant, now) for p in batch],
            )

    def commit(self, outcomes: Iterable[tuple[str, str, int]]) -> None:
        """Record (message_key, state, smtp_code) for messages this run reserved."""
        now = _now()
        with self._transaction():
            self._connection.executemany(
                "update send_ledger set state = ?, smtp_code = ?, updated_at = ?"
                " where message_key = ? and state = 'reserved'",
                [(state, code, now, key) for key, state, code in outcomes],
            )

    def suppress(self, patient_keys: Iterable[str], reason: str, purpose: str, source: str) -> None:
        now = _now()
        with self._transaction():
            self._connection.executemany(
                "insert or ignore into suppressions values (?, ?, ?, ?, ?)",
                [(key, reason, purpose, source, now) for key in patient_keys],
            )

    def suppressions_for(self, purpose: str) -> dict[str, str]:
        """Patient key -> reason, for suppressions that apply to a purpose (or to all purposes)."""
        rows = self._connection.execute(
            "select patient_key, min(reason) from suppressions where purpose in (?, 'all') group by patient_key",
            (purpose,),
        )
        return dict(rows.fetchall())

    def messages_per_patient(
        self, purpose: str, first_date: str, last_date: str, excluding: tuple[str, str]
    ) -> dict[str, int]:
        """Patient key -> messages of a purpose sent (or on their way) between two send dates, inclusive.

        ``excluding`` (campaign, send date) leaves out the run being planned, so a re-run of it sees
        the same counts as its first run. A bounced message never reached the patient and does not count.
        """
        rows = self._connection.execute(
            "select patient_key, count(*) from send_ledger"
            " where purpose = ? and send_date between ? and ? and state != 'bounced'"
            " and not (campaign = ? and send_date = ?) group by patient_key",
            (purpose, first_date, last_date, *excluding),
        )
        return dict(rows.fetchall())

    def counts(self, campaign: str, send_date: str) -> dict[str, int]:
        rows = self._connection.execute(
            "select state, count(*) from send_ledger where campaign = ? and send_date = ? group by state",
            (campaign, send_date),
        )
        return dict(rows.fetchall())

    def record_stage(self, campaign: str, send_date: str, stage: str, counts: dict) -> None:
        """Keep a stage's counts (never values) so later stages and reports can read them."""
        self._connection.execute(
            "insert or replace into campaign_stages values (?, ?, ?, ?, ?)",
            (campaign, send_date, stage, json.dumps(counts, sort_keys=True), _now()),
        )

    def stage(self, campaign: str, send_date: str, stage: str) -> dict:
        row = self._connection.execute(
            "select counts_json from campaign_stages where campaign = ? and send_date = ? and stage = ?",
            (campaign, send_date, stage),
        ).fetchone()
        if row is None:
            raise LookupError(f"no {stage} stage recorded for {campaign} on {send_date}")
        return json.loads(row[0])

    def _transaction(self):
        return _Transaction(self._connection)


class _Transaction:
    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("begin immediate")

    def __exit__(self, exc_type, *_rest: object) -> None:
        self._connection.execute("rollback" if exc_type else "commit")
