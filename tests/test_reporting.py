"""Marketer reports: counts, disclosure control proved by an independent attacker, statistics, outputs.

The attacker (``audit``) is written here from the domain alone, not from the report's code: every
kind of member a campaign can have is an integer variable (how many such members there are), each
published count is a sum of those variables, read back from the CSV export, and the markers bound
them (``<11``: 0 to 10, ``>10``: 11 or more). For each hidden count, and for each count a reader
could work out by subtraction (delivered but not opened, members not converted, …) that is 1 to 10,
an integer program finds its least and greatest possible value given everything published. A count is
recovered when the two agree.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import itertools
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import Bounds, LinearConstraint, milp

from carecast.reports import (
    COMPLEMENT,
    SUPPRESSED,
    CampaignRun,
    build_report,
    report_markdown,
    suppress_cells,
    suppress_count,
    write_report,
)
from carecast.reports.csv_export import report_csv
from carecast.reports.disclosure import DisclosureError
from carecast.reports.html_page import report_html
from carecast.reports.statistics import (
    compare_proportions,
    fisher_exact_test,
    holm,
    newcombe_interval,
    two_proportion_z_test,
    wilson_interval,
)
from tests.report_screenshot import EXCLUSIONS, RUN, synthetic_campaign

FLAGS = ("opened", "clicked", "unsubscribed", "complained")
MARKERS = (SUPPRESSED, COMPLEMENT)


# -- suppress_cells: one group whose total is printed ---------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        # nothing small: everything shown
        ({"a": 40, "b": 11, "c": 0}, {"a": "40", "b": "11", "c": "0"}),
        # one small cell: the next cheapest is hidden too, or total - a - b would give it away
        ({"a": 40, "b": 12, "c": 3}, {"a": "40", "b": COMPLEMENT, "c": SUPPRESSED}),
        # two small cells already hide each other
        ({"a": 40, "b": 2, "c": 3}, {"a": "40", "b": SUPPRESSED, "c": SUPPRESSED}),
        # zeros are not small cells: "none" discloses nobody
        ({"a": 0, "b": 0}, {"a": "0", "b": "0"}),
        # a zero is hidden when it is the cheapest complement (shown as <11: it is under 11)
        ({"a": 0, "b": 5, "c": 500}, {"a": SUPPRESSED, "b": SUPPRESSED, "c": "500"}),
    ],
)
def test_small_cells_and_their_complements_are_hidden(cells: dict[str, int], expected: dict[str, str]) -> None:
    assert suppress_cells(cells) == expected
    assert suppress_count(4) == SUPPRESSED and suppress_count(0) == "0" and suppress_count(11) == "11"


@given(st.dictionaries(st.sampled_from("abcde"), st.integers(min_value=0, max_value=30), min_size=2))
def test_no_hidden_cell_of_a_group_can_be_recovered_from_its_total(cells: dict[str, int]) -> None:
    try:
        shown = suppress_cells(cells)
    except DisclosureError:
        # Refusing is allowed only when no protection exists: the markers alone then pin the cells
        # (e.g. 10 + 10 under a printed 20).
        assert not _any_alternative(
            cells, {name: SUPPRESSED if 0 < c < 11 else COMPLEMENT for name, c in cells.items()}
        )
        return
    assert all(shown[name] == SUPPRESSED for name, count in cells.items() if 0 < count < 11)
    hidden = [name for name, text in shown.items() if text in MARKERS]
    if hidden:
        assert _any_alternative(cells, shown)


def _any_alternative(cells: dict[str, int], shown: dict[str, str]) -> bool:
    """Every hidden cell can take another value, all else printed staying the same: the total exactly,
    or only as ``<11`` when it is itself small (as ``suppress_count`` prints it)."""
    total = sum(cells.values())
    hidden = [name for name, text in shown.items() if text in MARKERS]
    printed = sum(int(text) for text in shown.values() if text not in MARKERS)
    totals = range(0, 11) if 0 < total < 11 else [total]
    ranges = [range(0, 11) if shown[name] == SUPPRESSED else range(11, total + 1) for name in hidden]
    solutions = [values for values in itertools.product(*ranges) if printed + sum(values) in totals]
    return all(len({values[i] for values in solutions}) > 1 for i in range(len(hidden)))


# -- the independent attacker ---------------------------------------------------------------------------


def audit(report, members: pl.DataFrame, exclusions: dict[str, dict[str, int]]) -> list[tuple[str, int]]:
    """Every count an attacker could pin down exactly, with its value: hidden ones and subtractions."""
    layout = report.layout
    days = [day for day in layout.days if day != "not attempted"]
    # The attacker knows which events never happen in this campaign (no complaint at all, say).
    seen = [flag for flag in FLAGS if members.get_column(flag).any()]
    kinds = _member_kinds(layout.variants, layout.segments, days, layout.reasons, layout.has_goal, seen)
    truth = _true_counts(kinds, members, exclusions)
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    published = {(r["section"], r["variant"], r["segment"], r["day"], r["measure"]): r["count"] for r in rows}
    matrix = np.array([[float(_counts_in(key, kind)) for kind in kinds] for key in published])
    low = [0 if t == SUPPRESSED else 11 if t == COMPLEMENT else int(t) for t in published.values()]
    high = [10 if t == SUPPRESSED else np.inf if t == COMPLEMENT else int(t) for t in published.values()]
    true_values = matrix @ truth
    assert np.all(true_values >= low) and np.all(true_values <= high), "the published counts are not the true ones"
    constraints = LinearConstraint(matrix, low, high)
    targets = [(str(key), matrix[i]) for i, (key, text) in enumerate(published.items()) if text in MARKERS]
    targets += _subtractions(published, kinds, truth)
    pinned = []
    for name, objective in targets:
        least = milp(objective, constraints=constraints, integrality=np.ones(len(kinds)), bounds=Bounds(0, np.inf))
        most = milp(-objective, constraints=constraints, integrality=np.ones(len(kinds)), bounds=Bounds(0, np.inf))
        assert least.status == 0
        if most.status == 0 and round(least.fun) == round(-most.fun):
            pinned.append((name, round(least.fun)))
    return pinned


def _member_kinds(variants, segments, days, reasons, has_goal, seen_flags) -> list[dict]:
    """Every kind of member a campaign run can have: treated ones by variant, segment, day, outcome,
    engagement and conversion; holdout ones by segment and conversion; excluded ones by reason."""
    flag_values = [(False, True) if flag in seen_flags else (False,) for flag in FLAGS]
    conversions = (False, True) if has_goal else (None,)
    kinds = []
    for variant, segment, converted in itertools.product(variants, segments, conversions):
        for day in (*days, None):
            for state in ("delivered", "bounced", "not_sent") if day else ("not_sent",):
                engagement = itertools.product(*flag_values) if state == "delivered" else [(False,) * 4]
                for flags in engagement:
                    kinds.append(
                        {"group": "treated", "variant": variant, "segment": segment, "day": day, "state": state}
                        | dict(zip(FLAGS, flags, strict=True))
                        | {"converted": converted}
                    )
    kinds += [{"group": "holdout", "segment": s, "converted": c} for s, c in itertools.product(segments, conversions)]
    kinds += [{"group": "excluded", "segment": s, "reason": r} for s, r in itertools.product(segments, reasons)]
    return kinds


def _true_counts(kinds: list[dict], members: pl.DataFrame, exclusions: dict[str, dict[str, int]]) -> np.ndarray:
    index = {tuple(sorted(kind.items(), key=lambda item: item[0])): i for i, kind in enumerate(kinds)}
    truth = np.zeros(len(kinds))
    for row in members.iter_rows(named=True):
        if row["group"] == "holdout":
            kind = {"group": "holdout", "segment": row["segment"], "converted": row["converted"]}
        else:
            delivered = row["state"] == "delivered"
            state = row["state"] if row["state"] in ("delivered", "bounced") else "not_sent"
            day = row["day"].isoformat() if row["day"] is not None else None
            kind = {"group": "treated", "variant": row["variant"], "segment": row["segment"], "day": day}
            kind |= {"state": state, "converted": row["converted"]}
            kind |= {flag: delivered and bool(row[flag]) for flag in FLAGS}
        truth[index[tuple(sorted(kind.items(), key=lambda item: item[0]))]] += 1
    for segment, reasons in exclusions.items():
        for reason, count in reasons.items():
            key = {"group": "excluded", "segment": segment, "reason": reason}
            truth[index[tuple(sorted(key.items(), key=lambda item: item[0]))]] += count
    return truth


def _counts_in(key: tuple[str, str, str, str, str], kind: dict) -> bool:
    """Whether a member of this kind counts in the published count named by a CSV row."""
    section, variant, segment, day, measure = key
    if segment not in ("", "all", kind["segment"]):
        return False
    if section == "funnel":
        if measure == "targeted":
            return True
        if measure == "holdout":
            return kind["group"] == "holdout"
        return kind["group"] == "excluded" and kind["reason"] == measure.removeprefix("excluded: ")
    if section == "conversion":
        in_group = kind["group"] == "holdout" if variant == "holdout" else kind["group"] == "treated"
        in_variant = variant in ("all", "holdout") or kind.get("variant") == variant
        return in_group and in_variant and kind["converted"] is (measure == "converted")
    if kind["group"] != "treated" or variant not in ("all", kind["variant"]):
        return False
    if day not in ("all", kind["day"] or "not attempted"):
        return False
    state = kind["state"]
    if measure in FLAGS:
        return state == "delivered" and kind[measure]
    if measure.startswith("not_") and measure.removeprefix("not_") in FLAGS:
        return state == "delivered" and not kind[measure.removeprefix("not_")]
    return {"audience": True, "sent": state != "not_sent"}.get(measure, state == measure)


def _subtractions(published, kinds, truth) -> list[tuple[str, np.ndarray]]:
    """Counts a reader could get by subtraction (delivered - opened, members - converted) that are 1 to 10."""
    found = []
    for section, variant, segment, day, measure in published:
        if section == "outcomes" and measure == "delivered":
            complements = [(section, variant, segment, day, f"not_{flag}") for flag in FLAGS]
        elif section == "conversion" and measure == "converted":
            complements = [(section, variant, segment, day, "not_converted")]
        else:
            continue
        for key in complements:
            objective = np.array([float(_counts_in(key, kind)) for kind in kinds])
            if 0 < objective @ truth < 11:
                found.append((str(key), objective))
    return found


# -- reports: nothing small can be recovered ------------------------------------------------------------


def test_a_campaign_with_small_cells_publishes_none_that_can_be_recovered() -> None:
    members = synthetic_campaign(members=600, seed=1)
    report = build_report(members, EXCLUSIONS, RUN)
    texts = [count.text for count in report.counts.values()]
    assert texts.count(SUPPRESSED) >= 20 and COMPLEMENT in texts, "the test needs small cells and complements"
    # Directly: every count from 1 to 10 is a marker. By subtraction (sent - delivered, a total minus
    # its printed parts, the by-day table against the by-variant one), or any other combination of
    # printed counts and markers: the integer program would find it.
    assert all(count.text == SUPPRESSED for count in report.counts.values() if count.value in range(1, 11))
    assert audit(report, members, EXCLUSIONS) == []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    members=st.integers(min_value=5, max_value=120),
    variants=st.sampled_from([("A",), ("A", "B"), ("A", "B", "C")]),
    segments=st.sampled_from([("s1",), ("s1", "s2")]),
    holdout=st.sampled_from([0.0, 0.15]),
    goal=st.booleans(),
    exclusions=st.fixed_dictionaries({"deceased": st.integers(0, 12), "no_valid_email": st.integers(0, 40)}),
)
def test_random_campaigns_publish_no_recoverable_small_count(
    seed, members, variants, segments, holdout, goal, exclusions
):
    frame = synthetic_campaign(members, seed, holdout, variants, segments, goal)
    by_segment = {segment: exclusions for segment in segments}
    run = CampaignRun("c", "treatment", "2026-11-23", dict.fromkeys(segments, "a" * 64), "b" * 64, variants)
    report = build_report(frame, by_segment, run)
    assert audit(report, frame, by_segment) == []


def test_a_campaign_too_small_for_full_detail_is_published_in_less_detail() -> None:
    """32 members over 2 variants and 3 segments: counts sit at the 10/11 boundary the markers reveal,
    and no complementary suppression of the full cube hides them all; by variant, by segment and by
    day separately, it can."""
    segments = ("s1", "s2", "s3")
    frame = synthetic_campaign(32, 3807647399, 0.15, ("A", "B"), segments, goal=False)
    exclusions = dict.fromkeys(segments, {"deceased": 5, "no_valid_email": 26})
    run = CampaignRun("c", "treatment", "2026-11-23", dict.fromkeys(segments, "a" * 64), "b" * 64, ("A", "B"))
    report = build_report(frame, exclusions, run)
    assert report.layout.detail < 3
    assert report.outcome("audience", variant="A", segment="s1", day="2026-11-23").text == "n/p"
    assert "n/p: not published" in report_html(report) and "n/p: not published" in report_markdown(report)
    assert audit(report, frame, exclusions) == []


# -- counts and rates -----------------------------------------------------------------------------------


def test_published_counts_are_the_true_counts_and_rates_need_both_counts() -> None:
    members = synthetic_campaign(members=50_000, seed=3)
    report = build_report(members, EXCLUSIONS, RUN)
    treated = members.filter(pl.col("group") == "treated")
    delivered = treated.filter(pl.col("state") == "delivered")
    assert report.outcome("audience").value == treated.height
    assert report.outcome("delivered").value == delivered.height
    assert report.outcome("sent").value == treated.filter(pl.col("state").is_in(["delivered", "bounced"])).height
    assert report.outcome("opened", variant="B").value == delivered.filter(pl.col("variant") == "B")["opened"].sum()
    assert report.funnel("targeted").value == members.height + sum(sum(r.values()) for r in EXCLUSIONS.values())
    assert report.rate("open_rate") == pytest.approx(delivered["opened"].mean())
    for cell, count in report.counts.items():
        if cell.section == "outcomes" and cell.measure == "complained" and count.value is None:
            assert report.rate("complaint_rate", cell.variant, cell.segment, cell.day) is None


def test_the_input_contract_is_checked() -> None:
    members = synthetic_campaign(members=100, seed=1)
    with pytest.raises(ValueError, match="lack columns"):
        build_report(members.drop("complained"), EXCLUSIONS, RUN)
    with pytest.raises(ValueError, match="holdout_sent"):
        build_report(members.with_columns(pl.lit("delivered").alias("state")), EXCLUSIONS, RUN)
    goal_for_treated_only = pl.when(pl.col("group") == "holdout").then(None).otherwise(pl.col("converted"))
    with pytest.raises(ValueError, match="null in some rows only"):
        build_report(members.with_columns(goal_for_treated_only.alias("converted")), EXCLUSIONS, RUN)


def test_one_million_members_make_a_report_in_seconds() -> None:
    members = synthetic_campaign(members=1_000_000, seed=11)
    started = time.perf_counter()
    report = build_report(members, EXCLUSIONS, RUN)
    seconds = time.perf_counter() - started
    assert report.outcome("audience").value == members.filter(pl.col("group") == "treated").height
    assert seconds < 10, f"{seconds:.1f} s"


# -- statistics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10 (hybrid score).
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0000)),
    ],
)
def test_newcombe_interval_matches_the_published_examples(counts, expected) -> None:
    difference, low, high = newcombe_interval(*counts)
    assert difference == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (round(low, 4), round(high, 4)) == expected


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (3, 10), (81, 263), (999, 1000)])
def test_wilson_interval_matches_scipy(successes: int, trials: int) -> None:
    reference = stats.binomtest(successes, trials).proportion_ci(method="wilson")
    assert wilson_interval(successes, trials) == pytest.approx((reference.low, reference.high))


@pytest.mark.parametrize("counts", [(120, 1000, 150, 1000), (30, 400, 45, 410), (500, 2000, 498, 1990)])
def test_z_test_matches_scipy_chi_square(counts) -> None:
    x1, n1, x2, n2 = counts
    reference = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    result = two_proportion_z_test(*counts)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.statistic**2 == pytest.approx(reference.statistic)
    assert compare_proportions(*counts).method == "two-proportion z-test"


@pytest.mark.parametrize("counts", [(2, 10, 7, 12), (0, 15, 4, 14), (1, 40, 6, 38), (2, 2, 0, 3)])
def test_fisher_exact_test_matches_scipy_and_is_used_for_small_expected_counts(counts) -> None:
    x1, n1, x2, n2 = counts
    reference = stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])
    assert fisher_exact_test(*counts).p_value == pytest.approx(reference.pvalue)
    assert compare_proportions(*counts).method == "Fisher's exact test"


def test_holm_adjustment() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, each at least the one before.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_ab_tests_and_lift_use_published_counts_only() -> None:
    members = synthetic_campaign(members=60_000, seed=5, variants=("A", "B", "C"))
    report = build_report(members, EXCLUSIONS, RUN)
    clicks = [c for c in report.comparisons if c.rate == "click_rate"]
    assert [(c.control, c.variant) for c in clicks] == [("A", "B"), ("A", "C")]
    c_vs_a = clicks[1]
    assert c_vs_a.significant, "C draws more clicks than A in the synthetic data"
    delivered = members.filter(pl.col("state") == "delivered")
    x = [delivered.filter(pl.col("variant") == v)["clicked"].sum() for v in ("C", "A", "B")]
    n = [delivered.filter(pl.col("variant") == v).height for v in ("C", "A", "B")]
    raw = [compare_proportions(x[0], n[0], x[1], n[1]).p_value, compare_proportions(x[2], n[2], x[1], n[1]).p_value]
    assert c_vs_a.p_value == pytest.approx(holm([raw[1], raw[0]])[1])
    lift = report.lift
    assert lift.absolute is not None and lift.low < lift.absolute < lift.high
    assert lift.relative == pytest.approx(lift.absolute / lift.holdout_rate)

    small = build_report(synthetic_campaign(members=120, seed=2), EXCLUSIONS, RUN)
    assert all(c.p_value is None and c.note for c in small.comparisons if c.control_rate is None)
    assert small.lift.absolute is None and "not enough data" in small.lift.note
    no_goal = build_report(synthetic_campaign(members=5000, seed=2, goal=False), EXCLUSIONS, RUN)
    assert no_goal.lift.note == "no conversion goal for this campaign"


# -- outputs --------------------------------------------------------------------------------------------


def test_outputs_are_self_contained_and_carry_published_counts_only(tmp_path: Path) -> None:
    members = synthetic_campaign(members=800, seed=4)
    report = build_report(members, EXCLUSIONS, RUN)
    files = write_report(report, tmp_path)
    assert files.html == tmp_path / RUN.campaign / RUN.send_date / "report.html"
    page = files.html.read_text()
    assert "<script" not in page and "http:" not in page and "https:" not in page and "src=" not in page
    assert "url(" not in page and "@import" not in page and "<link" not in page
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"default-src 'none'; style-src 'sha256-{digest}'" in page
    assert page.count("<svg") >= 3

    # Hidden counts carry no value anywhere past disclosure control.
    for count in report.counts.values():
        assert (count.text in MARKERS) == (count.value is None)
    rows = list(csv.DictReader(io.StringIO(files.csv.read_text())))
    assert {row["count"] for row in rows} <= {count.text for count in report.counts.values()}
    assert len({(r["section"], r["variant"], r["segment"], r["day"], r["measure"]) for r in rows}) == len(report.counts)
    assert all(row["rate"] in ("", "hidden") or 0 <= float(row["rate"]) <= 1 for row in rows)
    # Every count printed in the page's tables is a published count, as published.
    printed = {html.unescape(text) for text in re.findall(r"<td>([^<]*)</td>", page)}
    published = {f"{c.value:,}" if c.value is not None else c.text for c in report.counts.values()}
    assert {text for text in printed if re.fullmatch(r"[\d,]+|<11|>10", text)} <= published

    markdown = report_markdown(report)
    assert report.funnel("targeted").text in markdown.replace(",", "") and "Holdout lift" in markdown
    assert markdown == report_markdown(report) and report_html(report) == page


def test_a_run_with_nothing_sent_yet_still_reports(tmp_path: Path) -> None:
    members = synthetic_campaign(members=30, seed=9).with_columns(
        pl.lit(None, pl.String).alias("state"), pl.lit(None, pl.Date).alias("day")
    )
    report = build_report(members, EXCLUSIONS, RUN)
    assert report.outcome("sent").text == "0" and report.layout.days == ("not attempted",)
    assert write_report(report, tmp_path).html.exists()
