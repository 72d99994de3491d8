"""Apply landed files to a raw dataset: decrypt, parse, validate, merge by id, quarantine, journal.

Every step before the lake write can fail with an error naming the file and line; nothing is
written then, so the previous good version stays current and the file stays pending. A file whose
bytes were already applied to the dataset (the same batch delivered twice) is journaled as a
duplicate and changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import polars as pl

from carecast.crypto.sealed_file import open_sealed
from carecast.ingest.journal import IngestJournal, JournalEntry
from carecast.ingest.landing import LandedFile
from carecast.ingest.merge import MergeCounts, merge_batch
from carecast.ingest.readers import ExtractError, read_extract, select_declared
from carecast.ingest.validate import validate
from carecast.lake import DatasetVersion, Lake
from carecast.registry import quarantine_dataset_name


@dataclass(frozen=True)
class IngestReport:
    """What applying one file did, in counts and names only (safe for metadata and logs)."""

    source: str
    batch: str
    file_name: str
    duplicate_of: str | None
    """``<source>/<batch>/<file>`` already applied with the same bytes, when this one repeats it."""
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    columns_loaded: tuple[str, ...]
    columns_dropped: tuple[str, ...]
    quarantine_reasons: dict[str, int]
    changes: MergeCounts | None
    loaded: DatasetVersion | None
    quarantine: DatasetVersion | None = None

    @property
    def reconciled(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined


def apply_file(lake: Lake, journal: IngestJournal, landed: LandedFile) -> IngestReport:
    stamp = landed.stamp()  # before reading: a rewrite while we read is seen as pending next time
    data = open_sealed(landed.path, lake.kms) if landed.sealed else landed.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if landed.expected_sha256 and landed.expected_sha256 != digest:
        raise ExtractError(f"{landed.name}: does not match the digest in its batch manifest (truncated or altered)")
    earlier = journal.loaded_with_content(landed.dataset, digest)
    if earlier is not None:
        if (earlier.source, earlier.batch, earlier.file_name) == (landed.source, landed.batch, landed.name):
            # the same file rewritten with the same bytes: still the one applied
            journal.record(dataclasses.replace(earlier, file_size=stamp[0], file_mtime_ns=stamp[1]))
        else:
            journal.record(_entry(landed, stamp, digest, "duplicate", (0, 0, 0), None))
        return IngestReport(
            source=landed.source,
            batch=landed.batch,
            file_name=landed.name,
            duplicate_of=f"{earlier.source}/{earlier.batch}/{earlier.file_name}",
            rows_read=0,
            rows_loaded=0,
            rows_quarantined=0,
            columns_loaded=(),
            columns_dropped=(),
            quarantine_reasons={},
            changes=None,
            loaded=None,
        )
    spec = lake.registry.table_spec(landed.target_source, landed.table)
    frame, dropped = _parse(data, landed, spec)
    result = validate(frame, spec, first_line=2 if landed.format == "csv" else 1)
    if result.rows_read != frame.height:
        raise AssertionError(f"{landed.name}: reconciliation failed ({frame.height} read, {result.rows_read} judged)")
    stored = pl.from_arrow(lake.read(landed.dataset).table) if lake.exists(landed.dataset) else None
    merged, changes = merge_batch(stored, result.loaded, spec)
    quarantine = _quarantine(lake, landed, result.quarantined)
    loaded = lake.write(landed.dataset, merged.to_arrow())
    counts = (frame.height, result.loaded.height, result.quarantined.height)
    journal.record(_entry(landed, stamp, digest, "loaded", counts, loaded))
    return IngestReport(
        source=landed.source,
        batch=landed.batch,
        file_name=landed.name,
        duplicate_of=None,
        rows_read=frame.height,
        rows_loaded=result.loaded.height,
        rows_quarantined=result.quarantined.height,
        columns_loaded=tuple(frame.columns),
        columns_dropped=tuple(dropped),
        quarantine_reasons=result.reasons,
        changes=changes,
        loaded=loaded,
        quarantine=quarantine,
    )


def _parse(data: bytes, landed: LandedFile, spec) -> tuple[pl.DataFrame, list[str]]:
    if landed.format in ("csv", "ndjson"):
        return read_extract(data, landed.name, landed.format, spec)
    from carecast.ingest.fhir import read_fhir_resource

    return select_declared(read_fhir_resource(data, landed.name, landed.format), landed.name, spec)


def _quarantine(lake: Lake, landed: LandedFile, rows: pl.DataFrame) -> DatasetVersion | None:
    """Quarantined rows accumulate across batches, each with its batch, file, line, rule and column."""
    if not rows.height:
        return None
    rows = rows.with_columns(_batch=pl.lit(f"{landed.source}/{landed.batch}"), _file=pl.lit(landed.name))
    name = quarantine_dataset_name(landed.target_source, landed.table)
    if lake.exists(name):
        # a re-run after a crash replaces this file's rows rather than adding them twice
        earlier = pl.from_arrow(lake.read(name).table)
        if "_batch" in earlier.columns:
            same_file = (pl.col("_batch") == f"{landed.source}/{landed.batch}") & (pl.col("_file") == landed.name)
            earlier = earlier.filter(same_file.fill_null(False).not_())
        rows = pl.concat([earlier, rows], how="diagonal_relaxed")
    return lake.write(name, rows.to_arrow())


def _entry(
    landed: LandedFile,
    stamp: tuple[int, int],
    digest: str,
    outcome: str,
    counts: tuple[int, int, int],
    version: DatasetVersion | None,
) -> JournalEntry:
    read, loaded, quarantined = counts
    size, mtime_ns = stamp
    return JournalEntry(
        dataset=landed.dataset,
        source=landed.source,
        batch=landed.batch,
        file_name=landed.name,
        file_size=size,
        file_mtime_ns=mtime_ns,
        content_sha256=digest,
        outcome=outcome,
        rows_read=read,
        rows_loaded=loaded,
        rows_quarantined=quarantined,
        dataset_version=version.ref if version else None,
        dataset_rows=version.rows if version else None,
    )
