"""Delivery's promises checked from the outside: a real ``carecast deliver run`` process killed with
SIGKILL at random points and re-run (no duplicate at the server, nothing lost, what was in flight
held), and the rate limit measured at the server across worker processes and connections."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, deque
from datetime import date
from pathlib import Path

import pyarrow as pa

from carecast import stages
from carecast.audience import CONSENT_COLUMNS
from carecast.crypto.access_log import AccessContext
from carecast.delivery import TransportSpec
from carecast.delivery.engine import DeliveryPlan, OutboxShard, deliver_in_workers
from carecast.home import CarecastHome
from carecast.ledger import Ledger
from carecast.mail import EmbeddedSink, Mailbox, SinkHandler, ensure_sink_certificate
from carecast.mail.mailbox import message_id_sha256
from carecast.mail.rate_limit import RateLimitConfig
from carecast.project import Project, load_project
from carecast.rendering import render_outbox
from carecast.runtime import Runtime

AS_OF = "2026-11-23"
CAMPAIGN = "breast_screening_reminder"
KILLS = 20


def _landed_outbox(home: CarecastHome, project: Project, count: int, domains: list[str]) -> pa.Table:
    """An audience and its rendered outbox in the lake, as the audience and outbox stages leave them."""
    campaign = project.campaigns[CAMPAIGN]
    runtime = Runtime.open(home, project, as_of=date.fromisoformat(AS_OF))
    ids = [f"patient-{i:05d}" for i in range(count)]
    keys = runtime.pseudonymizer().patient_keys(ids)
    runtime.lake.write(
        stages.audience_dataset(campaign),
        pa.table({"patient_id": ids, "patient_key": keys, "variant": ["A"] * count}),
    )
    runtime.lake.write("mart_patient_profile", pa.table({"patient_id": ids, "is_email_opted_in": [True] * count}))
    empty = pa.table(
        {c: pa.array([], pa.timestamp("us") if c.endswith("_at") else pa.string()) for c in CONSENT_COLUMNS}
    )
    runtime.lake.write("mart_consent_latest", empty)
    recipients = pa.table(
        {
            "patient_key": keys,
            "variant": ["A"] * count,
            "email": [f"p{i}@{domains[i % len(domains)]}" for i in range(count)],
            "preferred_language": ["en"] * count,
            "first_name": [f"Name{i}" for i in range(count)],
        }
    )
    outbox = render_outbox(
        campaign, project.stream_of(campaign), project.templates[campaign.template], recipients, AS_OF
    )
    runtime.lake.write(stages.outbox_dataset(campaign), outbox, row_group_rows=250)
    return outbox


def _ledger_rows(state_db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("select count(*) from send_ledger").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_at_random_points_never_duplicates_or_loses_a_message(tmp_path: Path) -> None:
    project = load_project()
    home = CarecastHome(tmp_path / "home").ensure()
    outbox = _landed_outbox(home, project, 3000, ["example.org"] * 19 + ["bounce.invalid"])
    kms_home = Runtime.open(home, project).kms
    cert, key = ensure_sink_certificate(home.keys / "sink")
    rng = random.Random(20261123)
    environment = {**os.environ, "CARECAST_HOME": str(home.root)}
    with Mailbox(tmp_path / "server-mailbox", kms_home) as mailbox, EmbeddedSink(mailbox, cert, key) as server:
        command = [
            sys.executable, "-m", "carecast.cli", "deliver", "run", "--campaign", CAMPAIGN, "--as-of", AS_OF,
            "--transport", "smtp", "--host", server.host, "--port", str(server.port), "--cert", str(cert),
            "--chunk-rows", "20",
        ]  # fmt: skip
        held_after_kills = 0
        for run in range(KILLS):
            workers = "2" if run % 2 else "1"
            process = subprocess.Popen(
                [*command, "--workers", workers], env=environment, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if run % 5 == 4:  # now and then, at any moment, start-up included
                time.sleep(rng.uniform(0.0, 3.0))
            else:  # mostly while messages are in flight
                before = _ledger_rows(home.state_db)
                deadline = time.monotonic() + 60
                while _ledger_rows(home.state_db) == before and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.5))
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            with Ledger(home.state_db) as ledger:
                held_after_kills += ledger.hold_in_doubt(CAMPAIGN, AS_OF)
        final = subprocess.run(
            [*command, "--workers", "2"], env=environment, capture_output=True, text=True, timeout=300
        )
        assert final.returncode == 0, final.stderr[-2000:]
        mailbox.flush()
        received = Counter(mailbox.message_id_hashes())
    with sqlite3.connect(home.state_db) as connection:
        state_of = dict(connection.execute("select message_key, state from send_ledger"))
    states = Counter(state_of.values())
    assert held_after_kills > 0, "no kill landed while messages were in flight"
    assert len(state_of) == 3000, "every message ends in exactly one state"
    assert set(states) <= {"delivered", "bounced", "held"} and states["held"] == held_after_kills
    assert max(received.values()) == 1, "a message reached the server twice"
    domain = project.stream_of(project.campaigns[CAMPAIGN]).sender.domain
    id_of = {key: message_id_sha256(f"<{key}@{domain}>") for key in outbox.column("message_key").to_pylist()}
    delivered = {id_of[key] for key, state in state_of.items() if state == "delivered"}
    in_doubt = {id_of[key] for key, state in state_of.items() if state == "held"}
    assert delivered <= set(received), "a message the ledger calls delivered is not at the server"
    assert set(received) <= delivered | in_doubt, "the server has a message the ledger cannot account for"


class _TimingHandler(SinkHandler):
    """Records when the server accepted each message, and for which domain."""

    accepted: deque = deque()

    async def handle_DATA(self, server, session, envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        _TimingHandler.accepted.append((time.monotonic(), envelope.rcpt_tos[0].rpartition("@")[2]))
        return reply


class _TimingSink(EmbeddedSink):
    handler_class = _TimingHandler


def _busiest_second(times: list[float]) -> int:
    times, start, busiest = sorted(times), 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


def test_the_rate_limit_holds_at_the_server_across_workers_and_connections(tmp_path: Path) -> None:
    project = load_project()
    home = CarecastHome(tmp_path / "home").ensure()
    _landed_outbox(home, project, 600, ["example.org", "example.org", "slow.example.net"])
    runtime = Runtime.open(home, project)
    campaign = project.campaigns[CAMPAIGN]
    limits = RateLimitConfig.model_validate({"global_limit": 150, "domains": {"slow.example.net": 40}})
    stream = project.stream_of(campaign).model_copy(update={"rate_limit": limits, "connections": 3})
    cert, key = ensure_sink_certificate(home.keys / "sink")
    _TimingHandler.accepted.clear()
    with Mailbox(tmp_path / "server-mailbox", runtime.kms) as mailbox, _TimingSink(mailbox, cert, key) as server:
        spec = TransportSpec(kind="smtp", host=server.host, port=server.port, pinned_cert_pem=cert.read_text())
        plan = DeliveryPlan(campaign=campaign, stream=stream, send_date=AS_OF, transport=spec, dkim=None)
        shard = OutboxShard(home.lake, home.keys, project.registry, stages.outbox_dataset(campaign), 1, home.state_db)
        counts = deliver_in_workers(shard, plan, 2, AccessContext())
    accepted = list(_TimingHandler.accepted)
    assert counts.outcomes == {"delivered": 600} and len(accepted) == 600
    overall = _busiest_second([moment for moment, _domain in accepted])
    slow = _busiest_second([moment for moment, domain in accepted if domain == "slow.example.net"])
    assert overall <= 150 and slow <= 40
    # Not a speed test: only proof that the sends pressed against the ceiling, so the bound above was
    # tested rather than met by accident (119/s was seen on a busy fresh machine).
    assert overall >= 100, f"the sends never came near the ceiling ({overall}/s): the bound proves nothing"
