"""An extract larger than the memory a process may use still loads, block by block, with every row
accounted for; the same file applied whole, under the same limit, fails with MemoryError.

The limit is a hard cap on the child process's address space (``RLIMIT_AS``): the child first imports
everything and applies a small batch (so thread pools and allocator arenas exist), measures its own
size, and only then caps itself at that size plus ``HEADROOM``. The extract is about three times the
headroom.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import polars as pl
import pytest

from carecast.crypto.kms import LocalKms
from carecast.crypto.sealed_file import seal_chunks
from carecast.home import CarecastHome
from carecast.lake import Lake
from carecast.project import Project

HEADROOM = 200 << 20
BLOCK_BYTES = 4 << 20
EXTRACT_ROWS = 4_400_000  # 129 bytes a row: 570 MB, 2.7 times the headroom
FIRST_BATCH_ROWS = 100
ROWS_PER_PIECE = 25_000  # a piece of 3.2 MB: one sealed chunk
HEADER = "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION"

CHILD = """
import json, resource, sys
from pathlib import Path

from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import batch_files, complete_batches
from carecast.ingest.load import apply_file
from carecast.lake import Lake
from carecast.project import load_project


def status(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024


home, mode, headroom, block_bytes = CarecastHome(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
project = load_project()
lake = Lake(home.lake, LocalKms(home.keys), project.registry)
with IngestJournal(home.state_db) as journal:
    first, extract = [f for batch in complete_batches(home.landing) for f in batch_files(batch, project.registry)]
    # warm up every code path (applies the small first batch, or finds it applied already)
    apply_file(lake, journal, first, stream_bytes=0, block_bytes=block_bytes)
    baseline = status("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (baseline + headroom, baseline + headroom))
    streamed = {"stream_bytes": 0, "block_bytes": block_bytes}
    try:
        report = apply_file(lake, journal, extract, **(streamed if mode == "streamed" else {"stream_bytes": 1 << 62}))
    except MemoryError:
        outcome = {"outcome": "MemoryError"}
    else:
        outcome = {
            "outcome": "loaded",
            "rows_read": report.rows_read,
            "rows_loaded": report.rows_loaded,
            "rows_quarantined": report.rows_quarantined,
            "changes": report.changes.__dict__,
            "version_rows": report.loaded.rows,
        }
print(json.dumps({**outcome, "baseline_mb": baseline >> 20, "peak_mb": status("VmPeak") >> 20}))
"""


def _pieces(first: int, rows: int) -> Iterator[bytes]:
    """Conditions of 20 rows a patient; the first rows of every batch are the same records."""
    for start in range(first, first + rows, ROWS_PER_PIECE):
        number = pl.lit(pl.int_range(start, min(start + ROWS_PER_PIECE, first + rows), eager=True))
        piece = pl.select(
            START=pl.lit("2020-01-01"),
            STOP=pl.lit(None, pl.String),
            PATIENT=pl.format("patient-{}", (number // 20).cast(pl.String).str.zfill(28)),
            ENCOUNTER=pl.format("encounter-{}", number.cast(pl.String).str.zfill(26)),
            CODE=pl.lit("59621000"),
            DESCRIPTION=pl.lit("Essential hypertension (disorder)"),
        )
        yield piece.write_csv(include_header=start == first).encode()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> CarecastHome:
    home = CarecastHome(tmp_path_factory.mktemp("memory") / "home").ensure()
    kms = LocalKms(home.keys)
    for batch, rows in (("batch-0001", FIRST_BATCH_ROWS), ("batch-0002", EXTRACT_ROWS)):
        folder = home.landing / "synthea" / batch
        folder.mkdir(parents=True)
        seal_chunks(_pieces(0, rows), folder / "conditions.csv.enc", kms)
        (folder / "_SUCCESS").touch()
    return home


def _apply_capped(home: CarecastHome, mode: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(home.root), mode, str(HEADROOM), str(BLOCK_BYTES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_an_extract_larger_than_memory_loads_block_by_block(home: CarecastHome, project: Project) -> None:
    extract = home.landing / "synthea" / "batch-0002" / "conditions.csv.enc"
    assert extract.stat().st_size > 2.5 * HEADROOM

    whole = _apply_capped(home, "whole")
    assert whole["outcome"] == "MemoryError", whole
    lake = Lake(home.lake, LocalKms(home.keys), project.registry)
    assert lake.version_numbers("raw_synthea_conditions") == [1]

    streamed = _apply_capped(home, "streamed")
    assert streamed["outcome"] == "loaded", streamed
    assert streamed["rows_read"] == streamed["rows_loaded"] == EXTRACT_ROWS
    assert streamed["rows_quarantined"] == 0
    # the first batch's patients carry their whole history again, identical: nothing else was stored
    assert streamed["changes"] == {
        "inserted": EXTRACT_ROWS - FIRST_BATCH_ROWS,
        "updated": 0,
        "unchanged": FIRST_BATCH_ROWS,
        "removed": 0,
    }
    assert streamed["version_rows"] == EXTRACT_ROWS
    assert streamed["peak_mb"] - streamed["baseline_mb"] < HEADROOM >> 20
    assert lake.version_numbers("raw_synthea_conditions") == [1, 2]
    stored_rows = sum(group.num_rows for group in lake.read_row_groups("raw_synthea_conditions", ["CODE"]))
    assert stored_rows == EXTRACT_ROWS
