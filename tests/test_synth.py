"""Tests for the synthetic landing generator (small cohorts, seconds to run)."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from carecast.synth import SYNTHEA_TABLES, augment_synthea, generate_landing

SYNTHEA_27 = Path("/work/shared/data/synthea-27")
AS_OF = date(2026, 11, 1)
PATIENTS = 2000
BATCH = "batch-0001"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _read(landing: Path, table: str) -> pl.DataFrame:
    return pl.read_csv(landing / "synthea" / BATCH / f"{table}.csv", infer_schema=False)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    generate_landing(root, PATIENTS, seed=7, as_of=AS_OF)
    return root


@pytest.fixture(scope="module")
def patients(landing: Path) -> pl.DataFrame:
    return _read(landing, "patients").with_columns(pl.col("BIRTHDATE").str.to_date(), pl.col("DEATHDATE").str.to_date())


def test_same_seed_gives_identical_bytes_and_other_seed_differs(landing: Path, tmp_path: Path) -> None:
    generate_landing(tmp_path / "again", PATIENTS, seed=7, as_of=AS_OF)
    generate_landing(tmp_path / "other", PATIENTS, seed=8, as_of=AS_OF)
    assert _digest(tmp_path / "again") == _digest(landing)
    other = _digest(tmp_path / "other")
    assert other.keys() == _digest(landing).keys()
    assert other["synthea/batch-0001/patients.csv"] != _digest(landing)["synthea/batch-0001/patients.csv"]


def test_counts_match_files_and_success_markers(tmp_path: Path) -> None:
    counts = generate_landing(tmp_path, 300, seed=3, as_of=AS_OF)
    for table in SYNTHEA_TABLES:
        assert counts[f"synthea/{table}"] == _read(tmp_path, table).height
    assert counts["crm/contacts"] == pl.read_csv(tmp_path / "crm" / BATCH / "contacts.csv").height
    for source in ("synthea", "crm", "consents", "events"):
        marker = tmp_path / source / BATCH / "_SUCCESS"
        assert marker.exists() and marker.read_bytes() == b""
        assert not list((tmp_path / source / BATCH).glob(".*.tmp"))


@pytest.mark.parametrize("table", SYNTHEA_TABLES)
def test_headers_equal_the_synthea_export(landing: Path, table: str) -> None:
    expected = (SYNTHEA_27 / f"{table}.csv").read_text().splitlines()[0]
    assert (landing / "synthea" / BATCH / f"{table}.csv").read_text().splitlines()[0] == expected


def test_formats_look_like_synthea(patients: pl.DataFrame, landing: Path) -> None:
    raw = _read(landing, "patients")
    assert raw["Id"].str.contains(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$").all()
    assert raw["Id"].n_unique() == PATIENTS
    assert raw["SSN"].str.contains(r"^999-\d{2}-\d{4}$").all()
    assert raw["FIRST"].str.contains(r"^[A-Z][a-z']+\d+$").all()
    zips = raw["ZIP"].drop_nulls()
    assert zips.str.contains(r"^\d{5}$").all() and zips.str.starts_with("0").all()
    assert 0 < raw["ZIP"].null_count() < 0.1 * PATIENTS
    assert set(raw["GENDER"]) == {"M", "F"}
    assert set(raw["MARITAL"].drop_nulls()) <= {"M", "S", "D", "W"}
    assert set(raw["RACE"]) <= {"white", "black", "asian", "hawaiian", "native", "other"}
    assert set(raw["ETHNICITY"]) == {"hispanic", "nonhispanic"}
    lat = raw["LAT"].cast(pl.Float64)
    lon = raw["LON"].cast(pl.Float64)
    assert lat.is_between(41.0, 43.0).all() and lon.is_between(-73.6, -69.8).all()
    encounters = _read(landing, "encounters")
    assert encounters["START"].str.contains(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$").all()
    assert set(encounters["ENCOUNTERCLASS"]) == {
        "wellness",
        "ambulatory",
        "outpatient",
        "emergency",
        "inpatient",
        "urgentcare",
    }


def test_population_distributions(patients: pl.DataFrame) -> None:
    age = (pl.lit(AS_OF) - pl.col("BIRTHDATE")).dt.total_days() / 365.25
    shares = patients.select(
        female=(pl.col("GENDER") == "F").mean(),
        minors=(age < 18).mean(),
        seniors=(age >= 65).mean(),
        deceased=pl.col("DEATHDATE").is_not_null().mean(),
        deceased_age=age.filter(pl.col("DEATHDATE").is_not_null()).mean(),
    ).row(0, named=True)
    assert 0.47 <= shares["female"] <= 0.55
    assert 0.18 <= shares["minors"] <= 0.26
    assert 0.13 <= shares["seniors"] <= 0.21
    assert 0.012 <= shares["deceased"] <= 0.04
    assert shares["deceased_age"] > 55


def test_referential_integrity_and_dates(landing: Path, patients: pl.DataFrame) -> None:
    encounters = _read(landing, "encounters").select(pl.col("Id").alias("ENCOUNTER"), pl.col("PATIENT").alias("OWNER"))
    lifespan = patients.select(
        pl.col("Id").alias("PATIENT"),
        pl.col("BIRTHDATE"),
        pl.min_horizontal(pl.col("DEATHDATE").fill_null(AS_OF), pl.lit(AS_OF)).alias("LAST"),
    )
    date_columns = {
        "encounters": ["START", "STOP"],
        "conditions": ["START", "STOP"],
        "observations": ["DATE"],
        "immunizations": ["DATE"],
        "procedures": ["START", "STOP"],
        "medications": ["START", "STOP"],
    }
    rows = 0
    for table, columns in date_columns.items():
        frame = _read(landing, table)
        rows += frame.height
        joined = frame.join(lifespan, on="PATIENT", how="left")
        assert joined["BIRTHDATE"].null_count() == 0, table
        if table != "encounters":
            owners = frame.join(encounters, on="ENCOUNTER", how="left")
            assert (owners["OWNER"] == owners["PATIENT"]).all(), table
        for column in columns:
            day = joined[column].str.slice(0, 10).str.to_date()
            inside = (day >= joined["BIRTHDATE"]) & (day <= joined["LAST"])
            assert inside.fill_null(True).all(), (table, column)
    assert 8 * PATIENTS <= rows <= 12.5 * PATIENTS


def test_clinical_prevalences(landing: Path, patients: pl.DataFrame) -> None:
    conditions = _read(landing, "conditions")
    adults = patients.filter((pl.lit(AS_OF) - pl.col("BIRTHDATE")).dt.total_days() >= 18 * 365.25)

    def share(code: str) -> float:
        return conditions.filter(pl.col("CODE") == code)["PATIENT"].n_unique() / adults.height

    assert 0.2 <= share("59621000") <= 0.45
    assert 0.05 <= share("44054006") <= 0.16
    assert 0.05 <= share("15777000") <= 0.2
    hba1c = _read(landing, "observations").filter(pl.col("CODE") == "4548-4")
    diabetics = conditions.filter(pl.col("CODE") == "44054006")["PATIENT"]
    diabetic_values = hba1c.filter(pl.col("PATIENT").is_in(diabetics.implode()))["VALUE"].cast(pl.Float64)
    assert (hba1c["UNITS"] == "%").all()
    assert 0.1 <= (diabetic_values > 9).mean() <= 0.35


def test_flu_and_mammography_coverage(landing: Path, patients: pl.DataFrame) -> None:
    alive = patients.filter(pl.col("DEATHDATE").is_null()).with_columns(
        age=(pl.lit(AS_OF) - pl.col("BIRTHDATE")).dt.total_days() / 365.25
    )
    flu = _read(landing, "immunizations").filter(
        (pl.col("CODE") == "140") & (pl.col("DATE").str.slice(0, 10).str.to_date() >= date(2026, 8, 1))
    )
    adults = alive.filter(pl.col("age") >= 18)
    vaccinated = adults["Id"].is_in(flu["PATIENT"].implode())
    assert 0.4 <= vaccinated.mean() <= 0.6
    seniors = alive.filter(pl.col("age") >= 65)["Id"].is_in(flu["PATIENT"].implode())
    assert seniors.mean() > vaccinated.mean()

    mammograms = _read(landing, "procedures").filter(pl.col("CODE") == "24623002")
    assert (mammograms["DESCRIPTION"] == "Screening mammography (procedure)").all()
    recent = mammograms.filter(pl.col("START").str.slice(0, 10).str.to_date() >= AS_OF - timedelta(days=730))
    women = alive.filter((pl.col("GENDER") == "F") & pl.col("age").is_between(50, 74, closed="left"))
    coverage = women["Id"].is_in(recent["PATIENT"].implode()).mean()
    assert 0.62 <= coverage <= 0.8
    screened_men = patients.filter(pl.col("GENDER") == "M")["Id"].is_in(mammograms["PATIENT"].implode()).sum()
    assert screened_men == 0


def test_contacts(landing: Path, patients: pl.DataFrame) -> None:
    contacts = pl.read_csv(landing / "crm" / BATCH / "contacts.csv", infer_schema=False)
    assert contacts.columns == ["patient_id", "email", "phone", "preferred_language", "email_opt_in", "updated_at"]
    assert contacts["patient_id"].is_in(patients["Id"].implode()).all()
    assert contacts["patient_id"].n_unique() == contacts.height
    assert 0.91 <= contacts.height / PATIENTS <= 0.97
    emails = contacts["email"]
    assert 0.05 <= emails.null_count() / contacts.height <= 0.11
    present = emails.drop_nulls()
    assert present.n_unique() == present.len()
    assert (present.str.ends_with("example.org") | present.str.ends_with(".test")).all()
    valid = present.str.contains(r"^[a-z0-9]+(\.[a-z0-9]+)*@[a-z0-9-]+(\.[a-z0-9-]+)+$")
    assert 0 < (~valid).sum() <= 0.02 * present.len()
    assert contacts["phone"].drop_nulls().str.contains(r"^\d{3}-555-01\d{2}$").all()
    assert 0.08 <= (contacts["preferred_language"] == "es").mean() <= 0.16
    assert 0.03 <= (contacts["email_opt_in"] == "false").mean() <= 0.11


def test_consents(landing: Path, patients: pl.DataFrame) -> None:
    consents = pl.read_csv(landing / "consents" / BATCH / "consents.csv", infer_schema=False)
    assert consents.columns == [
        "consent_id",
        "patient_id",
        "purpose",
        "channel",
        "signed_at",
        "expires_at",
        "revoked_at",
        "remuneration_disclosed",
        "document_id",
    ]
    assert set(consents["purpose"]) == {"treatment", "operations", "marketing", "fundraising"}
    assert consents["patient_id"].is_in(patients["Id"].implode()).all()
    assert consents["document_id"].str.contains(r"^DOC-\d{6,}$").all()
    marketing = consents.filter(pl.col("purpose") == "marketing")
    assert 0.28 <= marketing["patient_id"].n_unique() / PATIENTS <= 0.42
    as_of = AS_OF.isoformat()
    assert (marketing["expires_at"].drop_nulls() < as_of).sum() > 0
    assert marketing["expires_at"].null_count() > 0
    assert marketing["revoked_at"].drop_nulls().len() > 0
    assert marketing.group_by("patient_id").len()["len"].max() > 1
    assert consents.filter(pl.col("purpose") == "fundraising")["revoked_at"].drop_nulls().len() > 0
    signed = consents["signed_at"].str.slice(0, 10)
    assert (signed < as_of).all()


def test_events(landing: Path) -> None:
    lines = (landing / "events" / BATCH / "events.ndjson").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert list(events[0]) == [
        "event_id",
        "event_type",
        "bounce_type",
        "occurred_at",
        "patient_id",
        "campaign",
        "purpose",
    ]
    frame = pl.DataFrame(events)
    assert set(frame["event_type"]) <= {"delivery", "bounce", "complaint", "open", "click", "unsubscribe"}
    assert "spring-newsletter-2026" in set(frame["campaign"])
    assert set(frame.filter(pl.col("event_type") == "bounce")["bounce_type"]) <= {"hard", "soft"}
    assert (
        frame.filter(pl.col("event_type") != "bounce")["bounce_type"].null_count()
        == frame.filter(pl.col("event_type") != "bounce").height
    )
    sends = frame.filter(pl.col("event_type").is_in(["delivery", "bounce"])).height
    hard = frame.filter(pl.col("bounce_type") == "hard").height
    assert 0.003 <= hard / sends <= 0.025
    patients = _read(landing, "patients")
    deaths = patients.filter(pl.col("DEATHDATE").is_not_null()).select(pl.col("Id").alias("patient_id"), "DEATHDATE")
    after_death = frame.join(deaths, on="patient_id").filter(
        pl.col("occurred_at").str.slice(0, 10) > pl.col("DEATHDATE")
    )
    assert after_death.height == 0


def test_augment_synthea_copies_and_adds_synthetic_extracts(tmp_path: Path) -> None:
    counts = augment_synthea(SYNTHEA_27, tmp_path, seed=7, as_of=AS_OF)
    for table in SYNTHEA_TABLES:
        copied = tmp_path / "synthea" / BATCH / f"{table}.csv"
        assert copied.read_bytes() == (SYNTHEA_27 / f"{table}.csv").read_bytes()
    assert counts["synthea/patients"] == 27
    assert counts["synthea/payers"] == 10
    assert (tmp_path / "synthea" / BATCH / "_SUCCESS").exists()
    contacts = pl.read_csv(tmp_path / "crm" / BATCH / "contacts.csv", infer_schema=False)
    source_ids = pl.read_csv(SYNTHEA_27 / "patients.csv", infer_schema=False)["Id"]
    assert 0 < contacts.height <= 27 == counts["synthea/patients"]
    assert contacts["patient_id"].is_in(source_ids.implode()).all()
    assert (
        contacts["email"].drop_nulls().str.ends_with("@example.org")
        | contacts["email"].drop_nulls().str.ends_with(".test")
    ).all()
    for source in ("crm", "consents", "events"):
        assert "SYNTHETIC" in (tmp_path / source / BATCH / "SYNTHETIC.txt").read_text()
        assert (tmp_path / source / BATCH / "_SUCCESS").exists()


def test_augment_synthea_refuses_an_export_without_payers(tmp_path: Path) -> None:
    source = tmp_path / "partial"
    source.mkdir()
    for table in SYNTHEA_TABLES[:-1]:
        (source / f"{table}.csv").write_bytes((SYNTHEA_27 / f"{table}.csv").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"missing \['payers.csv'\]"):
        augment_synthea(source, tmp_path / "landing", seed=7, as_of=AS_OF)
    assert not (tmp_path / "landing").exists()


def test_augment_synthea_accepts_newer_column_set(tmp_path: Path) -> None:
    source = tmp_path / "newer"
    source.mkdir()
    for table in SYNTHEA_TABLES:
        frame = pl.read_csv(SYNTHEA_27 / f"{table}.csv", infer_schema=False)
        if table == "patients":
            frame = frame.with_columns(MIDDLE=pl.lit(None, pl.String), FIPS=pl.lit("25017"), INCOME=pl.lit("52000"))
        if table == "conditions":
            frame = frame.with_columns(SYSTEM=pl.lit("SNOMED-CT"))
        frame.write_csv(source / f"{table}.csv")
    counts = augment_synthea(source, tmp_path / "landing", seed=7, as_of=AS_OF)
    assert counts["synthea/patients"] == 27
    assert 0 < counts["crm/contacts"] <= 27


def test_payers_cover_every_payer_billed(landing: Path, patients: pl.DataFrame) -> None:
    payers = _read(landing, "payers")
    assert payers["Id"].n_unique() == payers.height == 10
    names = payers["NAME"].to_list()
    assert names[:3] == ["Medicare", "Medicaid", "Dual Eligible"] and names[-1] == "NO_INSURANCE"
    encounters = _read(landing, "encounters")
    medications = _read(landing, "medications")
    for billed in (encounters, medications):
        assert billed["PAYER"].null_count() == 0
        assert billed["PAYER"].is_in(payers["Id"].implode()).all()
    named = encounters.join(payers.select(pl.col("Id").alias("PAYER"), "NAME"), on="PAYER")
    seniors = patients.filter(
        pl.col("DEATHDATE").is_null() & ((pl.lit(AS_OF) - pl.col("BIRTHDATE")).dt.total_days() >= 66 * 365.25)
    )["Id"]
    assert seniors.len() > 0
    assert (named.filter(pl.col("PATIENT").is_in(seniors.implode()))["NAME"] == "Medicare").all()
    assert (named.filter(pl.col("NAME") == "NO_INSURANCE")["PAYER_COVERAGE"].cast(pl.Float64) == 0).all()
    per_payer = encounters.group_by(pl.col("PAYER").alias("Id")).len()
    counted = payers.join(per_payer, on="Id", how="left").with_columns(pl.col("len").fill_null(0))
    total = counted["COVERED_ENCOUNTERS"].cast(pl.Int64) + counted["UNCOVERED_ENCOUNTERS"].cast(pl.Int64)
    assert (total == counted["len"]).all()
    assert payers["UNIQUE_CUSTOMERS"].cast(pl.Int64).sum() == PATIENTS
