"""A synthetic, demo-like campaign run for report tests, and the docs screenshot of its report.

``synthetic_campaign()`` builds member rows in the report's input contract: two variants (B's
subject line draws more clicks), a holdout with a conversion goal, two segments, a second sending
day for retried messages, and rare events (complaints, some exclusion reasons) that make small
cells. Everything is random draws from a seeded generator: no person, real or synthetic, behind any row.

Regenerate the screenshot in docs/ (installs Debian's Chromium when it is missing)::

    uv run python -m tests.report_screenshot
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from carecast.reports import CampaignRun, PublishedReport, build_report, write_report

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "report.png"
SEND_DATE = date(2026, 11, 23)
SECOND_DAY = date(2026, 11, 24)
RUN = CampaignRun(
    campaign="breast_screening_reminder",
    purpose="treatment",
    send_date=SEND_DATE.isoformat(),
    segment_sha256={"screening_due": "3f5a" * 16, "screening_overdue": "9c21" * 16},
    template_sha256="b7e0" * 16,
    variants=("A", "B"),
    goal="screening mammogram booked within 30 days",
)
EXCLUSIONS = {
    "screening_due": {"deceased": 6, "email_opt_out": 71, "hard_bounce": 14, "no_valid_email": 38, "unsubscribed": 3},
    "screening_overdue": {
        "deceased": 2,
        "email_opt_out": 19,
        "hard_bounce": 4,
        "no_valid_email": 12,
        "unsubscribed": 0,
    },
}


def synthetic_campaign(
    members: int = 4000,
    seed: int = 7,
    holdout: float = 0.1,
    variants: tuple[str, ...] = ("A", "B"),
    segments: tuple[str, ...] = ("screening_due", "screening_overdue"),
    goal: bool = True,
) -> pl.DataFrame:
    """Member rows of one campaign run, drawn at random with realistic rates: the first segment is the
    larger, the last variant draws more clicks, one message in ten goes out on the second day."""
    rng = np.random.default_rng(seed)
    treated = rng.random(members) >= holdout
    delivery = rng.choice(
        ["delivered", "bounced", "deferred", "excluded", "failed"], members, p=[0.955, 0.02, 0.01, 0.007, 0.008]
    )
    state = np.where(treated, delivery, None)
    attempted = treated & (delivery != "excluded")
    second_day = rng.random(members) >= 0.9
    variant = rng.choice(variants, members)
    delivered = state == "delivered"
    opened = delivered & (rng.random(members) < 0.38)
    click_rate = np.where(variant == variants[-1], 0.24, 0.16)
    weights = [0.8, *([0.2 / (len(segments) - 1)] * (len(segments) - 1))] if len(segments) > 1 else [1.0]
    return pl.DataFrame(
        {
            "variant": variant,
            "segment": rng.choice(segments, members, p=weights),
            "day": pl.Series([SEND_DATE, SECOND_DAY])[second_day.astype(int)].set(pl.Series(~attempted), None),
            "group": np.where(treated, "treated", "holdout"),
            "state": pl.Series(state.tolist(), dtype=pl.String),
            "opened": opened,
            "clicked": opened & (rng.random(members) < click_rate),
            "unsubscribed": delivered & (rng.random(members) < 0.006),
            "complained": delivered & (rng.random(members) < 0.0012),
            "converted": pl.Series(
                (rng.random(members) < np.where(treated, 0.15, 0.11)).tolist() if goal else [None] * members,
                dtype=pl.Boolean,
            ),
        }
    )


def demo_report() -> PublishedReport:
    return build_report(synthetic_campaign(), EXCLUSIONS, RUN)


def main() -> int:
    from tests.browser import launched_browser, open_page

    with tempfile.TemporaryDirectory() as folder:
        files = write_report(demo_report(), Path(folder))
        with launched_browser() as browser, open_page(browser, files.html) as (page, _requested):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"wrote {SCREENSHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
