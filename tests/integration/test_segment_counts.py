"""Every shipped segment, run by `carecast demo` on generated data, selects exactly the patients that an
independent computation finds: plain Polars over the raw landed extracts, with no carecast model, no
DuckDB and nothing read from the lake but the segments' own member ids.

The computations below follow what each segment's header and description say, reproducing the
marts' semantics (ages in whole years on the run date, conditions active while they have no stop
date or stopped after it, encounters known up to the end of the run date, and so on) but not their SQL. A segment added
under segments/ without a computation here fails `test_every_segment_has_an_independent_computation`.

Failures report counts and the sizes of set differences only: never an id or any other value.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from carecast.crypto.kms import LocalKms
from carecast.lake import Lake
from carecast.project import CHECKOUT_DIR, load_project
from tests.integration.conftest import AS_OF, carecast, read_landed

pytestmark = pytest.mark.integration
PATIENTS = 3000
RUN_DATE = date.fromisoformat(AS_OF)
END_OF_RUN_DATE = datetime.combine(RUN_DATE + timedelta(days=1), datetime.min.time())
"""Anything that started before this instant is known on the run date."""
SYNTHEA_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"
# Segments that may be empty on the generated data (none so far); every other one must select someone.
MAY_BE_EMPTY: frozenset[str] = frozenset()

# Value sets, by their clinical meaning (SNOMED CT unless said otherwise).
MAMMOGRAPHY = {"24623002", "71651007", "566571000119105", "450566007"}
COLONOSCOPY = {"73761001", "444783004"}
STOOL_BLOOD_TEST = {"104435004"}
PREDIABETES = {"15777000"}
DIABETES = {"44054006", "46635009", "73211009"}  # type 2, type 1, unspecified
HYPERTENSION = {"59621000", "38341003"}
HBA1C_LOINC = "4548-4"
SERVICE_AREA_ZIPS = {"02118", "02119", "02121", "02124", "02125"}
MARKETING_PURPOSES = {"marketing", "fundraising"}


# --- the raw extracts, typed -------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """The landed extracts as the tests read them: decrypted from the landing folder, typed here."""

    patients: pl.DataFrame
    contacts: pl.DataFrame
    encounters: pl.DataFrame
    conditions: pl.DataFrame
    observations: pl.DataFrame
    immunizations: pl.DataFrame
    procedures: pl.DataFrame
    medications: pl.DataFrame
    payers: pl.DataFrame
    events: pl.DataFrame
    sensitive_snomed: frozenset[str]
    """SNOMED codes of a sensitive category (the seed the compliance team keeps)."""


def _stamp(column: str) -> pl.Expr:
    return pl.col(column).str.strptime(pl.Datetime("us"), SYNTHEA_TIMESTAMP, strict=True)


def load_raw(home: Path) -> Raw:
    seed = pl.read_csv(CHECKOUT_DIR / "dbt_like_models" / "seeds" / "sensitive_codes.csv", infer_schema=False)
    return Raw(
        patients=read_landed(home, "synthea", "patients").with_columns(
            pl.col("BIRTHDATE").str.to_date("%Y-%m-%d"), pl.col("DEATHDATE").str.to_date("%Y-%m-%d")
        ),
        contacts=read_landed(home, "crm", "contacts"),
        encounters=read_landed(home, "synthea", "encounters").with_columns(_stamp("START"), _stamp("STOP")),
        conditions=read_landed(home, "synthea", "conditions").with_columns(
            pl.col("START").str.to_date("%Y-%m-%d"), pl.col("STOP").str.to_date("%Y-%m-%d")
        ),
        observations=read_landed(home, "synthea", "observations").with_columns(_stamp("DATE")),
        immunizations=read_landed(home, "synthea", "immunizations").with_columns(_stamp("DATE")),
        procedures=read_landed(home, "synthea", "procedures").with_columns(_stamp("START")),
        medications=read_landed(home, "synthea", "medications").with_columns(_stamp("START")),
        payers=read_landed(home, "synthea", "payers"),
        events=read_landed(home, "events", "events").with_columns(_stamp("occurred_at")),
        sensitive_snomed=frozenset(seed.filter(pl.col("code_system") == "SNOMED")["code"]),
    )


# --- date arithmetic and shared notions ----------------------------------------------------------


def before_run_date(*, years: int = 0, months: int = 0, days: int = 0) -> datetime:
    """Midnight of the run date less a calendar interval (months first, clamped to the month's last day)."""
    index = RUN_DATE.year * 12 + (RUN_DATE.month - 1) - 12 * years - months
    year, month = index // 12, index % 12 + 1
    day = min(RUN_DATE.day, calendar.monthrange(year, month)[1])
    return datetime(year, month, day) - timedelta(days=days)


def season_start() -> datetime:
    """1 August of the flu season running on the run date."""
    year = RUN_DATE.year if RUN_DATE >= date(RUN_DATE.year, 8, 1) else RUN_DATE.year - 1
    return datetime(year, 8, 1)


def ids(frame: pl.DataFrame, column: str) -> set[str]:
    return set(frame[column].drop_nulls().to_list())


def patients_aged(raw: Raw, low: int, high: int | None = None) -> set[str]:
    """Patients whose age in completed years on the run date is within [low, high]."""
    born = pl.col("BIRTHDATE")
    birthday_reached = (born.dt.month().cast(pl.Int32) * 100 + born.dt.day().cast(pl.Int32)) <= (
        RUN_DATE.month * 100 + RUN_DATE.day
    )
    age = pl.lit(RUN_DATE.year) - born.dt.year().cast(pl.Int32) - pl.when(birthday_reached).then(0).otherwise(1)
    keep = age >= low if high is None else (age >= low) & (age <= high)
    return ids(raw.patients.filter(keep), "Id")


def active_conditions(raw: Raw, codes: set[str], purposes: set[str]) -> set[str]:
    """Patients with a condition of these codes, begun by the run date and not stopped by it (a stop
    recorded for a later day is not yet known); marketing never sees sensitive codes."""
    visible = codes - raw.sensitive_snomed if purposes & MARKETING_PURPOSES else codes
    known = raw.conditions.filter(pl.col("CODE").is_in(list(visible)) & (pl.col("START") <= RUN_DATE))
    return ids(known.filter(pl.col("STOP").is_null() | (pl.col("STOP") > RUN_DATE)), "PATIENT")


def procedures_since(raw: Raw, codes: set[str], since: datetime) -> set[str]:
    return ids(raw.procedures.filter(pl.col("CODE").is_in(list(codes)) & (pl.col("START") >= since)), "PATIENT")


@dataclass(frozen=True)
class Visits:
    first: dict[str, datetime]
    last: dict[str, datetime]
    last_wellness: dict[str, datetime]


def visits(raw: Raw) -> Visits:
    """Each known patient's first, last and last wellness encounter started by the end of the run date."""
    known = raw.encounters.filter(
        (pl.col("START") < END_OF_RUN_DATE) & pl.col("PATIENT").is_in(raw.patients["Id"].to_list())
    )
    wellness = known.filter(pl.col("ENCOUNTERCLASS").str.to_lowercase() == "wellness")
    return Visits(
        first=dict(known.group_by("PATIENT").agg(pl.col("START").min()).iter_rows()),
        last=dict(known.group_by("PATIENT").agg(pl.col("START").max()).iter_rows()),
        last_wellness=dict(wellness.group_by("PATIENT").agg(pl.col("START").max()).iter_rows()),
    )


def language_of(raw: Raw) -> dict[str, str]:
    """Every patient's preferred language: the CRM's, lower-cased; English when the CRM has none."""
    stated = {
        pid: language.lower()
        for pid, language in raw.contacts.select("patient_id", "preferred_language").iter_rows()
        if language is not None
    }
    return {pid: stated.get(pid, "en") for pid in raw.patients["Id"]}


def influenza_vaccinated(raw: Raw, since: datetime) -> set[str]:
    """Patients given a seasonal influenza vaccine (by its CVX description) since ``since``, up to the run date."""
    doses = raw.immunizations.filter(
        pl.col("DESCRIPTION").str.to_lowercase().str.contains("influenza")
        & ~pl.col("DESCRIPTION").str.to_lowercase().str.contains("h1n1")
        & (pl.col("DATE") >= since)
        & (pl.col("DATE") < END_OF_RUN_DATE)
    )
    return ids(doses, "PATIENT")


def latest_hba1c(raw: Raw) -> dict[str, float | None]:
    """Each patient's newest HbA1c laboratory result as a number (the highest of simultaneous ones)."""
    labs = raw.observations.filter(
        (pl.col("CODE") == HBA1C_LOINC) & (pl.col("CATEGORY").str.to_lowercase() == "laboratory")
    ).with_columns(pl.col("VALUE").str.strip_chars().cast(pl.Float64, strict=False).alias("number"))
    newest: dict[str, tuple[datetime, float | None]] = {}
    for pid, taken, number in labs.select("PATIENT", "DATE", "number").iter_rows():
        held = newest.get(pid)
        if held is None or taken > held[0]:
            newest[pid] = (taken, number)
        elif taken == held[0] and number is not None and (held[1] is None or number > held[1]):
            newest[pid] = (taken, number)
    return {pid: number for pid, (_taken, number) in newest.items()}


# --- one independent computation per segment ------------------------------------------------------

Expected = Callable[[str], set[str]]
"""Another segment's expected members, for segments that include or exclude them."""


def breast_cancer_screening_due(raw: Raw, _other: Expected) -> set[str]:
    women = ids(raw.patients.filter(pl.col("GENDER").str.to_uppercase() == "F"), "Id")
    return (women & patients_aged(raw, 50, 74)) - procedures_since(raw, MAMMOGRAPHY, before_run_date(years=2))


def colorectal_screening_due(raw: Raw, _other: Expected) -> set[str]:
    screened = procedures_since(raw, COLONOSCOPY, before_run_date(years=10)) | procedures_since(
        raw, STOOL_BLOOD_TEST, before_run_date(years=1)
    )
    return patients_aged(raw, 45, 75) - screened


def diabetes_prevention_program_invite(raw: Raw, _other: Expected) -> set[str]:
    purposes = {"marketing"}
    prediabetic = active_conditions(raw, PREDIABETES, purposes)
    diabetic = active_conditions(raw, DIABETES, purposes)
    return (patients_aged(raw, 18, 79) & prediabetic) - diabetic


def diabetes_uncontrolled_no_recent_visit(raw: Raw, _other: Expected) -> set[str]:
    seen = visits(raw)
    six_months_ago = before_run_date(months=6)
    over_nine = {pid for pid, value in latest_hba1c(raw).items() if value is not None and value > 9}
    not_seen = {pid for pid in raw.patients["Id"] if pid not in seen.last or seen.last[pid] < six_months_ago}
    return over_nine & active_conditions(raw, DIABETES, {"treatment"}) & not_seen


def flu_vaccine_not_yet_this_season(raw: Raw, _other: Expected) -> set[str]:
    return patients_aged(raw, 1) - influenza_vaccinated(raw, season_start())


def flu_vaccine_high_risk_engaged(raw: Raw, other: Expected) -> set[str]:
    # The header's "diabetes, asthma or heart failure" (SNOMED CT: diabetes type 2 and type 1, asthma,
    # heart failure). The generator writes type 2 diabetes and asthma only.
    chronic = active_conditions(raw, {"44054006", "46635009", "195967001", "84114007"}, {"treatment"})
    high_risk = patients_aged(raw, 65) | chronic
    return (other("flu_vaccine_not_yet_this_season") & high_risk) - other("lapsed_engagement")


def hypertension_in_service_area(raw: Raw, _other: Expected) -> set[str]:
    in_area = ids(raw.patients.filter(pl.col("ZIP").str.slice(0, 5).is_in(list(SERVICE_AREA_ZIPS))), "Id")
    return in_area & active_conditions(raw, HYPERTENSION, {"operations"})


def lapsed_engagement(raw: Raw, _other: Expected) -> set[str]:
    kind = pl.col("event_type").str.to_lowercase()
    delivered = ids(raw.events.filter(kind == "delivery"), "patient_id")
    opened_lately = ids(
        raw.events.filter((kind == "open") & (pl.col("occurred_at") >= before_run_date(days=180))), "patient_id"
    )
    return delivered - opened_lately


def new_patients_first_30_days(raw: Raw, _other: Expected) -> set[str]:
    since = before_run_date(days=29)
    return {pid for pid, first in visits(raw).first.items() if first >= since}


def annual_wellness_visit_overdue(raw: Raw, other: Expected) -> set[str]:
    seen = visits(raw)
    three_years_ago, a_year_ago = before_run_date(years=3), before_run_date(months=12)
    overdue = {
        pid
        for pid, last in seen.last.items()
        if last >= three_years_ago and (pid not in seen.last_wellness or seen.last_wellness[pid] < a_year_ago)
    }
    return (patients_aged(raw, 18) & overdue) - other("new_patients_first_30_days")


def spanish_speaking_seniors(raw: Raw, _other: Expected) -> set[str]:
    language = language_of(raw)
    return {pid for pid in patients_aged(raw, 65) if language[pid] == "es"}


COMPUTATIONS: dict[str, Callable[[Raw, Expected], set[str]]] = {
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
PROJECT = load_project()
SEGMENTS = sorted(PROJECT.segments)


# --- fixtures and tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory, temp_dir: Path) -> Path:
    home = tmp_path_factory.mktemp("segments_home")
    carecast(["demo", "--patients", str(PATIENTS), "--as-of", AS_OF, "--json"], home, temp_dir)
    return home


@pytest.fixture(scope="module")
def expected(demo_home: Path) -> Expected:
    raw = load_raw(demo_home)
    assert raw.patients.height == PATIENTS

    @cache
    def members(name: str) -> frozenset[str]:
        return frozenset(COMPUTATIONS[name](raw, members))

    return members


@pytest.fixture(scope="module")
def actual(demo_home: Path) -> Callable[[str], set[str]]:
    lake = Lake(demo_home / "lake", LocalKms(demo_home / "keys"), PROJECT.registry)

    @cache
    def members(name: str) -> frozenset[str]:
        column = lake.read(PROJECT.segments[name].dataset, ["patient_id"]).table.column("patient_id")
        return frozenset(column.to_pylist())

    return members


def test_every_segment_has_an_independent_computation() -> None:
    assert sorted(COMPUTATIONS) == SEGMENTS


@pytest.mark.parametrize("name", SEGMENTS)
def test_segment_selects_the_independently_computed_patients(name: str, expected: Expected, actual) -> None:
    if name not in COMPUTATIONS:
        pytest.fail(f"segment {name!r} has no independent computation in this module", pytrace=False)
    want, got = expected(name), actual(name)
    missing, extra = len(want - got), len(got - want)
    if missing or extra:
        pytest.fail(
            f"segment {name}: pipeline selected {len(got)} patients, the independent computation {len(want)}; "
            f"{missing} expected patient(s) missing, {extra} unexpected patient(s) selected",
            pytrace=False,
        )


def test_segments_select_someone_on_generated_data(actual) -> None:
    sizes = {name: len(actual(name)) for name in SEGMENTS}
    empty = sorted(name for name, size in sizes.items() if size == 0 and name not in MAY_BE_EMPTY)
    assert not empty, f"segments empty on {PATIENTS} generated patients: {empty} (sizes: {sizes})"
