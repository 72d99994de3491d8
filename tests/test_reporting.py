import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carecast.reporting import SUPPRESSED, CampaignSummary, suppress_cells, suppress_count, write_report


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        # nothing small: everything shown
        ({"a": 40, "b": 11, "c": 0}, {"a": "40", "b": "11", "c": "0"}),
        # one small cell: the next smallest is hidden too, or a - total would give it away
        ({"a": 40, "b": 12, "c": 3}, {"a": "40", "b": SUPPRESSED, "c": SUPPRESSED}),
        # two small cells already hide each other
        ({"a": 40, "b": 2, "c": 3}, {"a": "40", "b": SUPPRESSED, "c": SUPPRESSED}),
        # zeros are not small cells: "none" discloses nobody
        ({"a": 0, "b": 0}, {"a": "0", "b": "0"}),
        # but a zero is hidden when it is the only complement left
        ({"a": 0, "b": 1}, {"a": SUPPRESSED, "b": SUPPRESSED}),
    ],
)
def test_small_cells_and_their_complements_are_hidden(cells: dict[str, int], expected: dict[str, str]) -> None:
    assert suppress_cells(cells) == expected


@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(min_value=0, max_value=40), min_size=2))
def test_no_hidden_cell_can_be_recovered_from_the_total(cells: dict[str, int]) -> None:
    shown = suppress_cells(cells)
    total = sum(cells.values())
    hidden = [name for name, value in shown.items() if value == SUPPRESSED]
    assert all(value == SUPPRESSED for name, value in shown.items() if 0 < cells[name] < 11)
    if hidden:
        assert len(hidden) >= 2, "a lone hidden cell equals the total minus the shown cells"
    if 2 <= len(hidden) <= 3:
        # the totals leave more than one possible value for every hidden cell
        remaining = total - sum(int(v) for v in shown.values() if v != SUPPRESSED)
        solutions = [c for c in itertools.product(range(0, 41), repeat=len(hidden)) if sum(c) == remaining]
        for position in range(len(hidden)):
            assert len({c[position] for c in solutions}) > 1


def test_report_is_aggregate_only_and_self_contained(tmp_path) -> None:
    summary = CampaignSummary(
        campaign="c",
        purpose="treatment",
        send_date="2026-11-23",
        segment="s",
        segment_sha256="a" * 64,
        template_sha256="b" * 64,
        segment_size=150,
        excluded={"deceased": 4, "no_valid_email": 30},
        holdout=0,
        audience=116,
        rendered=116,
        states={"delivered": 113, "bounced": 3},
    )
    path = write_report(summary, tmp_path)
    page = path.read_text()
    assert suppress_count(4) == SUPPRESSED and ">4<" not in page and ">3<" not in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert (path.parent / "summary.json").exists()
