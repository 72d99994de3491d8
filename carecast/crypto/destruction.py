"""Destruction certificates: what was destroyed, when, which key, by whom (a hash chain, no PHI)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carecast.crypto.hash_chain import HashChain


def certificates(keys_dir: Path) -> HashChain:
    return HashChain(keys_dir / "destruction.jsonl")


def certify(keys_dir: Path, *, what: str, key_id: str, reason: str, by: str, artifacts: list[str]) -> dict[str, Any]:
    return certificates(keys_dir).append(
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "what": what,
            "key_id": key_id,
            "reason": reason,
            "by": by,
            "artifacts": artifacts,
        }
    )
