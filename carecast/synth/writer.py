"""Atomic batch writing: every file goes to a temporary name and is renamed into place;
the batch's `_SUCCESS` marker is written last so readers never see a half-written batch.

With a KMS, extracts are sealed (``<name>.enc``, see ``carecast.crypto.sealed_file``) instead of
written in the clear, so a generated batch never leaves plaintext PHI on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from carecast.crypto.kms import Kms
from carecast.crypto.sealed_file import SUFFIX, seal_bytes

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DATE_FORMAT = "%Y-%m-%d"
SUCCESS_MARKER = "_SUCCESS"


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp")


@dataclass(frozen=True)
class BatchWriter:
    kms: Kms | None = None

    def start_batch(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SUCCESS_MARKER).unlink(missing_ok=True)
        return folder

    def write_bytes(self, data: bytes, target: Path) -> Path:
        if self.kms is not None:
            return seal_bytes(data, target.with_name(target.name + SUFFIX), self.kms)
        temporary = _temporary(target)
        temporary.write_bytes(data)
        os.replace(temporary, target)
        return target

    def write_csv(self, frame: pl.DataFrame, target: Path) -> int:
        text = frame.write_csv(datetime_format=TIMESTAMP_FORMAT, date_format=DATE_FORMAT)
        self.write_bytes(text.encode("utf-8"), target)
        return frame.height

    def write_ndjson(self, frame: pl.DataFrame, target: Path) -> int:
        self.write_bytes(frame.write_ndjson().encode("utf-8"), target)
        return frame.height

    def write_notice(self, text: str, target: Path) -> None:
        """Notices are not PHI and stay readable."""
        temporary = _temporary(target)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)

    def copy_file(self, source: Path, target: Path) -> None:
        self.write_bytes(source.read_bytes(), target)

    def finish_batch(self, folder: Path) -> None:
        self.write_notice("", folder / SUCCESS_MARKER)
