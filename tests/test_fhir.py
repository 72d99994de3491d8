"""FHIR R4 Bulk Data NDJSON as a landing format (carecast/ingest/fhir.py).

The round trip: synthea-27's CSVs -> FHIR NDJSON (tests/fhir_export.py, the inverse written
independently) -> ``read_fhir_resource`` -> the same rows, column for column, as the CSV read as strings,
except the columns FHIR does not carry (listed below with the reason) -> the same validation as a CSV,
with nothing quarantined.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from carecast.ingest.fhir import RESOURCE_TABLES, read_fhir_resource
from carecast.ingest.readers import ExtractError
from carecast.ingest.validate import validate
from carecast.project import Project
from carecast.synth.cohort import Cohort
from carecast.synth.consents import generate_consents
from carecast.synth.writer import DATE_FORMAT, TIMESTAMP_FORMAT
from tests.conftest import SYNTHEA_27
from tests.fhir_export import export_bulk, write_ndjson

TABLE_OF = {resource: table for resource, (_source, table) in RESOURCE_TABLES.items()}

# Rows per table in synthea-27 (the CSVs' own counts: ../shared/data/README.md gives only the
# orientation counts asserted in test_orientation_counts_survive_the_round_trip).
EXPECTED_ROWS = {
    "patients": 27,
    "encounters": 604,
    "conditions": 438,
    "observations": 990,
    "immunizations": 29,
    "procedures": 249,
    "medications": 663,
}
BLOOD_PRESSURE_PANELS = 27
"""synthea-27 has 27 systolic/diastolic pairs: 990 observation rows are 963 Observation resources."""

NOT_CARRIED = {
    "patients": {
        "HEALTHCARE_EXPENSES": "a lifetime cost total: costs are in Claim/ExplanationOfBenefit, not on Patient",
        "HEALTHCARE_COVERAGE": "a lifetime payer total: Claim/ExplanationOfBenefit, not on Patient",
    },
    "encounters": {
        "PAYER": "the payer is on Coverage/Claim; a FHIR batch carries no payers table, so PAYER stays empty",
        "BASE_ENCOUNTER_COST": "costs are in Claim/ExplanationOfBenefit",
        "TOTAL_CLAIM_COST": "costs are in Claim/ExplanationOfBenefit",
        "PAYER_COVERAGE": "costs are in Claim/ExplanationOfBenefit",
    },
    "conditions": {},
    "observations": {},
    "immunizations": {"BASE_COST": "costs are in Claim/ExplanationOfBenefit"},
    "procedures": {"BASE_COST": "costs are in Claim/ExplanationOfBenefit"},
    "medications": {
        "PAYER": "the payer is on Coverage/Claim, not on MedicationRequest",
        "BASE_COST": "costs are in Claim/ExplanationOfBenefit",
        "PAYER_COVERAGE": "costs are in Claim/ExplanationOfBenefit",
        "DISPENSES": "Synthea derives it from refills or duration; MedicationDispense, not MedicationRequest",
        "TOTALCOST": "costs are in Claim/ExplanationOfBenefit",
    },
}
"""Columns of the synthea-27 CSVs that FHIR resources of these types do not carry, with the reason."""

WELLNESS_TYPES = ["162673000", "410620009", "444971000124105"]
CARRIED_DIFFERENTLY = {
    # FHIR's v3 ActCode has no wellness, outpatient or urgent care class: Synthea (and this export) write
    # all four as AMB. The reader tells wellness and urgent care visits apart by their SNOMED type; an
    # outpatient encounter, and a wellness-class encounter of another type (Synthea's "Death
    # Certification"), read back as ambulatory.
    "encounters": {
        "ENCOUNTERCLASS": pl.when(pl.col("ENCOUNTERCLASS") == "outpatient")
        .then(pl.lit("ambulatory"))
        .when((pl.col("ENCOUNTERCLASS") == "wellness") & pl.col("CODE").is_in(WELLNESS_TYPES).not_())
        .then(pl.lit("ambulatory"))
        .otherwise(pl.col("ENCOUNTERCLASS"))
    },
    # A text answer is a valueString/valueCodeableConcept, which has no unit: Synthea's "/a" on income
    # answers and its literal "null" unit on cause of death are not carried.
    "observations": {"UNITS": pl.when(pl.col("TYPE") == "numeric").then(pl.col("UNITS"))},
}
EXPECTED_CHANGES = {("encounters", "ENCOUNTERCLASS"): 54, ("observations", "UNITS"): 20}
"""How many synthea-27 rows the documented differences touch (52 outpatient + 2 death certifications; 18 + 2)."""


@pytest.fixture(scope="module")
def consents_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """carecast's synthetic consent extract for the synthea-27 patients, as the generator writes it."""
    patients = pl.read_csv(SYNTHEA_27 / "patients.csv", infer_schema=False)
    consents = generate_consents(11, Cohort.from_synthea_patients(patients, date(2026, 11, 1)))
    path = tmp_path_factory.mktemp("consents") / "consents.csv"
    path.write_text(consents.write_csv(datetime_format=TIMESTAMP_FORMAT, date_format=DATE_FORMAT))
    return path


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory, consents_csv: Path) -> dict[str, Path]:
    return export_bulk(SYNTHEA_27, tmp_path_factory.mktemp("fhir"), consents_csv=consents_csv)


@pytest.fixture(scope="module")
def read_back(bulk: dict[str, Path]) -> dict[str, pl.DataFrame]:
    return {
        resource_type: read_fhir_resource(path.read_bytes(), path.name, resource_type)
        for resource_type, path in bulk.items()
    }


def _ndjson(resources: list[dict]) -> bytes:
    return "".join(json.dumps(resource) + "\n" for resource in resources).encode()


def _read(resource_type: str, resources: list[dict], counts: dict[str, int] | None = None) -> pl.DataFrame:
    return read_fhir_resource(_ndjson(resources), f"{resource_type}.ndjson", resource_type, counts=counts)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


# -- (a) the round trip ----------------------------------------------------------------------------


def test_bulk_export_has_one_file_per_resource_type_some_gzipped(bulk: dict[str, Path]) -> None:
    assert set(bulk) == set(RESOURCE_TABLES)
    assert {path.name for path in bulk.values() if path.name.endswith(".gz")} == {
        "Encounter.ndjson.gz",
        "Observation.ndjson.gz",
        "Consent.ndjson.gz",
    }
    observations = gzip.decompress(bulk["Observation"].read_bytes()).decode().splitlines()
    assert len(observations) == EXPECTED_ROWS["observations"] - BLOOD_PRESSURE_PANELS
    panel = next(json.loads(line) for line in observations if '"component"' in line)
    assert [c["code"]["coding"][0]["code"] for c in panel["component"]] == ["8480-6", "8462-4"]


@pytest.mark.parametrize("resource_type", [r for r, (source, _t) in RESOURCE_TABLES.items() if source == "synthea"])
def test_synthea_27_round_trips_through_fhir(
    resource_type: str, read_back: dict[str, pl.DataFrame], project: Project
) -> None:
    table = TABLE_OF[resource_type]
    csv = pl.read_csv(SYNTHEA_27 / f"{table}.csv", infer_schema=False)
    frame = read_back[resource_type]
    assert frame.height == csv.height == EXPECTED_ROWS[table]
    assert all(dtype == pl.String for dtype in frame.dtypes)

    spec = project.registry.table_spec(*RESOURCE_TABLES[resource_type])
    assert set(frame.columns) <= set(spec.columns), "only declared columns"
    assert {name for name, column in spec.columns.items() if column.required} <= set(frame.columns)

    not_carried = NOT_CARRIED[table]
    assert set(not_carried) <= set(csv.columns)
    assert not (set(not_carried) & set(frame.columns))
    expected = csv.drop(not_carried).with_columns(**CARRIED_DIFFERENTLY.get(table, {}))
    for column in CARRIED_DIFFERENTLY.get(table, {}):
        changed = (csv[column].ne_missing(expected[column])).sum()
        assert changed == EXPECTED_CHANGES[(table, column)]
    assert set(expected.columns) <= set(frame.columns), "every other CSV column is carried"
    assert_frame_equal(_sorted(frame.select(expected.columns)), _sorted(expected))

    # ... and the rows go through the CSV's validation untouched.
    result = validate(frame, spec, first_line=1)
    assert result.quarantined.height == 0, result.reasons
    assert result.loaded.height == csv.height


def test_columns_synthea_27_lacks_are_filled_from_fhir(read_back: dict[str, pl.DataFrame]) -> None:
    # synthea-27 is an older export without SYSTEM on conditions/procedures nor MIDDLE on patients:
    # FHIR carries them (the coding's system; given[1:]), so the reader fills them.
    assert read_back["Condition"]["SYSTEM"].unique().to_list() == ["SNOMED-CT"]
    assert read_back["Procedure"]["SYSTEM"].unique().to_list() == ["SNOMED-CT"]
    assert read_back["Patient"]["MIDDLE"].null_count() == EXPECTED_ROWS["patients"]


def test_consents_round_trip_through_fhir(
    read_back: dict[str, pl.DataFrame], consents_csv: Path, project: Project
) -> None:
    expected = pl.read_csv(consents_csv, infer_schema=False)
    frame = read_back["Consent"]
    assert frame.columns == expected.columns
    assert expected["revoked_at"].drop_nulls().len() > 0 and expected["expires_at"].drop_nulls().len() > 0
    assert set(expected["purpose"]) == {"treatment", "operations", "marketing", "fundraising"}
    assert_frame_equal(_sorted(frame), _sorted(expected))
    result = validate(frame, project.registry.table_spec("consents", "consents"), first_line=1)
    assert result.quarantined.height == 0


def test_orientation_counts_survive_the_round_trip(read_back: dict[str, pl.DataFrame]) -> None:
    """The counts ../shared/data/README.md gives for synthea-27, on the tables read from FHIR."""
    conditions = read_back["Condition"]

    def patients_with(frame: pl.DataFrame, codes: list[str]) -> int:
        return frame.filter(pl.col("CODE").is_in(codes))["PATIENT"].n_unique()

    assert patients_with(conditions, ["59621000"]) == 6  # essential hypertension
    assert patients_with(conditions, ["15777000"]) == 5  # prediabetes
    assert patients_with(conditions, ["44054006"]) == 0  # diabetes
    assert patients_with(read_back["Observation"], ["4548-4"]) == 5  # HbA1c
    influenza = ["88", "111", "135", "140", "141", "144", "149", "150", "153", "155", "158", "161", "166", "168"]
    assert patients_with(read_back["Immunization"], influenza) == 23


# -- (b) gzip and plain ----------------------------------------------------------------------------


@pytest.mark.parametrize("resource_type", ["Encounter", "Patient", "Consent"])
def test_gzip_and_plain_read_the_same(resource_type: str, bulk: dict[str, Path]) -> None:
    data = bulk[resource_type].read_bytes()
    plain = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    zipped = gzip.compress(plain)
    assert zipped != plain
    assert_frame_equal(
        read_fhir_resource(plain, f"{resource_type}.ndjson", resource_type),
        read_fhir_resource(zipped, f"{resource_type}.ndjson.gz", resource_type),
    )


def test_write_ndjson_gzips_by_name(tmp_path: Path) -> None:
    resources = [{"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}]
    zipped = write_ndjson(tmp_path / "Patient.ndjson.gz", resources).read_bytes()
    assert zipped[:2] == b"\x1f\x8b"
    assert read_fhir_resource(zipped, "Patient.ndjson.gz", "Patient")["Id"].to_list() == ["p1"]


# -- (c) errors name the file and the line, never a value -------------------------------------------

SECRET = "Zebulon-Quixote-999-12-3456"


def _patients(count: int) -> list[bytes]:
    return [
        json.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": "male", "birthDate": "1980-01-01"}).encode()
        for i in range(1, count + 1)
    ]


def _error(data: bytes, name: str = "Patient.ndjson", resource_type: str = "Patient") -> str:
    with pytest.raises(ExtractError) as raised:
        read_fhir_resource(data, name, resource_type)
    message = str(raised.value)
    assert name in message
    assert SECRET not in message and "Zebulon" not in message
    return message


@pytest.mark.parametrize("zipped", [False, True])
def test_invalid_json_names_file_and_line_without_the_value(zipped: bool) -> None:
    lines = _patients(20)
    lines[16] = ('{"resourceType": "Patient", "id": "p17", "name": [{"family": "' + SECRET + '"}').encode()
    data = b"\n".join(lines) + b"\n"
    message = _error(gzip.compress(data) if zipped else data, "Patient.ndjson.gz" if zipped else "Patient.ndjson")
    assert "line 17" in message and "invalid JSON" in message
    assert "p17" not in message


def test_line_numbers_count_blank_lines_and_crlf() -> None:
    lines = _patients(6)
    lines[4] = ('{"resourceType": "Patient", "id": "' + SECRET + '" "gender": "male"}').encode()
    data = b"\r\n".join([*lines[:2], b"", b"   ", *lines[2:]]) + b"\r\n"
    assert "line 7" in _error(data)


def test_a_line_that_is_not_an_object_is_named() -> None:
    lines = _patients(3)
    lines[1] = json.dumps([SECRET, 1]).encode()
    assert "line 2: not a JSON object" in _error(b"\n".join(lines))


def test_wrong_structure_names_the_element_not_the_value() -> None:
    lines = _patients(5)
    lines[3] = json.dumps({"resourceType": "Patient", "id": "p4", "name": SECRET}).encode()
    message = _error(b"\n".join(lines))
    assert "line 4" in message and "'name'" in message


def test_wrong_resource_type_names_the_line() -> None:
    lines = _patients(4)
    lines[2] = json.dumps({"resourceType": "Observation", "id": "o1", "status": "final"}).encode()
    message = _error(b"\n".join(lines))
    assert "line 3" in message and "Observation" in message and "for Patient" in message

    lines[2] = json.dumps({"resourceType": SECRET, "id": "x"}).encode()
    assert "line 3: holds a resource of another type" in _error(b"\n".join(lines))

    lines[2] = json.dumps({"id": "x", "gender": "male"}).encode()
    assert "line 3: has no resourceType" in _error(b"\n".join(lines))


@pytest.mark.parametrize("data", [b"", b"\n \n", gzip.compress(b""), gzip.compress(b"\n")])
def test_an_empty_file_is_refused(data: bytes) -> None:
    message = _error(data)
    assert "empty" in message or "no resources" in message


def test_non_utf8_bytes_are_refused_with_the_line() -> None:
    lines = _patients(5)
    lines[3] = json.dumps(
        {"resourceType": "Patient", "id": "p4", "name": [{"family": "M\u00fcller"}]}, ensure_ascii=False
    ).encode("latin-1")
    message = _error(b"\n".join(lines))
    assert "line 4" in message and "UTF-8" in message
    assert "UTF-8" in _error(b"\n".join(_patients(2)).decode().encode("utf-16"))


def test_a_corrupt_gzip_is_refused() -> None:
    data = gzip.compress(b"\n".join(_patients(50)))
    assert "gzip" in _error(data[: len(data) // 2], "Patient.ndjson.gz")


def test_an_unmapped_resource_type_is_refused() -> None:
    with pytest.raises(ExtractError, match="Organization.ndjson"):
        read_fhir_resource(b"\n".join(_patients(1)), "Organization.ndjson", "Organization")


def test_two_resources_on_one_line_are_refused() -> None:
    lines = _patients(3)
    lines[1] = lines[1] + b" " + lines[2]
    assert "line 2: more than one JSON value" in _error(b"\n".join(lines[:2]) + b"\n")


def test_a_utf8_bom_is_tolerated() -> None:
    assert read_fhir_resource(b"\xef\xbb\xbf" + b"\n".join(_patients(2)), "P.ndjson", "Patient").height == 2


# -- Mapping rules ---------------------------------------------------------------------------------


def _encounter(class_code: str, type_code: str = "185345009", **extra: object) -> dict:
    return {
        "resourceType": "Encounter",
        "id": f"e-{class_code}-{type_code}",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_code},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": type_code, "display": "x"}]}],
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-03-01T09:00:00-05:00", "end": "2024-03-01T09:30:00-05:00"},
        **extra,
    }


def test_encounter_class_rule() -> None:
    cases = [
        (("AMB", "162673000"), "wellness"),
        (("AMB", "410620009"), "wellness"),
        (("AMB", "702927004"), "urgentcare"),
        (("AMB", "185349003"), "ambulatory"),
        (("EMER", "50849002"), "emergency"),
        (("IMP", "183452005"), "inpatient"),
        (("VR", "185345009"), "virtual"),
        (("HH", "185345009"), "home"),
        (("outpatient", "185349003"), "outpatient"),  # a local code system already in Synthea's terms
        (("XYZ", "185345009"), None),
    ]
    frame = _read("Encounter", [_encounter(*case) for case, _ in cases])
    assert frame["ENCOUNTERCLASS"].to_list() == [expected for _, expected in cases]
    assert frame["START"][0] == "2024-03-01T14:00:00Z"


def test_references_in_every_form_resolve_to_the_id() -> None:
    forms = [
        {"reference": "Organization/org-1"},
        {"reference": "urn:uuid:org-1"},
        {"reference": "https://ehr.example.org/fhir/Organization/org-1/_history/3"},
        {"reference": "Organization?identifier=https://github.com/synthetichealth/synthea|org-1"},
        {"reference": "Organization?identifier=https://github.com/synthetichealth/synthea%7Corg-1"},
        {"identifier": {"system": "urn:oid:1.2.3", "value": "org-1"}},
    ]
    frame = _read(
        "Encounter", [_encounter("AMB", serviceProvider=form) | {"id": f"e{i}"} for i, form in enumerate(forms)]
    )
    assert frame["ORGANIZATION"].to_list() == ["org-1"] * len(forms)


def test_primary_performer_is_the_provider() -> None:
    participants = [
        {"type": [{"coding": [{"code": "ATND"}]}], "individual": {"reference": "Practitioner/attender"}},
        {"type": [{"coding": [{"code": "PPRF"}]}], "individual": {"reference": "Practitioner/primary"}},
    ]
    frame = _read(
        "Encounter", [_encounter("AMB", participant=participants), _encounter("EMER", participant=participants[:1])]
    )
    assert frame["PROVIDER"].to_list() == ["primary", "attender"]


def test_statuses_that_mean_it_did_not_happen_are_left_out() -> None:
    counts: dict[str, int] = {}
    encounters = [
        _encounter("AMB") | {"id": f"e{i}", "status": status}
        for i, status in enumerate(["finished", "cancelled", "entered-in-error", "planned", "in-progress"])
    ]
    frame = _read("Encounter", encounters, counts)
    assert frame["Id"].to_list() == ["e0", "e4"]
    assert counts == {"resources": 5, "resources_skipped": 3, "rows": 2}

    vaccine = {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]}
    immunizations = [
        {
            "resourceType": "Immunization",
            "status": status,
            "vaccineCode": vaccine,
            "patient": {"reference": "Patient/p"},
            "occurrenceDateTime": "2024-01-01T00:00:00Z",
        }
        for status in ("completed", "not-done", "entered-in-error")
    ]
    assert _read("Immunization", immunizations).height == 1

    def condition(verification: str) -> dict:
        return {
            "resourceType": "Condition",
            "verificationStatus": {"coding": [{"code": verification}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
            "subject": {"reference": "Patient/p"},
            "onsetDateTime": "2020-05-01",
        }

    counts = {}
    frame = _read(
        "Condition", [condition(v) for v in ("confirmed", "refuted", "entered-in-error", "provisional")], counts
    )
    assert frame.height == 2 and counts["resources_skipped"] == 2


def test_instants_are_normalized_to_utc_and_bad_ones_are_left_for_validation(project: Project) -> None:
    def procedure(start: str) -> dict:
        return {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "430193006"}]},
            "subject": {"reference": "Patient/p"},
            "performedDateTime": start,
        }

    starts = ["2023-01-27T23:30:00-05:00", "2023-01-27T16:17:47.123Z", "2023-01-27T16:17:47", "2023-01-27", "2023-01"]
    frame = _read("Procedure", [procedure(start) for start in starts])
    assert frame["START"].to_list() == [
        "2023-01-28T04:30:00Z",
        "2023-01-27T16:17:47Z",
        "2023-01-27T16:17:47Z",
        "2023-01-27",
        "2023-01",
    ]
    result = validate(frame, project.registry.table_spec("synthea", "procedures"), first_line=1)
    assert result.reasons == {"type_timestamp:START": 1}


def test_a_condition_date_is_the_utc_date_of_its_onset() -> None:
    condition = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "59621000"}]},
        "subject": {"reference": "urn:uuid:p"},
        "onsetDateTime": "2020-05-01T21:00:00-05:00",
        "abatementDateTime": "2021-02-03",
    }
    row = _read("Condition", [condition]).row(0, named=True)
    assert (row["START"], row["STOP"], row["PATIENT"]) == ("2020-05-02", "2021-02-03", "p")


def test_observation_components_and_values() -> None:
    loinc = "http://loinc.org"
    panel = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"system": loinc, "code": "85354-9"}]},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2024-01-01T10:00:00Z",
        "component": [
            {
                "code": {"coding": [{"system": loinc, "code": "8480-6", "display": "Systolic"}]},
                "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": loinc, "code": "8462-4", "display": "Diastolic"}]},
                "valueQuantity": {"value": 80.0, "code": "mm[Hg]"},
            },
        ],
    }
    with_value = panel | {"valueQuantity": {"value": 3, "unit": "{score}"}, "code": {"coding": [{"code": "X-1"}]}}
    smoking = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:other", "code": "other"}, {"system": loinc, "code": "72166-2"}]},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2024-01-01T10:00:00Z",
        "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "266919005", "display": "Never smoker"}]
        },
    }
    empty_panel = {k: v for k, v in panel.items() if k != "component"}
    frame = _read("Observation", [panel, with_value, smoking, empty_panel])
    rows = frame.select("CODE", "VALUE", "UNITS", "TYPE", "CATEGORY").rows()
    assert rows == [
        ("8480-6", "120.0", "mm[Hg]", "numeric", "vital-signs"),
        ("8462-4", "80.0", "mm[Hg]", "numeric", "vital-signs"),
        ("X-1", "3.0", "{score}", "numeric", "vital-signs"),
        ("8480-6", "120.0", "mm[Hg]", "numeric", "vital-signs"),
        ("8462-4", "80.0", "mm[Hg]", "numeric", "vital-signs"),
        ("72166-2", "Never smoker", None, "text", None),
        ("85354-9", None, None, None, "vital-signs"),
    ]


def test_medication_stop_only_when_stopped_or_completed() -> None:
    def request(status: str) -> dict:
        return {
            "resourceType": "MedicationRequest",
            "status": status,
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076"}]
            },
            "subject": {"reference": "Patient/p"},
            "authoredOn": "2020-01-01T08:00:00Z",
            "dispenseRequest": {"validityPeriod": {"start": "2020-01-01T08:00:00Z", "end": "2020-07-01T08:00:00Z"}},
            "reasonReference": [{"reference": "Condition/c1", "display": "Hypertension"}],
        }

    frame = _read("MedicationRequest", [request(s) for s in ("active", "stopped", "completed", "cancelled")])
    assert frame["STOP"].to_list() == [None, "2020-07-01T08:00:00Z", "2020-07-01T08:00:00Z"]
    assert frame["REASONDESCRIPTION"].to_list() == ["Hypertension"] * 3
    assert frame["REASONCODE"].null_count() == 3


def _patient(**extra: object) -> dict:
    return {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-02-03", **extra}


def test_patient_details(project: Project) -> None:
    official = {"use": "official", "given": ["Ann", "Marie", "Jo"], "family": "Lee", "prefix": ["Mrs."]}
    patients = [
        _patient(name=[{"use": "nickname", "given": ["Annie"]}, official], address=[{"state": "ma"}], id="a"),
        _patient(id="b", deceasedBoolean=True, meta={"lastUpdated": "2024-06-30T23:00:00-05:00"}, gender="other"),
        _patient(id="c", deceasedBoolean=True, address=[{"state": "Ontario"}]),
        _patient(id="d", deceasedDateTime="2024-06-30T23:00:00-05:00", gender="male"),
    ]
    frame = _read("Patient", patients)
    rows = {row["Id"]: row for row in frame.iter_rows(named=True)}
    assert (rows["a"]["FIRST"], rows["a"]["MIDDLE"], rows["a"]["LAST"], rows["a"]["PREFIX"]) == (
        "Ann",
        "Marie Jo",
        "Lee",
        "Mrs.",
    )
    assert rows["a"]["STATE"] == "Massachusetts" and rows["c"]["STATE"] == "Ontario"
    assert rows["b"]["DEATHDATE"] == "2024-07-01" and rows["d"]["DEATHDATE"] == "2024-07-01"
    assert rows["b"]["GENDER"] is None and rows["d"]["GENDER"] == "M"
    # Known dead, date unknown and no lastUpdated: quarantined rather than loaded as alive.
    result = validate(frame, project.registry.table_spec("synthea", "patients"), first_line=1)
    assert result.reasons == {"not_null:GENDER": 1, "type_date:DEATHDATE": 1}
    assert sorted(result.loaded["Id"].to_list()) == ["a", "d"]


# -- Consent ---------------------------------------------------------------------------------------

PURPOSE_OF_USE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _consent(consent_id: str, purpose: str | None = "HMARKT", **extra: object) -> dict:
    provision = {"type": "permit", "period": {"start": "2024-01-01T10:00:00Z", "end": "2025-01-01T10:00:00Z"}}
    if purpose:
        provision["purpose"] = [{"system": PURPOSE_OF_USE, "code": purpose}]
    resource = {
        "resourceType": "Consent",
        "id": consent_id,
        "status": "active",
        "patient": {"reference": "Patient/p1"},
        "dateTime": "2024-01-01T05:00:00-05:00",
        "provision": provision,
    }
    for key, value in extra.items():
        if key == "provision_type":
            provision["type"] = value
        else:
            resource[key] = value
    return resource


def test_consent_rules(project: Project) -> None:
    channel = "https://carecast.example.org/fhir/StructureDefinition/consent-channel"
    remuneration = "https://carecast.example.org/fhir/StructureDefinition/consent-remuneration-disclosed"
    consents = [
        _consent("active", extension=[{"url": remuneration, "valueBoolean": True}]),
        _consent("optout", "fundraising", provision_type="deny"),
        _consent("rejected", status="rejected"),
        _consent("revoked", status="inactive", meta={"lastUpdated": "2024-03-01T12:00:00.000+01:00"}),
        _consent("revoked-unknown-when", status="inactive"),
        _consent("by-category", None, category=[{"coding": [{"system": PURPOSE_OF_USE, "code": "TREAT"}]}]),
        _consent("sms", "HOPERAT", extension=[{"url": channel, "valueCode": "SMS"}]),
        _consent("fax", extension=[{"url": channel, "valueCode": "fax"}]),
        _consent("unknown-purpose", "HRESCH"),
        _consent("attachment", sourceAttachment={"url": "https://docs.example.org/consent/77.pdf"}),
        _consent("reference", sourceReference={"reference": "DocumentReference/DOC-000042"}),
        _consent("draft", status="draft"),
        _consent("proposed", status="proposed"),
        _consent("void", status="entered-in-error"),
    ]
    counts: dict[str, int] = {}
    frame = _read("Consent", consents, counts)
    assert counts == {"resources": 14, "resources_skipped": 2, "rows": 12}
    rows = {row["consent_id"]: row for row in frame.iter_rows(named=True)}
    signed = "2024-01-01T10:00:00Z"
    assert rows["active"] == {
        "consent_id": "active",
        "patient_id": "p1",
        "purpose": "marketing",
        "channel": "email",
        "signed_at": signed,
        "expires_at": "2025-01-01T10:00:00Z",
        "revoked_at": None,
        "remuneration_disclosed": "true",
        "document_id": None,
    }
    assert (rows["optout"]["purpose"], rows["optout"]["revoked_at"]) == ("fundraising", signed)
    assert rows["rejected"]["revoked_at"] == signed
    assert rows["revoked"]["revoked_at"] == "2024-03-01T11:00:00Z"
    assert rows["revoked-unknown-when"]["revoked_at"] == signed
    assert rows["by-category"]["purpose"] == "treatment"
    assert (rows["sms"]["purpose"], rows["sms"]["channel"]) == ("operations", "sms")
    assert rows["fax"]["channel"] is None and rows["unknown-purpose"]["purpose"] is None
    assert rows["attachment"]["document_id"] == "https://docs.example.org/consent/77.pdf"
    assert rows["reference"]["document_id"] == "DOC-000042"
    # Void: kept so that it replaces a copy loaded earlier (consents update by id), never in force.
    assert rows["void"]["revoked_at"] == signed
    assert "draft" not in rows and "proposed" not in rows
    result = validate(frame, project.registry.table_spec("consents", "consents"), first_line=1)
    assert result.reasons == {"not_null:channel": 1, "not_null:purpose": 1}


# -- (d) properties --------------------------------------------------------------------------------

_NAME_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=24
)
_IDS = st.one_of(st.uuids().map(str), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-.]{0,63}", fullmatch=True))
_OFFSETS = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


@st.composite
def _patient_resources(draw: st.DrawFn, patient_id: str) -> dict:
    resource: dict = {
        "resourceType": "Patient",
        "id": patient_id,
        "gender": draw(st.sampled_from(["male", "female"])),
        "birthDate": draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31))).isoformat(),
    }
    if draw(st.booleans()):
        name = {"use": draw(st.sampled_from(["official", "usual"])), "given": draw(st.lists(_NAME_TEXT, max_size=3))}
        if draw(st.booleans()):
            name["family"] = draw(_NAME_TEXT)
        resource["name"] = [name]
    if draw(st.booleans()):
        moment = draw(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2030, 1, 1), timezones=_OFFSETS))
        resource["deceasedDateTime"] = moment.isoformat()
    if draw(st.booleans()):
        resource["address"] = [{"line": [draw(_NAME_TEXT)], "city": draw(_NAME_TEXT), "postalCode": "02155"}]
    if draw(st.booleans()):
        resource["identifier"] = [
            {"type": {"coding": [{"code": "SS"}]}, "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-0000"}
        ]
    if draw(st.booleans()):
        resource["extension"] = [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                "extension": [{"url": "text", "valueString": draw(_NAME_TEXT)}],
            }
        ]
    return resource


@st.composite
def _patient_files(draw: st.DrawFn) -> list[dict]:
    ids = draw(st.lists(_IDS, min_size=1, max_size=8, unique=True))
    return [draw(_patient_resources(patient_id)) for patient_id in ids]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=_patient_files(), ascii_only=st.booleans())
def test_random_patients_map_and_keep_id_birthdate_gender(resources: list[dict], ascii_only: bool) -> None:
    data = "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in resources).encode()
    frame = read_fhir_resource(data, "Patient.ndjson", "Patient")
    assert frame.height == len(resources)
    assert frame["Id"].to_list() == [r["id"] for r in resources]
    assert frame["BIRTHDATE"].to_list() == [r["birthDate"] for r in resources]
    assert frame["GENDER"].to_list() == [{"male": "M", "female": "F"}[r["gender"]] for r in resources]
    for row, resource in zip(frame.iter_rows(named=True), resources, strict=True):
        given_names = (resource.get("name") or [{}])[0].get("given") or [None]
        assert row["FIRST"] == given_names[0]
        assert row["LAST"] == (resource.get("name") or [{}])[0].get("family")
        if "deceasedDateTime" in resource:
            moment = datetime.fromisoformat(resource["deceasedDateTime"]).astimezone(UTC)
            assert row["DEATHDATE"] == moment.date().isoformat()
        else:
            assert row["DEATHDATE"] is None


@settings(max_examples=60, deadline=None)
@given(patient_ids=st.lists(_IDS, min_size=1, max_size=6, unique=True), forms=st.data())
def test_patient_references_resolve_in_both_forms(patient_ids: list[str], forms: st.DataObject) -> None:
    encounters = []
    for n, patient_id in enumerate(patient_ids):
        form = forms.draw(st.sampled_from(["urn:uuid:{}", "Patient/{}"]))
        encounters.append(_encounter("AMB") | {"id": f"e{n}", "subject": {"reference": form.format(patient_id)}})
    frame = _read("Encounter", encounters)
    assert frame["PATIENT"].to_list() == patient_ids


def test_validated_patients_load(project: Project) -> None:
    frame = _read("Patient", [_patient(id=f"p{i}", name=[{"given": ["Å"], "family": "Øst"}]) for i in range(3)])
    result = validate(frame, project.registry.table_spec("synthea", "patients"), first_line=1)
    assert result.quarantined.height == 0 and result.loaded.height == 3
