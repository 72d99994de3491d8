"""Building, sending and (for dry runs) receiving campaign email without leaking PHI."""

from carecast.mail.certificates import ensure_sink_certificate, fingerprint_sha256
from carecast.mail.mailbox import Mailbox, StoredMessage, message_id_sha256
from carecast.mail.message import build_message
from carecast.mail.sink import EmbeddedSink, SinkHandler, sink_tls_context
from carecast.mail.smtp_client import (
    CertificatePinError,
    MailTransportError,
    SendOutcome,
    SmtpTransport,
    TlsRequiredError,
    client_tls_context,
)

__all__ = [
    "CertificatePinError",
    "EmbeddedSink",
    "MailTransportError",
    "Mailbox",
    "SendOutcome",
    "SinkHandler",
    "SmtpTransport",
    "StoredMessage",
    "TlsRequiredError",
    "build_message",
    "client_tls_context",
    "ensure_sink_certificate",
    "fingerprint_sha256",
    "message_id_sha256",
    "sink_tls_context",
]
