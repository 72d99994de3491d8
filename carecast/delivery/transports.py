"""Where mail goes, described by plain data so worker processes can open their own connections.

A ``TransportSpec`` is picklable configuration (no sockets, no clients); each worker turns it into
one ``Transport`` per connection. The embedded sink is not a kind here: it is a real STARTTLS SMTP
server on loopback, started by whoever runs delivery, and workers reach it as ``smtp``.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from carecast.mail import SendOutcome, SmtpTransport


class Transport(Protocol):
    def send(self, raw_message: bytes, mail_from: str, recipient: str) -> SendOutcome: ...

    def close(self) -> None: ...


class TransportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["smtp", "ses"]
    host: str = "127.0.0.1"
    port: int = 25
    pinned_cert_pem: str = ""
    """The relay's certificate; the only trust anchor, so a different certificate is refused."""
    server_hostname: str = "localhost"
    ses_region: str = ""
    ses_configuration_set: str | None = None

    @property
    def rewritten_headers(self) -> tuple[str, ...]:
        """Headers the path replaces, so a DKIM signature must not cover them: SES sets its own
        Message-ID and Date on raw messages (its developer guide says not to sign them)."""
        return ("message-id", "date") if self.kind == "ses" else ()

    def open(self) -> Transport:
        if self.kind == "smtp":
            transport = SmtpTransport(self.host, self.port, self.pinned_cert_pem.encode(), self.server_hostname)
            transport.connect()
            return transport
        from carecast.mail.ses_transport import ses_transport_from_config  # boto3 is optional

        return ses_transport_from_config(self.ses_region, self.ses_configuration_set)
