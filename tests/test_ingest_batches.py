"""Landing batches applied in order: idempotent re-runs, duplicates, updates by id with history kept,
broken files refused with file and line while the good data stays, every row accounted for."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carecast import stages
from carecast.home import CarecastHome
from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import NoCompleteBatchError, complete_batches, pending_files
from carecast.ingest.readers import ExtractError
from carecast.project import Project
from carecast.runtime import Runtime

PATIENTS_HEADER = "Id,BIRTHDATE,DEATHDATE,FIRST,LAST,GENDER,STATE,ZIP"
CONDITIONS_HEADER = "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION"
CORPUS = Path(__file__).parent / "data" / "broken_extracts"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())


@pytest.fixture
def runtime(home: CarecastHome, project: Project) -> Runtime:
    return Runtime.open(home, project, as_of=date(2026, 11, 23))


def _land(runtime: Runtime, batch: str, files: dict[str, str], source: str = "synthea", marker: bool = True) -> Path:
    folder = runtime.home.landing / source / batch
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    if marker:
        (folder / "_SUCCESS").touch()
    return folder


def _patients(*rows: str) -> str:
    return "\n".join([PATIENTS_HEADER, *rows]) + "\n"


def _rows(runtime: Runtime, dataset: str) -> dict[str, dict]:
    table = runtime.lake.read(dataset).table.to_pylist()
    return {row.get("Id") or f"{row['PATIENT']}:{row['CODE']}": row for row in table}


def test_rerunning_ingest_and_a_repeated_delivery_change_nothing(runtime: Runtime) -> None:
    text = _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155", "p2,1980-03-04,,Bo,Ray,M,MA,02155")
    _land(runtime, "batch-0001", {"patients.csv": text})
    first = stages.ingest(runtime, "synthea", "patients")
    assert first.metadata["rows_loaded"] == 2 and first.metadata["reconciled"]
    versions = runtime.lake.version_numbers("raw_synthea_patients")

    again = stages.ingest(runtime, "synthea", "patients")
    assert again.metadata["files_applied"] == [] and again.written is None

    _land(runtime, "batch-0002", {"patients.csv": text})  # the same extract, delivered twice
    repeated = stages.ingest(runtime, "synthea", "patients")
    assert repeated.metadata["files_applied"] == [
        {"batch": "synthea/batch-0002", "file": "patients.csv", "duplicate_of": "synthea/batch-0001/patients.csv"}
    ]
    assert runtime.lake.version_numbers("raw_synthea_patients") == versions


def test_a_newer_batch_updates_by_id_and_keeps_the_history(runtime: Runtime) -> None:
    _land(
        runtime,
        "batch-0001",
        {"patients.csv": _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155", "p2,1980-03-04,,Bo,Ray,M,MA,02155")},
    )
    stages.ingest(runtime, "synthea", "patients")
    before = _rows(runtime, "raw_synthea_patients")
    # p2 died, p3 is new; p1 is not in this batch and stays as it was
    _land(
        runtime,
        "batch-0002",
        {"patients.csv": _patients("p2,1980-03-04,2026-10-01,Bo,Ray,M,MA,02155", "p3,2001-05-06,,Cy,Day,M,MA,02155")},
    )
    result = stages.ingest(runtime, "synthea", "patients")
    changes = result.metadata["files_applied"][0]["changes"]
    assert changes == {"inserted": 1, "updated": 1, "unchanged": 0, "removed": 0}
    after = _rows(runtime, "raw_synthea_patients")
    assert sorted(after) == ["p1", "p2", "p3"]
    assert after["p1"] == before["p1"]
    assert str(after["p2"]["DEATHDATE"]) == "2026-10-01" and before["p2"]["DEATHDATE"] is None
    # the version a past campaign read is still there, as it was
    previous = runtime.lake.read("raw_synthea_patients", version=1).table
    assert previous.num_rows == 2


def test_a_patient_history_table_is_replaced_patient_by_patient(runtime: Runtime) -> None:
    header = CONDITIONS_HEADER
    _land(
        runtime,
        "batch-0001",
        {
            "conditions.csv": "\n".join(
                [
                    header,
                    "2020-01-01,,p1,e1,59621000,HTN",
                    "2021-01-01,2021-02-01,p1,e2,10509002,Bronchitis",
                    "2019-05-05,,p2,e3,44054006,Diabetes",
                ]
            )
            + "\n"
        },
    )
    stages.ingest(runtime, "synthea", "conditions")
    # p1's newer history: the bronchitis row was an error and is gone; p2 is untouched
    _land(runtime, "batch-0002", {"conditions.csv": f"{header}\n2020-01-01,,p1,e1,59621000,HTN\n"})
    result = stages.ingest(runtime, "synthea", "conditions")
    assert result.metadata["files_applied"][0]["changes"] == {"inserted": 0, "updated": 0, "unchanged": 1, "removed": 1}
    assert sorted(_rows(runtime, "raw_synthea_conditions")) == ["p1:59621000", "p2:44054006"]


def test_a_broken_file_fails_and_the_good_data_stays_while_it_waits(runtime: Runtime) -> None:
    # every kind of broken file and its message: the corpus below; here, what happens around one
    _land(runtime, "batch-0001", {"patients.csv": _patients("p0,1960-01-01,,Zed,Ox,M,MA,02155")})
    stages.ingest(runtime, "synthea", "patients")
    _land(runtime, "batch-0002", {"patients.csv": (CORPUS / "truncated.csv").read_text()})
    with pytest.raises(ExtractError, match="patients.csv:3: truncated"):
        stages.ingest(runtime, "synthea", "patients")
    assert list(_rows(runtime, "raw_synthea_patients")) == ["p0"]
    with IngestJournal(runtime.home.state_db) as journal:
        still_pending = pending_files(runtime.home.landing, runtime.project.registry, journal.applied())
    assert [(f.batch, f.name) for f in still_pending] == [("batch-0002", "patients.csv")]


def test_a_manifest_completes_a_batch_and_its_digests_are_checked(runtime: Runtime) -> None:
    text = _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155")
    folder = _land(runtime, "batch-0001", {}, marker=False)
    (folder / "manifest.json").write_text(json.dumps({"files": {"patients.csv": {"sha256": "0" * 64}}}))
    assert complete_batches(runtime.home.landing) == []  # listed file not there yet
    (folder / "patients.csv").write_text(text)
    assert [b.name for b in complete_batches(runtime.home.landing)] == ["batch-0001"]
    with pytest.raises(ExtractError, match="does not match the digest in its batch manifest"):
        stages.ingest(runtime, "synthea", "patients")


def test_no_batch_at_all_is_a_clear_error(runtime: Runtime) -> None:
    _land(runtime, "batch-0001", {"patients.csv": _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155")}, marker=False)
    with pytest.raises(NoCompleteBatchError, match="_SUCCESS"):
        stages.ingest(runtime, "synthea", "patients")


_ids = st.sampled_from([f"p{i}" for i in range(8)])
_birth = st.one_of(
    st.dates(min_value=date(1920, 1, 1), max_value=date(2025, 1, 1)).map(str), st.just("bad-date"), st.just("")
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(_ids, _birth), min_size=1, max_size=6), min_size=1, max_size=4))
def test_every_row_is_accounted_for_and_the_latest_valid_row_wins(
    tmp_path_factory: pytest.TempPathFactory, project: Project, batches: list[list[tuple[str, str]]]
) -> None:
    runtime = Runtime.open(CarecastHome(tmp_path_factory.mktemp("home")), project, as_of=date(2026, 11, 23))
    expected: dict[str, str] = {}
    for number, rows in enumerate(batches, start=1):
        _land(
            runtime,
            f"batch-{number:04d}",
            {"patients.csv": _patients(*(f"{i},{b},,F{i},L{i},F,MA,02155" for i, b in rows))},
        )
        first: dict[str, str] = {}
        for patient, birth in rows:  # a repeated id in one file is quarantined: its first row decides
            first.setdefault(patient, birth)
        expected |= {patient: birth for patient, birth in first.items() if birth and birth != "bad-date"}
    result = stages.ingest(runtime, "synthea", "patients")
    files = result.metadata["files_applied"]
    assert all(f.get("reconciled", True) for f in files)
    assert sum(f.get("rows_read", 0) for f in files) == sum(len(rows) for rows in batches) - sum(
        len(rows) for f, rows in zip(files, batches, strict=True) if "duplicate_of" in f
    )
    if expected:
        stored = {
            row["Id"]: str(row["BIRTHDATE"]) for row in runtime.lake.read("raw_synthea_patients").table.to_pylist()
        }
        assert stored == expected


def test_the_landing_sensor_requests_the_ingest_of_each_new_batch(runtime: Runtime) -> None:
    import dagster as dg

    from pipelines.resources import CarecastResource
    from pipelines.sensors import landing_sensor

    sensor = landing_sensor(runtime.project)
    resources = {"carecast": CarecastResource(home=str(runtime.home.root))}
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)
    _land(runtime, "batch-0001", {"patients.csv": _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155")})
    _land(runtime, "batch-0002", {"conditions.csv": f"{CONDITIONS_HEADER}\n2020-01-01,,p1,e1,59621000,HTN\n"})
    with dg.build_sensor_context(resources=resources) as context:
        requests = sensor(context)
    assert [(r.tags["carecast/batch"], r.asset_selection) for r in requests] == [
        ("synthea/batch-0001", [dg.AssetKey("raw_synthea_patients")]),
        ("synthea/batch-0002", [dg.AssetKey("raw_synthea_conditions")]),
    ]
    stages.ingest(runtime, "synthea", "patients")
    with dg.build_sensor_context(resources=resources) as context:
        assert [r.tags["carecast/batch"] for r in sensor(context)] == ["synthea/batch-0002"]


@pytest.mark.parametrize("file_name", sorted(EXPECTED))
def test_broken_extract_corpus(runtime: Runtime, file_name: str) -> None:
    case = EXPECTED[file_name]
    source, table = case.get("source", "synthea"), case["table"]
    folder = _land(runtime, "batch-0001", {}, source=source, marker=False)
    extension = file_name.rsplit(".", 1)[1]
    (folder / f"{table}.{extension}").write_bytes((CORPUS / file_name).read_bytes())
    (folder / "_SUCCESS").touch()
    if "error" in case:
        with pytest.raises(ExtractError, match=case["error"]) as failure:
            stages.ingest(runtime, source, table)
        for value in ("Ann", "Jos", "Bo", "1970-01-02", "p2"):
            assert value not in str(failure.value)
        assert not runtime.lake.exists(f"raw_{source}_{table}")
        return
    metadata = stages.ingest(runtime, source, table).metadata
    assert (metadata["rows_read"], metadata["rows_loaded"]) == (case["read"], case["loaded"])
    assert metadata["rows_read"] == metadata["rows_loaded"] + metadata["rows_quarantined"]
    assert metadata["quarantine_reasons"] == dict(sorted(case["reasons"].items()))


def test_a_file_rewritten_in_place_is_applied_again(runtime: Runtime) -> None:
    # `carecast generate` into an existing home rewrites batch-0001: the new content must count
    folder = _land(runtime, "batch-0001", {"patients.csv": _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155")})
    stages.ingest(runtime, "synthea", "patients")
    (folder / "patients.csv").write_text(_patients("p1,1970-01-02,,Ann,Lee,F,MA,02155"))  # same bytes
    assert stages.ingest(runtime, "synthea", "patients").written is None
    assert stages.ingest(runtime, "synthea", "patients").metadata["files_applied"] == []
    (folder / "patients.csv").write_text(
        _patients("p1,1970-01-02,,Ann,Lee,F,MA,02155", "p2,1980-03-04,,Bo,Ray,M,MA,02155")
    )
    result = stages.ingest(runtime, "synthea", "patients")
    assert result.metadata["files_applied"][0]["changes"]["inserted"] == 1
    assert sorted(_rows(runtime, "raw_synthea_patients")) == ["p1", "p2"]
    assert result.metadata["rows"] == 2


def test_an_authorization_that_ends_on_an_event_expires_when_a_later_batch_says_it_happened(
    runtime: Runtime,
) -> None:
    header = "consent_id,patient_id,purpose,channel,signed_at,expires_at,revoked_at,document_id,expiry_event"
    _land(
        runtime,
        "batch-0001",
        {"consents.csv": f"{header}\nc1,p1,marketing,email,2026-01-05T00:00:00,,,DOC-1,end_of_research_study\n"},
        source="consents",
    )
    stages.ingest(runtime, "consents", "consents")
    for model in ("stg_consents", "mart_consent_latest", "mart_consent_status"):
        stages.run_model(runtime, model)
    [before] = runtime.lake.read("mart_consent_status", ["status", "expiry_event"]).table.to_pylist()
    assert before == {"status": "active", "expiry_event": "end_of_research_study"}

    _land(
        runtime,
        "batch-0002",
        {
            "consents.csv": f"{header},expiry_event_at\n"
            "c1,p1,marketing,email,2026-01-05T00:00:00,,,DOC-1,end_of_research_study,2026-11-02T00:00:00\n"
        },
        source="consents",
    )
    stages.ingest(runtime, "consents", "consents")
    for model in ("stg_consents", "mart_consent_latest", "mart_consent_status"):
        stages.run_model(runtime, model)
    [after] = runtime.lake.read("mart_consent_status", ["status"]).table.to_pylist()
    assert after == {"status": "expired"}
