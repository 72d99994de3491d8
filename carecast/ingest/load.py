"""Ingest one landed table into the lake: raw rows encrypted, failures quarantined, counts reconciled."""

from __future__ import annotations

from dataclasses import dataclass

from carecast.crypto.sealed_file import open_sealed
from carecast.ingest.landing import LandedFile
from carecast.ingest.readers import read_extract
from carecast.ingest.validate import validate
from carecast.lake import DatasetVersion, Lake
from carecast.registry import quarantine_dataset_name, raw_dataset_name


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did, in counts and names only (safe for metadata and logs)."""

    source: str
    table: str
    batch: str
    file_name: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    columns_loaded: tuple[str, ...]
    columns_dropped: tuple[str, ...]
    quarantine_reasons: dict[str, int]
    loaded: DatasetVersion
    quarantine: DatasetVersion | None = None


def ingest_file(lake: Lake, landed: LandedFile) -> IngestReport:
    spec = lake.registry.table_spec(landed.source, landed.table)
    source = open_sealed(landed.path, lake.kms) if landed.sealed else landed.path
    frame, dropped = read_extract(source, str(landed.path), landed.format, spec)
    result = validate(frame, spec, first_line=1 if landed.format == "ndjson" else 2)
    if result.rows_read != frame.height:
        raise AssertionError(f"{landed.path}: reconciliation failed ({frame.height} read, {result.rows_read} judged)")
    loaded = lake.write(raw_dataset_name(landed.source, landed.table), result.loaded.to_arrow())
    quarantine = None
    if result.quarantined.height:
        quarantine = lake.write(quarantine_dataset_name(landed.source, landed.table), result.quarantined.to_arrow())
    return IngestReport(
        source=landed.source,
        table=landed.table,
        batch=landed.batch,
        file_name=landed.path.name,
        rows_read=frame.height,
        rows_loaded=result.loaded.height,
        rows_quarantined=result.quarantined.height,
        columns_loaded=tuple(frame.columns),
        columns_dropped=tuple(dropped),
        quarantine_reasons=result.reasons,
        loaded=loaded,
        quarantine=quarantine,
    )
