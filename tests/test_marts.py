"""Marts over tiny hand-built lakes: raw tables written directly, then the real models run on them."""

from datetime import date, datetime

import pytest

from carecast import stages
from carecast.home import CarecastHome
from carecast.project import Project
from carecast.runtime import Runtime
from tests import raw_tables

AS_OF = date(2026, 11, 23)


@pytest.fixture
def runtime(home: CarecastHome, project: Project) -> Runtime:
    return Runtime.open(home, project, as_of=AS_OF)


def test_stg_payers_names_the_insurance_type(runtime: Runtime) -> None:
    runtime.lake.write("raw_synthea_payers", raw_tables.payers())
    result = stages.run_model(runtime, "stg_payers")
    assert all(t.passed for t in result.tests)
    types = {r["payer_id"]: r["insurance_type"] for r in runtime.lake.read("stg_payers").table.to_pylist()}
    assert types == {
        "pay-medicare": "medicare",
        "pay-medicaid": "medicaid",
        "pay-dual": "dual_eligible",
        "pay-aetna": "commercial",
        "pay-humana": "commercial",
        "pay-none": "uninsured",
    }


def test_profile_insurance_type_is_the_payer_of_the_newest_encounter_known_on_the_run_date(runtime: Runtime) -> None:
    births = {
        "senior": date(1956, 5, 1),  # 70: Medicare now, a commercial plan before 65
        "future": date(1980, 1, 1),  # the newest encounter is after as_of: the older one counts
        "same_day": date(1985, 1, 1),  # an encounter on the run date itself counts
        "no_payer": date(1990, 1, 1),  # the newest encounter names no payer: not the older one's
        "uninsured": date(1995, 1, 1),
        "none": date(2000, 1, 1),  # no encounter at all
    }
    runtime.lake.write("raw_synthea_patients", raw_tables.patients(births))
    runtime.lake.write("raw_crm_contacts", raw_tables.contacts(list(births)))
    runtime.lake.write("raw_synthea_payers", raw_tables.payers())
    runtime.lake.write(
        "raw_synthea_encounters",
        raw_tables.encounters(
            [
                ("e1", "senior", datetime(2015, 3, 1, 9), "pay-aetna"),
                ("e2", "senior", datetime(2026, 10, 1, 9), "pay-medicare"),
                ("e3", "future", datetime(2024, 1, 10, 9), "pay-medicaid"),
                ("e4", "future", datetime(2026, 12, 1, 9), "pay-aetna"),
                ("e5", "same_day", datetime(2025, 2, 1, 9), "pay-medicaid"),
                ("e6", "same_day", datetime(2026, 11, 23, 15), "pay-humana"),
                ("e7", "no_payer", datetime(2024, 5, 1, 9), "pay-aetna"),
                ("e8", "no_payer", datetime(2026, 6, 1, 9), None),
                ("e9", "uninsured", datetime(2026, 1, 5, 9), "pay-none"),
            ]
        ),
    )
    for model in ("stg_patients", "stg_contacts", "stg_encounters", "stg_payers", "int_patient_visits"):
        stages.run_model(runtime, model)
    result = stages.run_model(runtime, "mart_patient_profile")
    assert all(t.passed for t in result.tests), [t for t in result.tests if not t.passed]

    profile = runtime.lake.read("mart_patient_profile", ["patient_id", "age", "insurance_type", "zip_code", "zip3"])
    rows = {r["patient_id"]: r for r in profile.table.to_pylist()}
    assert {patient: row["insurance_type"] for patient, row in rows.items()} == {
        "senior": "medicare",
        "future": "medicaid",
        "same_day": "commercial",
        "no_payer": "unknown",
        "uninsured": "uninsured",
        "none": "unknown",
    }
    assert rows["senior"]["age"] == 70
    assert {(row["zip_code"], row["zip3"]) for row in rows.values()} == {("02155", "021")}
    # the profile takes the payer from the intermediate model: it never unwraps the clinical key
    assert result.metadata["columns_read"]["int_patient_visits"] == ["latest_payer_id", "patient_id"]
    assert result.metadata["columns_read"]["stg_payers"] == ["insurance_type", "payer_id"]
    assert "clinical" not in result.metadata["classes_read"]


def _land(runtime: Runtime, source: str, table: str, rows: list[dict[str, str]]) -> None:
    runtime.lake.write(f"raw_{source}_{table}", raw_tables.landed(runtime.project, source, table, rows))


def test_clinical_marts_know_only_what_was_known_on_the_run_date(runtime: Runtime) -> None:
    # AS_OF is 2026-11-23: a later stop, result, fact or event is not yet known, so a past run date
    # re-explains a past campaign with the data it had
    _land(runtime, "synthea", "patients", [])
    _land(
        runtime,
        "synthea",
        "conditions",
        [
            {"PATIENT": "stops_later", "CODE": "59621000", "START": "2020-01-01", "STOP": "2026-12-01"},
            {"PATIENT": "stopped_on_the_day", "CODE": "195967001", "START": "2020-01-01", "STOP": "2026-11-23"},
            {"PATIENT": "starts_later", "CODE": "44054006", "START": "2026-11-24"},
        ],
    )
    _land(
        runtime,
        "synthea",
        "observations",
        [
            {
                "PATIENT": "lab",
                "CATEGORY": "laboratory",
                "CODE": "4548-4",
                "VALUE": "8.0",
                "DATE": "2026-01-01T09:00:00Z",
            },
            {
                "PATIENT": "lab",
                "CATEGORY": "laboratory",
                "CODE": "4548-4",
                "VALUE": "10.0",
                "DATE": "2026-11-24T09:00:00Z",
            },
        ],
    )
    for table in ("procedures", "medications", "immunizations"):
        _land(runtime, "synthea", table, [])
    _land(
        runtime,
        "events",
        "events",
        [
            {"event_id": "e1", "event_type": "open", "occurred_at": "2026-06-01T10:00:00Z", "patient_id": "reader"},
            {"event_id": "e2", "event_type": "open", "occurred_at": "2026-11-24T10:00:00Z", "patient_id": "reader"},
        ],
    )
    for model in ("sensitive_codes",):
        stages.load_seed(runtime, model)
    for model in (
        "stg_patients",
        "stg_conditions",
        "stg_observations",
        "stg_procedures",
        "stg_medications",
        "stg_immunizations",
        "stg_events",
        "mart_clinical_facts",
        "mart_latest_labs",
        "mart_behavior",
    ):
        stages.run_model(runtime, model)

    facts = runtime.lake.read("mart_clinical_facts", ["patient_id", "fact_type", "is_active"]).table.to_pylist()
    conditions = {row["patient_id"]: row["is_active"] for row in facts if row["fact_type"] == "condition"}
    assert conditions == {"stops_later": True, "stopped_on_the_day": False}
    labs = runtime.lake.read("mart_latest_labs", ["patient_id", "value_number"]).table.to_pylist()
    assert labs == [{"patient_id": "lab", "value_number": 8.0}]
    behavior = runtime.lake.read("mart_behavior", ["patient_id", "opens", "last_open_at"]).table.to_pylist()
    assert behavior == [{"patient_id": "reader", "opens": 1, "last_open_at": datetime(2026, 6, 1, 10, 0)}]
