"""Rendering one campaign message as RFC 5322 bytes.

The legacy ``email.mime`` classes are used on purpose: they build several times faster than
``email.message.EmailMessage`` with ``set_content``/``add_alternative``, which matters at campaign
volume. Bodies are transfer-encoded with the C codecs in ``binascii`` (the pure-Python encoders
behind ``MIMEText`` dominate the cost otherwise) and headers are RFC 2047-encoded here, so the
generator only has to write them out with CRLF line endings.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
from datetime import datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr, parseaddr

CRLF_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=None)
"""Writes the headers encoded and folded here as they are. ``email.policy.SMTP`` would re-parse
every header through the header registry on output (about half the build time), and compat32's
own folding can leave a header's first line empty, which parsers read back as a leading space."""

_BUILT_HEADERS = frozenset({"from", "to", "subject", "date", "message-id", "mime-version"})


def build_message(
    *,
    from_addr: str,
    to_addr: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """A multipart/alternative message (text/plain then text/html, UTF-8) as CRLF bytes.

    Addresses may carry a display name (``"José <jose@example.com>"``); only the name is
    encoded. ``extra_headers`` may add headers (List-Unsubscribe, X-Campaign-...) but not replace
    the ones built here. Header values containing CR or LF are refused (no header injection).
    """
    message = MIMEMultipart("alternative", policy=CRLF_POLICY)
    message["From"] = _address(from_addr)
    message["To"] = _address(to_addr)
    message["Subject"] = _unstructured("Subject", subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = _checked(message_id)
    for name, value in (extra_headers or {}).items():
        if name.lower() in _BUILT_HEADERS:
            raise ValueError(f"extra_headers may not set {name}")
        message[_checked(name)] = _unstructured(name, value)
    message.attach(_text_part(text, "plain"))
    message.attach(_text_part(html, "html"))
    return message.as_bytes()


def _checked(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("header values may not contain CR or LF")
    return value


def _address(value: str) -> str:
    name, address = parseaddr(_checked(value))
    if not address:
        raise ValueError("not an email address")
    return formataddr((name, address), charset="utf-8")


def _unstructured(name: str, value: str) -> str:
    """ASCII stays as is; anything else becomes RFC 2047 encoded words, folded at 78 columns
    counting the header name."""
    _checked(value)
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n", maxlinelen=78)


def _text_part(body: str, subtype: str) -> MIMENonMultipart:
    """Quoted-printable while it stays smaller than base64 (mostly-ASCII text), else base64.

    QP spends 3 bytes per non-ASCII byte and base64 4/3 per byte, so QP wins while at most a
    sixth of the UTF-8 bytes are non-ASCII.
    """
    encoded = body.encode("utf-8")
    non_ascii = 0 if body.isascii() else len(encoded) - len(body.encode("ascii", "ignore"))
    part = MIMENonMultipart("text", subtype, charset="utf-8", policy=CRLF_POLICY)
    del part["MIME-Version"]
    if non_ascii * 6 <= len(encoded):
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(binascii.b2a_qp(encoded, istext=True).decode("ascii"))
    else:
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(base64.encodebytes(encoded).decode("ascii"))
    return part
