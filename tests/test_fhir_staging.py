"""The same patients landed as a Synthea CSV export and as a FHIR Bulk Data export give the same
staged tables: segments do not care where the data came from."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from carecast import stages
from carecast.home import CarecastHome
from carecast.project import Project
from carecast.runtime import Runtime
from tests.conftest import SYNTHEA_27
from tests.fhir_export import export_bulk

EHR_TABLES = ("patients", "encounters", "conditions", "observations", "immunizations", "procedures", "medications")
# What a FHIR export cannot carry, each for a reason (docs/formats.md, "FHIR Bulk Data"):
NOT_CARRIED = {
    # FHIR's encounter classes have no outpatient: Synthea's own exporter writes it as AMB
    "stg_encounters": {"encounter_class", "payer_id"},  # payers live in Coverage/Claim, not read
    # a text answer has no unit in FHIR (Synthea's CSV writes units such as '/a' on income answers)
    "stg_observations": {"units"},
}


def _staged(home: Path, project: Project, source: str, batch: Path) -> dict[str, pl.DataFrame]:
    runtime = Runtime.open(CarecastHome(home), project, as_of=date(2026, 11, 23))
    shutil.copytree(batch, runtime.home.landing / source / "batch-0001")
    (runtime.home.landing / source / "batch-0001" / "_SUCCESS").touch()
    staged = {}
    for table in EHR_TABLES:
        metadata = stages.ingest(runtime, "synthea", table).metadata
        assert metadata["rows_quarantined"] == 0 and metadata["reconciled"]
        model = f"stg_{table}"
        stages.run_model(runtime, model)
        frame = pl.from_arrow(runtime.lake.read(model).table)
        staged[model] = frame.drop(sorted(NOT_CARRIED.get(model, ()))).sort(pl.all(), nulls_last=True)
    return staged


@pytest.mark.parametrize("model", [f"stg_{table}" for table in EHR_TABLES])
def test_fhir_and_csv_exports_stage_the_same(
    tmp_path_factory: pytest.TempPathFactory, project: Project, model: str
) -> None:
    from_csv, from_fhir = _both(tmp_path_factory, project)
    assert from_csv[model].height > 0
    assert from_fhir[model].columns == from_csv[model].columns
    assert from_fhir[model].equals(from_csv[model]), model


_cache: dict[str, tuple[dict, dict]] = {}


def _both(tmp_path_factory: pytest.TempPathFactory, project: Project) -> tuple[dict, dict]:
    if "both" not in _cache:
        csv_batch = tmp_path_factory.mktemp("csv")
        for table in EHR_TABLES:
            shutil.copy(SYNTHEA_27 / f"{table}.csv", csv_batch)
        fhir_batch = tmp_path_factory.mktemp("fhir")
        export_bulk(SYNTHEA_27, fhir_batch)
        _cache["both"] = (
            _staged(tmp_path_factory.mktemp("home_csv"), project, "synthea", csv_batch),
            _staged(tmp_path_factory.mktemp("home_fhir"), project, "fhir", fhir_batch),
        )
    return _cache["both"]
