import json
import stat

import pytest

from carecast.crypto.access_log import access_context, verify_chain
from carecast.crypto.envelope import new_data_key, open_data_key
from carecast.crypto.kms import LocalKms, UnknownKeyError


def test_master_keys_are_created_once_with_mode_0600(kms: LocalKms) -> None:
    key_id = kms.current_key_id("clinical")
    assert key_id == "local/clinical/v1"
    path = kms.master_dir / "clinical.v1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(kms.master_dir.stat().st_mode) == 0o700
    material = path.read_bytes()
    assert kms.current_key_id("clinical") == key_id
    assert path.read_bytes() == material


def test_wrap_unwrap_round_trip_and_key_binding(kms: LocalKms) -> None:
    secret = b"k" * 32
    wrapped = kms.wrap(secret, kms.current_key_id("identifier"))
    assert secret not in wrapped
    assert kms.unwrap(wrapped, "local/identifier/v1") == secret
    other = kms.current_key_id("clinical")
    with pytest.raises(Exception):  # noqa: B017 - AES-GCM raises InvalidTag under the wrong key
        kms.unwrap(wrapped, other)


def test_unknown_or_destroyed_keys_are_refused(kms: LocalKms) -> None:
    with pytest.raises(UnknownKeyError):
        kms.current_key_id("secrets")
    with pytest.raises(UnknownKeyError):
        kms.unwrap(b"x" * 60, "local/clinical/v9")
    with pytest.raises(UnknownKeyError):
        kms.key_class("aws:clinical:v1")


def test_access_log_records_who_used_which_key_and_is_hash_chained(kms: LocalKms) -> None:
    with access_context(run_id="run-1", asset="stg_patients", purpose="treatment"):
        data_key = new_data_key(kms, "message")
        open_data_key(kms, data_key.key_id, data_key.wrapped)
    entries = kms.access_log.entries()
    assert [(e["op"], e["class"], e["run_id"], e["asset"], e["purpose"]) for e in entries] == [
        ("wrap", "message", "run-1", "stg_patients", "treatment"),
        ("unwrap", "message", "run-1", "stg_patients", "treatment"),
    ]
    assert verify_chain(entries) is None
    assert data_key.secret.hex() not in kms.access_log.path.read_text()


def test_editing_a_log_line_breaks_the_chain_from_there(kms: LocalKms) -> None:
    for key_class in ("identifier", "clinical", "demographic"):
        kms.wrap(b"k" * 32, kms.current_key_id(key_class))
    lines = kms.access_log.path.read_text().splitlines()
    tampered = json.loads(lines[1])
    tampered["class"] = "operational"
    lines[1] = json.dumps(tampered, sort_keys=True)
    kms.access_log.path.write_text("\n".join(lines) + "\n")
    assert verify_chain(kms.access_log.entries()) == 1
    del lines[1]
    kms.access_log.path.write_text("\n".join(lines) + "\n")
    assert verify_chain(kms.access_log.entries()) == 1
