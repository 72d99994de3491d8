"""Engagement events from earlier campaigns (NDJSON), for patients with a usable email."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from carecast.synth.cohort import Cohort
from carecast.synth.columns import (
    SECONDS_PER_DAY,
    datetimes,
    day_number,
    labels,
    stream,
    uuids,
)

EVENT_TYPES = ("delivery", "bounce", "complaint", "open", "click", "unsubscribe")
DELIVERY, BOUNCE, COMPLAINT, OPEN, CLICK, UNSUBSCRIBE = range(6)
HARD_BOUNCE_SHARE = 0.01
SOFT_BOUNCE_SHARE = 0.01
OPEN_SHARE = 0.28
CLICK_SHARE_OF_OPENS = 0.15
COMPLAINT_SHARE = 0.001
UNSUBSCRIBE_SHARE = 0.01


def _campaigns(as_of: date) -> tuple[tuple[str, str, int, float], ...]:
    """(name, purpose, send day, share of reachable patients targeted), all before as_of."""
    year = as_of.year if as_of >= date(as_of.year, 5, 1) else as_of.year - 1
    return (
        (f"flu-reminder-{year - 1}", "treatment", day_number(date(year - 1, 9, 15)), 0.6),
        (f"fundraising-gala-{year - 1}", "fundraising", day_number(date(year - 1, 11, 5)), 0.2),
        (f"spring-newsletter-{year}", "marketing", day_number(date(year, 4, 14)), 0.4),
    )


def generate_events(seed: int, cohort: Cohort, contacts: pl.DataFrame) -> pl.DataFrame:
    rng = stream(seed, "events")
    index_of = pl.DataFrame({"patient_id": cohort.patient_id, "patient": np.arange(cohort.size)})
    reachable = (
        contacts.filter(pl.col("email").is_not_null() & pl.col("email_opt_in"))
        .join(index_of, on="patient_id", how="inner", maintain_order="left")["patient"]
        .to_numpy()
    )
    parts: list[pl.DataFrame] = []
    for campaign, purpose, send_day, share in _campaigns(cohort.as_of):
        # Follow-up events may come up to 30 days after sending; nobody gets mail after death.
        alive = cohort.last_active_day[reachable] >= send_day + 30
        target = reachable[alive & (rng.random(reachable.shape[0]) < share)]
        count = target.shape[0]
        sent = send_day * SECONDS_PER_DAY + rng.integers(13 * 3600, 16 * 3600, size=count)
        draw = rng.random(count)
        hard = draw < HARD_BOUNCE_SHARE
        soft = (draw >= HARD_BOUNCE_SHARE) & (draw < HARD_BOUNCE_SHARE + SOFT_BOUNCE_SHARE)
        delivered = ~(hard | soft)
        opened = delivered & (rng.random(count) < OPEN_SHARE)
        clicked = opened & (rng.random(count) < CLICK_SHARE_OF_OPENS)
        complained = delivered & (rng.random(count) < COMPLAINT_SHARE)
        unsubscribed = delivered & (rng.random(count) < UNSUBSCRIBE_SHARE)
        delivery_at = sent + rng.integers(1, 120, size=count)
        open_at = delivery_at + np.floor(rng.exponential(6 * 3600, size=count)).astype(np.int64)
        click_at = open_at + rng.integers(5, 600, size=count)
        later_at = open_at + rng.integers(30, 3600, size=count)
        for event_type, mask, moment, bounce in (
            (BOUNCE, hard, delivery_at, "hard"),
            (BOUNCE, soft, delivery_at, "soft"),
            (DELIVERY, delivered, delivery_at, None),
            (OPEN, opened, open_at, None),
            (CLICK, clicked, click_at, None),
            (COMPLAINT, complained, later_at, None),
            (UNSUBSCRIBE, unsubscribed, later_at, None),
        ):
            rows = int(mask.sum())
            parts.append(
                pl.DataFrame(
                    {
                        "patient": target[mask],
                        "at": np.minimum(moment[mask], cohort.last_active_second[target[mask]]),
                        "event_type": np.full(rows, event_type, dtype=np.int64),
                        "bounce_type": pl.Series(values=[bounce], dtype=pl.String).gather(
                            np.zeros(rows, dtype=np.int64)
                        ),
                        "campaign": pl.Series(values=[campaign]).gather(np.zeros(rows, dtype=np.int64)),
                        "purpose": pl.Series(values=[purpose]).gather(np.zeros(rows, dtype=np.int64)),
                    }
                )
            )
    events = pl.concat(parts).sort(["at", "patient", "event_type"])
    return pl.DataFrame(
        {
            "event_id": uuids(rng, events.height),
            "event_type": labels(EVENT_TYPES, events["event_type"].to_numpy()),
            "bounce_type": events["bounce_type"],
            "occurred_at": datetimes(events["at"].to_numpy()).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "patient_id": cohort.patient_id.gather(events["patient"].to_numpy()),
            "campaign": events["campaign"],
            "purpose": events["purpose"],
        }
    )
