"""The purpose policy (``purposes.yaml``): which data each purpose may use, and how often it may write.

Together with the sensitive code value set (``dbt_like_models/seeds/sensitive_codes.csv``) it is what
the segment check enforces before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carecast.registry import PhiClass

POLICY_FILE = "purposes.yaml"
PURPOSES = ("treatment", "operations", "marketing", "fundraising")


class PolicyError(ValueError):
    pass


class FrequencyCap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: int = Field(ge=1)
    days: int = Field(ge=1)


class PurposeRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: tuple[PhiClass, ...]
    sensitive_categories: tuple[str, ...] = ()
    minors: bool = False
    frequency_cap: FrequencyCap | None = None


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purposes: dict[str, PurposeRule]


@dataclass(frozen=True)
class PurposePolicy:
    purposes: dict[str, PurposeRule]
    sensitive_codes: dict[str, str]
    """Code -> sensitive category (codes of different systems do not collide in the value set)."""

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(self.sensitive_codes.values())

    def rule(self, purpose: str) -> PurposeRule:
        return self.purposes[purpose]

    def withheld_categories(self, purposes: tuple[str, ...]) -> frozenset[str]:
        """Categories that at least one of these purposes may not use."""
        allowed = [set(self.purposes[p].sensitive_categories) for p in purposes]
        return frozenset(category for category in self.categories if not all(category in a for a in allowed))


def load_purpose_policy(project_dir: Path, sensitive_codes: dict[str, str]) -> PurposePolicy:
    path = project_dir / POLICY_FILE
    try:
        parsed = PolicyFile.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise PolicyError(f"{path}: {error}") from None
    missing = [p for p in PURPOSES if p not in parsed.purposes]
    unknown = [p for p in parsed.purposes if p not in PURPOSES]
    if missing or unknown:
        raise PolicyError(f"{path}: declare exactly the purposes {PURPOSES} (missing {missing}, unknown {unknown})")
    for purpose, rule in parsed.purposes.items():
        strange = sorted(set(rule.sensitive_categories) - set(sensitive_codes.values()))
        if strange:
            raise PolicyError(f"{path}: purpose {purpose!r} names categories no sensitive code has: {strange}")
    return PurposePolicy(purposes=dict(parsed.purposes), sensitive_codes=sensitive_codes)
