"""``carecast audit``: a patient who got two campaigns, one under an authorization revoked afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from carecast import stages
from carecast.audit import AUDIT_LOG, audit_campaign, audit_patient
from carecast.crypto.hash_chain import HashChain
from carecast.delivery import open_target
from carecast.engagement.events import EngagementEvents
from carecast.engagement.feedback import TokenRecipient, endpoint_event
from carecast.home import CarecastHome
from carecast.project import CHECKOUT_DIR, Project, load_project
from carecast.runtime import Runtime
from tests.project_copy import copy_project

FIRST_RUN, SECOND_RUN = date(2026, 11, 2), date(2026, 11, 6)  # within the 7-day marketing cap
REVOKED_AT = datetime(2026, 11, 4, 9, 30)
PATIENTS = ["patient-ana-0001", "patient-bo-0002"]
EMAILS = ["ana.audit@example.org", "bo.audit@example.org"]
MARKETING = "dpp_invite"
TREATMENT = "breast_screening_reminder"


def _project(root: Path) -> Project:
    """The shipped project plus a marketing campaign (an invitation to a partner's prevention program)."""
    copy_project(root)
    template = root / "templates" / MARKETING
    template.mkdir()
    (template / "template.yaml").write_text(
        f"name: {MARKETING}\npurposes: [marketing]\ndefault_locale: en\nfields: {{first_name: identifier}}\n"
        "subject: {en: A free program to prevent diabetes}\n"
    )
    (template / "en.md.j2").write_text("Dear {{ first_name }}, [join us]({{ links.join }}).\n")
    (root / "campaigns" / f"{MARKETING}.yaml").write_text(
        f"name: {MARKETING}\nsegment: diabetes_prevention_program_invite\ntemplate: {MARKETING}\n"
        "purpose: marketing\nstream: marketing\nlinks: {join: https://ymca.example.org/dpp}\n"
    )
    return load_project(root)


def _consents(revoked_at: datetime | None) -> pa.Table:
    timestamps = pa.timestamp("us")
    return pa.table(
        {
            "patient_id": PATIENTS,
            "purpose": ["marketing"] * 2,
            "channel": ["email"] * 2,
            "consent_id": ["consent-1", "consent-2"],
            "document_id": ["auth-form-1", "auth-form-2"],
            "signed_at": pa.array([datetime(2026, 1, 5)] * 2, timestamps),
            "expires_at": pa.array([datetime(2027, 1, 5)] * 2, timestamps),
            "revoked_at": pa.array([revoked_at, None], timestamps),
            "expiry_event_at": pa.array([None, None], timestamps),
        }
    )


def _lake_as_of(runtime: Runtime, revoked_at: datetime | None) -> None:
    """What the models would leave in the lake: both patients in both segments, consents, profiles."""
    lake = runtime.lake
    for segment in ("breast_cancer_screening_due", "diabetes_prevention_program_invite"):
        lake.write(f"segment_{segment}", pa.table({"patient_id": PATIENTS}))
    lake.write(
        "mart_patient_profile",
        pa.table(
            {
                "patient_id": PATIENTS,
                "is_deceased": [False] * 2,
                "is_minor": [False] * 2,
                "has_valid_email": [True] * 2,
                "is_email_opted_in": [True] * 2,
                "email": EMAILS,
                "preferred_language": ["en"] * 2,
                "first_name": ["Ana", "Bo"],
            }
        ),
    )
    lake.write("mart_consent_latest", _consents(revoked_at))
    lake.write("stg_consents", _consents(revoked_at).drop_columns(["expiry_event_at"]))
    lake.write(
        "mart_suppressions",
        pa.table(
            {
                c: pa.array([], pa.timestamp("us") if c.endswith("_at") else pa.string())
                for c in stages.SUPPRESSION_COLUMNS
            }
        ),
    )


def _run(runtime: Runtime, name: str) -> None:
    campaign = runtime.project.campaigns[name]
    stages.build_campaign_audience(runtime, campaign)
    stages.render_campaign(runtime, campaign)
    with open_target(runtime, "embedded_sink") as target:
        stages.deliver_campaign(runtime, campaign, target, workers=1)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[CarecastHome, Project]:
    root = tmp_path_factory.mktemp("project")
    project = _project(root)
    home = CarecastHome(tmp_path_factory.mktemp("home") / "home").ensure()
    first = Runtime.open(home, project, as_of=FIRST_RUN)
    _lake_as_of(first, revoked_at=None)
    _run(first, TREATMENT)
    _run(first, MARKETING)
    with EngagementEvents(home.state_db) as events:  # the patient clicked the invitation the next day
        recipient = TokenRecipient(first.pseudonymizer().patient_key(PATIENTS[0]), MARKETING, "marketing")
        events.record([endpoint_event("click", recipient, datetime(2026, 11, 3, 8, 0, tzinfo=UTC), "endpoint", "join")])
    second = Runtime.open(home, project, as_of=SECOND_RUN)
    _lake_as_of(second, revoked_at=REVOKED_AT)  # the patient revoked the authorization in between
    _run(second, MARKETING)
    return home, project


def test_two_campaigns_and_a_revocation_honoured_later(audited) -> None:
    home, project = audited
    answer = audit_patient(Runtime.open(home, project), PATIENTS[0], requested_by="privacy-officer", reason="REQ-7")
    sent = {(m.send_date, m.campaign): m for m in answer.messages}
    assert set(sent) == {(FIRST_RUN.isoformat(), TREATMENT), (FIRST_RUN.isoformat(), MARKETING)}
    reminder, invitation = sent[(FIRST_RUN.isoformat(), TREATMENT)], sent[(FIRST_RUN.isoformat(), MARKETING)]
    assert reminder.state == invitation.state == "delivered"
    assert reminder.purpose == "treatment" and reminder.authorization is None
    assert invitation.purpose == "marketing"
    assert invitation.authorization.document_id == "auth-form-1"
    assert invitation.authorization.signed_at == "2026-01-05T00:00:00"
    assert invitation.authorization.revoked_at == REVOKED_AT.isoformat()  # known now, after the send
    # the data and code behind the message
    assert invitation.snapshot.audience.startswith(f"audience_{MARKETING}@v")
    assert invitation.snapshot.outbox.startswith(f"outbox_{MARKETING}@v")
    assert any(ref.startswith("mart_consent_latest@v") for ref in invitation.snapshot.read)
    assert invitation.snapshot.code == {
        "segment diabetes_prevention_program_invite": project.segments["diabetes_prevention_program_invite"].sha256,
        f"template {MARKETING}": project.templates[MARKETING].sha256,
    }
    assert [(e["kind"], e["detail"]) for e in invitation.events] == [("click", "join")] and reminder.events == []
    assert answer.other_events == []
    # the later run honoured the revocation
    assert answer.left_out == [
        {"campaign": MARKETING, "send_date": SECOND_RUN.isoformat(), "reason": "authorization_revoked"}
    ]


def test_the_other_patient_kept_getting_nothing_more_than_the_cap_allows(audited) -> None:
    home, project = audited
    answer = audit_patient(Runtime.open(home, project), PATIENTS[1])
    assert len(answer.messages) == 2
    assert answer.left_out == [{"campaign": MARKETING, "send_date": SECOND_RUN.isoformat(), "reason": "frequency_cap"}]


def test_campaign_audit_gives_each_run_in_counts(audited) -> None:
    home, project = audited
    answer = audit_campaign(Runtime.open(home, project), MARKETING)
    assert sorted(answer["runs"]) == [FIRST_RUN.isoformat(), SECOND_RUN.isoformat()]
    assert answer["runs"][FIRST_RUN.isoformat()]["states"] == {"delivered": 2}
    assert answer["runs"][SECOND_RUN.isoformat()]["funnel"]["excluded"] == {
        "authorization_revoked": 1,
        "frequency_cap": 1,
    }


def test_the_cli_answers_without_the_id_or_any_address_and_logs_the_question(audited, tmp_path: Path) -> None:
    home, project = audited
    before = len(HashChain(home.root / AUDIT_LOG).entries())
    completed = subprocess.run(
        [sys.executable, "-m", "carecast.cli", "audit", "patient", PATIENTS[0], "--reason", "REQ-8", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=CHECKOUT_DIR,
        env={"PATH": "/usr/bin:/bin", "CARECAST_HOME": str(home.root), "CARECAST_PROJECT_DIR": str(project.root)},
    )
    answer = json.loads(completed.stdout)
    assert len(answer["messages"]) == 2 and answer["left_out"][0]["reason"] == "authorization_revoked"
    output = completed.stdout + completed.stderr
    assert PATIENTS[0] not in output and not any(email in output for email in EMAILS) and "Ana" not in output
    chain = HashChain(home.root / AUDIT_LOG)
    entries = chain.entries()
    assert len(entries) == before + 1 and chain.verify() is None
    assert entries[-1]["question"] == "patient" and entries[-1]["reason"] == "REQ-8"
    assert entries[-1]["subject"] == answer["patient_key"] and PATIENTS[0] not in (home.root / AUDIT_LOG).read_text()
