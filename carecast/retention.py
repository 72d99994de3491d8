"""Retention by crypto-shredding: rendered messages and mailbox copies live under epoch keys that are
destroyed when the retention period of the newest data under them has passed.

An epoch class's current version is rotated when it is older than the epoch length, so every epoch
holds at most that much time of data; a retired epoch is destroyed once ``retired_at + retention``
has passed. Destroying the version makes every outbox file and mailbox copy written under it
unreadable (operational columns of an outbox, wrapped under other keys, stay readable), and a
destruction certificate records it. The KMS access log (the audit trail, no PHI) is kept for its own
period (six years by default, 45 CFR 164.530(j)), after which older entries are pruned and the chain
still verifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from carecast.crypto.destruction import destroy_with_certificate
from carecast.crypto.kms import LocalKms
from carecast.lake import Lake

POLICY_FILE = "retention.yaml"


class RetentionPolicy(BaseModel):
    """Days each artifact type is kept (``retention.yaml`` at the project root overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rendered_messages_days: int = Field(default=30, ge=1)
    mailbox_days: int = Field(default=30, ge=1)
    audit_log_days: int = Field(default=6 * 365, ge=365)
    key_epoch_days: int = Field(default=1, ge=1)
    retired_key_grace_days: int = Field(default=30, ge=0)

    def days_for(self, key_class: str) -> int:
        return {"message": self.rendered_messages_days, "mailbox": self.mailbox_days}[key_class]


def load_policy(project_dir: Path) -> RetentionPolicy:
    path = project_dir / POLICY_FILE
    if not path.exists():
        return RetentionPolicy()
    return RetentionPolicy.model_validate(yaml.safe_load(path.read_text()) or {})


def start_epoch_if_due(kms: LocalKms, key_class: str, policy: RetentionPolicy, now: datetime) -> str | None:
    """Rotate an epoch class whose current version is older than the epoch length; return the new id."""
    current = next(v for v in kms.versions(key_class) if v.state == "active") if kms.versions(key_class) else None
    if current is None:
        kms.master_key_id(key_class)
        return None
    if datetime.fromisoformat(current.created_at) + timedelta(days=policy.key_epoch_days) <= now:
        return kms.rotate(key_class)
    return None


@dataclass
class RetentionReport:
    epochs_started: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    audit_entries_pruned: int = 0


def apply_retention(kms: LocalKms, lake: Lake, policy: RetentionPolicy, now: datetime, by: str) -> RetentionReport:
    report = RetentionReport()
    for key_class, artifact in (("message", "rendered messages (outboxes)"), ("mailbox", "mailbox copies")):
        started = start_epoch_if_due(kms, key_class, policy, now)
        if started:
            report.epochs_started.append(started)
        keep = timedelta(days=policy.days_for(key_class))
        for key in kms.versions(key_class):
            if key.state != "retired" or key.retired_at is None:
                continue
            if datetime.fromisoformat(key.retired_at) + keep > now:
                continue
            artifacts = _artifacts_under(lake, f"local/{key_class}", key.version) if key_class == "message" else []
            report.destroyed.append(
                destroy_with_certificate(
                    kms,
                    key,
                    what=f"{artifact} written under {key.key_id}",
                    reason=f"retention {keep.days} days after {key.retired_at}",
                    by=by,
                    artifacts=artifacts,
                )
            )
    cutoff = (now - timedelta(days=policy.audit_log_days)).isoformat()
    if kms.access_log.path.exists():
        report.audit_entries_pruned = kms.access_log.chain.prune_before(cutoff)
    return report


def _artifacts_under(lake: Lake, master_key_id: str, version: int) -> list[str]:
    """Lake dataset versions whose keys are wrapped under this master key version."""
    found = []
    for dataset in lake.datasets():
        for number in lake.version_numbers(dataset):
            if lake.key_versions(dataset, number).get(master_key_id) == version:
                found.append(f"{dataset}@v{number}")
    return found
