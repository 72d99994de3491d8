"""Column-wise casting and row rules; every row ends loaded or quarantined with one reason."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from carecast.registry import ColumnSpec, TableSpec

_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]
_DTYPES = {
    "string": pl.String,
    "date": pl.Date,
    "timestamp": pl.Datetime("us"),
    "float": pl.Float64,
    "integer": pl.Int64,
    "boolean": pl.Boolean,
}
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


@dataclass(frozen=True)
class Validated:
    loaded: pl.DataFrame
    quarantined: pl.DataFrame
    reasons: dict[str, int]

    @property
    def rows_read(self) -> int:
        return self.loaded.height + self.quarantined.height


def cast_expression(name: str, spec: ColumnSpec, every_format: bool = True) -> pl.Expr:
    """The typed column. ``every_format=False`` parses timestamps in the first format only, straight
    from the text: four times faster, and exact for a file that uses that format throughout."""
    raw = pl.col(name).str.strip_chars()
    raw = pl.when(raw == "").then(None).otherwise(raw)
    match spec.type:
        case "string":
            return pl.col(name)
        case "date":
            return raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        case "timestamp" if not every_format:
            return pl.col(name).str.to_datetime(_TIMESTAMP_FORMATS[0], strict=False, time_unit="us")
        case "timestamp":
            return pl.coalesce([raw.str.to_datetime(fmt, strict=False, time_unit="us") for fmt in _TIMESTAMP_FORMATS])
        case "float":
            return raw.cast(pl.Float64, strict=False)
        case "integer":
            return raw.cast(pl.Int64, strict=False)
        case "boolean":
            lowered = raw.str.to_lowercase()
            return pl.when(lowered.is_in(_TRUE)).then(True).when(lowered.is_in(_FALSE)).then(False)
    raise ValueError(f"unknown column type {spec.type!r}")


def loaded_schema(spec: TableSpec) -> pl.Schema:
    """The columns and types of ``Validated.loaded``: every declared column, in declaration order."""
    return pl.Schema({name: _DTYPES[column.type] for name, column in spec.columns.items()})


def validate(
    frame: pl.DataFrame, spec: TableSpec, first_line: int = 2, seen_before: pl.Series | None = None
) -> Validated:
    """Cast every declared column; quarantine rows that break a rule, naming the rule and column.

    ``first_line`` is the file line of the first record (2 for CSV with a header, 1 for NDJSON).
    ``seen_before`` marks the rows whose key an earlier block of the same file already had, so a
    file validated block by block keeps the first occurrence of a key as a whole file does.
    """
    columns = frame.columns
    numbered = frame.with_row_index("_line", offset=first_line)
    casts = {name: cast_expression(name, spec.columns[name], every_format=False) for name in columns}
    typed = numbered.with_columns(**{f"__typed_{name}": expr for name, expr in casts.items()})
    # Only a timestamp column with values the first format missed pays for trying the others.
    stamps = [name for name in columns if spec.columns[name].type == "timestamp"]
    if stamps:
        missed = typed.select(
            [(pl.col(f"__typed_{n}").is_null() & pl.col(n).is_not_null()).any().alias(n) for n in stamps]
        ).row(0, named=True)
        retry = {f"__typed_{n}": cast_expression(n, spec.columns[n]) for n in stamps if missed[n]}
        if retry:
            typed = typed.with_columns(**retry)

    failures: list[tuple[pl.Expr, str, str]] = []
    for name in columns:
        column_spec = spec.columns[name]
        if column_spec.not_null:
            failures.append((pl.col(name).is_null() | (pl.col(name).str.strip_chars() == ""), "not_null", name))
        if column_spec.type != "string":
            broken = pl.col(f"__typed_{name}").is_null() & (pl.col(name).str.strip_chars().fill_null("") != "")
            failures.append((broken, f"type_{column_spec.type}", name))
    if spec.key and spec.key in columns:
        repeated = pl.col(spec.key).is_first_distinct().not_()
        if seen_before is not None:
            repeated = repeated | pl.lit(seen_before)
        failures.append((repeated, "unique", spec.key))

    rule = pl.lit(None, dtype=pl.String)
    failing_column = pl.lit(None, dtype=pl.String)
    for condition, rule_name, column_name in reversed(failures):
        rule = pl.when(condition).then(pl.lit(rule_name)).otherwise(rule)
        failing_column = pl.when(condition).then(pl.lit(column_name)).otherwise(failing_column)
    judged = typed.with_columns(_rule=rule, _column=failing_column)

    # Every declared column, in declaration order: one an older export or a FHIR file lacks is NULL,
    # so the raw schema (and every model over it) does not depend on which sender wrote the batch.
    loaded = judged.filter(pl.col("_rule").is_null()).select(
        [
            pl.col(f"__typed_{name}").alias(name) if name in columns else pl.lit(None, dtype).alias(name)
            for name, dtype in loaded_schema(spec).items()
        ]
    )
    quarantined = judged.filter(pl.col("_rule").is_not_null()).select(
        [*columns, pl.col("_line").cast(pl.String), "_rule", "_column"]
    )
    reasons = {
        f"{row['_rule']}:{row['_column']}": row["len"]
        for row in quarantined.group_by("_rule", "_column").len().iter_rows(named=True)
    }
    return Validated(loaded=loaded, quarantined=quarantined, reasons=reasons)
