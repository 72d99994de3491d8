"""Append-only JSON-lines files whose lines are hash-chained: editing or deleting one breaks the chain.

Each line carries ``prev`` (the previous line's hash) and ``hash`` (SHA-256 of ``prev`` and the
line's canonical body). Old lines may be pruned (retention): the hash of the last pruned line is
kept in ``<file>.genesis`` so the rest still verifies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def entry_hash(prev_hash: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def body_of(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("prev", "hash")}


@dataclass
class HashChain:
    path: Path

    @property
    def genesis_path(self) -> Path:
        return self.path.with_name(self.path.name + ".genesis")

    def genesis(self) -> str:
        return self.genesis_path.read_text().strip() if self.genesis_path.exists() else GENESIS

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                prev_hash = self._last_hash(handle)
                record = {**body, "prev": prev_hash, "hash": entry_hash(prev_hash, body)}
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record

    def _last_hash(self, handle) -> str:
        handle.seek(0, 2)
        size = handle.tell()
        if size == 0:
            return self.genesis()
        window = min(size, 8192)
        handle.seek(size - window)
        last_line = handle.read().rstrip("\n").rsplit("\n", 1)[-1]
        return json.loads(last_line)["hash"]

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def verify(self) -> int | None:
        """The index of the first entry that breaks the chain, or None when it is intact."""
        prev_hash = self.genesis()
        for index, entry in enumerate(self.entries()):
            if entry.get("prev") != prev_hash or entry.get("hash") != entry_hash(prev_hash, body_of(entry)):
                return index
            prev_hash = entry["hash"]
        return None

    def prune_before(self, cutoff_iso: str, time_field: str = "at") -> int:
        """Drop entries older than ``cutoff_iso`` (retention); the rest still verify. Returns how many."""
        with open(self.path, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                entries = [json.loads(line) for line in handle if line.strip()]
                keep_from = next((i for i, e in enumerate(entries) if e[time_field] >= cutoff_iso), len(entries))
                if keep_from == 0:
                    return 0
                self.genesis_path.write_text(entries[keep_from - 1]["hash"] + "\n")
                handle.seek(0)
                handle.truncate()
                handle.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries[keep_from:])
                handle.flush()
                return keep_from
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
