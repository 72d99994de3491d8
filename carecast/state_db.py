"""``state.db``: carecast's operational state in SQLite (send ledger, ingest journal). No PHI."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Self


class StateDb:
    """One connection to ``state.db`` with the tables a subclass declares in ``SCHEMA``."""

    SCHEMA = ""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._connection.execute("pragma journal_mode = wal")
        # FULL: a write that returned is on disk, even if the machine dies next.
        self._connection.execute("pragma synchronous = full")
        self._connection.executescript(self.SCHEMA)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
