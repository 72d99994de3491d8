"""The naive render + build + DKIM-sign + deliver loop that carecast's delivery is measured against.

What a competent person writes first: a ``jinja2.Template`` rendered per recipient, an
``email.message.EmailMessage`` (``set_content`` then ``add_alternative`` for the HTML part), stock
dkimpy ``dkim.sign`` with an RSA-2048 key, and one ``smtplib`` connection upgraded with STARTTLS on
which every message goes out with ``sendmail``. The template is compiled and the connection opened
once; nothing is deliberately slowed down.

``run_naive_delivery`` sends to the first ``limit`` recipients only (the whole audience would take
hours); the caller scales ``seconds`` up to the audience size.
"""

from __future__ import annotations

import email.policy
import html
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import dkim
import jinja2

DEFAULT_SENDER = "Riverside Health Reminders <reminders@riverside-health.example.org>"
DEFAULT_SUBJECT = "Your screening mammogram is due"
DEFAULT_SELECTOR = "carecast"


def _html(text: str) -> str:
    paragraphs = "".join(f"<p>{html.escape(part)}</p>" for part in text.split("\n\n"))
    return f"<!doctype html><html><body>{paragraphs}</body></html>"


def run_naive_delivery(
    host: str,
    port: int,
    cert_pem: bytes,
    recipients: list[dict[str, Any]],
    template_text: str,
    dkim_key_pem: bytes,
    limit: int,
    *,
    sender: str = DEFAULT_SENDER,
    subject: str = DEFAULT_SUBJECT,
    selector: str = DEFAULT_SELECTOR,
    shared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Render, build, sign and send one message to each of the first ``limit`` recipients.

    Each recipient is a dict with an ``email`` key; the whole dict (over ``shared``, e.g. the
    organisation and links) is the template's context. The server's certificate ``cert_pem`` is the
    only trust anchor. Returns ``messages`` (sent, accepted or not), ``refused``, ``seconds`` (from
    connecting to QUIT) and ``rate`` (messages per second).
    """
    template = jinja2.Template(template_text)
    domain = parseaddr(sender)[1].rsplit("@", 1)[-1]
    envelope_from = parseaddr(sender)[1]
    context = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    batch = recipients[:limit]
    sent = refused = 0
    started = time.perf_counter()
    smtp = smtplib.SMTP(host, port)
    smtp.starttls(context=context)
    try:
        for recipient in batch:
            text = template.render(**(shared or {}), **recipient)
            message = EmailMessage()
            message["From"] = sender
            message["To"] = recipient["email"]
            message["Subject"] = subject
            message["Date"] = formatdate(localtime=True)
            message["Message-ID"] = make_msgid(domain=domain)
            message.set_content(text)
            message.add_alternative(_html(text), subtype="html")
            raw = message.as_bytes(policy=email.policy.SMTP)
            signature = dkim.sign(raw, selector.encode(), domain.encode(), dkim_key_pem)
            try:
                smtp.sendmail(envelope_from, [recipient["email"]], signature + raw)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused):
                refused += 1
            sent += 1
    finally:
        smtp.quit()
    seconds = time.perf_counter() - started
    return {
        "messages": sent,
        "refused": refused,
        "seconds": round(seconds, 3),
        "rate": round(sent / seconds, 1) if seconds > 0 else None,
    }
