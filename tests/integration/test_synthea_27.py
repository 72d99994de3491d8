"""The public Synthea export ingests exactly, through `dagster asset materialize`, and leaks nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from carecast.crypto.kms import LocalKms
from carecast.lake import Lake
from carecast.project import CHECKOUT_DIR, load_project
from carecast.sql.engine import run_query
from carecast.synth import SYNTHEA_TABLES
from tests.conftest import SYNTHEA_27
from tests.integration.conftest import AS_OF, carecast, read_landed, run_cli
from tests.integration.leak_scan import scan_for_canaries

pytestmark = pytest.mark.integration
# in-process: one Python for all steps (the default multiprocess executor starts one per step)
RUN_CONFIG = {"resources": {"carecast": {"config": {"as_of": AS_OF}}}, "execution": {"config": {"in_process": {}}}}
INFLUENZA_CVX = ("140", "141", "150", "153", "155", "158", "161", "166", "168", "171", "185", "186", "197", "205")
TABLES = SYNTHEA_TABLES
ROWS = {"payers": 10}  # counted in the file (a header and ten payers)
INSURANCE_TYPES = {
    "Medicare": "medicare",
    "Medicaid": "medicaid",
    "Dual Eligible": "dual_eligible",
    "NO_INSURANCE": "uninsured",
}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory, temp_dir: Path) -> Path:
    home = tmp_path_factory.mktemp("synthea27")
    carecast(["generate", "--synthea", str(SYNTHEA_27), "--as-of", AS_OF], home, temp_dir)
    dagster = Path(sys.executable).with_name("dagster")
    run_cli(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "*",
            "--partition",
            AS_OF,
            "--config-json",
            json.dumps(RUN_CONFIG),
        ],
        home,
        temp_dir,
    )
    return home


@pytest.fixture(scope="module")
def lake(materialized: Path) -> Lake:
    return Lake(materialized / "lake", LocalKms(materialized / "keys"), load_project().registry)


@pytest.mark.parametrize("table", TABLES)
def test_every_row_is_loaded_and_none_quarantined(lake: Lake, materialized: Path, table: str) -> None:
    rows_in_file = pl.read_csv(SYNTHEA_27 / f"{table}.csv", infer_schema=False).height
    assert rows_in_file == ROWS.get(table, rows_in_file)
    assert lake.read(f"raw_synthea_{table}").table.num_rows == rows_in_file
    assert not (materialized / "lake" / f"quarantine_synthea_{table}").exists()


def _patients_with(lake: Lake, table: str, where: str) -> int:
    data = lake.read(f"raw_synthea_{table}", ["PATIENT", "CODE"]).table
    return run_query(f"select count(distinct PATIENT) as n from t where {where}", {"t": data}).column("n")[0].as_py()


@pytest.mark.parametrize(
    ("table", "where", "patients"),
    [
        ("conditions", "CODE = '59621000'", 6),  # essential hypertension
        ("conditions", "CODE = '15777000'", 5),  # prediabetes
        ("conditions", "CODE = '44054006'", 0),  # diabetes
        ("observations", "CODE = '4548-4'", 5),  # HbA1c
        ("immunizations", f"CODE in {INFLUENZA_CVX}", 23),  # any influenza vaccine
    ],
)
def test_counts_in_the_readme_are_found(lake: Lake, table: str, where: str, patients: int) -> None:
    assert _patients_with(lake, table, where) == patients


def test_insurance_type_is_the_payer_of_the_newest_encounter(lake: Lake) -> None:
    """An independent reading of the CSVs: each patient's newest encounter on or before AS_OF."""
    payers = pl.read_csv(SYNTHEA_27 / "payers.csv", infer_schema=False).select(
        pl.col("Id").alias("PAYER"),
        pl.col("NAME").replace_strict(INSURANCE_TYPES, default="commercial").alias("expected"),
    )
    newest = (
        pl.read_csv(SYNTHEA_27 / "encounters.csv", infer_schema=False)
        .filter(pl.col("START").str.slice(0, 10) <= AS_OF)
        .sort(["START", "Id"], descending=True)
        .group_by("PATIENT", maintain_order=True)
        .first()
        .join(payers, on="PAYER", how="left")
    )
    patients = pl.read_csv(SYNTHEA_27 / "patients.csv", infer_schema=False).select(pl.col("Id").alias("PATIENT"))
    expected = patients.join(newest, on="PATIENT", how="left").select(
        pl.col("PATIENT").alias("patient_id"), pl.col("expected").fill_null("unknown")
    )
    profile = pl.from_arrow(lake.read("mart_patient_profile", ["patient_id", "insurance_type"]).table)
    joined = expected.join(profile, on="patient_id", how="full", coalesce=True)
    assert joined.height == 27
    assert (joined["expected"] == joined["insurance_type"]).all()
    assert joined["insurance_type"].n_unique() > 1


def test_the_campaign_ran_on_it(materialized: Path) -> None:
    report = next((materialized / "reports" / "breast_screening_reminder").glob("*/summary.json"))
    assert '"segment"' in report.read_text()


def test_leak_scan_passes(materialized: Path, temp_dir: Path) -> None:
    patients = read_landed(materialized, "synthea", "patients")
    conditions = pl.read_csv(SYNTHEA_27 / "conditions.csv", infer_schema=False)
    # A diagnosis name the project itself writes (a segment about hypertension, its asset name and
    # description) is vocabulary, not a patient's data: only descriptions it never mentions are canaries.
    project_text = " ".join(path.read_text() for path in (CHECKOUT_DIR / "segments").glob("*.sql")).lower()
    descriptions = {d for d in conditions["DESCRIPTION"] if d.lower() not in project_text}
    canaries = {*patients["FIRST"], *patients["LAST"], *patients["ADDRESS"].drop_nulls(), *descriptions}
    canaries |= set(read_landed(materialized, "crm", "contacts")["email"].drop_nulls())
    assert len(descriptions) > 40
    assert scan_for_canaries([materialized, temp_dir], canaries) == []
