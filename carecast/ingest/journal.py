"""The ingest journal (in ``state.db``): which landed file was applied to which dataset, and how.

It holds names, digests and counts only. A file is recorded once it has been applied (or found to
repeat a file already applied, byte for byte), with its size and modification time as it was then,
so re-running ingest is a no-op, a file rewritten in place is applied again, and a sensor can tell
what is still pending without opening any file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from carecast.state_db import StateDb

_SCHEMA = """
create table if not exists ingested_files (
    dataset text not null,
    source text not null,
    batch text not null,
    file_name text not null,
    file_size integer not null,
    file_mtime_ns integer not null,
    content_sha256 text not null,
    outcome text not null check (outcome in ('loaded', 'duplicate')),
    rows_read integer not null,
    rows_loaded integer not null,
    rows_quarantined integer not null,
    dataset_version text,
    dataset_rows integer,
    applied_at text not null,
    primary key (dataset, source, batch, file_name)
);
create index if not exists ingested_files_content on ingested_files (dataset, content_sha256);
"""


@dataclass(frozen=True)
class JournalEntry:
    dataset: str
    source: str
    batch: str
    file_name: str
    file_size: int
    file_mtime_ns: int
    content_sha256: str
    outcome: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    dataset_version: str | None
    dataset_rows: int | None
    """Rows in the dataset version this file produced (None for a duplicate)."""


class IngestJournal(StateDb):
    SCHEMA = _SCHEMA

    def applied(self) -> dict[tuple[str, str, str, str], tuple[int, int]]:
        """(dataset, source, batch, file name) -> (size, modification time) of every file applied."""
        rows = self._connection.execute(
            "select dataset, source, batch, file_name, file_size, file_mtime_ns from ingested_files"
        )
        return {tuple(row[:4]): (row[4], row[5]) for row in rows.fetchall()}

    def loaded_with_content(self, dataset: str, content_sha256: str) -> JournalEntry | None:
        row = self._connection.execute(
            "select * from ingested_files where dataset = ? and content_sha256 = ? and outcome = 'loaded'",
            (dataset, content_sha256),
        ).fetchone()
        return JournalEntry(*row[:13]) if row else None

    def latest_loaded(self, dataset: str) -> JournalEntry | None:
        row = self._connection.execute(
            "select * from ingested_files where dataset = ? and outcome = 'loaded'"
            " order by applied_at desc, rowid desc",
            (dataset,),
        ).fetchone()
        return JournalEntry(*row[:13]) if row else None

    def record(self, entry: JournalEntry) -> None:
        self._connection.execute(
            "insert or replace into ingested_files values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*entry.__dict__.values(), datetime.now(UTC).isoformat(timespec="milliseconds")),
        )
