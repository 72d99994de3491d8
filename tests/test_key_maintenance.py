"""Rotation re-wraps everything onto new key versions; retention shreds only what has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from carecast.crypto.destruction import certificates
from carecast.crypto.kms import LocalKms
from carecast.crypto.pseudonym import load_pseudonymizer
from carecast.crypto.sealed_file import open_sealed, seal_bytes
from carecast.home import CarecastHome
from carecast.key_maintenance import ROTATING_CLASSES, retire_keys, rotate_keys
from carecast.lake import Lake, LakeIntegrityError
from carecast.mail import Mailbox
from carecast.retention import RetentionPolicy, apply_retention

PATIENTS = pa.table({"Id": ["p1", "p2"], "FIRST": ["Zebulon913", "Ada12"], "GENDER": ["F", "M"]})


def _outbox(n: int) -> pa.Table:
    return pa.table(
        {
            "message_key": [f"m{i}" for i in range(n)],
            "patient_key": [f"k{i}" for i in range(n)],
            "to_addr": [f"p{i}@example.org" for i in range(n)],
            "subject": ["Your screening is due"] * n,
            "body_text": ["Dear Zebulon913"] * n,
        }
    )


def test_rotation_rewraps_every_artifact_and_old_versions_can_then_be_destroyed(
    home: CarecastHome, kms: LocalKms, lake: Lake
) -> None:
    lake.write("raw_synthea_patients", PATIENTS)
    lake.write("raw_synthea_patients", PATIENTS.slice(0, 1))
    batch = home.landing / "synthea" / "b1"
    batch.mkdir(parents=True)
    sealed = seal_bytes(b"Id\np1\n", batch / "patients.csv.enc", kms)
    patient_key = load_pseudonymizer(kms, home.keys).patient_key("p1")

    used = {"identifier", "demographic", "operational", "footer", "landing", "pseudonym"}
    report = rotate_keys(kms, lake, home)
    assert sorted(report.rotated) == sorted(f"local/{c}/v{2 if c in used else 1}" for c in ROTATING_CLASSES)
    assert (report.lake_files_rewrapped, report.sealed_files_resealed, report.pseudonym_rewrapped) == (2, 1, True)
    assert set(lake.key_versions("raw_synthea_patients", 1).values()) == {2}

    destroyed = retire_keys(kms, timedelta(0), datetime.now(UTC), by="test")
    assert sorted(destroyed) == sorted(f"local/{c}/v1" for c in used)
    fresh = LocalKms(home.keys)
    assert Lake(home.lake, fresh, lake.registry).read("raw_synthea_patients", version=1).table.equals(PATIENTS)
    assert open_sealed(sealed, fresh) == b"Id\np1\n"
    assert load_pseudonymizer(fresh, home.keys).patient_key("p1") == patient_key
    assert len(certificates(home.keys).entries()) == len(destroyed) and certificates(home.keys).verify() is None


def test_retire_waits_for_the_grace_period(kms: LocalKms, lake: Lake, home: CarecastHome) -> None:
    lake.write("raw_synthea_patients", PATIENTS)
    rotate_keys(kms, lake, home, ("identifier",))
    assert retire_keys(kms, timedelta(days=30), datetime.now(UTC), by="test") == []
    assert retire_keys(kms, timedelta(days=30), datetime.now(UTC) + timedelta(days=31), by="test") == [
        "local/identifier/v1"
    ]


def test_epoch_classes_cannot_be_rotated_by_command(kms: LocalKms, lake: Lake, home: CarecastHome) -> None:
    with pytest.raises(ValueError, match="epoch classes"):
        rotate_keys(kms, lake, home, ("message",))


def test_retention_shreds_expired_messages_and_mailbox_copies_and_nothing_else(
    home: CarecastHome, kms: LocalKms, lake: Lake
) -> None:
    policy = RetentionPolicy()
    now = datetime.now(UTC)
    lake.write("raw_synthea_patients", PATIENTS)
    lake.write("outbox_reminder", _outbox(3))
    with Mailbox(home.mailbox, kms) as mailbox:
        for i in range(3):
            mailbox.store("a@example.org", [f"p{i}@example.org"], b"Message-ID: <m%d@x>\r\n\r\nDear Zebulon913" % i)

    early = apply_retention(kms, lake, policy, now + timedelta(days=2), by="test")
    assert early.epochs_started == ["local/message/v2", "local/mailbox/v2"] and early.destroyed == []
    lake.write("outbox_reminder", _outbox(2))  # written in the new epoch

    late = apply_retention(kms, lake, policy, now + timedelta(days=31), by="test")
    assert "local/message/v1" in late.destroyed and "local/mailbox/v1" in late.destroyed

    with pytest.raises(LakeIntegrityError, match="outbox_reminder v1"):
        lake.read("outbox_reminder", version=1)
    operational = lake.read("outbox_reminder", ["message_key", "patient_key"], version=1).table
    assert operational.num_rows == 3, "operational columns stay readable for the ledger and audit"
    assert lake.read("raw_synthea_patients").table.equals(PATIENTS)
    with Mailbox(home.mailbox, kms) as mailbox:
        assert mailbox.count() == 3 and list(mailbox.read_all()) == []

    certificate = next(c for c in certificates(home.keys).entries() if c["key_id"] == "local/message/v1")
    assert certificate["artifacts"] == ["outbox_reminder@v1"] and certificate["by"] == "test"
    assert "Zebulon913" not in certificates(home.keys).path.read_text()


def test_audit_log_is_kept_for_its_period_then_pruned_and_still_verifies(kms: LocalKms, lake: Lake) -> None:
    lake.write("raw_synthea_patients", PATIENTS)
    policy = RetentionPolicy()
    before = len(kms.access_log.entries())
    assert apply_retention(kms, lake, policy, datetime.now(UTC) + timedelta(days=365), by="t").audit_entries_pruned == 0
    later = apply_retention(kms, lake, policy, datetime.now(UTC) + timedelta(days=6 * 365 + 2), by="t")
    assert later.audit_entries_pruned >= before
    assert kms.access_log.verify() is None
