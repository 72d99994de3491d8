"""Apply landed files to a raw dataset: decrypt, parse, validate, merge by id, quarantine, journal.

Every step before the lake write can fail with an error naming the file and line; nothing is
written then, so the previous good version stays current and the file stays pending. A file whose
bytes were already applied to the dataset (the same batch delivered twice) is journaled as a
duplicate and changes nothing.

A file is applied whole (decrypted, parsed and merged in memory: the fastest way), or, from
``CARECAST_INGEST_STREAM_BYTES`` bytes on (by default a sixteenth of memory), block by block
(``stream.py``), so that an extract larger than memory still loads. Both give the same rows,
quarantine, counts and errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from carecast.crypto.sealed_file import open_sealed
from carecast.ingest.blocks import BLOCK_BYTES, Plaintext, split_blocks
from carecast.ingest.journal import IngestJournal, JournalEntry
from carecast.ingest.landing import LandedFile
from carecast.ingest.merge import MergeCounts, merge_batch
from carecast.ingest.quarantine import QuarantineSink
from carecast.ingest.readers import ExtractError, read_extract, select_declared
from carecast.ingest.stream import StreamingLoad
from carecast.ingest.validate import validate
from carecast.lake import DatasetVersion, Lake

STREAM_BYTES_FLOOR = 256 << 20
STREAM_BYTES_VARIABLE = "CARECAST_INGEST_STREAM_BYTES"
BLOCK_BYTES_VARIABLE = "CARECAST_INGEST_BLOCK_BYTES"
_STREAMABLE_FORMATS = ("csv", "ndjson")


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


def apply_file(
    lake: Lake,
    journal: IngestJournal,
    landed: LandedFile,
    stream_bytes: int | None = None,
    block_bytes: int | None = None,
) -> IngestReport:
    """Apply one landed file: whole, or block by block when it is a CSV or NDJSON file of
    ``stream_bytes`` or more, in blocks of about ``block_bytes`` (by default the settings
    ``CARECAST_INGEST_STREAM_BYTES`` and ``CARECAST_INGEST_BLOCK_BYTES``, else
    ``default_stream_bytes()`` and 16 MiB).

    The size is the file's on disk: a sealed file's plaintext plus about 20 bytes per 4 MiB.
    """
    stamp = landed.stamp()  # before reading: a rewrite while we read is seen as pending next time
    if landed.format in _STREAMABLE_FORMATS and stamp[0] >= _setting(
        stream_bytes, STREAM_BYTES_VARIABLE, default_stream_bytes
    ):
        block = _setting(block_bytes, BLOCK_BYTES_VARIABLE, lambda: BLOCK_BYTES)
        return _apply_streaming(lake, journal, landed, stamp, block)
    data = open_sealed(landed.path, lake.kms) if landed.sealed else landed.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    repeat = _repeat_or_refuse(journal, landed, stamp, digest)
    if repeat is not None:
        return repeat
    spec = lake.registry.table_spec(landed.target_source, landed.table)
    frame, dropped = _parse(data, landed, spec)
    result = validate(frame, spec, first_line=2 if landed.format == "csv" else 1)
    if result.rows_read != frame.height:
        raise AssertionError(f"{landed.name}: reconciliation failed ({frame.height} read, {result.rows_read} judged)")
    stored = pl.from_arrow(lake.read(landed.dataset).table) if lake.exists(landed.dataset) else None
    merged, changes = merge_batch(stored, result.loaded, spec)
    quarantine = _quarantine(lake, landed, result.quarantined)
    loaded = lake.write(landed.dataset, merged.to_arrow())
    report = IngestReport(
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
    return _journaled(journal, landed, stamp, digest, report)


def _apply_streaming(
    lake: Lake, journal: IngestJournal, landed: LandedFile, stamp: tuple[int, int], block_bytes: int
) -> IngestReport:
    """Decrypt, parse, validate and write block by block; publish only once the digest is known good.

    The digest is only known at the end, yet it decides first, as when the file is applied whole: a
    file that does not match its manifest is refused, and one that repeats a file already applied is
    journaled as a duplicate, even when a problem was found midway (the rest is then read for its
    digest only).
    """
    spec = lake.registry.table_spec(landed.target_source, landed.table)
    plaintext = Plaintext(landed, lake.kms)
    digest_judged = False
    try:
        with StreamingLoad(lake, landed, spec) as load:
            for block in split_blocks(plaintext, landed.name, landed.format, block_bytes):
                load.add(block)
            digest_judged = True
            repeat = _repeat_or_refuse(journal, landed, stamp, plaintext.hexdigest())
            if repeat is not None:
                load.discard()
                return repeat
            changes = load.finish()
    except ExtractError:
        if digest_judged:
            raise
        plaintext.drain()
        repeat = _repeat_or_refuse(journal, landed, stamp, plaintext.hexdigest())
        if repeat is not None:
            return repeat
        raise
    report = IngestReport(
        source=landed.source,
        batch=landed.batch,
        file_name=landed.name,
        duplicate_of=None,
        rows_read=load.rows_read,
        rows_loaded=load.rows_loaded,
        rows_quarantined=load.rows_quarantined,
        columns_loaded=tuple(load.columns),
        columns_dropped=tuple(load.dropped),
        quarantine_reasons=dict(load.reasons),
        changes=changes,
        loaded=load.loaded,
        quarantine=load.quarantine,
    )
    return _journaled(journal, landed, stamp, plaintext.hexdigest(), report)


def default_stream_bytes() -> int:
    """A sixteenth of the memory this process may have, and at least 256 MiB (1.5 GiB on a 24 GiB
    machine). Applied whole, a file needs about four times its size at its peak, so the whole-file
    path, the faster one, is kept for files it can take in a quarter of memory."""
    return max(STREAM_BYTES_FLOOR, _memory_bytes() // 16)


def _memory_bytes() -> int:
    """The machine's memory, or the container's limit (cgroup v2, then v1) when that is lower."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        with contextlib.suppress(OSError, ValueError):  # absent, or "max" (no limit)
            memory = min(memory, int(limit.read_text()))
    return memory


def _setting(given: int | None, variable: str, default: Callable[[], int]) -> int:
    """``given``, else the environment variable's number of bytes, else the default."""
    if given is not None:
        return given
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default()
    if not raw.isdigit():
        raise ValueError(f"{variable} must be a number of bytes, not {raw!r}")
    return int(raw)


def _repeat_or_refuse(
    journal: IngestJournal, landed: LandedFile, stamp: tuple[int, int], digest: str
) -> IngestReport | None:
    """Refuse a file whose digest is not its manifest's; journal one whose bytes were already applied
    to the dataset and return its report (None for new content)."""
    if landed.expected_sha256 and landed.expected_sha256 != digest:
        raise ExtractError(f"{landed.name}: does not match the digest in its batch manifest (truncated or altered)")
    earlier = journal.loaded_with_content(landed.dataset, digest)
    if earlier is None:
        return None
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


def _journaled(
    journal: IngestJournal, landed: LandedFile, stamp: tuple[int, int], digest: str, report: IngestReport
) -> IngestReport:
    counts = (report.rows_read, report.rows_loaded, report.rows_quarantined)
    journal.record(_entry(landed, stamp, digest, "loaded", counts, report.loaded))
    return report


def _parse(data: bytes, landed: LandedFile, spec) -> tuple[pl.DataFrame, list[str]]:
    if landed.format in _STREAMABLE_FORMATS:
        return read_extract(data, landed.name, landed.format, spec)
    from carecast.ingest.fhir import read_fhir_resource

    return select_declared(read_fhir_resource(data, landed.name, landed.format), landed.name, spec)


def _quarantine(lake: Lake, landed: LandedFile, rows: pl.DataFrame) -> DatasetVersion | None:
    with contextlib.ExitStack() as stack:
        sink = QuarantineSink(lake, landed, stack)
        sink.add(rows)
    return sink.version


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
