"""The naive segments and audiences: every shipped segment and one audience per segment, the way a
hand-written tool computes them: pandas reads the (plain) tables each segment needs, then Python loops
walk the rows and apply the segment's rules and the audience's rules patient by patient.

It receives the same data carecast's segments read, in the clear: the model outputs (marts, and
``stg_procedures`` for the screening segment) are decrypted from carecast's lake, untimed, into a
scratch folder of plain Parquet files (``decrypt_marts``); the caller deletes it right after.

What it must match, segment by segment and audience by audience: carecast's member counts and every
exclusion count (the bench fails otherwise). So it follows the same rules: the segment SQL in
``segments/*.sql`` (one Python function each), the sensitive categories a segment's purposes may not
use (``purposes.yaml`` and the ``sensitive_codes`` seed, rows dropped before the rules see them), and
the audience rules of ``carecast.audience`` in their order. It reads its configuration (segment
headers, campaigns, purposes) as plain files, as a script would.

Deliberately naive, but not absurd: every table a segment needs is read again for that segment
(columns selected), each included segment's members are reused from memory, lookups are dicts and
sets, never scans.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from datetime import time as clock
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml

from bench.workload import AS_OF, BENCH_CAMPAIGN_PREFIX
from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.lake import Lake
from carecast.project import default_project_dir, load_project

# What the segments read from the lake (their refs), decrypted once for the naive script.
PLAIN_DATASETS = (
    "mart_patient_profile",
    "mart_journey_stage",
    "mart_clinical_facts",
    "mart_latest_labs",
    "mart_behavior",
    "stg_procedures",
    "mart_consent_latest",
    "mart_suppressions",
)
DAY = pd.Timestamp(AS_OF)
SEND_TIME = datetime.combine(AS_OF, clock(23, 59, 59))
"""carecast's ``Runtime.send_time`` for a past as-of date: the end of that day."""

MAMMOGRAM_CODES = frozenset({"24623002", "71651007", "566571000119105", "450566007"})
COLONOSCOPY_CODES = frozenset({"73761001", "444783004"})
STOOL_TEST_CODE = "104435004"
PREDIABETES_CODE = "15777000"
DIABETES_CODES = frozenset({"44054006", "46635009", "73211009"})
FLU_RISK_CODES = frozenset({"44054006", "46635009", "73211009", "195967001", "233678006", "84114007", "88805009"})
HYPERTENSION_CODES = frozenset({"59621000", "38341003"})
FLU_VACCINE_CODES = frozenset(
    {"140", "141", "150", "153", "155", "158", "161", "166", "168", "171", "185", "186", "197", "205", "111", "149"}
)
HBA1C_CODE = "4548-4"
SERVICE_AREA_ZIPS = frozenset({"02118", "02119", "02121", "02124", "02125"})
_HEADER = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
_INCLUDE = re.compile(r"\{\{\s*segment\(\s*'([a-z0-9_]+)'\s*\)\s*\}\}")


def decrypt_marts(home: Path, plain: Path) -> dict[str, Any]:
    """Untimed preparation: a plain Parquet copy of every dataset the segments read."""
    data_home = CarecastHome(home)
    project = load_project()
    lake = Lake(data_home.lake, LocalKms(data_home.keys), project.registry)
    plain.mkdir(parents=True, exist_ok=True)
    for dataset in PLAIN_DATASETS:
        pq.write_table(lake.read(dataset).table, plain / f"{dataset}.parquet")
    return {"seconds": 0.0}


# --- configuration, read as plain files ---------------------------------------------------------


def _segment_files() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Segment name -> (purposes from its header, segments it includes)."""
    found = {}
    for path in sorted((default_project_dir() / "segments").glob("*.sql")):
        text = path.read_text()
        header = {}
        for line in text.splitlines():
            match = _HEADER.match(line)
            if not match:
                break
            header[match.group(1)] = match.group(2)
        purposes = tuple(p.strip() for p in header["purposes"].split(","))
        found[path.stem] = (purposes, tuple(dict.fromkeys(_INCLUDE.findall(text))))
    return found


def _withheld_categories(purposes: tuple[str, ...]) -> frozenset[str]:
    """Sensitive categories at least one of the purposes may not use (purposes.yaml)."""
    root = default_project_dir()
    rules = yaml.safe_load((root / "purposes.yaml").read_text())["purposes"]
    with open(root / "dbt_like_models" / "seeds" / "sensitive_codes.csv", newline="") as seed:
        categories = {row["category"] for row in csv.DictReader(seed)}
    return frozenset(c for c in categories if not all(c in rules[p]["sensitive_categories"] for p in purposes))


def _campaigns(segments: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> dict[str, tuple[str, str, bool]]:
    """Campaign name -> (segment, purpose, allow_minors): the shipped campaigns, then one made-up
    campaign for each other segment, for the first purpose its header declares."""
    campaigns = {}
    for path in sorted((default_project_dir() / "campaigns").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        campaigns[raw["name"]] = (raw["segment"], raw["purpose"], bool(raw.get("allow_minors", False)))
    covered = {segment for segment, _purpose, _minors in campaigns.values()}
    for name, (purposes, _includes) in segments.items():
        if name not in covered:
            campaigns[BENCH_CAMPAIGN_PREFIX + name] = (name, purposes[0], False)
    return campaigns


def _order(segments: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> list[str]:
    ordered: list[str] = []

    def visit(name: str) -> None:
        for included in segments[name][1]:
            visit(included)
        if name not in ordered:
            ordered.append(name)

    for name in segments:
        visit(name)
    return ordered


# --- data ------------------------------------------------------------------------------------------


class Data:
    """The plain files; every call reads the file again (nothing is cached between segments)."""

    def __init__(self, folder: Path, withheld: frozenset[str] = frozenset()):
        self.folder = folder
        self.withheld = withheld

    def frame(self, dataset: str, columns: list[str]) -> pd.DataFrame:
        return pd.read_parquet(self.folder / f"{dataset}.parquet", columns=columns)

    def rows(self, dataset: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
        return self.frame(dataset, columns).itertuples(index=False, name=None)

    def facts(self) -> Iterator[tuple[str, str, str, pd.Timestamp, bool | None]]:
        """Clinical facts (patient, type, code, time, active), without the withheld sensitive ones."""
        columns = ["patient_id", "fact_type", "code", "fact_at", "is_active", "sensitive_category"]
        for pid, fact_type, code, at, active, category in self.rows("mart_clinical_facts", columns):
            if isinstance(category, str) and category in self.withheld:
                continue
            yield pid, fact_type, code, at, active

    def active_conditions(self, codes: frozenset[str]) -> set[str]:
        return {
            pid
            for pid, fact_type, code, _at, active in self.facts()
            if fact_type == "condition" and active is True and code in codes
        }


def _ago(**offset: int) -> pd.Timestamp:
    return DAY - pd.DateOffset(**offset)


# --- the segments, one function per segments/<name>.sql ---------------------------------------------


def new_patients_first_30_days(data: Data, done: dict[str, set[str]]) -> set[str]:
    since = _ago(days=29)
    journey = data.rows("mart_journey_stage", ["patient_id", "first_encounter_at"])
    return {pid for pid, first in journey if first >= since}


def annual_wellness_visit_overdue(data: Data, done: dict[str, set[str]]) -> set[str]:
    seen_since, wellness_since = _ago(years=3), _ago(months=12)
    overdue = set()
    for pid, last_seen, last_wellness in data.rows(
        "mart_journey_stage", ["patient_id", "last_encounter_at", "last_wellness_at"]
    ):
        if last_seen >= seen_since and (pd.isna(last_wellness) or last_wellness < wellness_since):
            overdue.add(pid)
    welcomed = done["new_patients_first_30_days"]
    return {
        pid
        for pid, age in data.rows("mart_patient_profile", ["patient_id", "age"])
        if age >= 18 and pid in overdue and pid not in welcomed
    }


def breast_cancer_screening_due(data: Data, done: dict[str, set[str]]) -> set[str]:
    since = _ago(years=2)
    screened = set()
    for pid, code, at in data.rows("stg_procedures", ["patient_id", "procedure_code", "performed_at"]):
        if code in MAMMOGRAM_CODES and at >= since:
            screened.add(pid)
    return {
        pid
        for pid, sex, age in data.rows("mart_patient_profile", ["patient_id", "sex", "age"])
        if sex == "F" and 50 <= age <= 74 and pid not in screened
    }


def colorectal_screening_due(data: Data, done: dict[str, set[str]]) -> set[str]:
    colonoscopy_since, stool_since = _ago(years=10), _ago(years=1)
    screened = set()
    for pid, fact_type, code, at, _active in data.facts():
        if fact_type != "procedure":
            continue
        if (code in COLONOSCOPY_CODES and at >= colonoscopy_since) or (code == STOOL_TEST_CODE and at >= stool_since):
            screened.add(pid)
    return {
        pid
        for pid, age in data.rows("mart_patient_profile", ["patient_id", "age"])
        if 45 <= age <= 75 and pid not in screened
    }


def diabetes_prevention_program_invite(data: Data, done: dict[str, set[str]]) -> set[str]:
    prediabetic, diabetic = set(), set()
    for pid, fact_type, code, _at, active in data.facts():
        if fact_type == "condition" and active is True:
            if code == PREDIABETES_CODE:
                prediabetic.add(pid)
            elif code in DIABETES_CODES:
                diabetic.add(pid)
    return {
        pid
        for pid, age in data.rows("mart_patient_profile", ["patient_id", "age"])
        if 18 <= age <= 79 and pid in prediabetic and pid not in diabetic
    }


def diabetes_uncontrolled_no_recent_visit(data: Data, done: dict[str, set[str]]) -> set[str]:
    diabetic = data.active_conditions(DIABETES_CODES)
    seen_since = _ago(months=6)
    not_seen_lately = {
        pid
        for pid, last_seen in data.rows("mart_journey_stage", ["patient_id", "last_encounter_at"])
        if pd.isna(last_seen) or last_seen < seen_since
    }
    labs = data.frame("mart_latest_labs", ["patient_id", "lab_code", "value_number", "sensitive_category"])
    outreach = set()
    for pid, lab_code, value, category in labs.itertuples(index=False, name=None):
        if isinstance(category, str) and category in data.withheld:
            continue
        if lab_code == HBA1C_CODE and value > 9 and pid in diabetic and pid in not_seen_lately:
            outreach.add(pid)
    return outreach


def flu_vaccine_not_yet_this_season(data: Data, done: dict[str, set[str]]) -> set[str]:
    season_start = pd.Timestamp(AS_OF.year if AS_OF.month >= 8 else AS_OF.year - 1, 8, 1)
    until = DAY + pd.Timedelta(days=1)
    vaccinated = set()
    for pid, fact_type, code, at, _active in data.facts():
        if fact_type == "immunization" and code in FLU_VACCINE_CODES and season_start <= at < until:
            vaccinated.add(pid)
    profile = data.rows("mart_patient_profile", ["patient_id", "age"])
    return {pid for pid, age in profile if age >= 1 and pid not in vaccinated}


def lapsed_engagement(data: Data, done: dict[str, set[str]]) -> set[str]:
    since = _ago(days=180)
    return {
        pid
        for pid, deliveries, last_open in data.rows("mart_behavior", ["patient_id", "deliveries", "last_open_at"])
        if deliveries > 0 and (pd.isna(last_open) or last_open < since)
    }


def flu_vaccine_high_risk_engaged(data: Data, done: dict[str, set[str]]) -> set[str]:
    high_risk = data.active_conditions(FLU_RISK_CODES)
    high_risk |= {pid for pid, age in data.rows("mart_patient_profile", ["patient_id", "age"]) if age >= 65}
    lapsed = done["lapsed_engagement"]
    return {pid for pid in done["flu_vaccine_not_yet_this_season"] if pid in high_risk and pid not in lapsed}


def hypertension_in_service_area(data: Data, done: dict[str, set[str]]) -> set[str]:
    hypertensive = data.active_conditions(HYPERTENSION_CODES)
    return {
        pid
        for pid, zip_code in data.rows("mart_patient_profile", ["patient_id", "zip_code"])
        if zip_code in SERVICE_AREA_ZIPS and pid in hypertensive
    }


def spanish_speaking_seniors(data: Data, done: dict[str, set[str]]) -> set[str]:
    return {
        pid
        for pid, age, language in data.rows("mart_patient_profile", ["patient_id", "age", "preferred_language"])
        if age >= 65 and language == "es"
    }


SEGMENTS: dict[str, Callable[[Data, dict[str, set[str]]], set[str]]] = {
    function.__name__: function
    for function in (
        annual_wellness_visit_overdue,
        breast_cancer_screening_due,
        colorectal_screening_due,
        diabetes_prevention_program_invite,
        diabetes_uncontrolled_no_recent_visit,
        flu_vaccine_high_risk_engaged,
        flu_vaccine_not_yet_this_season,
        hypertension_in_service_area,
        lapsed_engagement,
        new_patients_first_30_days,
        spanish_speaking_seniors,
    )
}


# --- the audience rules, per patient ---------------------------------------------------------------


def _consent_exclusion(purpose: str, consent: tuple[Any, ...] | None) -> str | None:
    """carecast's consent rule for the purpose; a missing timestamp (NaT) compares false, like NULL."""
    consent_id, signed, expires, revoked = consent if consent is not None else (None, pd.NaT, pd.NaT, pd.NaT)
    if purpose == "marketing":
        if pd.isna(consent_id) or signed > SEND_TIME:
            return "no_authorization"
        if revoked <= SEND_TIME:
            return "authorization_revoked"
        if expires <= SEND_TIME:
            return "authorization_expired"
        return None
    if revoked <= SEND_TIME:
        return "fundraising_opt_out" if purpose == "fundraising" else "consent_revoked"
    return None


def naive_audience(data: Data, members: set[str], purpose: str, allow_minors: bool) -> tuple[int, dict[str, int]]:
    """Load profile, consents and suppressions, then judge each member in carecast's order."""
    profile = {
        pid: (opted_in, valid_email, deceased, minor)
        for pid, opted_in, valid_email, deceased, minor in data.rows(
            "mart_patient_profile", ["patient_id", "is_email_opted_in", "has_valid_email", "is_deceased", "is_minor"]
        )
    }
    consents = {}
    columns = ["patient_id", "purpose", "channel", "consent_id", "signed_at", "expires_at", "revoked_at"]
    for pid, for_purpose, channel, consent_id, signed, expires, revoked in data.rows("mart_consent_latest", columns):
        if for_purpose == purpose and channel == "email":
            consents[pid] = (consent_id, signed, expires, revoked)
    suppressed: dict[str, list[tuple[str, str, pd.Timestamp]]] = {}
    for pid, reason, suppression_purpose, at in data.rows(
        "mart_suppressions", ["patient_id", "reason", "purpose", "suppressed_at"]
    ):
        suppressed.setdefault(pid, []).append((reason, suppression_purpose, at))

    kept = 0
    excluded: dict[str, int] = {}
    for pid in sorted(members):
        reason = None
        person = profile.get(pid)
        if person is None:
            reason = "unknown_patient"
        else:
            opted_in, valid_email, deceased, minor = person
            reason = _consent_exclusion(purpose, consents.get(pid))
            if reason is None:
                if not opted_in:
                    reason = "email_opt_out"
                elif not valid_email:
                    reason = "no_valid_email"
            if reason is None:
                events = [(r, p) for r, p, at in suppressed.get(pid, ()) if at <= SEND_TIME]
                if any(r == "hard_bounce" for r, _p in events):
                    reason = "hard_bounce"
                elif any(r == "complaint" for r, _p in events):
                    reason = "complaint"
                elif any(r == "unsubscribed" and p in (purpose, "all") for r, p in events):
                    reason = "unsubscribed"
                elif deceased:
                    reason = "deceased"
                elif minor and not allow_minors:
                    reason = "minor"
        if reason is None:
            kept += 1
        else:
            excluded[reason] = excluded.get(reason, 0) + 1
    return kept, dict(sorted(excluded.items()))


def naive_segments(plain: Path) -> dict[str, Any]:
    """Every segment, then one audience per segment, timed apart; members and exclusions per name."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    segments = _segment_files()
    done: dict[str, set[str]] = {}
    segment_seconds = {}
    for name in _order(segments):
        began = time.perf_counter()
        done[name] = SEGMENTS[name](Data(plain, _withheld_categories(segments[name][0])), done)
        segment_seconds[name] = round(time.perf_counter() - began, 3)
    seconds["segments"] = time.perf_counter() - started

    started = time.perf_counter()
    audiences = {}
    for campaign, (segment, purpose, allow_minors) in _campaigns(segments).items():
        began = time.perf_counter()
        kept, excluded = naive_audience(Data(plain), done[segment], purpose, allow_minors)
        audiences[campaign] = {
            "segment": segment,
            "purpose": purpose,
            "members": kept,
            "excluded": excluded,
            "seconds": round(time.perf_counter() - began, 3),
        }
    seconds["audiences"] = time.perf_counter() - started
    return {
        "seconds": seconds,
        "segments": {name: {"members": len(done[name]), "seconds": segment_seconds[name]} for name in done},
        "audiences": audiences,
    }
