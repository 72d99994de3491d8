"""What encryption costs a Parquet round trip: ``Lake.write`` + ``Lake.read`` against plain PyArrow.

Same Arrow table (the raw observations, the largest table by rows), same compression and row
groups, best of a few repetitions each. ``Lake`` also hashes each file (SHA-256, for lineage
references) on write and on read; that is part of what it costs, so it stays in the measurement.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.workload import open_runtime
from carecast.lake import ROW_GROUP_ROWS

SOURCE_DATASET = "raw_synthea_observations"
PROBE_DATASET = "bench_parquet_probe"
REPETITIONS = 3


def parquet_cost(home: Path) -> dict[str, Any]:
    runtime = open_runtime(home)
    lake = runtime.lake
    table = lake.read(SOURCE_DATASET).table
    lake.registry.declare(PROBE_DATASET, lake.registry.classes_for(SOURCE_DATASET, table.column_names))
    encrypted, plain = [], []
    with tempfile.TemporaryDirectory(prefix="plain-parquet-", dir=home) as folder:
        path = Path(folder) / "observations.parquet"
        for _ in range(REPETITIONS):
            started = time.perf_counter()
            lake.write(PROBE_DATASET, table)
            lake.read(PROBE_DATASET)
            encrypted.append(time.perf_counter() - started)
            started = time.perf_counter()
            pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd")
            pq.read_table(path)
            plain.append(time.perf_counter() - started)
    return {"seconds": min(encrypted), "baseline_seconds": min(plain), "rows": table.num_rows}
