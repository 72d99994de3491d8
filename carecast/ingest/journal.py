"""The ingest journal (in ``state.db``): which landed file was applied to which dataset, and how.

It holds names, digests and counts only. A file is recorded once it has been applied (or found to
repeat a file already applied, byte for byte), so re-running ingest is a no-op and a sensor can
tell what is still pending without opening any file.
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

    def applied(self) -> set[tuple[str, str, str, str]]:
        """(dataset, source, batch, file name) of every file already applied."""
        rows = self._connection.execute("select dataset, source, batch, file_name from ingested_files")
        return set(rows.fetchall())

    def loaded_with_content(self, dataset: str, content_sha256: str) -> JournalEntry | None:
        row = self._connection.execute(
            "select * from ingested_files where dataset = ? and content_sha256 = ? and outcome = 'loaded'",
            (dataset, content_sha256),
        ).fetchone()
        return JournalEntry(*row[:11]) if row else None

    def latest_loaded(self, dataset: str) -> JournalEntry | None:
        row = self._connection.execute(
            "select * from ingested_files where dataset = ? and outcome = 'loaded'"
            " order by applied_at desc, rowid desc",
            (dataset,),
        ).fetchone()
        return JournalEntry(*row[:11]) if row else None

    def record(self, entry: JournalEntry) -> None:
        self._connection.execute(
            "insert into ingested_files values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*entry.__dict__.values(), datetime.now(UTC).isoformat(timespec="milliseconds")),
        )
