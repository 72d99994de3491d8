"""Rotating master keys, re-wrapping what they protect, and retiring the old versions.

Rotation makes a new version current for each class and re-wraps every artifact onto it: lake files
through their external key material (no rewrite), sealed landing files by re-sealing, the pseudonym
secret, the DKIM private keys and the link-token keys by re-wrapping (same secrets, so patient keys,
DNS records and links already sent keep working). Epoch classes (rendered messages,
mailbox copies) are not re-wrapped: retention shreds them by destroying their versions. A retired
version is destroyed once it has been retired for the grace period, with a destruction certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from carecast.crypto.destruction import destroy_with_certificate
from carecast.crypto.kms import EPOCH_CLASSES, KEY_CLASSES, LocalKms
from carecast.crypto.pseudonym import rewrap_pseudonym_key
from carecast.crypto.sealed_file import SUFFIX, open_sealed, seal_bytes
from carecast.home import CarecastHome
from carecast.lake import Lake, LakeIntegrityError
from carecast.link_tokens import rewrap_link_token_keys
from carecast.mail.dkim import rewrap_dkim_keys

ROTATING_CLASSES = tuple(c for c in KEY_CLASSES if c not in EPOCH_CLASSES)


@dataclass
class RotationReport:
    rotated: list[str] = field(default_factory=list)
    lake_files_rewrapped: int = 0
    lake_files_unreadable: int = 0
    sealed_files_resealed: int = 0
    pseudonym_rewrapped: bool = False
    dkim_keys_rewrapped: int = 0
    link_token_keys_rewrapped: bool = False


def rotate_keys(
    kms: LocalKms, lake: Lake, home: CarecastHome, classes: tuple[str, ...] = ROTATING_CLASSES
) -> RotationReport:
    unknown = [c for c in classes if c not in ROTATING_CLASSES]
    if unknown:
        raise ValueError(f"cannot rotate {unknown}: epoch classes rotate by retention epochs, not by command")
    report = RotationReport(rotated=[kms.rotate(c) for c in classes])
    if classes:
        for dataset in lake.datasets():
            for version in lake.version_numbers(dataset):
                try:
                    lake.rewrap(dataset, version)
                    report.lake_files_rewrapped += 1
                except LakeIntegrityError:
                    report.lake_files_unreadable += 1  # shredded by retention: nothing left to protect
    if "landing" in classes:
        for path in sorted(home.landing.rglob(f"*{SUFFIX}")):
            seal_bytes(open_sealed(path, kms), path, kms)
            report.sealed_files_resealed += 1
    if "pseudonym" in classes:
        report.pseudonym_rewrapped = rewrap_pseudonym_key(kms, home.keys)
    if "dkim" in classes:
        report.dkim_keys_rewrapped = rewrap_dkim_keys(kms, home.keys)
    if "link" in classes:
        report.link_token_keys_rewrapped = rewrap_link_token_keys(kms, home.keys)
    return report


def retire_keys(kms: LocalKms, grace: timedelta, now: datetime, by: str) -> list[str]:
    """Destroy rotated-out versions of non-epoch classes retired for at least ``grace``."""
    destroyed = []
    for key in kms.versions():
        if key.key_class in EPOCH_CLASSES or key.state != "retired" or key.retired_at is None:
            continue
        if datetime.fromisoformat(key.retired_at) + grace <= now:
            destroyed.append(
                destroy_with_certificate(
                    kms,
                    key,
                    what=f"retired {key.key_class} master key (all data re-wrapped to a newer version)",
                    reason=f"retired {key.retired_at}, grace {grace.days} days",
                    by=by,
                    artifacts=[],
                )
            )
    return destroyed
