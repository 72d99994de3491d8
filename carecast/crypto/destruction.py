"""Destruction certificates: what was destroyed, when, which key, by whom (a hash chain, no PHI)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carecast.crypto.hash_chain import HashChain
from carecast.crypto.kms import KeyVersion, LocalKms


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


def destroy_with_certificate(
    kms: LocalKms, key: KeyVersion, *, what: str, reason: str, by: str, artifacts: list[str]
) -> str:
    """Destroy a master key version and record the certificate; return the destroyed key id."""
    kms.destroy(key.key_class, key.version)
    certify(kms.keys_dir, what=what, key_id=key.key_id, reason=reason, by=by, artifacts=artifacts)
    return key.key_id
