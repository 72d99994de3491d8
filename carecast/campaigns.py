"""Campaign definitions (``campaigns/*.yaml``), validated before any asset is built."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carecast.policy import PURPOSES, FrequencyCap
from carecast.send_windows import SendWindow

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class CampaignDefinitionError(ValueError):
    pass


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    segment: str
    template: str
    purpose: str
    stream: str
    """A stream of ``streams.yaml``: the sender identity, DKIM domain and limits; it must carry the purpose."""
    variants: dict[str, float] = Field(default_factory=lambda: {"A": 1.0})
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    allow_minors: bool = False
    frequency_cap: FrequencyCap | None = None
    """Stricter than the purpose's own cap in purposes.yaml, when set; both apply."""
    send_window: SendWindow | None = None
    """Quiet hours: messages go out only between ``start`` and ``end`` in the recipient's time zone
    (from their address); the rest wait, deferred, for the next opening."""
    links: dict[str, str] = Field(default_factory=dict)
    """The only URLs the campaign's messages may link to, by name (templates use ``links.<name>``)."""
    goal: Literal["left_segment"] | None = None
    """What counts as converted, for the holdout lift: ``left_segment``, the member is no longer in the
    campaign's segment when the report is built (the care gap closed: screened, vaccinated, seen)."""
    track_clicks: bool = True
    """Links go through the stream's first-party endpoint (``/c/<token>``), which records the click and
    redirects to the declared URL; the token names the link, never the URL or the patient."""
    open_pixel: bool = False
    """A 1x1 first-party image that records opens. Off by default (mail privacy features make opens
    unreliable, and a pixel is tracking the patient did not ask for); never allowed for treatment."""

    @field_validator("links")
    @classmethod
    def _https_only(cls, value: dict[str, str]) -> dict[str, str]:
        insecure = [name for name, url in value.items() if not url.startswith("https://")]
        if insecure:
            raise ValueError(f"links must be https URLs: {insecure}")
        return value

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower case letters, digits and underscores (it names Dagster assets)")
        return value

    @field_validator("purpose")
    @classmethod
    def _known_purpose(cls, value: str) -> str:
        if value not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Campaign:
        if not self.variants or abs(sum(self.variants.values()) - 1.0) > 1e-9:
            raise ValueError("variant weights must sum to 1")
        if self.open_pixel and self.purpose == "treatment":
            raise ValueError("an open pixel is never allowed in treatment mail")
        return self


def audience_dataset(campaign: Campaign) -> str:
    return f"audience_{campaign.name}"


def outbox_dataset(campaign: Campaign) -> str:
    return f"outbox_{campaign.name}"


def load_campaign(path: Path) -> Campaign:
    try:
        raw = yaml.safe_load(path.read_text())
        return Campaign.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as error:
        raise CampaignDefinitionError(f"{path}: {error}") from None


def discover_campaigns(campaigns_dir: Path) -> dict[str, Campaign]:
    campaigns = {}
    for path in sorted(campaigns_dir.glob("*.yaml")):
        campaign = load_campaign(path)
        if campaign.name in campaigns:
            raise CampaignDefinitionError(f"{path}: campaign name {campaign.name!r} is used twice")
        campaigns[campaign.name] = campaign
    return campaigns
