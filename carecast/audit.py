"""The compliance audit: which messages a patient got, under which authorization, from which data.

``audit_patient`` answers for one patient from the send ledger (every message and its state), the
audience exclusions (runs that left the patient out, and why: a revocation honoured shows here),
the run lineage (the lake versions each stage wrote and read, and the segment and template hashes),
the authorization each message relied on (document id, signed, expiry, revocation as known now) and
the engagement events. ``audit_campaign`` gives the same per run for a campaign, in counts.

Both answer with pseudonyms, names, dates, states and hashes: no name, address, email or diagnosis.
The patient id asked about is turned into its pseudonym at once and never written anywhere. Every
question is appended, with who asked, when and why, to a hash-chained log (``audit_log.jsonl``), so
the log itself is evidence and an edited or deleted entry breaks the chain.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from carecast.campaigns import audience_dataset
from carecast.crypto.hash_chain import HashChain
from carecast.engagement.events import EngagementEvents
from carecast.ledger import Ledger
from carecast.run_lineage import run_lineage
from carecast.runtime import Runtime

AUDIT_LOG = "audit_log.jsonl"
_CONSENT_FIELDS = ("consent_id", "document_id", "purpose", "channel", "signed_at", "expires_at", "revoked_at")


@dataclass(frozen=True)
class Authorization:
    """The consent record a message relied on, as the lake knows it now (a later revocation shows)."""

    consent_id: str
    document_id: str | None
    purpose: str | None
    channel: str | None
    signed_at: str | None
    expires_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class RunSnapshot:
    """What one campaign run was built from: lake versions written and read, and code hashes."""

    audience: str | None
    outbox: str | None
    read: list[str]
    code: dict[str, str]


@dataclass(frozen=True)
class MessageAudit:
    campaign: str
    send_date: str
    purpose: str | None
    variant: str
    state: str
    message_key: str
    authorization: Authorization | None
    snapshot: RunSnapshot
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PatientAudit:
    patient_key: str
    messages: list[MessageAudit]
    left_out: list[dict[str, str]]
    """Runs whose audience excluded the patient: campaign, send date, reason."""
    suppressions: list[dict[str, str]]
    other_events: list[dict[str, Any]] = field(default_factory=list)
    """Events of the patient tied to no message above (an unsubscribe with no message in the ledger)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit_patient(runtime: Runtime, patient_id: str, requested_by: str | None = None, reason: str = "") -> PatientAudit:
    patient_key = runtime.pseudonymizer().patient_key(patient_id)
    with EngagementEvents(runtime.home.state_db) as ledger:
        sent = ledger.messages_of_patient(patient_key)
        left_out = [
            {"campaign": campaign, "send_date": send_date, "reason": why}
            for campaign, send_date, why in ledger.exclusions_of_patient(patient_key)
        ]
        suppressions = ledger.suppressions_of_patient(patient_key)
        runs = {(m.campaign, m.send_date) for m in sent}
        lineages = {run: _lineages(ledger, *run) for run in runs}
        events = ledger.events_of_patient(patient_key)
    consent_of_run = {
        run: _consent_id(runtime, patient_key, run[0], audience) for run, (audience, _) in lineages.items()
    }
    authorizations = _authorizations(runtime, {c for c in consent_of_run.values() if c is not None})
    messages = [
        MessageAudit(
            campaign=m.campaign,
            send_date=m.send_date,
            purpose=m.purpose,
            variant=m.variant,
            state=m.state,
            message_key=m.message_key,
            authorization=authorizations.get(consent_of_run[(m.campaign, m.send_date)]),
            snapshot=_snapshot(*lineages[(m.campaign, m.send_date)]),
            events=[event for event in events if event["message_key"] == m.message_key],
        )
        for m in sent
    ]
    keys = {m.message_key for m in sent}
    others = [event for event in events if event["message_key"] not in keys]
    answer = PatientAudit(patient_key, messages, left_out, suppressions, others)
    _log(runtime, "patient", patient_key, requested_by, reason, {"messages": len(messages), "left_out": len(left_out)})
    return answer


def audit_campaign(runtime: Runtime, campaign: str, requested_by: str | None = None, reason: str = "") -> dict:
    """Per run of the campaign: funnel, message states, snapshot and engagement counts (no patient)."""
    if campaign not in runtime.project.campaigns:
        raise KeyError(f"no campaign named {campaign!r} in this project")
    with EngagementEvents(runtime.home.state_db) as ledger:
        runs = {
            send_date: {
                "funnel": ledger.stage(campaign, send_date, "audience"),
                "states": ledger.counts(campaign, send_date),
                "snapshot": asdict(_snapshot(*_lineages(ledger, campaign, send_date))),
                "engagement": ledger.event_counts(campaign, send_date),
            }
            for send_date in ledger.run_dates(campaign)
        }
    answer = {"campaign": campaign, "purpose": runtime.project.campaigns[campaign].purpose, "runs": runs}
    _log(runtime, "campaign", campaign, requested_by, reason, {"runs": len(runs)})
    return answer


def _lineages(ledger: Ledger, campaign: str, send_date: str) -> tuple[dict, dict]:
    """The audience and render lineage of a run (empty where a stage kept none)."""
    return run_lineage(ledger, campaign, send_date, "audience") or {}, run_lineage(
        ledger, campaign, send_date, "render"
    ) or {}


def _snapshot(audience: dict, render: dict) -> RunSnapshot:
    """A run's snapshot from its audience and render lineage (empty dicts where a stage kept none)."""
    return RunSnapshot(
        audience=audience.get("written"),
        outbox=render.get("written"),
        read=sorted({*audience.get("read", []), *render.get("read", [])}),
        code={**audience.get("code", {}), **render.get("code", {})},
    )


def _consent_id(runtime: Runtime, patient_key: str, campaign_name: str, audience: dict) -> str | None:
    """The consent record the run's audience row for this patient names (treatment needs none)."""
    campaign = runtime.project.campaigns.get(campaign_name)
    if campaign is None or not runtime.lake.exists(audience_dataset(campaign)):
        return None
    members = runtime.lake.read(
        audience_dataset(campaign), ["patient_key", "consent_id"], audience.get("version")
    ).table
    row = members.filter(pc.equal(members.column("patient_key"), patient_key))
    return row.column("consent_id")[0].as_py() if row.num_rows else None


def _authorizations(runtime: Runtime, consent_ids: set[str]) -> dict[str, Authorization]:
    """Consent id -> the record as the lake knows it now, so a revocation after the send shows."""
    if not consent_ids:
        return {}
    records = runtime.lake.read("stg_consents", list(_CONSENT_FIELDS)).table
    records = records.filter(pc.is_in(records.column("consent_id"), pa.array(sorted(consent_ids))))
    return {
        row["consent_id"]: Authorization(**{name: _text(row[name]) for name in _CONSENT_FIELDS})
        for row in records.to_pylist()
    }


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


def _log(runtime: Runtime, question: str, subject: str, requested_by: str | None, reason: str, answered: dict) -> None:
    HashChain(runtime.home.root / AUDIT_LOG).append(
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "requested_by": requested_by or getpass.getuser(),
            "question": question,
            "subject": subject,
            "reason": reason,
            "answered": answered,
        }
    )
