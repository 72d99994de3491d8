"""Consent extract: treatment/operations records for most patients, HIPAA marketing
authorizations for ~35% (some expired, some revoked, some superseded), fundraising opt-outs."""

from __future__ import annotations

import numpy as np
import polars as pl

from carecast.synth.cohort import Cohort
from carecast.synth.columns import (
    NO_TIMESTAMP,
    SECONDS_PER_DAY,
    datetimes,
    daytime_timestamps,
    labels,
    stream,
    uniform_days,
    uuids,
)

YEAR = 365
PURPOSES = ("treatment", "operations", "marketing", "fundraising")
TREATMENT, OPERATIONS, MARKETING, FUNDRAISING = range(4)
MARKETING_SHARE_ADULTS = 0.38
MARKETING_SHARE_MINORS = 0.10
SUPERSEDED_SHARE = 0.15


class _Records:
    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(
        self,
        patient: np.ndarray,
        purpose: int,
        signed: np.ndarray,
        expires: np.ndarray,
        revoked: np.ndarray,
        remuneration: np.ndarray,
    ) -> None:
        self.parts.append(
            {
                "patient": patient,
                "purpose": np.full(patient.shape[0], purpose, dtype=np.int64),
                "signed": signed,
                "expires": expires,
                "revoked": revoked,
                "remuneration": remuneration,
            }
        )

    def frame(self) -> pl.DataFrame:
        return pl.concat([pl.DataFrame(part) for part in self.parts]).sort(["patient", "purpose", "signed"])


def generate_consents(seed: int, cohort: Cohort) -> pl.DataFrame:
    rng = stream(seed, "consents")
    size = cohort.size
    as_of_day = cohort.as_of_day
    birth = cohort.birth_day
    last_day = cohort.last_active_day
    last_second = cohort.last_active_second
    records = _Records()

    def signed_between(patient: np.ndarray, earliest_day: np.ndarray | int) -> np.ndarray:
        day = uniform_days(rng, np.maximum(birth[patient], earliest_day), last_day[patient])
        return np.minimum(daytime_timestamps(rng, day), last_second[patient])

    def revoked_after(patient: np.ndarray, signed: np.ndarray, share: float) -> np.ndarray:
        span = np.maximum(last_second[patient] - signed, 0)
        moment = signed + np.floor(rng.random(patient.shape[0]) * span).astype(np.int64)
        return np.where(rng.random(patient.shape[0]) < share, moment, NO_TIMESTAMP)

    def never(count: int) -> np.ndarray:
        return np.full(count, NO_TIMESTAMP, dtype=np.int64)

    def falses(count: int) -> np.ndarray:
        return np.zeros(count, dtype=bool)

    patient = np.flatnonzero(rng.random(size) < 0.96)
    records.add(
        patient,
        TREATMENT,
        signed_between(patient, as_of_day - 6 * YEAR),
        never(patient.shape[0]),
        never(patient.shape[0]),
        falses(patient.shape[0]),
    )
    patient = np.flatnonzero(rng.random(size) < 0.30)
    records.add(
        patient,
        OPERATIONS,
        signed_between(patient, as_of_day - 6 * YEAR),
        never(patient.shape[0]),
        never(patient.shape[0]),
        falses(patient.shape[0]),
    )

    minor = (as_of_day - birth) < 18 * 365.25
    patient = np.flatnonzero(rng.random(size) < np.where(minor, MARKETING_SHARE_MINORS, MARKETING_SHARE_ADULTS))
    count = patient.shape[0]
    signed = signed_between(patient, as_of_day - 4 * YEAR)
    term_years = rng.choice(np.array([0, 1, 2, 3]), size=count, p=[0.25, 0.3, 0.3, 0.15])
    expires = np.where(term_years == 0, NO_TIMESTAMP, signed + term_years * YEAR * SECONDS_PER_DAY)
    records.add(patient, MARKETING, signed, expires, revoked_after(patient, signed, 0.08), rng.random(count) < 0.7)

    superseded = rng.random(count) < SUPERSEDED_SHARE
    earlier_patient = patient[superseded]
    earlier_signed = signed[superseded] - rng.integers(200, 3 * YEAR, size=earlier_patient.shape[0]) * SECONDS_PER_DAY
    valid = earlier_signed // SECONDS_PER_DAY >= birth[earlier_patient]
    earlier_patient, earlier_signed = earlier_patient[valid], earlier_signed[valid]
    earlier_count = earlier_patient.shape[0]
    records.add(
        earlier_patient,
        MARKETING,
        earlier_signed,
        earlier_signed + YEAR * SECONDS_PER_DAY,
        never(earlier_count),
        rng.random(earlier_count) < 0.5,
    )

    patient = np.flatnonzero(rng.random(size) < np.where(minor, 0.0, 0.2))
    signed = signed_between(patient, as_of_day - 5 * YEAR)
    records.add(
        patient,
        FUNDRAISING,
        signed,
        never(patient.shape[0]),
        revoked_after(patient, signed, 0.3),
        falses(patient.shape[0]),
    )

    frame = records.frame()
    rows = frame.height
    channel = np.where(rng.random(rows) < 0.1, 1, 0)
    document_number = pl.Series(values=rng.permutation(rows) + 1).cast(pl.String).str.zfill(6)
    document_id = pl.select(pl.concat_str([pl.lit("DOC-"), document_number])).to_series()
    return pl.DataFrame(
        {
            "consent_id": uuids(rng, rows),
            "patient_id": cohort.patient_id.gather(frame["patient"].to_numpy()),
            "purpose": labels(PURPOSES, frame["purpose"].to_numpy()),
            "channel": labels(("email", "sms"), channel),
            "signed_at": datetimes(frame["signed"].to_numpy()),
            "expires_at": datetimes(frame["expires"].to_numpy()),
            "revoked_at": datetimes(frame["revoked"].to_numpy()),
            "remuneration_disclosed": frame["remuneration"],
            "document_id": document_id,
        }
    )
