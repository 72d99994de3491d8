"""The delivery stage: one campaign run's outbox to its stream's transport, and where that transport is.

``open_target`` turns run configuration (embedded sink, SMTP relay, SES) into a ``TransportSpec``
that worker processes can open; for the embedded sink it starts the sink for the duration.
``deliver_campaign`` holds in-doubt messages, re-checks consent as of now, loads the stream's DKIM
keys from the KMS and delivers, in worker processes when the KMS is local (workers reopen it from
the keys folder) and in this process otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from carecast.audience import CONSENT_COLUMNS, recheck_consent, to_be_sent
from carecast.campaigns import Campaign, audience_dataset, outbox_dataset
from carecast.crypto.access_log import current_access_context
from carecast.crypto.kms import LocalKms
from carecast.delivery.engine import (
    CHUNK_ROWS,
    DeliveryPlan,
    OutboxShard,
    deliver_in_workers,
    deliver_table,
    outbox_columns,
)
from carecast.delivery.transports import TransportSpec
from carecast.ledger import Ledger
from carecast.mail import EmbeddedSink, Mailbox, ensure_sink_certificate
from carecast.mail.dkim import ensure_dkim_keys
from carecast.mail.rate_limit import RateLimiter
from carecast.models.runner import describe_reads
from carecast.run_lineage import run_version
from carecast.runtime import Runtime

TargetKind = Literal["embedded_sink", "smtp", "ses"]


@contextlib.contextmanager
def open_target(
    runtime: Runtime,
    kind: TargetKind = "embedded_sink",
    host: str = "127.0.0.1",
    port: int = 587,
    server_hostname: str = "localhost",
    pinned_cert_path: str = "",
    ses_region: str = "",
    ses_configuration_set: str | None = None,
) -> Iterator[TransportSpec]:
    if kind == "smtp":
        pem = Path(pinned_cert_path).read_text()
        yield TransportSpec(kind="smtp", host=host, port=port, pinned_cert_pem=pem, server_hostname=server_hostname)
        return
    if kind == "ses":
        yield TransportSpec(kind="ses", ses_region=ses_region, ses_configuration_set=ses_configuration_set)
        return
    cert_path, key_path = ensure_sink_certificate(runtime.home.keys / "sink")
    runtime.start_epoch("mailbox")
    with Mailbox(runtime.home.mailbox, runtime.kms) as mailbox, EmbeddedSink(mailbox, cert_path, key_path) as sink:
        yield TransportSpec(kind="smtp", host=sink.host, port=sink.port, pinned_cert_pem=cert_path.read_text())


def deliver_campaign(
    runtime: Runtime,
    campaign: Campaign,
    target: TransportSpec,
    workers: int | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """Deliver what the ledger has not decided yet; return metadata (counts, versions, key ids)."""
    stream = runtime.project.stream_of(campaign)
    lake, outbox = runtime.lake, outbox_dataset(campaign)
    version = lake.version(outbox, run_version(runtime, campaign, "render"))
    dkim = ensure_dkim_keys(
        runtime.kms, runtime.home.keys, stream.dkim.domain, stream.dkim.rsa_selector, stream.dkim.ed25519_selector
    )
    members = lake.read(
        audience_dataset(campaign), ["patient_id", "patient_key", "variant"], run_version(runtime, campaign, "audience")
    )
    reads = (
        members,
        lake.read("mart_patient_profile", ["patient_id", "is_email_opted_in"]),
        lake.read("mart_consent_latest", list(CONSENT_COLUMNS)),
    )
    excluded_now = recheck_consent(
        campaign,
        to_be_sent(members.table).select(["patient_id", "patient_key"]),
        reads[1].table,
        reads[2].table,
        runtime.send_time,
    )
    with Ledger(runtime.home.state_db) as ledger:
        held = ledger.hold_in_doubt(campaign.name, runtime.send_date)
    plan = DeliveryPlan(
        campaign=campaign,
        stream=stream,
        send_date=runtime.send_date,
        transport=target,
        dkim=dkim,
        excluded_now=excluded_now,
        send_window=campaign.send_window,
        chunk_rows=chunk_rows or CHUNK_ROWS,
    )
    workers = workers or stream.workers
    if workers > 1 and isinstance(runtime.kms, LocalKms):
        shard = OutboxShard(
            lake.root,
            runtime.home.keys,
            runtime.project.registry,
            outbox,
            version.version,
            runtime.home.state_db,
        )
        counts = deliver_in_workers(shard, plan, workers, current_access_context())
        outbox_read = None
    else:
        outbox_read = lake.read(outbox, outbox_columns(lake.columns(outbox, version.version)), version.version)
        with Ledger(runtime.home.state_db) as ledger, RateLimiter.create(stream.rate_limit) as limiter:
            counts = deliver_table(outbox_read.table, plan, ledger, target.open, limiter)
    with Ledger(runtime.home.state_db) as ledger:
        states = ledger.counts(campaign.name, runtime.send_date)
    metadata = {
        "outbox": version.rows,
        "outbox_version": version.ref,
        "stream": stream.name,
        "transport": target.kind,
        "workers": workers,
        "connections_per_worker": stream.connections,
        "held_in_doubt_now": held,
        "consent_recheck_excluded": len(excluded_now),
        "this_run": counts.as_dict(),
        "ledger_states": states,
        "dkim_selectors": [s for s in (stream.dkim.rsa_selector, stream.dkim.ed25519_selector) if s],
        **describe_reads(lake, tuple(read for read in (*reads, outbox_read) if read is not None)),
    }
    if outbox_read is None:
        metadata["outbox_read_by_workers"] = {"dataset_version": version.ref, "shards": workers}
    return metadata
