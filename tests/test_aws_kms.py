"""The AWS KMS path, against moto's KMS: same lake, same guarantees, same access log."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pyarrow as pa
import pytest
from moto import mock_aws

from carecast.crypto.access_log import AccessLog
from carecast.crypto.aws_kms import AwsKms, provision_keys
from carecast.crypto.kms import KeyBindingError
from carecast.crypto.sealed_file import open_sealed, seal_bytes
from carecast.home import CarecastHome
from carecast.lake import Lake, LakeIntegrityError
from carecast.project import Project

PATIENTS = pa.table({"Id": ["p1", "p2"], "FIRST": ["Zebulon913", "Ada12"], "GENDER": ["F", "M"]})


@pytest.fixture
def aws_kms(home: CarecastHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsKms]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("kms", region_name="us-east-1")
        provision_keys(client)
        yield AwsKms(client, AccessLog(home.keys / "access.jsonl"))


def test_lake_on_aws_kms_reads_only_the_keys_it_needs(aws_kms: AwsKms, home: CarecastHome, project: Project) -> None:
    lake = Lake(home.lake, aws_kms, project.registry)
    version = lake.write("raw_synthea_patients", PATIENTS)
    assert b"Zebulon913" not in version.path.read_bytes()
    read = lake.read("raw_synthea_patients", ["Id", "GENDER"])
    assert read.table.equals(PATIENTS.select(["Id", "GENDER"]))
    unwrapped = {e["class"] for e in aws_kms.access_log.entries() if e["op"] == "unwrap"}
    assert unwrapped == {"footer", "operational", "demographic"}
    assert all(k.startswith("arn:aws:kms:") for k in read.key_ids)
    assert aws_kms.access_log.verify() is None


def test_binding_context_is_enforced_by_aws(aws_kms: AwsKms, home: CarecastHome, project: Project) -> None:
    wrapped = aws_kms.wrap(b"k" * 32, aws_kms.master_key_id("identifier"), "lake:a@v1")
    with pytest.raises(KeyBindingError):
        aws_kms.unwrap(wrapped, "alias/carecast-identifier", "lake:a@v2")
    batch = home.landing / "crm" / "b1"
    batch.mkdir(parents=True)
    path = seal_bytes(b"patient_id,email\n", batch / "contacts.csv.enc", aws_kms)
    assert open_sealed(path, aws_kms) == b"patient_id,email\n"
    lake = Lake(home.lake, aws_kms, project.registry)
    first = lake.write("raw_synthea_patients", PATIENTS)
    second = lake.write("raw_synthea_patients", PATIENTS)
    second.path.write_bytes(first.path.read_bytes())
    second.path.with_name(f"_KEY_MATERIAL_FOR_{second.path.name}.json").write_bytes(
        first.path.with_name(f"_KEY_MATERIAL_FOR_{first.path.name}.json").read_bytes()
    )
    with pytest.raises(LakeIntegrityError, match="raw_synthea_patients v2"):
        lake.read("raw_synthea_patients")


def test_rotation_on_aws_keeps_data_readable_and_rewrap_works(
    aws_kms: AwsKms, home: CarecastHome, project: Project
) -> None:
    lake = Lake(home.lake, aws_kms, project.registry)
    lake.write("raw_synthea_patients", PATIENTS)
    assert aws_kms.rotate("identifier").startswith("arn:aws:kms:")
    lake.rewrap("raw_synthea_patients", 1)
    assert lake.read("raw_synthea_patients").table.equals(PATIENTS)
