"""The public Synthea export ingests exactly, through `dagster asset materialize`, and leaks nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from carecast.crypto.kms import LocalKms
from carecast.lake import Lake
from carecast.project import load_project
from carecast.sql.engine import run_query
from tests.conftest import SYNTHEA_27
from tests.integration.conftest import AS_OF, carecast, read_landed, run_cli
from tests.integration.leak_scan import scan_for_canaries

pytestmark = pytest.mark.integration
# in-process: one Python for all steps (the default multiprocess executor starts one per step)
RUN_CONFIG = {"resources": {"carecast": {"config": {"as_of": AS_OF}}}, "execution": {"config": {"in_process": {}}}}
INFLUENZA_CVX = ("140", "141", "150", "153", "155", "158", "161", "166", "168", "171", "185", "186", "197", "205")
TABLES = ("patients", "encounters", "conditions", "observations", "immunizations", "procedures", "medications")


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


def test_the_campaign_ran_on_it(materialized: Path) -> None:
    report = next((materialized / "reports" / "breast_screening_reminder").glob("*/summary.json"))
    assert '"segment"' in report.read_text()


def test_leak_scan_passes(materialized: Path, temp_dir: Path) -> None:
    patients = read_landed(materialized, "synthea", "patients")
    conditions = pl.read_csv(SYNTHEA_27 / "conditions.csv", infer_schema=False)
    canaries = {*patients["FIRST"], *patients["LAST"], *patients["ADDRESS"].drop_nulls(), *conditions["DESCRIPTION"]}
    canaries |= set(read_landed(materialized, "crm", "contacts")["email"].drop_nulls())
    assert scan_for_canaries([materialized, temp_dir], canaries) == []
