"""The naive models, render and deliver: pandas frames walked row by row into dicts, Jinja2 per
message, ``email.message.EmailMessage``, one ``smtplib`` STARTTLS connection. (It also finds the
campaign's segment and audience, untimed, to know whom to send to; the timed segments and audiences
baseline is ``bench/naive_segments.py``.)

It computes what carecast computes for the benchmark campaign (age and sex, last mammogram,
the screening segment, the latest consent per patient and purpose, suppressions, the exclusion
rules in carecast's order) so its audience size can be checked against carecast's.
"""

from __future__ import annotations

import html
import re
import smtplib
import ssl
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml

from bench.naive_ingest import TIMESTAMP_FORMATS
from bench.workload import AS_OF, CAMPAIGN
from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.mail import EmbeddedSink, Mailbox, ensure_sink_certificate
from carecast.project import default_project_dir

MAMMOGRAM_CODES = frozenset({"24623002", "71651007", "566571000119105", "450566007"})
# The same dot-atom rule as mart_patient_profile.has_valid_email, so both sides judge alike.
EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
TRUE = frozenset({"true", "t", "yes", "y", "1"})


@dataclass
class Person:
    first_name: str | None
    sex: str
    age: int
    deceased: bool
    email: str | None = None
    language: str = "en"
    opted_in: bool = False
    valid_email: bool = False


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() != "" else None


def _timestamp(value: object) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    for fmt in TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None


def _date(value: object) -> date | None:
    text = _text(value)
    return datetime.strptime(text.strip()[:10], "%Y-%m-%d").date() if text else None


def _rows(lake: Path, name: str, columns: list[str]):
    return pd.read_parquet(lake / f"{name}.parquet", columns=columns).itertuples(index=False, name=None)


def _profiles(lake: Path) -> dict[str, Person]:
    people: dict[str, Person] = {}
    for pid, birth, death, gender, first in _rows(
        lake, "synthea_patients", ["Id", "BIRTHDATE", "DEATHDATE", "GENDER", "FIRST"]
    ):
        born = _date(birth)
        age = AS_OF.year - born.year - ((AS_OF.month, AS_OF.day) < (born.month, born.day))
        died = _date(death)
        people[pid] = Person(_text(first), gender.strip().upper(), age, died is not None and died <= AS_OF)
    for pid, email, language, opt_in in _rows(
        lake, "crm_contacts", ["patient_id", "email", "preferred_language", "email_opt_in"]
    ):
        person = people.get(pid)
        if person is None:
            continue
        person.email = email.strip().lower() if _text(email) else None
        person.language = language.lower() if isinstance(language, str) else "en"
        person.opted_in = opt_in.strip().lower() in TRUE
        person.valid_email = person.email is not None and EMAIL.fullmatch(person.email) is not None
    return people


def _last_mammograms(lake: Path) -> dict[str, datetime]:
    last: dict[str, datetime] = {}
    for pid, code, start in _rows(lake, "synthea_procedures", ["PATIENT", "CODE", "START"]):
        if code in MAMMOGRAM_CODES:
            performed = _timestamp(start)
            if pid not in last or performed > last[pid]:
                last[pid] = performed
    return last


def _latest_consents(lake: Path) -> dict[tuple[str, str, str], tuple[datetime, str, datetime | None]]:
    """(patient, purpose, channel) -> (signed_at, consent_id, revoked_at) of the newest record."""
    latest: dict[tuple[str, str, str], tuple[datetime, str, datetime | None]] = {}
    columns = ["consent_id", "patient_id", "purpose", "channel", "signed_at", "revoked_at"]
    for consent_id, pid, purpose, channel, signed, revoked in _rows(lake, "consents_consents", columns):
        key = (pid, purpose.lower(), channel.lower())
        record = (_timestamp(signed), consent_id, _timestamp(revoked))
        if key not in latest or record[:2] > latest[key][:2]:
            latest[key] = record
    return latest


def _suppressions(lake: Path) -> dict[tuple[str, str, str], datetime]:
    """(patient, reason, purpose) -> first time it was suppressed."""
    first: dict[tuple[str, str, str], datetime] = {}
    columns = ["patient_id", "event_type", "bounce_type", "purpose", "occurred_at"]
    for pid, event_type, bounce_type, purpose, occurred in _rows(lake, "events_events", columns):
        kind = event_type.lower()
        if kind == "bounce" and isinstance(bounce_type, str) and bounce_type.lower() == "hard":
            key = (pid, "hard_bounce", "all")
        elif kind == "complaint":
            key = (pid, "complaint", "all")
        elif kind == "unsubscribe":
            key = (pid, "unsubscribed", purpose.lower() if isinstance(purpose, str) else "all")
        else:
            continue
        at = _timestamp(occurred)
        if key not in first or at < first[key]:
            first[key] = at
    return first


def _segment(people: dict[str, Person], last_mammogram: dict[str, datetime]) -> list[str]:
    cutoff = datetime.combine(AS_OF.replace(year=AS_OF.year - 2), clock())
    due = []
    for pid, person in people.items():
        screened = pid in last_mammogram and last_mammogram[pid] >= cutoff
        if person.sex == "F" and 50 <= person.age <= 74 and not screened:
            due.append(pid)
    return due


def _exclusion(
    pid: str,
    people: dict[str, Person],
    consents: dict[tuple[str, str, str], tuple[datetime, str, datetime | None]],
    suppressed: dict[tuple[str, str, str], datetime],
    purpose: str,
    send_time: datetime,
) -> str | None:
    """carecast's rules for a treatment/operations campaign, in carecast's order (``carecast.audience``)."""
    person = people.get(pid)
    if person is None:
        return "unknown_patient"
    consent = consents.get((pid, purpose, "email"))
    if consent is not None and consent[2] is not None and consent[2] <= send_time:
        return "consent_revoked"
    if not person.opted_in:
        return "email_opt_out"
    if not person.valid_email:
        return "no_valid_email"
    for reason, purposes in (("hard_bounce", ("all",)), ("complaint", ("all",)), ("unsubscribed", (purpose, "all"))):
        if any((at := suppressed.get((pid, reason, p))) is not None and at <= send_time for p in purposes):
            return reason
    if person.deceased:
        return "deceased"
    if person.age < 18:
        return "minor"
    return None


def _campaign_files() -> tuple[dict[str, Any], dict[str, Any], dict[str, jinja2.Template]]:
    root = default_project_dir()
    campaign = yaml.safe_load((root / "campaigns" / f"{CAMPAIGN}.yaml").read_text())
    campaign["sender"] = yaml.safe_load((root / "streams.yaml").read_text())[campaign["stream"]]["sender"]
    folder = root / "templates" / campaign["template"]
    template = yaml.safe_load((folder / "template.yaml").read_text())
    bodies = {path.name.removesuffix(".md.j2"): jinja2.Template(path.read_text()) for path in folder.glob("*.md.j2")}
    return campaign, template, bodies


def _html(text: str) -> str:
    paragraphs = "".join(f"<p>{html.escape(part)}</p>" for part in text.split("\n\n"))
    return f"<!doctype html><html><body>{paragraphs}</body></html>"


def _send_all(
    recipients: list[str], people: dict[str, Person], home: CarecastHome, mailbox: Path
) -> dict[str, float | int]:
    """Render, build and send every message on one STARTTLS connection; time the two halves apart."""
    campaign, template, bodies = _campaign_files()
    sender = campaign["sender"]
    domain = parseaddr(sender["from"])[1].rsplit("@", 1)[-1]
    cert_path, key_path = ensure_sink_certificate(home.keys / "sink")
    render_seconds = deliver_seconds = 0.0
    delivered = bounced = 0
    with Mailbox(mailbox, LocalKms(home.keys)) as box, EmbeddedSink(box, cert_path, key_path) as sink:
        started = time.perf_counter()
        smtp = smtplib.SMTP(sink.host, sink.port)
        smtp.starttls(context=ssl.create_default_context(cafile=str(cert_path)))
        deliver_seconds += time.perf_counter() - started
        for pid in recipients:
            started = time.perf_counter()
            person = people[pid]
            language = person.language.split("-")[0]
            locale = language if language in bodies else template["default_locale"]
            text = bodies[locale].render(
                first_name=person.first_name, organisation=sender["organisation"], links=campaign["links"]
            )
            body_html = _html(text)
            rendered = time.perf_counter()
            message = EmailMessage()
            message["From"] = sender["from"]
            message["To"] = person.email
            message["Subject"] = template["subject"][locale]
            message["Date"] = formatdate(usegmt=True)
            message["Message-ID"] = make_msgid(domain=domain)
            message.set_content(text)
            message.add_alternative(body_html, subtype="html")
            try:
                # Explicit envelope recipient: EmailMessage parses a malformed To address (such as a
                # domain starting with ".") into "<>", and send_message would then send it nowhere.
                smtp.send_message(message, to_addrs=[person.email])
                delivered += 1
            except smtplib.SMTPRecipientsRefused:
                bounced += 1
            render_seconds += rendered - started
            deliver_seconds += time.perf_counter() - rendered
        started = time.perf_counter()
        smtp.quit()
        deliver_seconds += time.perf_counter() - started
    return {"render": render_seconds, "deliver": deliver_seconds, "delivered": delivered, "bounced": bounced}


def naive_pipeline(home: Path, lake: Path, mail_sample: int) -> dict[str, Any]:
    """Seconds per carecast stage this script competes with, and its funnel counts.

    When the audience is larger than ``mail_sample``, render and deliver run on the first
    ``mail_sample`` recipients (by patient id) and their seconds are scaled up linearly.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    people = _profiles(lake)
    last_mammogram = _last_mammograms(lake)
    consents = _latest_consents(lake)
    suppressed = _suppressions(lake)
    seconds["models"] = time.perf_counter() - started

    # The campaign's segment and audience, to know whom to render and send to; their timing is the
    # segments/audiences baseline's job (bench/naive_segments.py, every segment and every audience).
    segment = _segment(people, last_mammogram)
    purpose = yaml.safe_load((default_project_dir() / "campaigns" / f"{CAMPAIGN}.yaml").read_text())["purpose"]
    send_time = datetime.combine(AS_OF, clock(23, 59, 59))
    audience: list[str] = []
    excluded: dict[str, int] = {}
    for pid in segment:
        reason = _exclusion(pid, people, consents, suppressed, purpose, send_time)
        if reason is None:
            audience.append(pid)
        else:
            excluded[reason] = excluded.get(reason, 0) + 1

    recipients = sorted(audience)[:mail_sample]
    with tempfile.TemporaryDirectory(prefix="naive-mailbox-", dir=home) as mailbox:
        sent = _send_all(recipients, people, CarecastHome(home), Path(mailbox))
    scale = len(audience) / len(recipients) if recipients else 1.0
    seconds["render"] = sent["render"] * scale
    seconds["deliver"] = sent["deliver"] * scale
    return {
        "seconds": seconds,
        "rows": {
            "segment": len(segment),
            "audience": len(audience),
            "delivered": sent["delivered"],
            "bounced": sent["bounced"],
        },
        "excluded": dict(sorted(excluded.items())),
        "sampled_rows": len(recipients) if len(recipients) < len(audience) else None,
    }
