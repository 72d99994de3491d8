"""The code location loads with no secrets and no environment, and its graph is what we reviewed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

EXPECTED_ASSETS = [
    "audience_breast_screening_reminder",
    "delivery_breast_screening_reminder",
    "mart_consent_latest",
    "mart_patient_profile",
    "mart_suppressions",
    "outbox_breast_screening_reminder",
    "raw_consents_consents",
    "raw_crm_contacts",
    "raw_events_events",
    "raw_synthea_conditions",
    "raw_synthea_encounters",
    "raw_synthea_immunizations",
    "raw_synthea_medications",
    "raw_synthea_observations",
    "raw_synthea_patients",
    "raw_synthea_procedures",
    "report_breast_screening_reminder",
    "segment_breast_cancer_screening_due",
    "segment_spanish_speaking_seniors",
    "stg_consents",
    "stg_contacts",
    "stg_events",
    "stg_patients",
    "stg_procedures",
]

_PROBE = """
import json, dagster as dg
from pipelines.definitions import defs
dg.Definitions.validate_loadable(defs)
graph = defs.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "checks": len(list(graph.asset_check_keys)),
    "jobs": sorted(j.name for j in defs.resolve_all_job_defs()),
    "deps": sorted(
        p.to_user_string() for p in graph.get(dg.AssetKey("audience_breast_screening_reminder")).parent_keys
    ),
}))
"""


def test_definitions_load_with_an_empty_environment(tmp_path) -> None:
    environment = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE], env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert loaded["assets"] == EXPECTED_ASSETS
    assert loaded["checks"] > 20
    assert {"carecast_everything", "retention_job", "key_rotation_job"} <= set(loaded["jobs"])
    assert loaded["deps"] == [
        "mart_consent_latest",
        "mart_patient_profile",
        "mart_suppressions",
        "segment_breast_cancer_screening_due",
    ]
    assert not (tmp_path / ".carecast").exists(), "loading definitions must not create a data home"
