"""Sending streams (``streams.yaml``): who a message is from, how it is signed, how fast it may go.

A *transactional* stream carries treatment and operations mail, a *marketing* stream marketing and
fundraising mail, each with its own sender identity, DKIM domain and limits, so a complaint storm on
marketing mail cannot hurt the reputation that appointment reminders depend on. A campaign names its
stream; one whose purpose the stream does not carry is refused when the project loads. Marketing
streams must say where unsubscribes go (RFC 8058 one-click and a mailto), because every message on
them carries List-Unsubscribe headers and an opt-out in its footer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carecast.mail.rate_limit import RateLimitConfig

STREAM_PURPOSES = {"transactional": ("treatment", "operations"), "marketing": ("marketing", "fundraising")}
STREAMS_FILE = "streams.yaml"


class StreamDefinitionError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(_Strict):
    from_address: str = Field(alias="from")
    reply_to: str | None = None
    organisation: str
    postal_address: str
    """CAN-SPAM wants a valid physical postal address in every commercial message; all streams show it."""

    @property
    def envelope_from(self) -> str:
        from email.utils import parseaddr

        return parseaddr(self.from_address)[1]

    @property
    def domain(self) -> str:
        return self.envelope_from.rsplit("@", 1)[-1].lower()


class DkimSettings(_Strict):
    domain: str
    rsa_selector: str
    ed25519_selector: str | None = None
    """Set it to double-sign (RFC 8463): receivers that know Ed25519 check both signatures."""


class Unsubscribe(_Strict):
    url: str
    """Base of the one-click link; carecast appends ``/<token>`` (the endpoint of ``carecast serve``)."""
    mailto: str

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("the unsubscribe URL must be https (RFC 8058)")
        return value.rstrip("/")


class Retry(_Strict):
    attempts_per_run: int = Field(default=3, ge=1)
    """Tries of a deferred (4xx, throttled) message within one run, with exponential backoff."""
    first_backoff_seconds: float = Field(default=0.5, gt=0)
    max_runs: int = Field(default=5, ge=1)
    """Runs that may try a message; one still deferred after them fails (counted, never silently dropped)."""
    retry_after_minutes: int = Field(default=15, ge=1)
    """When a message deferred at the end of a run may be tried by the next run."""


class Stream(_Strict):
    name: str
    kind: Literal["transactional", "marketing"]
    sender: Sender
    dkim: DkimSettings
    unsubscribe: Unsubscribe | None = None
    tracking_url: str | None = None
    """Root of this stream's engagement endpoint (``carecast serve``) for tracked links
    (``<root>/c/<token>``) and the open pixel (``<root>/o/<token>``); https, first party only."""
    connections: int = Field(default=4, ge=1, le=64)
    workers: int = Field(default=2, ge=1, le=64)
    rate_limit: RateLimitConfig
    """A ceiling over any one-second window, globally and per recipient domain, across all workers."""
    retry: Retry = Field(default_factory=Retry)
    feedback_id: str | None = None
    """Sender part of Gmail's Feedback-ID header (campaign and stream are added), for complaint rates."""

    @property
    def purposes(self) -> tuple[str, ...]:
        return STREAM_PURPOSES[self.kind]

    @field_validator("tracking_url")
    @classmethod
    def _https_root(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("the tracking URL must be https")
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _marketing_can_unsubscribe(self) -> Stream:
        if self.kind == "marketing" and self.unsubscribe is None:
            raise ValueError("a marketing stream needs `unsubscribe` (url and mailto) for List-Unsubscribe")
        return self


def load_streams(root: Path) -> dict[str, Stream]:
    path = root / STREAMS_FILE
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return {name: Stream.model_validate({"name": name, **body}) for name, body in raw.items()}
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as error:
        raise StreamDefinitionError(f"{path}: {error}") from None
