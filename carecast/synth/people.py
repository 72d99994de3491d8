"""Synthetic patients in the Synthea `patients.csv` shape (Massachusetts, US age pyramid)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from carecast.synth import reference as ref
from carecast.synth.cohort import Cohort
from carecast.synth.columns import (
    DAYS_PER_YEAR,
    choose,
    dates,
    day_number,
    digits,
    labels,
    literal,
    patterned,
    stream,
    uuids,
)

FEMALE_SHARE = 0.51
MISSING_ZIP_SHARE = 0.04
LOOKBACK_YEARS_FOR_DEATHS = 10


@dataclass(frozen=True)
class Population:
    patients: pl.DataFrame
    cohort: Cohort
    is_female: np.ndarray


def _ages_in_years(rng: np.random.Generator, count: int) -> np.ndarray:
    band = choose(rng, count, ref.AGE_BAND_SHARES)
    return (band + rng.random(count)) * 5.0


def _death_probability(age: np.ndarray) -> np.ndarray:
    """Share of people of this age (at as_of) who died in the last ten years: ~2.5% overall,
    steeply rising with age (Gompertz-like)."""
    return np.clip(0.001 + 0.00035 * np.exp(0.072 * age), 0.0, 0.7)


def _marital_status(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    band = np.digitize(age, [30.0, 65.0])
    cumulative = np.cumsum(np.asarray(ref.MARITAL_SHARES_BY_BAND), axis=1)
    status = (rng.random(age.shape[0])[:, None] > cumulative[band]).sum(axis=1)
    return np.where(age < 18.0, len(ref.MARITAL_CODES) - 1, np.minimum(status, len(ref.MARITAL_CODES) - 1))


def _name_with_number(rng: np.random.Generator, names: pl.Series) -> pl.Series:
    """Synthea appends a number to every name (`Maynard46`)."""
    numbers = pl.Series(values=rng.integers(1, 1000, size=names.len())).cast(pl.String)
    return pl.select(pl.concat_str([names, numbers])).to_series()


def generate_patients(seed: int, count: int, as_of: date) -> Population:
    rng = stream(seed, "people")
    as_of_day = day_number(as_of)

    age = _ages_in_years(rng, count)
    birth_day = as_of_day - np.floor(age * DAYS_PER_YEAR).astype(np.int64) - 1
    is_deceased = rng.random(count) < _death_probability(age)
    days_alive = as_of_day - birth_day
    days_since_death = 1 + np.floor(
        rng.random(count) * np.minimum(days_alive - 1, LOOKBACK_YEARS_FOR_DEATHS * 365)
    ).astype(np.int64)
    death_day = np.where(is_deceased, as_of_day - days_since_death, 0)
    age_at_end = np.where(is_deceased, death_day - birth_day, days_alive) / DAYS_PER_YEAR
    is_adult = age_at_end >= 18.0

    is_female = rng.random(count) < FEMALE_SHARE
    male_first = rng.integers(0, len(ref.FIRST_NAMES_MALE), size=count)
    female_first = rng.integers(0, len(ref.FIRST_NAMES_FEMALE), size=count)
    first_base = pl.select(
        pl.when(pl.Series(values=is_female))
        .then(labels(ref.FIRST_NAMES_FEMALE, female_first))
        .otherwise(labels(ref.FIRST_NAMES_MALE, male_first))
    ).to_series()
    first_name = _name_with_number(rng, first_base)
    last_name = _name_with_number(rng, labels(ref.LAST_NAMES, rng.integers(0, len(ref.LAST_NAMES), size=count)))

    marital = _marital_status(rng, age_at_end)
    marital_label = labels(ref.MARITAL_CODES, marital)
    ever_married_woman = is_female & np.isin(marital, [0, 2, 3])
    has_maiden = ever_married_woman & (rng.random(count) < 0.8)
    maiden = _name_with_number(rng, labels(ref.LAST_NAMES, rng.integers(0, len(ref.LAST_NAMES), size=count))).set(
        pl.Series(values=~has_maiden), None
    )
    prefix_index = np.select([~is_adult, ~is_female, marital == 0], [3, 0, 1], default=2)
    prefix = labels(("Mr.", "Mrs.", "Ms.", None), prefix_index)
    suffix_index = np.where(is_adult & (rng.random(count) < 0.01), rng.integers(0, 3, size=count), 3)
    suffix = labels(("MD", "PhD", "JD", None), suffix_index)

    ssn = patterned(
        literal("999-", count),
        digits(rng.integers(10, 100, size=count), 2),
        literal("-", count),
        digits(rng.integers(1000, 10000, size=count), 4),
    )
    drivers = patterned(literal("S999", count), digits(rng.integers(10000, 100000, size=count), 5)).set(
        pl.Series(values=(age_at_end < 16.0) | (rng.random(count) > 0.85)), None
    )
    passport = patterned(
        literal("X", count), digits(rng.integers(10**7, 10**8, size=count), 8), literal("X", count)
    ).set(pl.Series(values=~is_adult | (rng.random(count) > 0.3)), None)

    race = labels(ref.RACES, choose(rng, count, ref.RACE_WEIGHTS))
    ethnicity = labels(("hispanic", "nonhispanic"), (rng.random(count) >= ref.HISPANIC_SHARE).astype(np.int64))

    cities = ref.MA_CITIES
    city_index = choose(rng, count, [city.weight for city in cities])
    birth_city = choose(rng, count, [city.weight for city in cities])
    is_foreign_born = rng.random(count) < 0.12
    birthplace = pl.select(
        pl.when(pl.Series(values=is_foreign_born))
        .then(labels(ref.FOREIGN_BIRTHPLACES, rng.integers(0, len(ref.FOREIGN_BIRTHPLACES), size=count)))
        .otherwise(pl.concat_str([labels([city.name for city in cities], birth_city), pl.lit("  Massachusetts  US")]))
    ).to_series()
    unit_kind = rng.integers(0, len(ref.ADDRESS_UNIT_KINDS), size=count)
    unit = (
        pl.select(
            pl.concat_str(
                [
                    pl.lit(" "),
                    labels(ref.ADDRESS_UNIT_KINDS, unit_kind),
                    pl.lit(" "),
                    pl.Series(values=rng.integers(1, 100, size=count)).cast(pl.String),
                ]
            )
        )
        .to_series()
        .set(pl.Series(values=rng.random(count) > 0.3), None)
    )
    address = pl.select(
        pl.concat_str(
            [
                pl.Series(values=rng.integers(1, 1000, size=count)).cast(pl.String),
                pl.lit(" "),
                labels(ref.LAST_NAMES, rng.integers(0, len(ref.LAST_NAMES), size=count)),
                pl.lit(" "),
                labels(ref.STREET_SUFFIXES, rng.integers(0, len(ref.STREET_SUFFIXES), size=count)),
                unit,
            ],
            ignore_nulls=True,
        )
    ).to_series()
    zip_code = labels([city.zip_code for city in cities], city_index).set(
        pl.Series(values=rng.random(count) < MISSING_ZIP_SHARE), None
    )
    lat = np.array([city.lat for city in cities])[city_index] + rng.normal(0.0, 0.015, size=count)
    lon = np.array([city.lon for city in cities])[city_index] + rng.normal(0.0, 0.015, size=count)
    expenses = np.round(rng.lognormal(np.log(30_000.0) + 0.015 * age_at_end, 0.9, size=count), 2)
    coverage = np.round(rng.lognormal(np.log(6_000.0) + 0.02 * age_at_end, 1.0, size=count), 2)

    patient_id = uuids(rng, count)
    patients = pl.DataFrame(
        {
            "Id": patient_id,
            "BIRTHDATE": dates(birth_day),
            "DEATHDATE": dates(death_day, missing=~is_deceased),
            "SSN": ssn,
            "DRIVERS": drivers,
            "PASSPORT": passport,
            "PREFIX": prefix,
            "FIRST": first_name,
            "LAST": last_name,
            "SUFFIX": suffix,
            "MAIDEN": maiden,
            "MARITAL": marital_label,
            "RACE": race,
            "ETHNICITY": ethnicity,
            "GENDER": labels(("M", "F"), is_female.astype(np.int64)),
            "BIRTHPLACE": birthplace,
            "ADDRESS": address,
            "CITY": labels([city.name for city in cities], city_index),
            "STATE": pl.Series(values=["Massachusetts"]).gather(np.zeros(count, dtype=np.int64)),
            "COUNTY": labels([city.county for city in cities], city_index),
            "ZIP": zip_code,
            "LAT": lat,
            "LON": lon,
            "HEALTHCARE_EXPENSES": expenses,
            "HEALTHCARE_COVERAGE": coverage,
        }
    )
    cohort = Cohort(
        patient_id=patient_id,
        first_name=first_name,
        last_name=last_name,
        birth_day=birth_day,
        death_day=death_day,
        is_deceased=is_deceased,
        as_of=as_of,
    )
    return Population(patients=patients, cohort=cohort, is_female=is_female)
