"""Feedback batches end to end: real-shaped SES events (raw, SNS-wrapped, Firehose), Postfix DSNs, Yahoo and
Microsoft ARF reports, an out-of-office reply and a garbage file, landed sealed, move exactly the right
patients into suppression; ingesting them again (same batch, or the same files in a new one) changes
nothing; the counts reconcile; no address, subject or URL from the fixtures reaches state.db, the
CLI's output or the report."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from carecast.cli import main
from carecast.crypto.sealed_file import open_sealed, seal_bytes
from carecast.engagement.ingest import ingest_event_batch, pending_event_batches
from carecast.ingest.landing import MANIFEST, SUCCESS_MARKER, NoCompleteBatchError
from carecast.ingest.readers import ExtractError
from carecast.ledger import Ledger, Outcome, Planned
from tests.integration.leak_scan import scan_for_canaries

FIXTURES = Path(__file__).parent / "data" / "feedback"
EXPECTED_SUPPRESSIONS = {
    "ses_hard_bounce": {("hard_bounce", "all")},
    "sns_hard_bounce": {("hard_bounce", "all")},
    "dsn_hard_bounce": {("hard_bounce", "all")},
    "ses_complaint": {("complaint", "all")},
    "arf_yahoo": {("complaint", "all")},
    "arf_microsoft": {("complaint", "all")},
    "ses_unsubscribe_topic": {("unsubscribed", "marketing")},
    "ses_unsubscribe_all": {("unsubscribed", "all")},
}
"""Every other patient of the ledger (soft and undetermined bounces, delays, a reject, opens and clicks,
an auto-reply, no feedback at all) stays unsuppressed."""
FIRST_COUNTS = {
    "files": 9,
    "items": 22,
    "recorded": 17,
    "duplicates": 1,  # Firehose delivered one Open twice
    "unmatched": 1,  # an Open for a message another system sent
    "ignored": {"auto_reply": 1, "sns_control_message": 1},
    "rejected": {"invalid_json": 1},
    "kinds": {
        "bounce": 5,
        "click": 1,
        "complaint": 3,
        "delay": 2,
        "delivery": 1,
        "open": 1,
        "reject": 1,
        "send": 1,
        "unsubscribe": 2,
    },
    "suppressions_added": {"complaint": 3, "hard_bounce": 3, "unsubscribed": 2},
}


@pytest.fixture
def messages(home) -> dict[str, dict]:
    """The fixtures' messages in the send ledger, delivered (by SES with its message id, or over SMTP)."""
    rows = json.loads((FIXTURES / "ledger.json").read_text())["messages"]
    with Ledger(home.state_db) as ledger:
        for row in rows:
            planned = Planned(row["message_key"], row["patient_key"], row["variant"])
            ledger.reserve(row["campaign"], row["purpose"], row["send_date"], [planned])
        ledger.commit(
            [
                Outcome(row["message_key"], "delivered", 250, provider_message_id=row["provider_message_id"])
                for row in rows
            ]
        )
    return {row["role"]: row for row in rows}


def _land_sealed(home, kms, name: str) -> Path:
    """The fixture batch as a landing batch: every file sealed, ``_SUCCESS`` last."""
    batch = home.landing / "feedback" / name
    batch.mkdir(parents=True)
    for path in sorted((FIXTURES / "batch").iterdir()):
        seal_bytes(path.read_bytes(), batch / f"{path.name}.enc", kms)
    (batch / SUCCESS_MARKER).touch()
    return batch


def _state(home) -> dict[str, list]:
    with sqlite3.connect(home.state_db) as connection:
        return {
            table: sorted(connection.execute(f"select * from {table}").fetchall(), key=repr)
            for table in ("engagement_log", "suppressions")
        }


def _suppressions_by_role(home, messages) -> dict[str, set[tuple[str, str]]]:
    roles = {row["patient_key"]: role for role, row in messages.items()}
    found: dict[str, set[tuple[str, str]]] = {}
    with sqlite3.connect(home.state_db) as connection:
        for patient_key, reason, purpose in connection.execute("select patient_key, reason, purpose from suppressions"):
            found.setdefault(roles[patient_key], set()).add((reason, purpose))
    return found


def test_the_fixture_batch_moves_exactly_the_right_patients_into_suppression(home, kms, messages):
    report = ingest_event_batch(home, kms, _land_sealed(home, kms, "2026-03-05"))
    assert report.counts() == FIRST_COUNTS
    assert report.reconciled and report.matched == 18
    assert _suppressions_by_role(home, messages) == EXPECTED_SUPPRESSIONS
    keys = [row["patient_key"] for row in messages.values()]
    with Ledger(home.state_db) as ledger:  # what the next run's audience and pre-send check read
        marketing = ledger.suppressed_among(keys, "marketing")
        treatment = ledger.suppressions_for("treatment")
    assert set(marketing) == {messages[role]["patient_key"] for role in EXPECTED_SUPPRESSIONS}
    assert messages["ses_unsubscribe_topic"]["patient_key"] not in treatment
    assert messages["ses_unsubscribe_all"]["patient_key"] in treatment


def test_ingesting_twice_or_the_same_files_in_a_new_batch_changes_nothing(home, kms, messages):
    first = ingest_event_batch(home, kms, _land_sealed(home, kms, "2026-03-05"))
    after_first = _state(home)
    again = ingest_event_batch(home, kms, home.landing / "feedback" / "2026-03-05")
    assert again.already_ingested and again.items == 0
    redelivered = ingest_event_batch(home, kms, _land_sealed(home, kms, "2026-03-05-redelivered"))
    assert _state(home) == after_first
    assert (redelivered.recorded, redelivered.duplicates, redelivered.unmatched) == (0, first.matched, 1)
    assert redelivered.suppressions_added == {} and redelivered.reconciled
    assert pending_event_batches(home) == []


def test_a_batch_rewritten_in_place_is_read_again_and_finds_only_duplicates(home, kms, messages):
    batch = _land_sealed(home, kms, "2026-03-05")
    ingest_event_batch(home, kms, batch)
    sealed = batch / "ses_events.ndjson.enc"
    seal_bytes(open_sealed(sealed, kms) + b"\n", sealed, kms)
    assert pending_event_batches(home) == [batch]
    report = ingest_event_batch(home, kms, batch)
    assert not report.already_ingested and report.recorded == 0 and report.duplicates == 18


def test_plain_gzipped_and_manifest_checked_files_outside_the_home(home, kms, messages, tmp_path):
    batch = tmp_path / "outside" / "feedback" / "b1"
    batch.mkdir(parents=True)
    ses = (FIXTURES / "batch" / "ses_events.ndjson").read_bytes()
    (batch / "ses_events.ndjson.gz").write_bytes(gzip.compress(ses))
    shutil.copy(FIXTURES / "batch" / "postfix_hard_bounce.eml", batch)
    (batch / "notes.txt").write_text("not feedback")
    with pytest.raises(NoCompleteBatchError):
        ingest_event_batch(home, kms, batch)
    digests = {path.name: {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()} for path in batch.iterdir()}
    (batch / MANIFEST).write_text(json.dumps({"files": digests}))
    report = ingest_event_batch(home, kms, batch)
    assert (report.files, report.items, report.recorded, report.unmatched) == (2, 13, 12, 1)
    assert report.suppressions_added == {"hard_bounce": 2, "unsubscribed": 1, "complaint": 1}


def test_a_file_that_does_not_match_its_manifest_stops_the_batch_unjournaled(home, kms, messages, tmp_path):
    batch = tmp_path / "feedback" / "b2"
    batch.mkdir(parents=True)
    shutil.copy(FIXTURES / "batch" / "arf_yahoo_complaint.eml", batch)
    (batch / MANIFEST).write_text(json.dumps({"files": {"arf_yahoo_complaint.eml": {"sha256": "0" * 64}}}))
    with pytest.raises(ExtractError, match="arf_yahoo_complaint.eml: its bytes do not match") as failure:
        ingest_event_batch(home, kms, batch)
    assert "@" not in str(failure.value)
    with sqlite3.connect(home.state_db) as connection:
        assert connection.execute("select count(*) from feedback_batches").fetchone() == (0,)


def _canaries() -> set[str]:
    """Addresses, subjects and URLs in the fixtures: none may be stored, printed or reported."""
    text = "\n".join(path.read_bytes().decode("utf-8", "replace") for path in (FIXTURES / "batch").iterdir())
    addresses = set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text))
    urls = set(re.findall(r"https?://[^\s\"'<>,]+", text))
    subjects = set(re.findall(r"^Subject: (.+)$", text, re.MULTILINE)) | set(re.findall(r'"subject": ?"([^"]+)"', text))
    assert len(addresses) > 20 and len(urls) > 3 and "Spring news from Riverside Health" in subjects
    return addresses | urls | subjects


def test_no_address_subject_or_url_reaches_state_db_the_cli_or_the_report(home, kms, messages, capsys):
    _land_sealed(home, kms, "2026-03-05")
    assert main(["events", "ingest", "--home", str(home.root)]) == 0
    printed = capsys.readouterr().out
    assert "recorded 17" in printed and "hard_bounce 3" in printed
    assert main(["events", "ingest", "--home", str(home.root)]) == 0
    assert "nothing to ingest" in capsys.readouterr().out
    report = ingest_event_batch(home, kms, _land_sealed(home, kms, "again"))
    canaries = _canaries()
    assert scan_for_canaries([home.root], canaries) == []
    rendered = f"{printed}\n{report!r}\n{json.dumps(report.counts())}"
    assert [canary for canary in canaries if canary.lower() in rendered.lower()] == []
