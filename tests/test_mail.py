"""carecast.mail: message rendering, the encrypted sink and the pinned STARTTLS transport.

Every server here is real and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from carecast.crypto.kms import LocalKms
from carecast.mail import (
    CertificatePinError,
    EmbeddedSink,
    Mailbox,
    SendOutcome,
    SinkHandler,
    SmtpTransport,
    TlsRequiredError,
    build_message,
    ensure_sink_certificate,
    fingerprint_sha256,
    message_id_sha256,
)

SENDER = "news@clinic.example"
CANARY = "CANARY-7f3a9c-body"


def _message(index: int, to_addr: str | None = None) -> bytes:
    return build_message(
        from_addr=f"Clínica Norte <{SENDER}>",
        to_addr=to_addr or f"patient{index}@example.org",
        subject=f"Su cita nº {index}",
        text=f"Hola, {CANARY} {index}.\nHasta mañana.",
        html=f"<p>Hola, {CANARY} {index}.</p>",
        message_id=f"<msg-{index}@carecast.test>",
        date=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    )


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_sink_certificate(tmp_path / "tls")


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    return LocalKms(tmp_path / "keys")


@pytest.fixture
def mailbox(tmp_path: Path, kms: LocalKms) -> Iterator[Mailbox]:
    with Mailbox(tmp_path / "mailbox", kms) as box:
        yield box


@pytest.fixture
def sink(mailbox: Mailbox, tls: tuple[Path, Path]) -> Iterator[EmbeddedSink]:
    with EmbeddedSink(mailbox, *tls) as running:
        yield running


def _transport(sink: EmbeddedSink, cert: Path) -> SmtpTransport:
    return SmtpTransport(sink.host, sink.port, cert.read_bytes(), timeout=5.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Recorder:
    def __init__(self) -> None:
        self.commands: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.commands.append("MAIL")
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.commands.append("DATA")
        return "250 OK"


def test_message_round_trips_headers_and_both_parts() -> None:
    raw = build_message(
        from_addr="Clínica Norte <news@clinic.example>",
        to_addr="José Núñez <jose@example.org>",
        subject="Recordatorio — ¿confirma su cita? 日本",
        text="Hola José,\nsu cita es mañana.\n.\nFrom the clinic",
        html="<p>Hola José, 日本語のテキスト</p>" * 10,
        message_id="<abc.1@carecast.test>",
        date=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        extra_headers={"List-Unsubscribe": "<mailto:unsubscribe@clinic.example>"},
    )
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == "Recordatorio — ¿confirma su cita? 日本"
    assert parsed["To"].addresses[0].display_name == "José Núñez"
    assert parsed["To"].addresses[0].addr_spec == "jose@example.org"
    assert parsed["From"].addresses[0].display_name == "Clínica Norte"
    assert parsed["Message-ID"] == "<abc.1@carecast.test>"
    assert parsed["Date"].datetime == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["List-Unsubscribe"] == "<mailto:unsubscribe@clinic.example>"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert html["Content-Transfer-Encoding"] == "base64"
    # MIME text is canonically CRLF; the parser hands the line breaks back as sent.
    assert plain.get_content().replace("\r\n", "\n") == "Hola José,\nsu cita es mañana.\n.\nFrom the clinic"
    assert html.get_content() == "<p>Hola José, 日本語のテキスト</p>" * 10


def test_message_refuses_header_injection_and_overrides() -> None:
    arguments = {
        "from_addr": SENDER,
        "to_addr": "a@example.org",
        "text": "t",
        "html": "<p>t</p>",
        "message_id": "<x@y>",
        "date": datetime.now(UTC),
    }
    with pytest.raises(ValueError):
        build_message(subject="hi\r\nBcc: evil@example.org", **arguments)
    with pytest.raises(ValueError):
        build_message(subject="hi", extra_headers={"Subject": "other"}, **arguments)


def test_certificate_is_made_once_with_private_key_0600(tmp_path: Path) -> None:
    cert, key = ensure_sink_certificate(tmp_path / "tls")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_bytes()
    assert ensure_sink_certificate(tmp_path / "tls") == (cert, key)
    assert cert.read_bytes() == first
    assert len(fingerprint_sha256(first)) == 64


def test_two_hundred_messages_on_one_connection_are_stored_encrypted(
    tmp_path: Path,
    sink: EmbeddedSink,
    mailbox: Mailbox,
    tls: tuple[Path, Path],
    kms: LocalKms,
) -> None:
    sent = {f"patient{index}@example.org": _message(index) for index in range(200)}
    sent["dots@example.org"] = _message(200).replace(b"\r\n\r\n", b"\r\n\r\n.leading dot\r\n..two\r\n.\r\n", 1)
    with _transport(sink, tls[0]) as transport:
        assert transport._smtp.has_extn("pipelining"), "the pipelined transaction is the one under test"
        outcomes = [transport.send(raw, SENDER, recipient) for recipient, raw in sent.items()]
    sink.stop()
    mailbox.close()

    assert set(outcomes) == {SendOutcome("delivered", 250, "2.0.0")}
    reopened = Mailbox(tmp_path / "mailbox", kms)
    assert reopened.count() == 201
    stored = list(reopened.read_all())
    assert {message.rcpt_tos: message.data for message in stored} == {(rcpt,): raw for rcpt, raw in sent.items()}
    assert all(message.mail_from == SENDER for message in stored)
    assert reopened.message_id_hashes()[:2] == [
        message_id_sha256("<msg-0@carecast.test>"),
        message_id_sha256("<msg-1@carecast.test>"),
    ]
    reopened.close()

    on_disk = b"".join(path.read_bytes() for path in (tmp_path / "mailbox").iterdir() if path.is_file())
    assert CANARY.encode() not in on_disk
    assert not any(recipient.encode() in on_disk for recipient in sent)
    assert b"example.org" not in on_disk

    wraps = [entry for entry in kms.access_log.entries() if entry["op"] == "wrap"]
    assert [entry["class"] for entry in wraps] == ["mailbox"]
    log_text = (tmp_path / "keys" / "access.jsonl").read_text()
    assert all(
        set(json.loads(line)) <= {"at", "op", "key_id", "class", "run_id", "asset", "purpose", "prev", "hash"}
        for line in log_text.splitlines()
    )
    master = next((tmp_path / "keys" / "master").iterdir()).read_bytes()
    assert master.hex() not in log_text


def test_plain_server_without_starttls_is_refused_before_mail_from(
    tls: tuple[Path, Path],
) -> None:
    recorder = _Recorder()
    server = Controller(recorder, hostname="127.0.0.1", port=_free_port())
    server.start()
    try:
        transport = SmtpTransport("127.0.0.1", server.port, tls[0].read_bytes(), timeout=5.0)
        with pytest.raises(TlsRequiredError) as refused:
            transport.connect()
        with pytest.raises(TlsRequiredError):
            transport.send(_message(0), SENDER, "patient0@example.org")
    finally:
        server.stop()
    assert recorder.commands == []
    assert "patient0" not in repr(refused.value)


def test_wrong_pinned_certificate_is_refused(tmp_path: Path, sink: EmbeddedSink, mailbox: Mailbox) -> None:
    other_cert, _other_key = ensure_sink_certificate(tmp_path / "other-tls")
    transport = SmtpTransport(sink.host, sink.port, other_cert.read_bytes(), timeout=5.0)
    with pytest.raises(CertificatePinError):
        transport.connect()
    with pytest.raises(CertificatePinError):
        transport.send(_message(0), SENDER, "patient0@example.org")
    assert mailbox.count() == 0


def test_hard_bounce_domain_is_a_550_without_the_address(
    sink: EmbeddedSink,
    mailbox: Mailbox,
    tls: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    recipient = "ghost.patient@bounce.invalid"
    with _transport(sink, tls[0]) as transport:
        bounced = transport.send(_message(0, recipient), SENDER, recipient)
        delivered = transport.send(_message(1), SENDER, "patient1@example.org")
    assert bounced == SendOutcome("bounced", 550, "5.1.1")
    assert delivered.status == "delivered"
    assert "ghost" not in repr(bounced) and "ghost" not in str(bounced)
    assert mailbox.count() == 1
    assert "ghost" not in caplog.text and "patient1" not in caplog.text


class _DroppingHandler(SinkHandler):
    """Drops the connection instead of answering the first DATA, and closes the (idle)
    connection right after answering the second."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data_commands = 0

    async def handle_DATA(self, server, session, envelope):
        self.data_commands += 1
        if self.data_commands == 1:
            server.transport.abort()
            await asyncio.sleep(3600)
        reply = await super().handle_DATA(server, session, envelope)
        if self.data_commands == 2:
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return reply


class _DroppingSink(EmbeddedSink):
    handler_class = _DroppingHandler


def test_dropped_connection_is_deferred_then_the_transport_reconnects(mailbox: Mailbox, tls: tuple[Path, Path]) -> None:
    with _DroppingSink(mailbox, *tls) as sink, _transport(sink, tls[0]) as transport:
        dropped = transport.send(_message(0), SENDER, "patient0@example.org")
        assert dropped.status == "deferred"
        assert not transport.connected
        assert transport.send(_message(1), SENDER, "patient1@example.org").status == "delivered"
        time.sleep(0.3)
        # The server closed the idle connection; the next send replaces it transparently.
        assert transport.send(_message(2), SENDER, "patient2@example.org").status == "delivered"
    assert mailbox.count() == 2


def test_nothing_listening_is_deferred_not_raised(tls: tuple[Path, Path], mailbox: Mailbox) -> None:
    with EmbeddedSink(mailbox, *tls) as sink, _transport(sink, tls[0]) as transport:
        port = sink.port
        sink.stop()
        # The stale connection fails at MAIL FROM, the retry cannot connect: 4.4.1, twice.
        for _ in range(2):
            assert transport.send(_message(0), SENDER, "patient0@example.org") == SendOutcome("deferred", 421, "4.4.1")
            assert not transport.connected
    assert port > 0


def test_throughput_on_one_connection(sink: EmbeddedSink, mailbox: Mailbox, tls: tuple[Path, Path]) -> None:
    messages = [_message(index) for index in range(1000)]
    with _transport(sink, tls[0]) as transport:
        started = time.perf_counter()
        outcomes = [transport.send(raw, SENDER, f"patient{index}@example.org") for index, raw in enumerate(messages)]
        elapsed = time.perf_counter() - started
    assert {outcome.status for outcome in outcomes} == {"delivered"}
    assert mailbox.count() == len(messages)
    assert len(messages) / elapsed > 300, f"{len(messages) / elapsed:.0f} messages/s"


def test_a_body_that_quotes_the_boundary_cannot_end_its_part() -> None:
    boundary_line = "--=_cc_abc.1.carecast.test"
    raw = build_message(
        from_addr=SENDER,
        to_addr="a@example.org",
        subject=" ".join(["A long subject line"] * 8),
        text=f"before\n{boundary_line}\nafter\n",
        html=f"<p>{boundary_line}--</p>",
        message_id="<abc.1@carecast.test>",
        date=datetime.now(UTC),
        extra_headers={"List-Unsubscribe": "<https://u.example.org/" + "t" * 90 + ">, <mailto:u@example.org>"},
    )
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    parts = list(parsed.iter_parts())
    assert len(parts) == 2
    assert parts[0].get_content().replace("\r\n", "\n") == f"before\n{boundary_line}\nafter\n"
    assert parsed["Subject"] == " ".join(["A long subject line"] * 8)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    header_lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    # Folded at spaces to 78 columns; a URL has no space to fold at, so its line may be longer.
    assert all(len(line) <= 78 for line in header_lines if b"https://" not in line)
