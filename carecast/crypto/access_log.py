"""A tamper-evident log of every key wrap and unwrap (a hash chain, see ``hash_chain``).

It records key ids (with their version), classes and who asked (run, asset, purpose): never key
material, never data.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from carecast.crypto.hash_chain import HashChain


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


@dataclass
class AccessLog:
    path: Path
    _observers: list[list[dict[str, str]]] = field(default_factory=list, repr=False)

    @property
    def chain(self) -> HashChain:
        return HashChain(self.path)

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
        self.chain.append(body)
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
            # by identity: nested observers collect equal lists, and list.remove compares by value
            self._observers[:] = [observer for observer in self._observers if observer is not seen]

    def entries(self) -> list[dict[str, str]]:
        return self.chain.entries()

    def verify(self) -> int | None:
        return self.chain.verify()
