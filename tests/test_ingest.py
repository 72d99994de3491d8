from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carecast.crypto.kms import LocalKms
from carecast.crypto.sealed_file import seal_bytes
from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import complete_batches, pending_files
from carecast.ingest.load import apply_file
from carecast.ingest.readers import ExtractError, read_extract
from carecast.ingest.validate import validate
from carecast.lake import Lake
from carecast.project import Project

HEADER = "Id,BIRTHDATE,DEATHDATE,FIRST,LAST,GENDER,STATE,ZIP"


def _spec(project: Project):
    return project.registry.table_spec("synthea", "patients")


def _frame(project: Project, text: str) -> pl.DataFrame:
    frame, _dropped = read_extract(text.encode(), "patients.csv", "csv", _spec(project))
    return frame


def test_bad_rows_are_quarantined_with_rule_and_column(project: Project) -> None:
    text = "\n".join(
        [
            HEADER,
            "p1,1970-01-02,,Ann1,Lee2,F,Massachusetts,02155",
            "p2,not-a-date,,Bob3,Ray4,M,Massachusetts,02155",
            ",1980-05-05,,Cy5,Day6,M,Massachusetts,02155",
            "p1,1971-01-01,,Dup7,Lee8,F,Massachusetts,02155",
            "p5,1990-01-01,,Eve9,Fox0,,Massachusetts,",
        ]
    )
    result = validate(_frame(project, text), _spec(project))
    assert result.loaded["Id"].to_list() == ["p1"]
    assert result.loaded.schema["BIRTHDATE"] == pl.Date
    assert sorted(result.quarantined.select("_line", "_rule", "_column").rows()) == [
        ("3", "type_date", "BIRTHDATE"),
        ("4", "not_null", "Id"),
        ("5", "unique", "Id"),
        ("6", "not_null", "GENDER"),
    ]
    assert result.reasons == {"type_date:BIRTHDATE": 1, "not_null:Id": 1, "unique:Id": 1, "not_null:GENDER": 1}
    assert result.rows_read == 5


def test_formula_like_values_stay_text(project: Project) -> None:
    text = HEADER + "\np1,1970-01-02,,=HYPERLINK(1),@SUM(A1),F,Massachusetts,02155\n"
    result = validate(_frame(project, text), _spec(project))
    assert result.loaded["FIRST"].to_list() == ["=HYPERLINK(1)"]


def test_missing_required_column_names_file_and_column(project: Project) -> None:
    with pytest.raises(ExtractError, match=r"patients.csv:1: missing required column\(s\) \[.BIRTHDATE.\]"):
        read_extract(
            b"Id,FIRST,LAST,GENDER,STATE,ZIP,DEATHDATE\np1,a,b,F,MA,1,\n", "patients.csv", "csv", _spec(project)
        )


def test_undeclared_extra_columns_are_dropped_and_named(project: Project) -> None:
    text = HEADER + ",SHOE_SIZE\np1,1970-01-02,,Ann1,Lee2,F,Massachusetts,02155,42\n"
    frame, dropped = read_extract(text.encode(), "patients.csv", "csv", _spec(project))
    assert dropped == ["SHOE_SIZE"] and "SHOE_SIZE" not in frame.columns


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "file is empty"),
        ("Id,BIRTHDATE\n\xff\xfe".encode("latin-1"), "patients.csv:2: not UTF-8"),
    ],
)
def test_unreadable_files_fail_without_quoting_values(project: Project, content: bytes, problem: str) -> None:
    with pytest.raises(ExtractError, match=problem) as failure:
        read_extract(content, "patients.csv", "csv", _spec(project))
    assert "\xff" not in str(failure.value)


def test_sealed_landing_batch_ingests_and_reconciles(lake: Lake, kms: LocalKms, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    batch = landing / "synthea" / "b1"
    batch.mkdir(parents=True)
    seal_bytes(
        (HEADER + "\np1,1970-01-02,,Ann1,Lee2,F,MA,02155\np2,bad,,B,C,M,MA,1\n").encode(),
        batch / "patients.csv.enc",
        kms,
    )
    assert complete_batches(landing) == []
    (batch / "_SUCCESS").touch()
    with IngestJournal(tmp_path / "state.db") as journal:
        [landed] = pending_files(landing, lake.registry, journal.applied())
        assert landed.sealed and landed.name == "patients.csv"
        report = apply_file(lake, journal, landed)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (2, 1, 1)
    quarantined = lake.read("quarantine_synthea_patients", ["_batch", "_file", "_line", "_rule", "_column"]).table
    assert quarantined.to_pylist() == [
        {"_batch": "synthea/b1", "_file": "patients.csv", "_line": "3", "_rule": "type_date", "_column": "BIRTHDATE"}
    ]


_cell = st.one_of(st.just(""), st.text(alphabet="abc019-:TZ ", max_size=12), st.dates().map(str))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_cell, _cell, _cell, _cell), min_size=1, max_size=30))
def test_every_row_is_loaded_or_quarantined(project: Project, rows: list[tuple[str, str, str, str]]) -> None:
    frame = pl.DataFrame(
        {
            "Id": [r[0] or None for r in rows],
            "BIRTHDATE": [r[1] or None for r in rows],
            "DEATHDATE": [r[2] or None for r in rows],
            "FIRST": ["x"] * len(rows),
            "LAST": ["y"] * len(rows),
            "GENDER": [r[3] or None for r in rows],
            "STATE": ["MA"] * len(rows),
            "ZIP": ["02155"] * len(rows),
        },
        schema={name: pl.String for name in HEADER.split(",")},
    )
    result = validate(frame, _spec(project))
    assert result.loaded.height + result.quarantined.height == len(rows)
    assert sum(result.reasons.values()) == result.quarantined.height
    assert result.loaded["Id"].null_count() == 0 and result.loaded["Id"].is_unique().all()
    assert result.loaded["BIRTHDATE"].null_count() == 0


def test_timestamps_in_any_accepted_format_parse_even_when_the_first_rows_use_one(project: Project) -> None:
    spec = project.registry.table_spec("synthea", "encounters")
    starts = ["2023-01-27T16:17:47Z", "2023-01-27T16:17:47.250Z", "2023-01-27T16:17:47", " 2023-01-27 ", "27/01/2023"]
    frame = pl.DataFrame(
        {
            "Id": [f"e{i}" for i in range(len(starts))],
            "START": starts,
            "PATIENT": ["p1"] * len(starts),
            "ENCOUNTERCLASS": ["wellness"] * len(starts),
            "CODE": ["1"] * len(starts),
        }
    )
    result = validate(frame, spec)
    assert [str(v) for v in result.loaded["START"]] == [
        "2023-01-27 16:17:47",
        "2023-01-27 16:17:47.250000",
        "2023-01-27 16:17:47",
        "2023-01-27 00:00:00",
    ]
    assert result.reasons == {"type_timestamp:START": 1}
