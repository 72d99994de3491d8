"""`carecast ingest` lands a Synthea export by hand and applies it through the Dagster assets;
running it again does nothing; a corrected batch applies only what changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import SYNTHEA_27
from tests.integration.conftest import AS_OF, carecast

pytestmark = pytest.mark.integration


def test_ingest_by_hand_then_again_then_a_correction(tmp_path: Path, temp_dir: Path) -> None:
    home = tmp_path / "home"
    export = tmp_path / "export-2026-11-01"
    shutil.copytree(SYNTHEA_27, export)
    first = carecast(["ingest", "--source", "synthea", str(export), "--as-of", AS_OF], home, temp_dir).stdout
    assert "landed landing/synthea/export-2026-11-01" in first
    counts = {line.split()[0]: line.split() for line in first.splitlines() if line.startswith("raw_")}
    assert counts["raw_synthea_patients"][4] == "27"  # read
    assert all(row[8] == "0" for row in counts.values())  # nothing quarantined
    assert not any(path.suffix == ".csv" for path in (home / "landing").rglob("*")), "landed files are sealed"

    again = carecast(["ingest", "--as-of", AS_OF], home, temp_dir).stdout
    assert "nothing to ingest" in again

    correction = tmp_path / "export-2026-11-02"
    correction.mkdir()
    patients = pl.read_csv(SYNTHEA_27 / "patients.csv", infer_schema=False)
    patients.head(1).with_columns(pl.lit("2026-10-30").alias("DEATHDATE")).write_csv(correction / "patients.csv")
    fixed = carecast(["ingest", "--source", "synthea", str(correction), "--as-of", AS_OF], home, temp_dir).stdout
    applied = [line for line in fixed.splitlines() if line.startswith("raw_")]
    assert len(applied) == 1 and applied[0].split()[0] == "raw_synthea_patients"
    assert "now         27 rows" in applied[0]
