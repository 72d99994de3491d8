"""Delivery at scale: N messages rendered, built, DKIM-signed and sent over STARTTLS, against a naive script.

carecast: the render stage (one message per audience member, written encrypted) then the delivery
stage (worker processes, pipelined connections, the rate limit, the ledger), timed together, to
Postfix on loopback (``bench/postfix.py``: a private instance, ``discard`` transport, queue on
tmpfs) and to the embedded sink. The naive script (``bench/naive_delivery.py``: ``EmailMessage``,
stock dkimpy, one connection) sends a sample to the same Postfix; its time is scaled to N.

Setup, untimed: the campaign's audience and the profile columns rendering reads, written to the lake
as the audience and model stages leave them, for N made-up recipients under reserved domains.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.isolation import peak_mb
from bench.naive_delivery import run_naive_delivery
from bench.postfix import postfix_server
from bench.workload import CAMPAIGN, open_runtime
from carecast import stages
from carecast.audience import CONSENT_COLUMNS
from carecast.delivery import TransportSpec, open_target
from carecast.mail.dkim import ensure_dkim_keys

DOMAINS = ("example.org", "example.com", "example.net", "mail.example.org", "patients.example.net")
NAIVE_SAMPLE = 2_000


def prepare(home: Path, messages: int) -> dict[str, Any]:
    runtime = open_runtime(home)
    campaign = runtime.project.campaigns[CAMPAIGN]
    ids = [f"bench-{i:07d}" for i in range(messages)]
    keys = runtime.pseudonymizer().patient_keys(ids)
    runtime.lake.write(
        stages.audience_dataset(campaign),
        pa.table(
            {"patient_id": ids, "patient_key": keys, "variant": ["A", "B"] * (messages // 2) + ["A"] * (messages % 2)}
        ),
    )
    runtime.lake.write(
        "mart_patient_profile",
        pa.table(
            {
                "patient_id": ids,
                "email": [f"patient{i}@{DOMAINS[i % len(DOMAINS)]}" for i in range(messages)],
                "preferred_language": ["es" if i % 5 == 0 else "en" for i in range(messages)],
                "first_name": [f"Name{i}" for i in range(messages)],
                "is_email_opted_in": [True] * messages,
            }
        ),
    )
    consents = pa.table(
        {c: pa.array([], pa.timestamp("us") if c.endswith("_at") else pa.string()) for c in CONSENT_COLUMNS}
    )
    runtime.lake.write("mart_consent_latest", consents)
    return {"messages": messages}


def _render_and_deliver(home: Path, target: TransportSpec) -> dict[str, Any]:
    runtime = open_runtime(home)
    campaign = runtime.project.campaigns[CAMPAIGN]
    started = time.perf_counter()
    rendered = stages.render_campaign(runtime, campaign).metadata["rendered"]
    render_seconds = time.perf_counter() - started
    delivery = stages.deliver_campaign(runtime, campaign, target).metadata
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "render_seconds": round(render_seconds, 2),
        "rows": rendered,
        "messages_per_second": round(rendered / seconds),
        "states": delivery["ledger_states"],
        "tries": delivery["this_run"]["tries"],
    }


def to_postfix(home: Path, workdir: Path) -> dict[str, Any]:
    """Render and deliver everything to Postfix; then the naive sample to the same server."""
    with postfix_server(workdir) as server:
        target = TransportSpec(
            kind="smtp", host=server.host, port=server.port, pinned_cert_pem=server.cert_pem.decode()
        )
        cpu_before = server.cpu_seconds()
        measured = _render_and_deliver(home, target)
        drained = server.wait_drained(expected_delivered=measured["states"].get("delivered", 0), timeout=300)
        measured["postfix_cpu_ms_per_message"] = round(1000 * (server.cpu_seconds() - cpu_before) / measured["rows"], 2)
        measured["postfix_confirmed"] = drained
        measured["naive"] = _naive(home, server)
    measured["peak_mb"] = round(peak_mb(), 1)
    return measured


def to_embedded_sink(home: Path) -> dict[str, Any]:
    runtime = open_runtime(home)
    with open_target(runtime) as target:
        measured = _render_and_deliver(home, target)
    return {**measured, "peak_mb": round(peak_mb(), 1)}


def _naive(home: Path, server) -> dict[str, Any]:
    runtime = open_runtime(home)
    campaign = runtime.project.campaigns[CAMPAIGN]
    stream = runtime.project.stream_of(campaign)
    keys = ensure_dkim_keys(runtime.kms, runtime.home.keys, stream.dkim.domain, "naive-bench")
    body = (runtime.project.root / "templates" / campaign.template / "en.md.j2").read_text()
    recipients = [
        {"email": f"patient{i}@{DOMAINS[i % len(DOMAINS)]}", "first_name": f"Name{i}"} for i in range(NAIVE_SAMPLE)
    ]
    return run_naive_delivery(
        server.host,
        server.port,
        server.cert_pem,
        recipients,
        body,
        keys.rsa_private_pem,
        NAIVE_SAMPLE,
        sender=stream.sender.from_address,
        selector="naive-bench",
        shared={"organisation": stream.sender.organisation, "links": campaign.links},
    )
