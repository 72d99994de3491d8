"""Parse an extract into an all-string frame. Errors name the file, the line and the problem, never a value."""

from __future__ import annotations

import csv
import io
import json
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
    data = source if isinstance(source, bytes) else source.read_bytes()
    if not data or data.isspace():
        raise ExtractError(f"{name}: file is empty")
    return read_block(data, name, file_format, spec)


def read_block(
    data: bytes, name: str, file_format: str, spec: TableSpec, line_offset: int = 0
) -> tuple[pl.DataFrame, list[str]]:
    """``read_extract`` for whole lines of an extract (a CSV block starts with the file's header line).

    ``line_offset`` is the number of file lines left out before ``data``'s first line (after the
    header, for CSV), so the lines errors name are the file's.
    """
    _refuse_bad_encoding(data, name, line_offset)
    try:
        if file_format == "ndjson":
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
            frame = frame.select(pl.all().cast(pl.String))
        else:
            _refuse_truncated_csv(data, name, line_offset)
            frame = pl.read_csv(io.BytesIO(data), infer_schema=False, encoding="utf8", raise_if_empty=True)
    except (pl.exceptions.PolarsError, OSError) as error:
        # Parser messages can quote the offending line, which is PHI: keep the kind and find the line.
        line, problem = _locate_problem(data, file_format)
        raise ExtractError(
            f"{name}:{line + line_offset}: cannot be parsed as {file_format}: {problem} ({type(error).__name__})"
        ) from None
    return select_declared(frame, name, spec)


def select_declared(frame: pl.DataFrame, name: str, spec: TableSpec) -> tuple[pl.DataFrame, list[str]]:
    missing = [column for column, declared in spec.columns.items() if declared.required and column not in frame.columns]
    if missing:
        raise ExtractError(f"{name}:1: missing required column(s) {missing}")
    declared = [column for column in frame.columns if column in spec.columns]
    dropped = [column for column in frame.columns if column not in spec.columns]
    return frame.select(declared), dropped


def line_of_offset(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _refuse_bad_encoding(data: bytes, name: str, line_offset: int) -> None:
    if data.isascii():  # most extracts are: checked word by word, twenty times faster than decoding
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = line_of_offset(data, error.start) + line_offset
        raise ExtractError(
            f"{name}:{line}: not UTF-8 (a byte at column {_column(data, error.start)} cannot be decoded)"
        ) from None


def _column(data: bytes, offset: int) -> int:
    return offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _refuse_truncated_csv(data: bytes, name: str, line_offset: int) -> None:
    """A file cut off mid-row: its last line ends without a newline and has fewer fields than the header."""
    if data.endswith(b"\n"):
        return
    header_end = data.find(b"\n")
    last_start = data.rfind(b"\n") + 1
    if header_end < 0 or last_start <= header_end:
        return
    header = next(csv.reader([data[:header_end].decode()]))
    last = next(csv.reader([data[last_start:].decode()]), [])
    if len(last) < len(header):
        line = line_of_offset(data, last_start) + line_offset
        raise ExtractError(f"{name}:{line}: truncated (the last row has {len(last)} of {len(header)} fields)")


def _locate_problem(data: bytes, file_format: str) -> tuple[int, str]:
    """Only on the failure path: walk the file in Python to say where it breaks."""
    text = data.decode("utf-8")
    if file_format == "ndjson":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    return number, "invalid JSON"
        return 1, "unreadable"
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        for row in reader:
            if row and len(row) != len(header):
                return reader.line_num, f"{len(row)} fields where the header has {len(header)}"
    except csv.Error:
        return reader.line_num, "malformed quoting"
    return reader.line_num, "unreadable"
