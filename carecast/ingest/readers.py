"""Parse an extract into an all-string frame. Errors name the file and the problem, never a value."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from carecast.registry import TableSpec


class ExtractError(ValueError):
    """A file that cannot be loaded at all; the previous good data stays as it was."""


def read_extract(source: Path | bytes, name: str, file_format: str, spec: TableSpec) -> tuple[pl.DataFrame, list[str]]:
    """Return the declared columns as strings, and the names of undeclared columns that were dropped.

    ``source`` is a path, or the bytes of an extract already decrypted in memory; ``name`` is what
    errors call the file.
    """
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if size == 0:
        raise ExtractError(f"{name}: file is empty")
    readable = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        if file_format == "ndjson":
            frame = pl.read_ndjson(readable, infer_schema_length=None)
            frame = frame.select(pl.all().cast(pl.String))
        else:
            frame = pl.read_csv(readable, infer_schema=False, encoding="utf8", raise_if_empty=True)
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as error:
        # Parser messages can quote the offending line, which is PHI: keep the kind, drop the text.
        raise ExtractError(f"{name}: cannot be parsed as {file_format} ({type(error).__name__})") from None
    missing = [name for name, column in spec.columns.items() if column.required and name not in frame.columns]
    if missing:
        raise ExtractError(f"{name}: missing required column(s) {missing}")
    declared = [name for name in frame.columns if name in spec.columns]
    dropped = [name for name in frame.columns if name not in spec.columns]
    return frame.select(declared), dropped
