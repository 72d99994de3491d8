"""The scheduled maintenance jobs run for real against a data home (Dagster's in-process execution)."""

from __future__ import annotations

import pyarrow as pa

from carecast.crypto.destruction import certificates
from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.lake import Lake
from carecast.project import Project
from pipelines.definitions import defs
from pipelines.resources import CarecastResource


def test_rotation_job_rewraps_and_retention_job_runs(home: CarecastHome, project: Project) -> None:
    kms = LocalKms(home.keys)
    lake = Lake(home.lake, kms, project.registry)
    lake.write("raw_synthea_patients", pa.table({"Id": ["p1"], "GENDER": ["F"]}))
    resources = {"carecast": CarecastResource(home=str(home.root))}

    rotation = defs.resolve_job_def("key_rotation_job").execute_in_process(resources=resources)
    assert rotation.success
    assert set(lake.key_versions("raw_synthea_patients", 1).values()) == {2}
    assert lake.read("raw_synthea_patients").table.num_rows == 1

    retention = defs.resolve_job_def("retention_job").execute_in_process(resources=resources)
    assert retention.success
    assert certificates(home.keys).verify() is None
    assert kms.access_log.verify() is None
    assert any(e["asset"] == "maintenance:key_rotation" for e in kms.access_log.entries())
