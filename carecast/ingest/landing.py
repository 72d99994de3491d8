"""The landing layout: ``landing/<source>/<batch>/<table>.<ext>[.enc]``, complete once ``_SUCCESS`` exists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carecast.crypto.sealed_file import SUFFIX as SEALED_SUFFIX

SUCCESS_MARKER = "_SUCCESS"
FILE_FORMATS = {"events": "ndjson"}


class NoCompleteBatchError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class LandedFile:
    source: str
    batch: str
    table: str
    path: Path

    @property
    def format(self) -> str:
        return FILE_FORMATS.get(self.source, "csv")

    @property
    def sealed(self) -> bool:
        return self.path.name.endswith(SEALED_SUFFIX)


def complete_batches(landing: Path, source: str) -> list[Path]:
    folder = landing / source
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / SUCCESS_MARKER).exists())


def latest_file(landing: Path, source: str, table: str) -> LandedFile:
    """The table's file in the newest complete batch of a source."""
    batches = complete_batches(landing, source)
    if not batches:
        raise NoCompleteBatchError(f"no complete batch under {landing / source} (a batch needs {SUCCESS_MARKER})")
    batch = batches[-1]
    extension = FILE_FORMATS.get(source, "csv")
    plain = batch / f"{table}.{extension}"
    for path in (plain.with_name(plain.name + SEALED_SUFFIX), plain):
        if path.exists():
            return LandedFile(source=source, batch=batch.name, table=table, path=path)
    raise NoCompleteBatchError(f"batch {batch.name} of {source} has no {plain.name} (sealed or plain)")
