"""Deliver a campaign run's outbox: idempotent, crash-safe, rate-limited, in parallel worker processes.

Per chunk of outbox rows, in each worker:

1. skip what the ledger already decided (delivered, bounced, failed, held, excluded, or deferred
   with its retry time not come yet);
2. check again, just before sending: suppressions recorded since the audience was built (an
   unsubscribe, a hard bounce, a complaint) and the consent re-check made when this delivery
   started, so a late revocation still wins; then the send window in the recipient's time zone;
3. reserve the rest in the ledger (durable), then build, sign and send them over the pool;
4. commit every outcome (durable); hard bounces become global suppressions.

A crash between 3 and 4 leaves the chunk *reserved*; the next run holds those messages (in doubt,
for ``carecast deliver resolve``) instead of sending them again, so no crash can duplicate a
message, and none is lost: each ends delivered, bounced, failed, deferred, held or excluded.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from carecast.campaigns import Campaign
from carecast.crypto.access_log import AccessContext, access_context
from carecast.crypto.kms import LocalKms
from carecast.delivery.compose import Composer
from carecast.delivery.pool import Attempted, ConnectionPool, in_doubt
from carecast.delivery.transports import Transport, TransportSpec
from carecast.lake import Lake
from carecast.ledger import Ledger, Outcome, Planned
from carecast.mail import MailTransportError
from carecast.mail.dkim import DkimKeys
from carecast.mail.rate_limit import RateLimiter
from carecast.registry import SchemaRegistry
from carecast.send_windows import SendWindow, is_open, next_opening
from carecast.streams import Stream

CHUNK_ROWS = 200
"""Messages per reserve/commit: a crash holds at most this many per worker for an operator."""
OUTBOX_ROW_GROUP = 5_000
"""Outbox row groups: the unit a worker takes (group number modulo the number of workers)."""
SEND_COLUMNS = ("message_key", "patient_key", "variant", "to_addr", "subject", "body_text", "body_html")
OPTIONAL_COLUMNS = ("unsubscribe_token", "time_zone")


@dataclass(frozen=True)
class DeliveryPlan:
    """Everything a worker needs, as picklable data."""

    campaign: Campaign
    stream: Stream
    send_date: str
    transport: TransportSpec
    dkim: DkimKeys | None
    excluded_now: dict[str, str] = field(default_factory=dict)
    """Patient key -> reason from the consent re-check made when this delivery started."""
    send_window: SendWindow | None = None
    chunk_rows: int = CHUNK_ROWS


@dataclass
class DeliveryCounts:
    """What one delivery run did, counts only (safe for metadata and logs)."""

    outcomes: Counter = field(default_factory=Counter)
    """State -> messages this run decided (delivered, bounced, failed, deferred, excluded)."""
    reasons: Counter = field(default_factory=Counter)
    """``state:reason`` -> messages, for the states that carry one."""
    already_decided: int = 0
    tries: int = 0

    def add(self, other: DeliveryCounts) -> None:
        self.outcomes.update(other.outcomes)
        self.reasons.update(other.reasons)
        self.already_decided += other.already_decided
        self.tries += other.tries

    def as_dict(self) -> dict:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "reasons": dict(sorted(self.reasons.items())),
            "already_decided": self.already_decided,
            "tries": self.tries,
        }


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ShardSender:
    """Sends chunks of outbox rows through a pool, keeping the ledger's promises (module docstring)."""

    def __init__(
        self,
        plan: DeliveryPlan,
        ledger: Ledger,
        pool: ConnectionPool,
        composer: Composer,
        clock: Callable[[], datetime] = _utc_now,
    ):
        self.plan, self.ledger, self.pool, self.composer, self.clock = plan, ledger, pool, composer, clock
        self.counts = DeliveryCounts()

    def send_all(self, chunks: Iterable[list[dict]]) -> DeliveryCounts:
        for rows in chunks:
            self._send_chunk(rows)
        return self.counts

    def _send_chunk(self, rows: list[dict]) -> None:
        plan, campaign, now = self.plan, self.plan.campaign, self.clock()
        sendable = self.ledger.sendable([row["message_key"] for row in rows], _iso(now))
        self.counts.already_decided += len(rows) - len(sendable)
        rows = [row for row in rows if row["message_key"] in sendable]
        if not rows:
            return
        unsent, to_send = self._check_before_sending(rows, now)
        if unsent:
            self.ledger.record_unsent(campaign.name, campaign.purpose, plan.send_date, unsent)
            self._count(outcome for _planned, outcome in unsent)
        if not to_send:
            return
        self.ledger.reserve(campaign.name, campaign.purpose, plan.send_date, [_planned(row) for row in to_send])
        runs = self.ledger.attempts([row["message_key"] for row in to_send])
        outcomes, bounced, failure, sending = [], [], None, []
        for row in to_send:
            try:
                raw = self.composer.compose(row)
            except ValueError:  # a value no message can carry (a line break in an address): never sendable
                outcomes.append(Outcome(row["message_key"], "failed", None, "unbuildable"))
                continue
            sending.append((row, self.pool.submit(raw, self.composer.mail_from, row["to_addr"])))
        for row, future in sending:
            try:
                attempted: Attempted = future.result()
            except MailTransportError as error:  # never reached the server: try again next run
                failure = failure or error
                outcomes.append(Outcome(row["message_key"], "deferred", None, "transport_error", _iso(now)))
                continue
            self.counts.tries += attempted.tries
            outcomes.append(self._outcome(row, attempted, runs.get(row["message_key"], 1)))
            if outcomes[-1].state == "bounced":
                bounced.append(row["patient_key"])
        self.ledger.commit(outcomes)
        self._count(outcomes)
        if bounced:
            self.ledger.suppress(bounced, "hard_bounce", "all", source=f"delivery:{plan.stream.name}")
        if failure is not None:
            raise failure

    def _check_before_sending(self, rows: list[dict], now: datetime) -> tuple[list, list[dict]]:
        plan = self.plan
        suppressed = self.ledger.suppressed_among([row["patient_key"] for row in rows], plan.campaign.purpose)
        window, openings = plan.send_window, {}
        unsent, to_send = [], []
        for row in rows:
            reason = suppressed.get(row["patient_key"]) or plan.excluded_now.get(row["patient_key"])
            if reason:
                unsent.append((_planned(row), Outcome(row["message_key"], "excluded", reason=reason)))
                continue
            if window is not None:
                zone = row.get("time_zone") or ""
                if zone not in openings:
                    openings[zone] = None if is_open(window, zone, now) else next_opening(window, zone, now)
                if openings[zone] is not None:
                    outcome = Outcome(
                        row["message_key"], "deferred", reason="send_window", next_attempt_at=_iso(openings[zone])
                    )
                    unsent.append((_planned(row), outcome))
                    continue
            to_send.append(row)
        return unsent, to_send

    def _outcome(self, row: dict, attempted: Attempted, runs: int) -> Outcome:
        key, sent = row["message_key"], attempted.outcome
        if sent.status == "delivered":
            return Outcome(key, "delivered", sent.smtp_code, provider_message_id=sent.provider_message_id)
        if sent.status == "bounced":
            return Outcome(key, "bounced", sent.smtp_code, "hard_bounce")
        if in_doubt(sent):
            return Outcome(key, "held", sent.smtp_code, "in_doubt_connection_lost")
        retry = self.plan.stream.retry
        if runs >= retry.max_runs:
            return Outcome(key, "failed", sent.smtp_code, "retries_exhausted")
        later = self.clock() + timedelta(minutes=retry.retry_after_minutes)
        return Outcome(key, "deferred", sent.smtp_code, "temporary_failure", _iso(later))

    def _count(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self.counts.outcomes[outcome.state] += 1
            if outcome.reason:
                self.counts.reasons[f"{outcome.state}:{outcome.reason}"] += 1


def _planned(row: dict) -> Planned:
    return Planned(row["message_key"], row["patient_key"], row["variant"])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def chunks_of(table: pa.Table, rows: int) -> Iterator[list[dict]]:
    for batch in table.to_batches(max_chunksize=rows):
        yield batch.to_pylist()


def outbox_columns(available: Iterable[str]) -> list[str]:
    return [*SEND_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in set(available))]


def deliver_table(
    outbox: pa.Table,
    plan: DeliveryPlan,
    ledger: Ledger,
    open_transport: Callable[[], Transport],
    limiter: RateLimiter | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> DeliveryCounts:
    """Deliver an outbox in this process over ``plan.stream.connections`` connections."""
    signer = plan.dkim.signer(unsigned=plan.transport.rewritten_headers) if plan.dkim else None
    composer = Composer(plan.campaign, plan.stream, signer, clock)
    with ConnectionPool(open_transport, plan.stream.connections, limiter, plan.stream.retry) as pool:
        sender = ShardSender(plan, ledger, pool, composer, clock)
        return sender.send_all(chunks_of(outbox.select(outbox_columns(outbox.column_names)), plan.chunk_rows))


@dataclass(frozen=True)
class OutboxShard:
    """Where a worker finds its part of the outbox: a lake version and a row-group shard of it."""

    lake_root: Path
    keys_dir: Path
    registry: SchemaRegistry
    dataset: str
    version: int
    state_db: Path


_worker_limiter: RateLimiter | None = None


def _install_limiter(limiter: RateLimiter | None) -> None:
    global _worker_limiter
    _worker_limiter = limiter


def _deliver_shard(
    shard: OutboxShard, index: int, count: int, plan: DeliveryPlan, access: AccessContext
) -> DeliveryCounts:
    with access_context(run_id=access.run_id, asset=access.asset, purpose=access.purpose):
        lake = Lake(shard.lake_root, LocalKms(shard.keys_dir), shard.registry)
        columns = outbox_columns(lake.columns(shard.dataset, shard.version))
        part = lake.read(shard.dataset, columns, version=shard.version, shard=(index, count)).table
        with Ledger(shard.state_db) as ledger:
            return deliver_table(part, plan, ledger, plan.transport.open, _worker_limiter)


def deliver_in_workers(shard: OutboxShard, plan: DeliveryPlan, workers: int, access: AccessContext) -> DeliveryCounts:
    """Deliver in ``workers`` spawned processes, each taking every ``workers``-th row group of the outbox,
    all under one rate limit. The caller holds in-doubt messages first (no other delivery may run)."""
    context = multiprocessing.get_context("spawn")
    total = DeliveryCounts()
    with (
        RateLimiter.create(plan.stream.rate_limit, context) as limiter,
        ProcessPoolExecutor(workers, mp_context=context, initializer=_install_limiter, initargs=(limiter,)) as pool,
    ):
        futures = [pool.submit(_deliver_shard, shard, index, workers, plan, access) for index in range(workers)]
        failures = []
        for future in futures:
            try:
                total.add(future.result())
            except Exception as error:  # let every worker finish its chunk and commit before failing
                failures.append(error)
    if failures:
        raise failures[0]
    return total
