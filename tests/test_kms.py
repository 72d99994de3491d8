import json
import stat

import pytest

from carecast.crypto.access_log import access_context
from carecast.crypto.envelope import new_data_key, open_data_key
from carecast.crypto.kms import KeyBindingError, LocalKms, UnknownKeyError


def test_master_keys_are_created_once_with_mode_0600(kms: LocalKms) -> None:
    assert kms.master_key_id("clinical") == "local/clinical"
    assert kms.current_key_id("clinical") == "local/clinical/v1"
    path = kms.master_dir / "clinical.v1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(kms.master_dir.stat().st_mode) == 0o700
    material = path.read_bytes()
    assert kms.master_key_id("clinical") == "local/clinical"
    assert path.read_bytes() == material


def test_wrap_unwrap_round_trip_binds_class_and_context(kms: LocalKms) -> None:
    secret = b"k" * 32
    wrapped = kms.wrap(secret, kms.master_key_id("identifier"), "lake:a@v1")
    assert secret not in wrapped
    assert kms.unwrap(wrapped, "local/identifier", "lake:a@v1") == secret
    with pytest.raises(KeyBindingError, match="lake:a@v2"):
        kms.unwrap(wrapped, "local/identifier", "lake:a@v2")
    kms.master_key_id("clinical")
    with pytest.raises(KeyBindingError):
        kms.unwrap(wrapped, "local/clinical", "lake:a@v1")


def test_rotation_adds_a_version_and_old_wraps_still_open_until_destroyed(kms: LocalKms) -> None:
    old = kms.wrap(b"k" * 32, kms.master_key_id("demographic"), "x")
    assert kms.rotate("demographic") == "local/demographic/v2"
    new = kms.wrap(b"k" * 32, "local/demographic", "x")
    assert (kms.wrapped_version(old), kms.wrapped_version(new)) == (1, 2)
    assert kms.unwrap(old, "local/demographic", "x") == b"k" * 32
    assert [(v.version, v.state) for v in kms.versions("demographic")] == [(1, "retired"), (2, "active")]
    with pytest.raises(ValueError, match="current"):
        kms.destroy("demographic", 2)
    kms.destroy("demographic", 1)
    assert not (kms.master_dir / "demographic.v1.key").exists()
    with pytest.raises(UnknownKeyError, match="destroyed"):
        LocalKms(kms.keys_dir).unwrap(old, "local/demographic", "x")
    assert kms.unwrap(new, "local/demographic", "x") == b"k" * 32


def test_unknown_classes_and_ids_are_refused(kms: LocalKms) -> None:
    with pytest.raises(UnknownKeyError):
        kms.master_key_id("secrets")
    with pytest.raises(UnknownKeyError):
        kms.key_class("aws/clinical")
    with pytest.raises(KeyBindingError):
        kms.unwrap(b"not a wrapped key at all", "local/clinical", "x")


def test_access_log_records_who_used_which_key_version_and_is_hash_chained(kms: LocalKms) -> None:
    with access_context(run_id="run-1", asset="stg_patients", purpose="treatment"):
        data_key = new_data_key(kms, "message", "outbox")
        open_data_key(kms, data_key.master_key_id, data_key.wrapped, "outbox")
    entries = kms.access_log.entries()
    assert [(e["op"], e["key_id"], e["class"], e["run_id"], e["asset"], e["purpose"]) for e in entries] == [
        ("wrap", "local/message/v1", "message", "run-1", "stg_patients", "treatment"),
        ("unwrap", "local/message/v1", "message", "run-1", "stg_patients", "treatment"),
    ]
    assert kms.access_log.verify() is None
    assert data_key.secret.hex() not in kms.access_log.path.read_text()


def test_editing_or_deleting_a_log_line_breaks_the_chain_from_there(kms: LocalKms) -> None:
    for key_class in ("identifier", "clinical", "demographic"):
        kms.wrap(b"k" * 32, kms.master_key_id(key_class))
    lines = kms.access_log.path.read_text().splitlines()
    tampered = json.loads(lines[1])
    tampered["class"] = "operational"
    kms.access_log.path.write_text("\n".join([lines[0], json.dumps(tampered, sort_keys=True), *lines[2:]]) + "\n")
    assert kms.access_log.verify() == 1
    kms.access_log.path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert kms.access_log.verify() == 1


def test_pruning_old_entries_keeps_the_rest_verifiable(kms: LocalKms) -> None:
    for key_class in ("identifier", "clinical", "demographic"):
        kms.wrap(b"k" * 32, kms.master_key_id(key_class))
    entries = kms.access_log.entries()
    assert kms.access_log.chain.prune_before(entries[2]["at"]) == 2
    assert len(kms.access_log.entries()) == 1 and kms.access_log.verify() is None
