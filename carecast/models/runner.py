"""Run a SQL query over the lake, decrypting only the columns its parsed form needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from carecast.lake import Lake, LakeRead
from carecast.sql.engine import run_query
from carecast.sql.lineage import required_columns


@dataclass(frozen=True)
class QueryRun:
    table: pa.Table
    reads: tuple[LakeRead, ...]


def describe_reads(lake: Lake, reads: tuple[LakeRead, ...]) -> dict[str, Any]:
    """What a step read, for its materialization metadata: versions, columns, classes, key ids."""
    classes: dict[str, set[str]] = {}
    for read in reads:
        declared = lake.registry.classes_for(read.version.dataset, list(read.columns))
        for column, column_class in declared.items():
            classes.setdefault(column_class, set()).add(f"{read.version.dataset}.{column}")
    return {
        "input_versions": [read.version.ref for read in reads],
        "columns_read": {read.version.dataset: list(read.columns) for read in reads},
        "classes_read": {column_class: sorted(columns) for column_class, columns in sorted(classes.items())},
        "key_ids_unwrapped": sorted({key for read in reads for key in read.key_ids}),
    }


def read_needed(lake: Lake, sql: str, inputs: tuple[str, ...]) -> tuple[LakeRead, ...]:
    """Decrypt, for every input the query uses, only the columns it uses."""
    schema = {dataset: lake.columns(dataset) for dataset in inputs}
    needed = required_columns(sql, schema)
    reads = []
    for dataset, columns in sorted(needed.items()):
        # A query that only counts rows still needs one column to carry them: take the first
        # operational one, so no PHI class is unwrapped for a count.
        wanted = sorted(columns) or [_cheapest_column(lake, dataset, schema[dataset])]
        reads.append(lake.read(dataset, wanted))
    return tuple(reads)


def _cheapest_column(lake: Lake, dataset: str, columns: list[str]) -> str:
    classes = lake.registry.classes_for(dataset, columns)
    return next((c for c in columns if classes[c] == "operational"), columns[0])


def run_sql(lake: Lake, sql: str, inputs: tuple[str, ...]) -> QueryRun:
    reads = read_needed(lake, sql, inputs)
    table = run_query(sql, {read.version.dataset: read.table for read in reads})
    return QueryRun(table=table, reads=reads)
