"""Run a SQL query over the lake, decrypting only the columns its parsed form needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from carecast.lake import Lake, LakeRead
from carecast.sql.engine import run_query
from carecast.sql.lineage import required_columns

SENSITIVE_COLUMN = "sensitive_category"


@dataclass(frozen=True)
class QueryRun:
    table: pa.Table
    reads: tuple[LakeRead, ...]
    withheld_rows: dict[str, int] = field(default_factory=dict)
    """Dataset -> rows of withheld sensitive categories removed before the query saw them."""


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


def read_needed(lake: Lake, sql: str, schema: dict[str, list[str]], extra: dict[str, set[str]]) -> tuple[LakeRead, ...]:
    """Decrypt, for every input the query uses (``schema``: each input's columns), only the columns it
    uses, plus ``extra`` ones."""
    needed = required_columns(sql, schema)
    reads = []
    for dataset, used in sorted(needed.items()):
        columns = used | extra.get(dataset, set())
        # A query that only counts rows still needs one column to carry them: take the first
        # operational one, so no PHI class is unwrapped for a count.
        wanted = sorted(columns) or [_cheapest_column(lake, dataset, schema[dataset])]
        reads.append(lake.read(dataset, wanted))
    return tuple(reads)


def _cheapest_column(lake: Lake, dataset: str, columns: list[str]) -> str:
    classes = lake.registry.classes_for(dataset, columns)
    return next((c for c in columns if classes[c] == "operational"), columns[0])


def run_sql(lake: Lake, sql: str, inputs: tuple[str, ...], withheld: frozenset[str] = frozenset()) -> QueryRun:
    """``withheld``: sensitive categories whose rows are removed from every input that tags them."""
    schema = {dataset: lake.columns(dataset) for dataset in inputs}
    extra = {d: {SENSITIVE_COLUMN} for d, columns in schema.items() if withheld and SENSITIVE_COLUMN in columns}
    reads = read_needed(lake, sql, schema, extra)
    tables, withheld_rows = {}, {}
    for read in reads:
        tables[read.version.dataset], removed = withhold_sensitive(read.table, withheld)
        if read.version.dataset in extra:
            withheld_rows[read.version.dataset] = removed
    return QueryRun(table=run_query(sql, tables), reads=reads, withheld_rows=withheld_rows)


def withhold_sensitive(table: pa.Table, withheld: frozenset[str]) -> tuple[pa.Table, int]:
    """Drop the rows tagged with a withheld sensitive category; return the table and how many went."""
    if not withheld or SENSITIVE_COLUMN not in table.column_names:
        return table, 0
    categories = table.column(SENSITIVE_COLUMN).cast(pa.string())
    tagged = pc.is_in(categories, pa.array(sorted(withheld), pa.string()))
    keep = pc.invert(pc.fill_null(tagged, False))
    return table.filter(keep), table.num_rows - (pc.sum(keep).as_py() or 0)
