"""An SMTP sink on loopback for dry runs and tests: STARTTLS required, every message encrypted.

aiosmtpd runs the server on its own thread and event loop. Its "mail.log" logger writes command
lines, senders and recipients at INFO, so the sink installs a filter on it that drops log
arguments and tracebacks (both may carry addresses) and keeps only the message templates.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from carecast.mail.mailbox import Mailbox

_AIOSMTPD_LOGGER = "mail.log"
FLUSH_DELAY_SECONDS = 0.05


def sink_tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Server-side context: TLS 1.2 or newer, no client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


class SinkHandler:
    """aiosmtpd handler: refuses hard-bounce domains at RCPT (550), defers deferring domains (451, as a
    greylisting or throttling server would), stores the rest in the mailbox.

    Replies never echo an address or an exception text back to the client. The mailbox commits
    in batches, so after each store a flush is scheduled shortly after: when the client pauses,
    what it was told is stored gets committed without waiting for the batch to fill.
    """

    def __init__(self, mailbox: Mailbox, hard_bounce_domains: Iterable[str], deferring_domains: Iterable[str] = ()):
        self.mailbox = mailbox
        self.hard_bounce_domains = frozenset(domain.lower() for domain in hard_bounce_domains)
        self.deferring_domains = frozenset(domain.lower() for domain in deferring_domains)
        self._flush_scheduled: asyncio.TimerHandle | None = None

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Offer PIPELINING (RFC 2920): aiosmtpd answers commands strictly in order, which is all a
        pipelining server must do, and clients then save two round trips a message."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain in self.hard_bounce_domains:
            return "550 5.1.1 Recipient address rejected: mailbox unavailable"
        if domain in self.deferring_domains:
            return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.mailbox.store(envelope.mail_from or "", envelope.rcpt_tos, content)
        if self._flush_scheduled is None:
            self._flush_scheduled = asyncio.get_running_loop().call_later(FLUSH_DELAY_SECONDS, self._flush)
        return "250 2.0.0 OK: queued"

    def _flush(self) -> None:
        self._flush_scheduled = None
        self.mailbox.flush()

    async def handle_exception(self, error: Exception) -> str:
        return "451 4.3.0 Local error in processing"


class _RedactArguments(logging.Filter):
    """Keep aiosmtpd's message templates, drop their arguments and exception details."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = f"{record.msg} [arguments redacted]"
            record.args = None
        if record.exc_info:
            exc_type = record.exc_info[0]
            record.msg = f"{record.msg} [{exc_type.__name__ if exc_type else 'exception'} redacted]"
            record.exc_info = None
            record.exc_text = None
        return True


def _redact_aiosmtpd_logs() -> None:
    logger = logging.getLogger(_AIOSMTPD_LOGGER)
    if not any(isinstance(existing, _RedactArguments) for existing in logger.filters):
        logger.addFilter(_RedactArguments())


class _EphemeralPortController(Controller):
    """aiosmtpd's Controller, but port 0 works: the bound port is read back before the self-test
    connection that ``start()`` makes (which would otherwise dial port 0)."""

    async def _create_server(self) -> Any:
        server = await super()._create_server()
        self.port = server.sockets[0].getsockname()[1]
        return server


class EmbeddedSink:
    """``with EmbeddedSink(mailbox, cert, key) as sink:`` listens on ``sink.host:sink.port``.

    ``stop()`` returns after the server thread has ended and the mailbox has committed every
    message that was answered with 250.
    """

    handler_class: type[SinkHandler] = SinkHandler

    def __init__(
        self,
        mailbox: Mailbox,
        cert_path: Path,
        key_path: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        hard_bounce_domains: Iterable[str] = ("bounce.invalid",),
        deferring_domains: Iterable[str] = ("defer.invalid",),
    ):
        _redact_aiosmtpd_logs()
        self.mailbox = mailbox
        self.handler = self.handler_class(mailbox, hard_bounce_domains, deferring_domains)
        self._controller = _EphemeralPortController(
            self.handler,
            hostname=host,
            port=port,
            server_hostname="localhost",
            tls_context=sink_tls_context(cert_path, key_path),
            require_starttls=True,
            auth_require_tls=True,
            enable_SMTPUTF8=True,
        )
        self._running = False

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    def start(self) -> Self:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._controller.stop()
            self.mailbox.flush()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
