"""Delivery against the real embedded STARTTLS sink: idempotent re-runs, in-doubt messages held,
DKIM that verifies, the headers each stream requires, checks just before sending, send windows."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dkim
import pyarrow as pa
import pytest

from carecast.campaigns import Campaign
from carecast.delivery import DeliveryPlan, TransportSpec, deliver_table
from carecast.engagement.events import EngagementEvents
from carecast.engagement.feedback import FeedbackEvent
from carecast.home import CarecastHome
from carecast.ledger import Ledger
from carecast.mail import EmbeddedSink, Mailbox, ensure_sink_certificate
from carecast.mail.dkim import DkimKeys, dns_txt_records, ensure_dkim_keys
from carecast.mail.mailbox import message_id_sha256
from carecast.project import Project
from carecast.rendering import render_outbox
from carecast.send_windows import SendWindow
from carecast.streams import Stream
from carecast.tracking import RecipientLinks

SEND_DATE = "2026-11-23"
MORNING_IN_BOSTON = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so nothing on the way catches it."""


@pytest.fixture
def campaign(project: Project) -> Campaign:
    return project.campaigns["breast_screening_reminder"]


def _recipients(count: int, domains: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "patient_key": f"{i:032x}",
                "variant": "A",
                "email": f"p{i}@{domains[i % len(domains)]}",
                "preferred_language": "en",
                "first_name": f"Name{i}",
            }
            for i in range(count)
        ]
    )


@pytest.fixture
def outbox(project: Project, campaign: Campaign) -> pa.Table:
    recipients = _recipients(50, ["example.org"] * 9 + ["bounce.invalid"])
    stream = project.stream_of(campaign)
    return render_outbox(campaign, stream, project.templates[campaign.template], recipients, SEND_DATE)


@pytest.fixture
def sink(home: CarecastHome, kms) -> Iterator[tuple[EmbeddedSink, TransportSpec]]:
    cert, key = ensure_sink_certificate(home.keys / "sink")
    with Mailbox(home.mailbox, kms) as mailbox, EmbeddedSink(mailbox, cert, key) as server:
        yield server, TransportSpec(kind="smtp", host=server.host, port=server.port, pinned_cert_pem=cert.read_text())


@pytest.fixture
def dkim_keys(kms, home: CarecastHome, project: Project, campaign: Campaign) -> DkimKeys:
    settings = project.stream_of(campaign).dkim
    return ensure_dkim_keys(kms, home.keys, settings.domain, settings.rsa_selector, settings.ed25519_selector)


def _plan(project: Project, campaign: Campaign, spec: TransportSpec, keys: DkimKeys | None, **changes) -> DeliveryPlan:
    stream = changes.pop("stream", project.stream_of(campaign))
    return DeliveryPlan(
        campaign=campaign, stream=stream, send_date=SEND_DATE, transport=spec, dkim=keys, chunk_rows=16, **changes
    )


def _server_message_ids(server: EmbeddedSink) -> Counter:
    server.mailbox.flush()
    return Counter(server.mailbox.message_id_hashes())


def _dns(keys: DkimKeys):
    records = {name: value.encode() for name, value in dns_txt_records(keys).items()}
    return lambda name, timeout=5: records.get(name.decode().rstrip("."))


def test_delivery_is_idempotent_signed_and_bounces_are_suppressed(
    home, project, campaign, outbox, sink, dkim_keys
) -> None:
    server, spec = sink
    plan = _plan(project, campaign, spec, dkim_keys)
    with Ledger(home.state_db) as ledger:
        first = deliver_table(outbox, plan, ledger, spec.open)
        again = deliver_table(outbox, plan, ledger, spec.open)
        suppressed = ledger.suppressions_for("treatment")
        states = ledger.counts(campaign.name, SEND_DATE)
    assert first.outcomes == {"delivered": 45, "bounced": 5}
    assert again.outcomes == {} and again.already_decided == 50
    assert states == {"delivered": 45, "bounced": 5}
    received = _server_message_ids(server)
    assert sum(received.values()) == 45 and max(received.values()) == 1
    expected = {
        message_id_sha256(f"<{key}@riverside-health.example.org>") for key in outbox.column("message_key").to_pylist()
    }
    assert set(received) <= expected
    assert set(suppressed.values()) == {"hard_bounce"} and len(suppressed) == 5
    for stored in server.mailbox.read_all():
        parsed = email.message_from_bytes(stored.data, policy=email.policy.default)
        assert parsed["List-Unsubscribe"] is None, "treatment mail carries no unsubscribe headers"
        assert parsed["Reply-To"] == "care-team@riverside-health.example.org"
        signatures = parsed.get_all("DKIM-Signature")
        assert len(signatures) == 2 and "a=rsa-sha256" in signatures[0] and "a=ed25519-sha256" in signatures[1]
        assert dkim.DKIM(stored.data).verify(idx=0, dnsfunc=_dns(dkim_keys))
        assert dkim.DKIM(stored.data).verify(idx=1, dnsfunc=_dns(dkim_keys))


def test_marketing_mail_carries_signed_one_click_unsubscribe(home, kms, project, campaign, sink) -> None:
    server, spec = sink
    marketing: Stream = project.streams["marketing"]
    promo = campaign.model_copy(update={"name": "promo", "purpose": "marketing", "stream": "marketing"})
    template = project.templates[campaign.template]
    recipients = _recipients(3, ["example.org"])
    tokens = [f"tok{i}" for i in range(3)]
    links = RecipientLinks(unsubscribe=tokens, clicks={}, opens=None)
    outbox = render_outbox(promo, marketing, template, recipients, SEND_DATE, links)
    keys = ensure_dkim_keys(kms, home.keys, marketing.dkim.domain, marketing.dkim.rsa_selector)
    with Ledger(home.state_db) as ledger:
        counts = deliver_table(outbox, _plan(project, promo, spec, keys, stream=marketing), ledger, spec.open)
    assert counts.outcomes == {"delivered": 3}
    for stored in server.mailbox.read_all():
        parsed = email.message_from_bytes(stored.data, policy=email.policy.default)
        token = next(t for t in tokens if t in parsed["List-Unsubscribe"])
        assert parsed["List-Unsubscribe"] == (
            f"<https://news.riverside-health.example.org/u/{token}>, "
            f"<mailto:unsubscribe@news.riverside-health.example.org?subject=unsubscribe%20{token}>"
        )
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert parsed["From"].addresses[0].domain == "news.riverside-health.example.org"
        signed = parsed["DKIM-Signature"].split("h=")[1].split(";")[0].replace(" ", "").replace("\r\n", "").lower()
        assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed, "RFC 8058: both must be signed"
        assert dkim.DKIM(stored.data).verify(dnsfunc=_dns(keys))
        footer = parsed.get_body(("plain",)).get_content()
        assert (
            "100 Example Avenue" in footer
            and f"Unsubscribe: https://news.riverside-health.example.org/u/{token}" in footer
        )


class CrashingTransport:
    """A real connection that dies (as the process would) before its ``after``-th message."""

    def __init__(self, spec: TransportSpec, budget: list[int]):
        self.transport, self.budget = spec.open(), budget

    def send(self, raw: bytes, mail_from: str, recipient: str):
        if self.budget[0] == 0:
            raise Crash
        self.budget[0] -= 1
        return self.transport.send(raw, mail_from, recipient)

    def close(self) -> None:
        self.transport.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("crash_after", [0, 7, 16, 23, 49])
def test_a_crash_mid_send_never_duplicates_and_holds_what_is_in_doubt(
    home, project, campaign, outbox, sink, crash_after
) -> None:
    server, spec = sink
    plan = _plan(
        project, campaign, spec, None, stream=project.stream_of(campaign).model_copy(update={"connections": 1})
    )
    budget = [crash_after]
    with Ledger(home.state_db) as ledger:
        with pytest.raises(Crash):
            deliver_table(outbox, plan, ledger, lambda: CrashingTransport(spec, budget))
        held = ledger.hold_in_doubt(campaign.name, SEND_DATE)
        rerun = deliver_table(outbox, plan, ledger, spec.open)
        states = ledger.counts(campaign.name, SEND_DATE)
    chunk_start = (crash_after // 16) * 16
    in_doubt = min(16, 50 - chunk_start)
    assert held == in_doubt and states["held"] == in_doubt
    assert sum(states.values()) == 50 and rerun.already_decided == chunk_start + in_doubt
    received = _server_message_ids(server)
    assert max(received.values(), default=1) == 1, "a message reached the server twice"
    bounced_before_crash = sum(
        1 for addr in outbox.column("to_addr").to_pylist()[chunk_start:crash_after] if addr.endswith("bounce.invalid")
    )
    sent_while_in_doubt = crash_after - chunk_start - bounced_before_crash
    assert sum(received.values()) == states["delivered"] + sent_while_in_doubt


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_held_messages_resolved_for_resend_go_out_on_the_next_run(home, project, campaign, outbox, sink) -> None:
    server, spec = sink
    plan = _plan(
        project, campaign, spec, None, stream=project.stream_of(campaign).model_copy(update={"connections": 1})
    )
    with Ledger(home.state_db) as ledger:
        with pytest.raises(Crash):
            deliver_table(outbox, plan, ledger, lambda: CrashingTransport(spec, [0]))
        ledger.hold_in_doubt(campaign.name, SEND_DATE)
        held = ledger.held(campaign.name, SEND_DATE)
        assert ledger.resolve(campaign.name, SEND_DATE, held[:3], "failed") == 3
        assert ledger.resolve(campaign.name, SEND_DATE, None, "resend") == len(held) - 3
        deliver_table(outbox, plan, ledger, spec.open)
        states = ledger.counts(campaign.name, SEND_DATE)
    to_addr = dict(zip(outbox.column("message_key").to_pylist(), outbox.column("to_addr").to_pylist(), strict=True))
    bounced = sum(1 for key, addr in to_addr.items() if key not in held[:3] and addr.endswith("bounce.invalid"))
    assert states == {"delivered": 47 - bounced, "bounced": bounced, "failed": 3}
    assert max(_server_message_ids(server).values()) == 1


def test_a_suppression_recorded_after_rendering_wins_at_send_time(home, project, campaign, outbox, sink) -> None:
    _server, spec = sink
    late = outbox.column("patient_key").to_pylist()[:4]
    revoked = outbox.column("patient_key").to_pylist()[4]
    plan = _plan(project, campaign, spec, None, excluded_now={revoked: "consent_revoked"})
    with Ledger(home.state_db) as ledger:
        ledger.suppress(late[:2], "unsubscribed", "treatment", source="endpoint")
        ledger.suppress(late[2:], "complaint", "all", source="ses")
        counts = deliver_table(outbox, plan, ledger, spec.open)
    assert counts.reasons["excluded:unsubscribed"] == 2 and counts.reasons["excluded:complaint"] == 2
    assert counts.reasons["excluded:consent_revoked"] == 1
    assert sum(counts.outcomes.values()) == 50


def test_temporary_failures_are_retried_with_backoff_then_deferred_then_failed(home, project, campaign, sink) -> None:
    _server, spec = sink
    stream = project.stream_of(campaign)
    stream = stream.model_copy(
        update={"retry": stream.retry.model_copy(update={"first_backoff_seconds": 0.01, "max_runs": 2})}
    )
    outbox = render_outbox(
        campaign,
        stream,
        project.templates[campaign.template],
        _recipients(4, ["defer.invalid", "example.org"]),
        SEND_DATE,
    )
    clock = [MORNING_IN_BOSTON]
    plan = _plan(project, campaign, spec, None, stream=stream)
    with Ledger(home.state_db) as ledger:
        first = deliver_table(outbox, plan, ledger, spec.open, clock=lambda: clock[0])
        too_soon = deliver_table(outbox, plan, ledger, spec.open, clock=lambda: clock[0])
        clock[0] += timedelta(minutes=stream.retry.retry_after_minutes)
        last = deliver_table(outbox, plan, ledger, spec.open, clock=lambda: clock[0])
        states = ledger.counts(campaign.name, SEND_DATE)
    assert first.outcomes == {"delivered": 2, "deferred": 2} and first.tries == 2 + 2 * stream.retry.attempts_per_run
    assert too_soon.outcomes == {} and too_soon.already_decided == 4
    assert last.outcomes == {"failed": 2} and last.reasons == {"failed:retries_exhausted": 2}
    assert states == {"delivered": 2, "failed": 2}


def test_messages_outside_the_send_window_wait_for_its_opening(home, project, campaign, sink) -> None:
    _server, spec = sink
    stream = project.stream_of(campaign)
    windowed = campaign.model_copy(update={"send_window": SendWindow(start="09:00", end="17:00")})
    outbox = render_outbox(
        windowed, stream, project.templates[campaign.template], _recipients(2, ["example.org"]), SEND_DATE
    )
    outbox = outbox.append_column("time_zone", pa.array(["America/New_York", "Pacific/Honolulu"]))
    clock = [MORNING_IN_BOSTON]  # 10:00 in Boston, 05:00 in Honolulu
    plan = _plan(project, windowed, spec, None, send_window=windowed.send_window)
    with Ledger(home.state_db) as ledger:
        first = deliver_table(outbox, plan, ledger, spec.open, clock=lambda: clock[0])
        clock[0] = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 09:00 in Honolulu
        second = deliver_table(outbox, plan, ledger, spec.open, clock=lambda: clock[0])
    assert first.outcomes == {"delivered": 1, "deferred": 1} and first.reasons == {"deferred:send_window": 1}
    assert second.outcomes == {"delivered": 1}


def test_the_ses_transport_delivers_signed_mail_without_signing_what_ses_rewrites(
    home, project, campaign, outbox, dkim_keys, monkeypatch
) -> None:
    import boto3
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from carecast.mail.ses_transport import SesTransport

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    spec = TransportSpec(kind="ses", ses_region="us-east-1")
    with mock_aws():
        ses = boto3.client("sesv2", region_name="us-east-1")
        ses.create_email_identity(EmailIdentity="riverside-health.example.org")
        with Ledger(home.state_db) as ledger:
            counts = deliver_table(
                outbox,
                _plan(project, campaign, spec, dkim_keys),
                ledger,
                lambda: SesTransport(boto3.client("sesv2", region_name="us-east-1")),
            )
        sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    # the ledger knows every message by SES's id, which SES's bounce and complaint events name: an
    # event naming only that id finds its message
    moment = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    with EngagementEvents(home.state_db) as store:
        recorded = store.record(
            FeedbackEvent(f"{n:032x}", "delivery", moment, "ses", provider_message_id=message.id)
            for n, message in enumerate(sent)
        )
        found = {row["patient_key"]: store.events_of_patient(row["patient_key"]) for row in outbox.to_pylist()}
    assert (recorded.recorded, recorded.unmatched) == (50, 0)
    assert all(
        [event["message_key"] for event in found[row["patient_key"]]] == [row["message_key"]]
        for row in outbox.to_pylist()
    )
    # moto accepts every recipient (the sink's bounce domain means nothing to it)
    assert counts.outcomes == {"delivered": 50} and len(sent) == 50
    raw = sent[0].raw_data.encode() if isinstance(sent[0].raw_data, str) else sent[0].raw_data
    signature = email.message_from_bytes(raw, policy=email.policy.default)["DKIM-Signature"]
    signed = signature.split("h=")[1].split(";")[0].replace(" ", "").lower()
    assert "message-id" not in signed and "date" not in signed and "from" in signed


def test_a_message_that_cannot_be_built_fails_alone(home, project, campaign, outbox, sink) -> None:
    _server, spec = sink
    addresses = outbox.column("to_addr").to_pylist()
    addresses[3] = "p3@example.org\r\nBcc: everyone@example.org"
    broken = outbox.set_column(outbox.column_names.index("to_addr"), "to_addr", pa.array(addresses))
    with Ledger(home.state_db) as ledger:
        counts = deliver_table(broken, _plan(project, campaign, spec, None), ledger, spec.open)
    assert counts.reasons["failed:unbuildable"] == 1
    assert counts.outcomes["failed"] == 1 and sum(counts.outcomes.values()) == 50
