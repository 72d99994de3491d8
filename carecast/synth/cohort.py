"""The slice of patient facts that the CRM, consent and event generators need.

Both generated patients and a third-party Synthea export are reduced to a `Cohort`, so the
downstream generators do not care where the people came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from carecast.synth.columns import DAYS_PER_YEAR, SECONDS_PER_DAY, day_number


@dataclass(frozen=True)
class Cohort:
    patient_id: pl.Series
    first_name: pl.Series
    last_name: pl.Series
    birth_day: np.ndarray
    death_day: np.ndarray
    """Day number of death; meaningful only where `is_deceased`."""
    is_deceased: np.ndarray
    as_of: date

    @property
    def size(self) -> int:
        return self.patient_id.len()

    @property
    def as_of_day(self) -> int:
        return day_number(self.as_of)

    @property
    def last_active_day(self) -> np.ndarray:
        """Last day anything may happen to the patient: the death day, or the day before as_of."""
        return np.where(self.is_deceased, np.minimum(self.death_day, self.as_of_day - 1), self.as_of_day - 1)

    @property
    def last_active_second(self) -> np.ndarray:
        return self.last_active_day.astype(np.int64) * SECONDS_PER_DAY + SECONDS_PER_DAY - 1

    @property
    def age_at_as_of(self) -> np.ndarray:
        return (self.as_of_day - self.birth_day) / DAYS_PER_YEAR

    @classmethod
    def from_synthea_patients(cls, patients: pl.DataFrame, as_of: date) -> Cohort:
        """Build from a Synthea patients table read with every column as a string."""
        epoch = pl.date(1970, 1, 1)
        days = patients.select(
            birth=(pl.col("BIRTHDATE").str.to_date("%Y-%m-%d") - epoch).dt.total_days(),
            death=(pl.col("DEATHDATE").str.to_date("%Y-%m-%d", strict=False) - epoch).dt.total_days(),
        )
        death = days["death"]
        return cls(
            patient_id=patients["Id"],
            first_name=patients["FIRST"].fill_null(""),
            last_name=patients["LAST"].fill_null(""),
            birth_day=days["birth"].to_numpy().astype(np.int64),
            death_day=death.fill_null(0).to_numpy().astype(np.int64),
            is_deceased=death.is_not_null().to_numpy(),
            as_of=as_of,
        )
