"""Every shipped segment has YAML fixtures next to it, and they pass; a wrong expectation fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecast.project import CHECKOUT_DIR, load_project
from carecast.segment_tests import fixture_path, run_segment_fixtures
from tests.project_copy import copy_project

PROJECT = load_project(CHECKOUT_DIR)
KINDS = {
    # the four kinds of segment the library must cover, by what each reads
    "demographic": "spanish_speaking_seniors",
    "clinical": "diabetes_uncontrolled_no_recent_visit",
    "journey stage": "new_patients_first_30_days",
    "behavioral": "lapsed_engagement",
}


@pytest.mark.parametrize("name", sorted(PROJECT.segments))
def test_segment_fixtures_pass(name: str) -> None:
    assert fixture_path(PROJECT.segments[name]).exists(), f"{name} has no fixture test"
    results = run_segment_fixtures(PROJECT, name)
    failed = [(r.case, r.expected, r.got) for r in results if not r.passed]
    assert results and not failed


def test_library_covers_the_four_kinds_and_includes_segments() -> None:
    assert len(PROJECT.segments) >= 8
    assert all(name in PROJECT.segments for name in KINDS.values())
    assert PROJECT.segment_needs["lapsed_engagement"].columns == {
        "mart_behavior": {"patient_id", "deliveries", "last_open_at"}
    }
    assert any(segment.includes for segment in PROJECT.segments.values())


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    copy_project(tmp_path)
    fixture = tmp_path / "segments" / "lapsed_engagement.test.yml"
    fixture.write_text(
        fixture.read_text().replace("expect: [never_opened, opened_long_ago]", "expect: [opened_lately]")
    )
    results = run_segment_fixtures(load_project(tmp_path), "lapsed_engagement")
    assert [r.passed for r in results] == [False]
    assert results[0].got == ("never_opened", "opened_long_ago")
