"""CRM contact extract: one row per patient for ~94% of them, emails only at reserved domains."""

from __future__ import annotations

import numpy as np
import polars as pl

from carecast.synth import reference as ref
from carecast.synth.cohort import Cohort
from carecast.synth.columns import (
    choose,
    datetimes,
    daytime_timestamps,
    labels,
    stream,
    uniform_days,
)

CONTACT_SHARE = 0.94
MISSING_EMAIL_SHARE = 0.08
INVALID_EMAIL_SHARE = 0.005
MISSING_PHONE_SHARE = 0.1
OPT_OUT_SHARE = 0.07
CONTACT_COLUMNS = ("patient_id", "email", "phone", "preferred_language", "email_opt_in", "updated_at")


def _local_part(names: pl.Series) -> pl.Series:
    return names.str.to_lowercase().str.replace_all("[^a-z0-9]", "")


def generate_contacts(seed: int, cohort: Cohort) -> pl.DataFrame:
    rng = stream(seed, "contacts")
    patient = np.flatnonzero(rng.random(cohort.size) < CONTACT_SHARE)
    count = patient.shape[0]
    # A permutation makes the disambiguating number unique without revealing row order.
    unique_number = pl.Series(values=rng.permutation(count) + 1000).cast(pl.String)
    domain = labels(ref.EMAIL_DOMAINS, choose(rng, count, ref.EMAIL_DOMAIN_SHARES))
    local = pl.select(
        pl.concat_str(
            [
                _local_part(cohort.first_name.gather(patient)),
                pl.lit("."),
                _local_part(cohort.last_name.gather(patient)),
                pl.lit("."),
                unique_number,
            ]
        )
    ).to_series()
    draw = rng.random(count)
    invalid = draw < INVALID_EMAIL_SHARE
    missing = (draw >= INVALID_EMAIL_SHARE) & (draw < INVALID_EMAIL_SHARE + MISSING_EMAIL_SHARE)
    separator = labels(("@", "@@", " @", "@."), np.where(invalid, rng.integers(1, 4, size=count), 0))
    email = pl.select(pl.concat_str([local, separator, domain])).to_series().set(pl.Series(values=missing), None)

    line = pl.Series(values=rng.integers(0, 100, size=count)).cast(pl.String).str.zfill(2)
    area = labels(ref.PHONE_AREA_CODES, rng.integers(0, len(ref.PHONE_AREA_CODES), size=count))
    phone = (
        pl.select(pl.concat_str([area, pl.lit("-555-01"), line]))
        .to_series()
        .set(pl.Series(values=rng.random(count) < MISSING_PHONE_SHARE), None)
    )

    updated_day = uniform_days(
        rng, np.maximum(cohort.birth_day[patient], cohort.as_of_day - 3 * 365), cohort.last_active_day[patient]
    )
    updated_at = np.minimum(daytime_timestamps(rng, updated_day), cohort.last_active_second[patient])
    return pl.DataFrame(
        {
            "patient_id": cohort.patient_id.gather(patient),
            "email": email,
            "phone": phone,
            "preferred_language": labels(ref.LANGUAGES, choose(rng, count, ref.LANGUAGE_SHARES)),
            "email_opt_in": rng.random(count) >= OPT_OUT_SHARE,
            "updated_at": datetimes(updated_at),
        }
    )
