"""The engagement store in ``state.db``: every engagement event, with the suppression it calls for.

Events come from the endpoint (unsubscribes, and the click and open routes) and from providers' feedback
(SES events, DSNs, abuse reports; see ``ingest.py``). ``record`` resolves each to its message in the
send ledger, stores the new ones and applies the feedback rules in the same SQLite transaction, so no
event is kept without its suppression nor a suppression without its event:

* a hard bounce suppresses the patient for every purpose (``hard_bounce``, ``all``);
* a complaint suppresses every purpose (``complaint``, ``all``);
* an unsubscribe suppresses the message's purpose, or every purpose when the patient said so
  (``unsubscribed``; ``all`` too when the message's purpose is unknown);
* soft and undetermined bounces, delays, rejects, sends, deliveries, opens and clicks suppress nobody.

Suppressions go through ``Ledger.suppress``, the only writer of the table the audience builder and
the check just before sending read, so the next run honours them. The store subclasses ``Ledger`` for
that: sharing its connection is what makes the event and the suppression one transaction.

Idempotency: ``event_id`` is a hash of the event's identity at its source (``feedback.py``), unique in
the table. An event already stored is counted as a duplicate and changes nothing, its rules included.

Speed (a million events per batch): events are resolved to their messages by a join in SQLite, not
by Python objects per ledger row; rows are appended in rowid order, so the only index written at
random is the unique one on the 16-byte ids (rows go in sorted by id), and the ``(campaign,
send_date)`` index only ever grows at the end of a key's range. There is no check constraint on
``kind``: ``record`` checks kinds and sources before writing, at a fraction of the cost.

Events whose message the ledger does not know (sent by another system, or before its provider id was
kept) are counted as unmatched and not stored: there is no patient to attribute them to. Endpoint events
name their patient, campaign and purpose through an authentic token; tokens carry no message key, so
they are attributed to the patient's latest message of that campaign sent on or before the event's day,
and stored without a message when there is none.

Tables: ``engagement_log`` holds the events (pseudonym, campaign, send date, variant, purpose, kind,
detail, source, time; never an address, a token or an id from the patient record); the view
``engagement_events`` keeps the column layout of the store's first version (which held unsubscribes
only: ``detail`` stands where ``scope`` was, ids are hex) for the readers written against it.
``feedback_batches`` journals ingested feedback batches.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import pyarrow as pa

from carecast.engagement.feedback import KINDS, SOURCES, FeedbackEvent, TokenRecipient, as_utc, endpoint_event
from carecast.ledger import Ledger

UnsubscribeSource = Literal["one_click_post", "page_post"]
Scope = Literal["purpose", "all"]
UNSUBSCRIBE_SOURCES: tuple[UnsubscribeSource, ...] = get_args(UnsubscribeSource)
SCOPES: tuple[Scope, ...] = get_args(Scope)
HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
UNSUBSCRIBED = "unsubscribed"
"""The suppression reasons the audience builder and the delivery check honour."""

_LOG_TABLE = """
create table if not exists engagement_log (
    event_id blob not null unique,
    message_key text,
    campaign text not null,
    send_date text,
    variant text,
    purpose text,
    patient_key text not null,
    kind text not null,
    detail text,
    source text not null,
    occurred_at text not null
)"""
_LOG_COLUMNS = (
    "event_id, message_key, campaign, send_date, variant, purpose, patient_key, kind, detail, source, occurred_at"
)
_FIRST_VERSION_VIEW = """
create view if not exists engagement_events as
select lower(hex(event_id)) as event_id, patient_key, campaign, purpose, kind, source, detail, occurred_at
from engagement_log"""
_SCHEMA = f"""
{_LOG_TABLE};
create index if not exists engagement_log_run on engagement_log (campaign, send_date);
{_FIRST_VERSION_VIEW};
create table if not exists engagement_exports (
    batch text primary key,
    last_rowid integer not null,
    events integer not null,
    landed_at text not null
);
create table if not exists feedback_batches (
    batch text primary key,
    fingerprint text not null,
    counts_json text not null,
    ingested_at text not null
);
"""
_INCOMING = """
create temp table if not exists incoming (
    event_id blob not null,
    kind text not null,
    detail text,
    source text not null,
    occurred_at text not null,
    patient_key text,
    campaign text,
    purpose text,
    message_key text
)"""
"""The events of one ``record`` call, each with the ledger's message it is about (null when none is
known); ``patient_key``, ``campaign`` and ``purpose`` are what a token said, for endpoint events."""
_RESOLVE_INTO_INCOMING = """
insert into temp.incoming
select ?1, ?2, ?3, ?4, ?5, ?8, ?9, ?10, coalesce(
    (select message_key from send_ledger where message_key = ?6),
    (select message_key from send_ledger where provider_message_id = ?7),
    (select message_key from send_ledger
     where patient_key = ?8 and campaign = ?9 and send_date <= substr(?5, 1, 10)
     order by send_date desc limit 1)
)"""
"""An event's message: the one its message key or provider message id names, or for an endpoint event
the patient's latest message of the token's campaign sent on or before the event's day."""
_STORE_INCOMING = f"""
insert or ignore into engagement_log ({_LOG_COLUMNS})
select
    i.event_id, i.message_key, coalesce(i.campaign, l.campaign), l.send_date, l.variant,
    coalesce(i.purpose, l.purpose), coalesce(i.patient_key, l.patient_key), i.kind, i.detail, i.source, i.occurred_at
from temp.incoming i
left join send_ledger l on l.message_key = i.message_key
where i.message_key is not null or i.patient_key is not null
order by i.event_id
"""
_CACHE_KIB = 128 * 1024
"""Recording touches pages all over the event-id index (ids are hashes); a cache that holds it for
millions of events saves re-reading them on every chunk."""
_PER_MESSAGE_FLAGS = """
with flags as (
    select
        message_key,
        max(kind = 'open') as opened,
        max(kind = 'click') as clicked,
        max(kind = 'bounce' and detail = 'hard') as bounced_hard,
        max(kind = 'complaint') as complained,
        max(kind = 'unsubscribe') as unsubscribed
    from engagement_log
    where campaign = ? and send_date = ?
    group by message_key
)
select
    l.message_key,
    coalesce(f.opened, 0),
    coalesce(f.clicked, 0),
    coalesce(f.bounced_hard, 0),
    coalesce(f.complained, 0),
    coalesce(f.unsubscribed, 0)
from send_ledger l
left join flags f on f.message_key = l.message_key
where l.campaign = ? and l.send_date = ?
order by l.message_key
"""
FLAG_COLUMNS = ("opened", "clicked", "bounced_hard", "complained", "unsubscribed")


@dataclass(frozen=True)
class Unsubscribe:
    """What an authentic unsubscribe token says, plus what the patient chose. No PHI."""

    patient_key: str
    campaign: str
    purpose: str
    scope: Scope
    source: UnsubscribeSource
    occurred_at: datetime

    def as_event(self) -> FeedbackEvent:
        recipient = TokenRecipient(self.patient_key, self.campaign, self.purpose)
        return endpoint_event("unsubscribe", recipient, self.occurred_at, self.source, self.scope)


@dataclass(frozen=True)
class RecordReport:
    """What one ``record`` call did, in counts: events stored, already stored, without a known message."""

    recorded: int = 0
    duplicates: int = 0
    unmatched: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    """Events stored, per kind."""
    suppressions_added: dict[str, int] = field(default_factory=dict)
    """Suppressions written (not already there), per reason."""


def suppression_for(kind: str, detail: str | None, purpose: str | None) -> tuple[str, str] | None:
    """The (reason, purpose) suppression an event calls for, or None: the feedback rules."""
    if kind == "bounce" and detail == "hard":
        return HARD_BOUNCE, "all"
    if kind == "complaint":
        return COMPLAINT, "all"
    if kind == "unsubscribe":
        return UNSUBSCRIBED, purpose if detail == "purpose" and purpose else "all"
    return None


def _incoming(event: FeedbackEvent) -> tuple:
    """The parameters of ``_RESOLVE_INTO_INCOMING`` for one event (its kind and source checked)."""
    if event.kind not in KINDS or event.source not in SOURCES:
        raise ValueError("unknown feedback kind or source")
    recipient = event.recipient
    claimed = (recipient.patient_key, recipient.campaign, recipient.purpose) if recipient else (None, None, None)
    occurred = as_utc(event.occurred_at).isoformat(timespec="seconds")
    return (
        bytes.fromhex(event.event_id),
        event.kind,
        event.detail,
        event.source,
        occurred,
        event.message_key,
        event.provider_message_id,
        *claimed,
    )


class EngagementEvents(Ledger):
    SCHEMA = Ledger.SCHEMA + _SCHEMA

    def __init__(self, path: Path):
        super().__init__(path)
        self._connection.execute(f"pragma cache_size = -{_CACHE_KIB}")
        # The incoming events stay in memory: nothing of a batch is written anywhere but state.db.
        self._connection.execute("pragma temp_store = memory")
        self._connection.execute(_INCOMING)

    def _upgrade(self) -> None:
        """Besides the ledger's own upgrades: the index endpoint events are attributed by, and a first
        version's ``engagement_events`` table (unsubscribes only, 64-digit ids) moved into
        ``engagement_log`` (ids cut to their first 128 bits, as ``event_id`` makes them now)."""
        super()._upgrade()
        self._connection.execute(
            "create index if not exists send_ledger_patient on send_ledger (patient_key, campaign, send_date)"
        )
        found = self._connection.execute("select type from sqlite_master where name = 'engagement_events'").fetchone()
        if found == ("table",):
            with self._transaction():
                rows = self._connection.execute(
                    "select event_id, patient_key, campaign, purpose, kind, source, scope, occurred_at"
                    " from engagement_events"
                ).fetchall()
                self._connection.executemany(
                    "insert or ignore into engagement_log"
                    " (event_id, patient_key, campaign, purpose, kind, source, detail, occurred_at)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(bytes.fromhex(row[0][:32]), *row[1:]) for row in rows],
                )
                self._connection.execute("drop table engagement_events")
                self._connection.execute(_FIRST_VERSION_VIEW)

    def record(self, events: Iterable[FeedbackEvent]) -> RecordReport:
        """Store the events not stored yet and apply the feedback rules to them, in one transaction.

        Resolution is a join in SQLite (an index probe per event, no Python objects per ledger row).
        ``insert or ignore`` skips the events stored already; the rows it added are the ones past the
        largest rowid before it (the write lock is held), so the rules apply to exactly those."""
        incoming = [_incoming(event) for event in events]
        with self._transaction():  # a rollback empties temp.incoming too
            self._connection.executemany(_RESOLVE_INTO_INCOMING, incoming)
            (unmatched,) = self._connection.execute(
                "select count(*) from temp.incoming where message_key is null and patient_key is null"
            ).fetchone()
            (last,) = self._connection.execute("select coalesce(max(rowid), 0) from engagement_log").fetchone()
            self._connection.execute(_STORE_INCOMING)
            fresh = self._connection.execute(
                "select kind, detail, purpose, patient_key, source from engagement_log where rowid > ?", (last,)
            ).fetchall()
            added = self._apply_feedback_rules(fresh)
            self._connection.execute("delete from temp.incoming")
        return RecordReport(
            recorded=len(fresh),
            duplicates=len(incoming) - unmatched - len(fresh),
            unmatched=unmatched,
            kinds=dict(Counter(kind for kind, *_ in fresh)),
            suppressions_added=added,
        )

    def record_unsubscribe(self, event: Unsubscribe) -> bool:
        """Record the endpoint's unsubscribe (and its suppression); True when the event is new.

        The suppression's purpose is the campaign's purpose, or ``all`` for "all email from us"."""
        if event.scope not in SCOPES or event.source not in UNSUBSCRIBE_SOURCES:
            raise ValueError("unknown unsubscribe scope or source")
        return self.record([event.as_event()]).recorded == 1

    def per_message_flags(self, campaign: str, send_date: str) -> pa.Table:
        """One row per message of a campaign run in the ledger (any state): ``message_key`` and whether
        it was opened, clicked, hard-bounced, complained about or unsubscribed from (booleans)."""
        rows = self._connection.execute(_PER_MESSAGE_FLAGS, (campaign, send_date, campaign, send_date)).fetchall()
        columns = list(zip(*rows, strict=True)) or [()] * (1 + len(FLAG_COLUMNS))
        return pa.table(
            {
                "message_key": pa.array(columns[0], pa.string()),
                **{
                    name: pa.array(values, pa.int8()).cast(pa.bool_())  # SQLite's booleans are 0 and 1
                    for name, values in zip(FLAG_COLUMNS, columns[1:], strict=True)
                },
            }
        )

    def events_after(self, after_rowid: int, kinds: tuple[str, ...]) -> list[tuple]:
        """Events of these kinds stored after a row id, in storage order, for the export to the lake:
        (rowid, event id hex, patient_key, kind, detail, occurred_at, campaign, purpose)."""
        marks = ", ".join("?" * len(kinds))
        rows = self._connection.execute(
            "select rowid, lower(hex(event_id)), patient_key, kind, detail, occurred_at, campaign, purpose"
            f" from engagement_log where rowid > ? and kind in ({marks}) order by rowid",
            (after_rowid, *kinds),
        )
        return rows.fetchall()

    def export_cursor(self) -> int:
        """The last row exported to the lake (``export.py``), 0 before the first export."""
        return self._connection.execute("select coalesce(max(last_rowid), 0) from engagement_exports").fetchone()[0]

    def record_export(self, batch: str, last_rowid: int, events: int) -> None:
        self._connection.execute(
            "insert into engagement_exports values (?, ?, ?, ?)",
            (batch, last_rowid, events, datetime.now(UTC).isoformat(timespec="seconds")),
        )

    def events_of_patient(self, patient_key: str) -> list[dict[str, str | None]]:
        """Every stored event of one patient, oldest first, for the audit (no index: audits are rare,
        and one more index would slow every million-event batch)."""
        rows = self._connection.execute(
            "select message_key, campaign, send_date, kind, detail, source, occurred_at from engagement_log"
            " where patient_key = ? order by occurred_at",
            (patient_key,),
        )
        names = ("message_key", "campaign", "send_date", "kind", "detail", "source", "occurred_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def event_counts(self, campaign: str, send_date: str) -> dict[str, int]:
        """Stored events of one campaign run, per kind."""
        rows = self._connection.execute(
            "select kind, count(*) from engagement_log where campaign = ? and send_date = ? group by kind",
            (campaign, send_date),
        )
        return dict(rows.fetchall())

    def batch_fingerprint(self, batch: str) -> str | None:
        """The fingerprint a feedback batch had when it was ingested, or None if it never was."""
        row = self._connection.execute("select fingerprint from feedback_batches where batch = ?", (batch,)).fetchone()
        return row[0] if row else None

    def record_batch(self, batch: str, fingerprint: str, counts: dict) -> None:
        """Journal a feedback batch as ingested (its counts only, never a value)."""
        self._connection.execute(
            "insert or replace into feedback_batches values (?, ?, ?, ?)",
            (batch, fingerprint, json.dumps(counts, sort_keys=True), datetime.now(UTC).isoformat(timespec="seconds")),
        )

    def _apply_feedback_rules(self, events: list[tuple[str, str | None, str | None, str, str]]) -> dict[str, int]:
        """Suppress the patients new events (kind, detail, purpose, patient key, source) call for; return
        the suppressions actually added, per reason."""
        wanted: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for kind, detail, purpose, patient_key, source in events:
            suppression = suppression_for(kind, detail, purpose)
            if suppression is not None:
                wanted[(*suppression, source)].add(patient_key)
        added: Counter[str] = Counter()
        for (reason, purpose, source), patient_keys in sorted(wanted.items()):
            before = self._connection.total_changes
            self.suppress(sorted(patient_keys), reason, purpose, source=f"engagement:{source}")
            added[reason] += self._connection.total_changes - before
        return dict(added)

    def _transaction(self):
        """The ledger's transaction, or nothing when one is open already (``suppress`` inside ours)."""
        if self._connection.in_transaction:
            return contextlib.nullcontext()
        return super()._transaction()
