"""Where carecast keeps its state: one folder, ``CARECAST_HOME`` (default ``.carecast/``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".carecast"


@dataclass(frozen=True)
class CarecastHome:
    """The data home and its fixed layout (see DESIGN.md, "Contracts")."""

    root: Path

    @classmethod
    def from_env(cls, override: str | os.PathLike[str] | None = None) -> CarecastHome:
        raw = override or os.environ.get("CARECAST_HOME") or DEFAULT_HOME
        return cls(Path(raw).expanduser().resolve())

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def mailbox(self) -> Path:
        return self.root / "mailbox"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def tmp(self) -> Path:
        """Scratch space for engines; nothing written here may hold plaintext PHI."""
        return self.root / "tmp"

    def ensure(self) -> CarecastHome:
        for folder in (self.landing, self.lake, self.keys, self.reports, self.mailbox, self.dagster, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys, 0o700)
        return self
