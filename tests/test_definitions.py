"""The code location loads with no secrets and no environment, and its graph is what we reviewed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

EXPECTED_ASSETS = [
    "audience_breast_screening_reminder",
    "delivery_breast_screening_reminder",
    "engagement_events",
    "int_patient_visits",
    "mart_behavior",
    "mart_clinical_facts",
    "mart_consent_latest",
    "mart_consent_status",
    "mart_journey_stage",
    "mart_latest_labs",
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
    "raw_synthea_payers",
    "raw_synthea_procedures",
    "report_breast_screening_reminder",
    "segment_annual_wellness_visit_overdue",
    "segment_breast_cancer_screening_due",
    "segment_colorectal_screening_due",
    "segment_diabetes_prevention_program_invite",
    "segment_diabetes_uncontrolled_no_recent_visit",
    "segment_flu_vaccine_high_risk_engaged",
    "segment_flu_vaccine_not_yet_this_season",
    "segment_hypertension_in_service_area",
    "segment_lapsed_engagement",
    "segment_new_patients_first_30_days",
    "segment_spanish_speaking_seniors",
    "sensitive_codes",
    "stg_conditions",
    "stg_consents",
    "stg_contacts",
    "stg_encounters",
    "stg_events",
    "stg_immunizations",
    "stg_medications",
    "stg_observations",
    "stg_patients",
    "stg_payers",
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
