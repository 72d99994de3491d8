"""Atomic batch writing: every file goes to a temporary name and is renamed into place;
the batch's `_SUCCESS` marker is written last so readers never see a half-written batch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DATE_FORMAT = "%Y-%m-%d"
SUCCESS_MARKER = "_SUCCESS"


def start_batch(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUCCESS_MARKER).unlink(missing_ok=True)
    return folder


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp")


def write_csv(frame: pl.DataFrame, target: Path) -> int:
    temporary = _temporary(target)
    frame.write_csv(temporary, datetime_format=TIMESTAMP_FORMAT, date_format=DATE_FORMAT)
    os.replace(temporary, target)
    return frame.height


def write_ndjson(frame: pl.DataFrame, target: Path) -> int:
    temporary = _temporary(target)
    frame.write_ndjson(temporary)
    os.replace(temporary, target)
    return frame.height


def write_text(text: str, target: Path) -> None:
    temporary = _temporary(target)
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, target)


def copy_file(source: Path, target: Path) -> None:
    temporary = _temporary(target)
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def finish_batch(folder: Path) -> None:
    write_text("", folder / SUCCESS_MARKER)
