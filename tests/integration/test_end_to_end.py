"""`carecast demo --json` on a few thousand generated patients, checked stage by stage against an
independent computation in plain Polars over the landed extract, then scanned for leaked PHI."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from carecast.crypto.kms import LocalKms
from carecast.mail import Mailbox
from tests.integration.conftest import AS_OF, carecast, last_json_line, read_landed
from tests.integration.leak_scan import scan_for_canaries
from tests.reference import is_valid_email

pytestmark = pytest.mark.integration
PATIENTS = 3000
MAMMOGRAPHY = ["24623002", "71651007", "566571000119105", "450566007"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, temp_dir: Path) -> tuple[Path, dict, str]:
    home = tmp_path_factory.mktemp("home")
    completed = carecast(["demo", "--patients", str(PATIENTS), "--as-of", AS_OF, "--json"], home, temp_dir)
    return home, last_json_line(completed.stdout), completed.stdout + completed.stderr


def _age(born: pl.Expr, on: date) -> pl.Expr:
    years = pl.lit(on.year) - born.dt.year()
    before_birthday = (pl.lit(on.month) < born.dt.month()) | (
        (pl.lit(on.month) == born.dt.month()) & (pl.lit(on.day) < born.dt.day())
    )
    return years - before_birthday.cast(pl.Int32)


def expected_funnel(home: Path) -> tuple[dict, set[str]]:
    """The breast screening funnel, recomputed from the raw extracts without any carecast code."""
    as_of = date.fromisoformat(AS_OF)
    patients = read_landed(home, "synthea", "patients").with_columns(
        pl.col("BIRTHDATE").str.to_date(), pl.col("DEATHDATE").str.to_date()
    )
    procedures = read_landed(home, "synthea", "procedures").with_columns(
        pl.col("START").str.to_datetime("%Y-%m-%dT%H:%M:%SZ")
    )
    two_years_ago = datetime(as_of.year - 2, as_of.month, as_of.day)
    screened = procedures.filter(pl.col("CODE").is_in(MAMMOGRAPHY) & (pl.col("START") >= two_years_ago))["PATIENT"]
    segment = patients.filter(
        (pl.col("GENDER") == "F")
        & _age(pl.col("BIRTHDATE"), as_of).is_between(50, 74)
        & ~pl.col("Id").is_in(screened.to_list())
    )
    contacts = read_landed(home, "crm", "contacts")
    consents = read_landed(home, "consents", "consents")
    events = read_landed(home, "events", "events")
    send_time = datetime.combine(as_of, datetime.max.time()).replace(microsecond=0)

    latest_treatment = (
        consents.filter((pl.col("purpose") == "treatment") & (pl.col("channel") == "email"))
        .sort(["signed_at", "consent_id"], descending=True)
        .unique("patient_id", keep="first")
    )
    revoked = set(
        latest_treatment.filter(
            pl.col("revoked_at").is_not_null()
            & (pl.col("revoked_at").str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False) <= send_time)
        )["patient_id"]
    )
    hard = set(events.filter((pl.col("event_type") == "bounce") & (pl.col("bounce_type") == "hard"))["patient_id"])
    complained = set(events.filter(pl.col("event_type") == "complaint")["patient_id"])
    unsubscribed = set(
        events.filter((pl.col("event_type") == "unsubscribe") & pl.col("purpose").is_in(["treatment", "all"]))[
            "patient_id"
        ]
    )
    email_of = dict(zip(contacts["patient_id"], contacts["email"], strict=True))
    opted_in = dict(zip(contacts["patient_id"], contacts["email_opt_in"], strict=True))

    excluded: dict[str, int] = {}
    reached: set[str] = set()
    for row in segment.iter_rows(named=True):
        pid = row["Id"]
        address = (email_of.get(pid) or "").strip().lower()
        if pid in revoked:
            reason = "consent_revoked"
        elif opted_in.get(pid) != "true":
            reason = "email_opt_out"
        elif not is_valid_email(address):
            reason = "no_valid_email"
        elif pid in hard:
            reason = "hard_bounce"
        elif pid in complained:
            reason = "complaint"
        elif pid in unsubscribed:
            reason = "unsubscribed"
        elif row["DEATHDATE"] is not None and row["DEATHDATE"] <= as_of:
            reason = "deceased"
        else:
            reached.add(address)
            continue
        excluded[reason] = excluded.get(reason, 0) + 1
    return {"patients": patients.height, "segment": segment.height, "excluded": excluded}, reached


def test_every_stage_matches_an_independent_computation(demo) -> None:
    home, summary, _output = demo
    expected, reached = expected_funnel(home)
    assert summary["patients"] == expected["patients"] == PATIENTS
    assert summary["quarantined"] == 0
    assert summary["segment"] == expected["segment"] > 50
    assert summary["excluded"] == expected["excluded"]
    assert summary["audience"] == len(reached)
    assert summary["rendered"] == summary["sent"] == summary["delivered"] == summary["audience"]
    assert summary["bounced"] == 0
    assert Path(summary["report"]).exists()

    with Mailbox(home / "mailbox", LocalKms(home / "keys")) as mailbox:
        received = list(mailbox.read_all())
    assert sorted(address for message in received for address in message.rcpt_tos) == sorted(reached)
    assert len({message.message_id_sha256 for message in received}) == len(received)


def test_a_second_run_sends_nothing_twice(demo, temp_dir: Path) -> None:
    home, first, _output = demo
    completed = carecast(["demo", "--patients", str(PATIENTS), "--as-of", AS_OF, "--json"], home, temp_dir)
    again = last_json_line(completed.stdout)
    assert again["delivered"] == first["delivered"]
    with Mailbox(home / "mailbox", LocalKms(home / "keys")) as mailbox:
        assert mailbox.count() == first["delivered"]


def test_no_plaintext_phi_anywhere_under_the_home_or_temp(demo, temp_dir: Path) -> None:
    home, _summary, output = demo
    patients = read_landed(home, "synthea", "patients")
    contacts = read_landed(home, "crm", "contacts")
    conditions = read_landed(home, "synthea", "conditions")
    canaries = {
        *patients["FIRST"].to_list(),
        *patients["LAST"].to_list(),
        *patients["ADDRESS"].drop_nulls().to_list(),
        *contacts["email"].drop_nulls().to_list(),
        *conditions["DESCRIPTION"].unique().to_list(),
        "Dear ",  # the first words of every rendered message
    }
    assert len(canaries) > 5000
    assert scan_for_canaries([home, temp_dir], canaries) == []
    assert [c for c in canaries if len(c) >= 6 and c in output] == [], "CLI output must hold no PHI"


def _latest_metadata(home: Path, asset: str) -> dict:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def test_a_demographic_segment_leaves_identifier_and_clinical_keys_unused(demo) -> None:
    home, _summary, _output = demo
    metadata = _latest_metadata(home, "segment_spanish_speaking_seniors")
    assert set(metadata["classes_read"]) == {"demographic", "operational"}
    assert metadata["columns_read"] == {"mart_patient_profile": ["age", "patient_id", "preferred_language"]}
    assert {key.split("/")[1] for key in metadata["key_ids_unwrapped"]} == {"demographic", "footer", "operational"}
    used = {
        e["class"]
        for e in LocalKms(home / "keys").access_log.entries()
        if e["asset"] == "segment_spanish_speaking_seniors"
    }
    assert used == {"demographic", "footer", "operational"}
    clinical = _latest_metadata(home, "segment_breast_cancer_screening_due")
    assert "clinical" in clinical["classes_read"] and "identifier" not in clinical["classes_read"]


def test_segment_preview_shows_the_funnel_and_what_was_read_never_a_row(demo, temp_dir: Path) -> None:
    home, summary, _output = demo
    shown = carecast(
        [
            "segment",
            "preview",
            "segments/breast_cancer_screening_due.sql",
            "--campaign",
            "breast_screening_reminder",
            "--as-of",
            AS_OF,
        ],
        home,
        temp_dir,
    ).stdout
    assert f"members: {summary['segment']}" in shown
    funnel = dict(re.findall(r"^\s{4}(audience|holdout)\s+(\S+)$", shown, flags=re.MULTILINE))
    assert funnel["audience"] == str(summary["audience"])
    assert "clinical     stg_procedures.performed_at, stg_procedures.procedure_code" in shown
    assert "identifier" not in shown  # the segment reads no identifier column
    ids = set(read_landed(home, "synthea", "patients")["Id"])
    assert not any(patient_id in shown for patient_id in ids)


def test_campaign_runs_are_partitions_that_read_their_own_versions(demo, monkeypatch) -> None:
    """Runs on two send dates interleave; each stage reads what its own run wrote. Last in the module:
    it sends the second run's messages to the mailbox the tests above count."""
    import dagster as dg

    from carecast.home import CarecastHome
    from carecast.ledger import Ledger
    from carecast.pipeline_run import materialize_assets
    from carecast.run_lineage import run_lineage

    home, first, _output = demo
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))  # restored after the test
    monkeypatch.setenv("CARECAST_HOME", str(home))
    campaign, run_1 = "breast_screening_reminder", date.fromisoformat(AS_OF)
    run_2 = date.fromordinal(run_1.toordinal() - 14)  # a backfill of an earlier run
    data_home = CarecastHome(home)
    materialize_assets(data_home, run_2, [f"audience_{campaign}", f"outbox_{campaign}"])
    again = materialize_assets(data_home, run_1, [f"delivery_{campaign}"])[f"delivery_{campaign}"]
    with Ledger(home / "state.db") as ledger:
        rendered_1 = run_lineage(ledger, campaign, AS_OF, "render")
        rendered_2 = run_lineage(ledger, campaign, run_2.isoformat(), "render")
    # the backfill wrote a newer outbox, yet run 1's delivery read its own, and had nothing left to send
    assert rendered_2["version"] > rendered_1["version"]
    assert again["outbox_version"] == rendered_1["written"]
    assert again["this_run"]["outcomes"] == {}
    second = materialize_assets(data_home, run_2, [f"delivery_{campaign}"])[f"delivery_{campaign}"]
    assert second["outbox_version"] == rendered_2["written"]
    with Ledger(home / "state.db") as ledger:
        assert ledger.counts(campaign, AS_OF) == {"delivered": first["delivered"]}
        reached = ledger.stage(campaign, run_2.isoformat(), "audience")["audience"]
        assert reached > 0 and ledger.counts(campaign, run_2.isoformat()) == {"delivered": reached}
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_materialized_partitions(dg.AssetKey(f"delivery_{campaign}"))
    assert runs == {AS_OF, run_2.isoformat()}
