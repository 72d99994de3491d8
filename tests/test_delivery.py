"""Delivery against the real embedded STARTTLS sink: idempotent re-runs, in-doubt messages held."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pytest

from carecast.campaigns import Campaign
from carecast.delivery import deliver_outbox
from carecast.home import CarecastHome
from carecast.ledger import Ledger
from carecast.mail import EmbeddedSink, Mailbox, SmtpTransport, ensure_sink_certificate
from carecast.mail.mailbox import message_id_sha256
from carecast.project import Project
from carecast.rendering import render_outbox

SEND_DATE = "2026-11-23"


class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so nothing on the way catches it."""


@pytest.fixture
def campaign(project: Project) -> Campaign:
    return project.campaigns["breast_screening_reminder"]


@pytest.fixture
def outbox(project: Project, campaign: Campaign) -> pa.Table:
    domains = ["example.org"] * 9 + ["bounce.invalid"]
    recipients = pa.Table.from_pylist(
        [
            {
                "patient_key": f"key{i:03d}",
                "variant": "A",
                "email": f"p{i}@{domains[i % 10]}",
                "preferred_language": "en",
                "first_name": f"Name{i}",
            }
            for i in range(50)
        ]
    )
    return render_outbox(campaign, project.templates[campaign.template], recipients, SEND_DATE)


@pytest.fixture
def sink(home: CarecastHome, kms) -> Iterator[tuple[EmbeddedSink, bytes]]:
    cert, key = ensure_sink_certificate(home.keys / "sink")
    with Mailbox(home.mailbox, kms) as mailbox, EmbeddedSink(mailbox, cert, key) as server:
        yield server, cert.read_bytes()


class CrashingTransport:
    """Sends for real, then dies after ``after`` messages."""

    def __init__(self, transport: SmtpTransport, after: int):
        self.transport, self.after, self.sent = transport, after, 0

    def send(self, raw: bytes, mail_from: str, recipient: str):
        if self.sent == self.after:
            raise Crash
        self.sent += 1
        return self.transport.send(raw, mail_from, recipient)


def _server_message_ids(server: EmbeddedSink) -> Counter:
    server.mailbox.flush()
    return Counter(server.mailbox.message_id_hashes())


def test_delivery_is_idempotent_and_bounces_are_suppressed(home, campaign, outbox, sink) -> None:
    server, pem = sink
    with Ledger(home.state_db) as ledger, SmtpTransport(server.host, server.port, pem) as transport:
        first = deliver_outbox(outbox, campaign, SEND_DATE, ledger, transport, batch_size=16)
        again = deliver_outbox(outbox, campaign, SEND_DATE, ledger, transport, batch_size=16)
        suppressed = ledger.suppressions_for("treatment")
    assert first.states == {"delivered": 45, "bounced": 5}
    assert first.attempted == 50 and again.attempted == 0 and again.skipped_final == 50
    assert again.states == first.states
    received = _server_message_ids(server)
    assert sum(received.values()) == 45 and max(received.values()) == 1
    expected = {
        message_id_sha256(f"<{key}@riverside-health.example.org>") for key in outbox.column("message_key").to_pylist()
    }
    assert set(received) <= expected
    assert set(suppressed.values()) == {"hard_bounce"} and len(suppressed) == 5


@pytest.mark.parametrize("crash_after", [0, 7, 16, 23, 49])
def test_a_crash_mid_send_never_duplicates_and_holds_what_is_in_doubt(
    home, campaign, outbox, sink, crash_after
) -> None:
    server, pem = sink
    with Ledger(home.state_db) as ledger, SmtpTransport(server.host, server.port, pem) as transport:
        with pytest.raises(Crash):
            deliver_outbox(
                outbox, campaign, SEND_DATE, ledger, CrashingTransport(transport, crash_after), batch_size=16
            )
        rerun = deliver_outbox(outbox, campaign, SEND_DATE, ledger, transport, batch_size=16)
    in_doubt_batch = 16 if crash_after < 48 else 50 - 48
    assert rerun.held_in_doubt == in_doubt_batch
    assert sum(rerun.states.values()) == 50
    assert rerun.states.get("held", 0) == in_doubt_batch
    received = _server_message_ids(server)
    assert max(received.values(), default=1) == 1, "a message reached the server twice"
    delivered = rerun.states.get("delivered", 0)
    held_but_sent = crash_after - (crash_after // 16) * 16
    assert sum(received.values()) == delivered + held_but_sent - _bounced_among_first(outbox, crash_after)


def _bounced_among_first(outbox: pa.Table, crash_after: int) -> int:
    start = (crash_after // 16) * 16
    return sum(1 for addr in outbox.column("to_addr").to_pylist()[start:crash_after] if addr.endswith("bounce.invalid"))
