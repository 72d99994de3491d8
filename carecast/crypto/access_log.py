"""A tamper-evident log of every key wrap and unwrap.

Each line is a JSON object carrying the SHA-256 of the previous line's hash and its own fields, so
editing or deleting a line breaks the chain from there on (``verify_chain``). It records key ids,
classes and who asked (run, asset, purpose): never key material, never data.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

GENESIS = "0" * 64


@dataclass(frozen=True)
class AccessContext:
    """Who is using keys right now; set by the orchestration layer around each step."""

    run_id: str = "-"
    asset: str = "-"
    purpose: str = "-"


_current_context: contextvars.ContextVar[AccessContext] = contextvars.ContextVar(
    "carecast_access_context", default=AccessContext()
)


@contextlib.contextmanager
def access_context(run_id: str = "-", asset: str = "-", purpose: str = "-") -> Iterator[AccessContext]:
    context = AccessContext(run_id=run_id, asset=asset, purpose=purpose)
    token = _current_context.set(context)
    try:
        yield context
    finally:
        _current_context.reset(token)


def current_access_context() -> AccessContext:
    return _current_context.get()


def _entry_hash(prev_hash: str, body: dict[str, str]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@dataclass
class AccessLog:
    path: Path
    _observers: list[list[dict[str, str]]] = field(default_factory=list, repr=False)

    def append(self, operation: str, key_id: str, key_class: str) -> None:
        context = current_access_context()
        body = {
            "at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "op": operation,
            "key_id": key_id,
            "class": key_class,
            "run_id": context.run_id,
            "asset": context.asset,
            "purpose": context.purpose,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                prev_hash = _last_hash(handle)
                record = {**body, "prev": prev_hash, "hash": _entry_hash(prev_hash, body)}
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        for observer in self._observers:
            observer.append(body)

    @contextlib.contextmanager
    def observe(self) -> Iterator[list[dict[str, str]]]:
        """Collect the entries this process appends inside the block (for materialization metadata)."""
        seen: list[dict[str, str]] = []
        self._observers.append(seen)
        try:
            yield seen
        finally:
            self._observers.remove(seen)

    def entries(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]


def _last_hash(handle) -> str:
    handle.seek(0, 2)
    size = handle.tell()
    if size == 0:
        return GENESIS
    window = min(size, 4096)
    handle.seek(size - window)
    last_line = handle.read().rstrip("\n").rsplit("\n", 1)[-1]
    return json.loads(last_line)["hash"]


def verify_chain(entries: list[dict[str, str]]) -> int | None:
    """Return the index of the first entry that breaks the chain, or None when it is intact."""
    prev_hash = GENESIS
    for index, entry in enumerate(entries):
        body = {k: v for k, v in entry.items() if k not in ("prev", "hash")}
        if entry.get("prev") != prev_hash or entry.get("hash") != _entry_hash(prev_hash, body):
            return index
        prev_hash = entry["hash"]
    return None
