"""The send ledger: reserve (durable) -> send -> commit (durable), keyed by message key.

It lives in SQLite (``state.db``) and holds no PHI: messages are named by their idempotency key and
patients by their keyed hash. A message reserved but never committed (the process died while
sending) is *in doubt*: it may or may not have reached the server, so it is held for an operator and
never re-sent automatically.

Every message of a campaign run ends in one state: ``delivered``; ``bounced`` (failed for good: the
server refused it with a 5xx, and the patient is suppressed); ``failed`` (failed for good otherwise,
e.g. retries exhausted); ``deferred`` (not sent yet: a 4xx, throttling or the send window; tried
again from ``next_attempt_at``); ``held`` (in doubt, for an operator); ``excluded`` (a check just
before sending said no, with the reason). ``reserved`` only exists while a send is in flight.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from carecast.state_db import StateDb

FINAL_STATES = ("delivered", "bounced", "failed", "held", "excluded")
STATES = ("reserved", "deferred", *FINAL_STATES)
_LEDGER_TABLE = """
create table if not exists send_ledger (
    message_key text primary key,
    campaign text not null,
    send_date text not null,
    patient_key text not null,
    purpose text,
    variant text not null,
    state text not null check (state in ('reserved', 'deferred', 'delivered', 'bounced', 'failed', 'held', 'excluded')),
    reason text,
    smtp_code integer,
    attempts integer not null default 0,
    next_attempt_at text,
    updated_at text not null,
    provider_message_id text
)"""
_SCHEMA = f"""
{_LEDGER_TABLE};
create index if not exists send_ledger_campaign on send_ledger (campaign, send_date, state);
create table if not exists campaign_stages (
    campaign text not null,
    send_date text not null,
    stage text not null,
    counts_json text not null,
    recorded_at text not null,
    primary key (campaign, send_date, stage)
);
create table if not exists audience_exclusions (
    campaign text not null,
    send_date text not null,
    patient_key text not null,
    reason text not null,
    primary key (campaign, send_date, patient_key)
);
create index if not exists audience_exclusions_patient on audience_exclusions (patient_key);
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


@dataclass(frozen=True)
class Outcome:
    """What became of one reserved message (a state other than ``reserved``), with no PHI."""

    message_key: str
    state: str
    smtp_code: int | None = None
    reason: str | None = None
    next_attempt_at: str | None = None
    provider_message_id: str | None = None


@dataclass(frozen=True)
class SentMessage:
    """One ledger row as the audit needs it: who (pseudonym), which run, what state."""

    message_key: str
    campaign: str
    send_date: str
    patient_key: str
    purpose: str | None
    variant: str
    state: str
    provider_message_id: str | None


_MESSAGE_COLUMNS = "message_key, campaign, send_date, patient_key, purpose, variant, state, provider_message_id"
_SQL_VARIABLES = 900
"""Keys per ``in (...)`` list: under SQLite's historical limit of 999 bound variables."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger(StateDb):
    SCHEMA = _SCHEMA

    def __init__(self, path: Path):
        super().__init__(path)
        self._upgrade()

    def _upgrade(self) -> None:
        """Ledgers written by earlier versions lack the purpose (their rows count for no purpose), the
        reason and the retry time, and their state check knows fewer states: rebuild them in place."""
        columns = [row[1] for row in self._connection.execute("pragma table_info(send_ledger)")]
        if "next_attempt_at" not in columns:
            shared = ", ".join(c for c in columns if c != "state")
            with self._transaction():
                self._connection.execute("alter table send_ledger rename to send_ledger_old")
                self._connection.execute("drop index if exists send_ledger_campaign")
                self._connection.execute(_LEDGER_TABLE)
                self._connection.execute(
                    f"insert into send_ledger ({shared}, state) select {shared}, state from send_ledger_old"
                )
                self._connection.execute("drop table send_ledger_old")
                self._connection.execute(
                    "create index send_ledger_campaign on send_ledger (campaign, send_date, state)"
                )
        if "provider_message_id" not in columns and "next_attempt_at" in columns:
            self._connection.execute("alter table send_ledger add column provider_message_id text")
        self._connection.execute(
            "create index if not exists send_ledger_purpose on send_ledger (purpose, send_date, patient_key)"
        )
        self._connection.execute(
            "create index if not exists send_ledger_provider_id on send_ledger (provider_message_id)"
            " where provider_message_id is not null"
        )

    def states(self, campaign: str, send_date: str) -> dict[str, str]:
        rows = self._connection.execute(
            "select message_key, state from send_ledger where campaign = ? and send_date = ?", (campaign, send_date)
        )
        return dict(rows.fetchall())

    def hold_in_doubt(self, campaign: str, send_date: str) -> int:
        """Mark messages left reserved by a crashed run as held; return how many. Call it only when no
        other delivery of this campaign run is in flight."""
        cursor = self._connection.execute(
            "update send_ledger set state = 'held', reason = 'in_doubt', updated_at = ?"
            " where campaign = ? and send_date = ? and state = 'reserved'",
            (_now(), campaign, send_date),
        )
        return cursor.rowcount

    def sendable(self, message_keys: list[str], now: str) -> set[str]:
        """The keys that may be sent now: never recorded, or deferred with their retry time come."""
        blocked = {
            key
            for (key,) in self._rows_for(
                "select message_key from send_ledger where message_key in ({keys})"
                " and not (state = 'deferred' and coalesce(next_attempt_at, '') <= ?)",
                message_keys,
                now,
            )
        }
        return {key for key in message_keys if key not in blocked}

    def reserve(self, campaign: str, purpose: str, send_date: str, batch: Iterable[Planned]) -> None:
        now = _now()
        with self._transaction():
            self._connection.executemany(
                """
                insert into send_ledger
                    (message_key, campaign, purpose, send_date, patient_key, variant, state, attempts, updated_at)
                values (?, ?, ?, ?, ?, ?, 'reserved', 1, ?)
                on conflict (message_key) do update
                    set state = 'reserved', attempts = attempts + 1, reason = null, next_attempt_at = null,
                        updated_at = excluded.updated_at
                    where send_ledger.state = 'deferred'
                """,
                [(p.message_key, campaign, purpose, send_date, p.patient_key, p.variant, now) for p in batch],
            )

    def commit(self, outcomes: Iterable[Outcome]) -> None:
        """Record what became of messages this run reserved."""
        now = _now()
        with self._transaction():
            self._connection.executemany(
                "update send_ledger set state = ?, smtp_code = ?, reason = ?, next_attempt_at = ?, updated_at = ?,"
                " provider_message_id = coalesce(?, provider_message_id) where message_key = ? and state = 'reserved'",
                [
                    (o.state, o.smtp_code, o.reason, o.next_attempt_at, now, o.provider_message_id, o.message_key)
                    for o in outcomes
                ],
            )

    def record_unsent(
        self, campaign: str, purpose: str, send_date: str, batch: Iterable[tuple[Planned, Outcome]]
    ) -> None:
        """Record messages decided without sending (excluded just before sending, or deferred to the
        send window); a deferred message keeps its attempt count."""
        now = _now()
        with self._transaction():
            self._connection.executemany(
                """
                insert into send_ledger (message_key, campaign, purpose, send_date, patient_key, variant,
                                         state, reason, next_attempt_at, attempts, updated_at)
                values (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
                on conflict (message_key) do update
                    set state = excluded.state, reason = excluded.reason,
                        next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at
                    where send_ledger.state = 'deferred'
                """,
                [
                    (
                        p.message_key,
                        campaign,
                        purpose,
                        send_date,
                        p.patient_key,
                        p.variant,
                        o.state,
                        o.reason,
                        o.next_attempt_at,
                        now,
                    )
                    for p, o in batch
                ],
            )

    def attempts(self, message_keys: list[str]) -> dict[str, int]:
        return dict(
            self._rows_for("select message_key, attempts from send_ledger where message_key in ({keys})", message_keys)
        )

    def run_messages(self, campaign: str, send_date: str) -> dict[str, list]:
        """Every message of a campaign run as columns: message_key, patient_key, state and ``day`` (the
        UTC date of its last change, when it was sent or given up)."""
        rows = self._connection.execute(
            "select message_key, patient_key, state, substr(updated_at, 1, 10) from send_ledger"
            " where campaign = ? and send_date = ?",
            (campaign, send_date),
        ).fetchall()
        columns = list(zip(*rows, strict=True)) or [(), (), (), ()]
        return dict(zip(("message_key", "patient_key", "state", "day"), map(list, columns), strict=True))

    def messages_of_patient(self, patient_key: str) -> list[SentMessage]:
        """Every ledger row of one patient, oldest send date first."""
        rows = self._connection.execute(
            f"select {_MESSAGE_COLUMNS} from send_ledger where patient_key = ? order by send_date, campaign",
            (patient_key,),
        )
        return [SentMessage(*row) for row in rows]

    def held(self, campaign: str, send_date: str) -> list[str]:
        rows = self._connection.execute(
            "select message_key from send_ledger where campaign = ? and send_date = ? and state = 'held'"
            " order by message_key",
            (campaign, send_date),
        )
        return [key for (key,) in rows]

    def resolve(self, campaign: str, send_date: str, message_keys: list[str] | None, resolution: str) -> int:
        """An operator's verdict on held messages: ``delivered`` (the server has it), ``failed`` (give
        it up) or ``resend`` (it never arrived: deferred, so the next run sends it). Returns how many."""
        state = {"delivered": "delivered", "failed": "failed", "resend": "deferred"}[resolution]
        keys = self.held(campaign, send_date) if message_keys is None else message_keys
        now = _now()
        with self._transaction():
            changed = 0
            for key in keys:
                cursor = self._connection.execute(
                    "update send_ledger set state = ?, reason = 'operator_' || ?, next_attempt_at = null,"
                    " updated_at = ? where message_key = ? and campaign = ? and send_date = ? and state = 'held'",
                    (state, resolution, now, key, campaign, send_date),
                )
                changed += cursor.rowcount
        return changed

    def suppress(self, patient_keys: Iterable[str], reason: str, purpose: str, source: str) -> None:
        now = _now()
        with self._transaction():
            self._connection.executemany(
                "insert or ignore into suppressions values (?, ?, ?, ?, ?)",
                [(key, reason, purpose, source, now) for key in patient_keys],
            )

    def suppressed_among(self, patient_keys: list[str], purpose: str) -> dict[str, str]:
        """Patient key -> reason, for these patients only: the check made just before sending."""
        return dict(
            self._rows_for(
                "select patient_key, min(reason) from suppressions where patient_key in ({keys})"
                " and purpose in (?, 'all') group by patient_key",
                patient_keys,
                purpose,
            )
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
        the same counts as its first run. A message that never reached the patient (bounced, failed,
        excluded just before sending) does not count; one deferred or held may still, so it does.
        """
        rows = self._connection.execute(
            "select patient_key, count(*) from send_ledger"
            " where purpose = ? and send_date between ? and ? and state not in ('bounced', 'failed', 'excluded')"
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

    def record_exclusions(self, campaign: str, send_date: str, patient_keys: list[str], reasons: list[str]) -> None:
        """Who the audience of a run left out and why (pseudonyms and reasons), replacing what an earlier
        build of the same run recorded, so the audit can say why a patient got no message."""
        with self._transaction():
            self._connection.execute(
                "delete from audience_exclusions where campaign = ? and send_date = ?", (campaign, send_date)
            )
            self._connection.executemany(
                "insert into audience_exclusions values (?, ?, ?, ?)",
                [(campaign, send_date, key, reason) for key, reason in zip(patient_keys, reasons, strict=True)],
            )

    def suppressions_of_patient(self, patient_key: str) -> list[dict[str, str]]:
        rows = self._connection.execute(
            "select reason, purpose, source, created_at from suppressions where patient_key = ? order by created_at",
            (patient_key,),
        )
        return [dict(zip(("reason", "purpose", "source", "created_at"), row, strict=True)) for row in rows]

    def run_dates(self, campaign: str) -> list[str]:
        """Send dates on which the campaign's audience was built, oldest first."""
        rows = self._connection.execute(
            "select send_date from campaign_stages where campaign = ? and stage = 'audience' order by send_date",
            (campaign,),
        )
        return [send_date for (send_date,) in rows]

    def exclusions_of_patient(self, patient_key: str) -> list[tuple[str, str, str]]:
        """(campaign, send date, reason) of every run whose audience left this patient out."""
        rows = self._connection.execute(
            "select campaign, send_date, reason from audience_exclusions where patient_key = ?"
            " order by send_date, campaign",
            (patient_key,),
        )
        return rows.fetchall()

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

    def _rows_for(self, sql: str, keys: list[str], *after: object) -> Iterator[tuple]:
        """Rows of ``sql`` whose ``{keys}`` placeholder takes ``keys``, a bounded number per query;
        ``after`` binds the placeholders that follow it."""
        for start in range(0, len(keys), _SQL_VARIABLES):
            chunk = keys[start : start + _SQL_VARIABLES]
            yield from self._connection.execute(sql.format(keys=",".join("?" * len(chunk))), (*chunk, *after))

    def _transaction(self):
        return _Transaction(self._connection)


class _Transaction:
    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("begin immediate")

    def __exit__(self, exc_type, *_rest: object) -> None:
        self._connection.execute("rollback" if exc_type else "commit")
