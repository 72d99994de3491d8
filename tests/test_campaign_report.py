"""The report's member rows for a real campaign run: ledger outcomes, engagement, and the goal."""

from __future__ import annotations

import pyarrow as pa

from carecast.campaign_report import campaign_members
from carecast.runtime import Runtime
from tests.test_audit import FIRST_RUN, MARKETING, PATIENTS, audited  # noqa: F401 (the fixture)


def test_members_carry_their_outcome_and_engagement(audited) -> None:  # noqa: F811
    home, project = audited
    runtime = Runtime.open(home, project, as_of=FIRST_RUN)
    members, reads, measured = campaign_members(runtime, project.campaigns[MARKETING])
    assert members.height == 2 and not measured  # no goal: nothing to measure
    rows = sorted(members.select("state", "clicked", "opened", "group").rows())
    # the first patient clicked the invitation (recorded by the endpoint the next day)
    assert rows == [("delivered", False, False, "treated"), ("delivered", True, False, "treated")]
    assert members.get_column("converted").null_count() == 2
    assert reads[0].version.dataset == f"audience_{MARKETING}"


def test_the_goal_is_measured_once_the_segment_was_rebuilt(audited) -> None:  # noqa: F811
    home, project = audited
    runtime = Runtime.open(home, project, as_of=FIRST_RUN)
    campaign = project.campaigns[MARKETING].model_copy(update={"goal": "left_segment"})
    segment = project.segments[campaign.segment].dataset
    runtime.lake.write(segment, pa.table({"patient_id": PATIENTS[1:]}))  # the first patient left it
    members, reads, measured = campaign_members(runtime, campaign)
    assert measured and sorted(members.get_column("converted").to_list()) == [False, True]
    assert reads[-1].version.dataset == segment
