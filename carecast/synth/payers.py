"""The payers table in the Synthea `payers.csv` shape.

Payers are public insurers, not people: their names and headquarters are public (the same as in
Synthea's own exports); phone numbers are fictional (555-01xx). Every total is computed from the
generated rows, so the table draws no random numbers and the other tables are unchanged by it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

MEDICARE_AGE = 65
REPORTED_MONTHS = 120
"""Member months count the last ten years of each customer, the span of most generated history."""


class Payer(NamedTuple):
    name: str
    address: str | None
    city: str | None
    state: str | None
    zip_code: str | None
    phone: str | None
    monthly_premium: float


_CMS = ("7500 Security Blvd", "Baltimore", "MD", "21244")

# Index 0 covers the 65+, the last index is no insurance at all (see clinical._render).
PAYERS: tuple[Payer, ...] = (
    Payer("Medicare", *_CMS, "1-800-555-0100", 210.0),
    Payer("Medicaid", *_CMS, "1-800-555-0101", 240.0),
    Payer("Dual Eligible", *_CMS, "1-800-555-0102", 225.0),
    Payer("Aetna", "151 Farmington Ave", "Hartford", "CT", "06156", "1-800-555-0103", 1950.0),
    Payer("Blue Cross Blue Shield", "Michigan Plaza", "Chicago", "IL", "60007", "1-800-555-0104", 1790.0),
    Payer("Cigna Health", "900 Cottage Grove Rd", "Bloomfield", "CT", "06002", "1-800-555-0105", 2050.0),
    Payer("Humana", "500 West Main St", "Louisville", "KY", "40018", "1-800-555-0106", 1670.0),
    Payer("UnitedHealthcare", "9800 Healthcare Lane", "Minnetonka", "MN", "55436", "1-800-555-0107", 1850.0),
    Payer("Anthem", "220 Virginia Ave", "Indianapolis", "IN", "46204", "1-800-555-0108", 2180.0),
    Payer("NO_INSURANCE", None, None, None, None, None, 0.0),
)


class Claims(NamedTuple):
    """Billed rows of one table: the payer index of each row, its total cost and the payer's share."""

    payer: np.ndarray
    total: np.ndarray
    covered: np.ndarray


def _tally(payer: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(payer, weights=weights, minlength=len(PAYERS))


def _split(payer: np.ndarray, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(covered, uncovered) row counts per payer."""
    return _tally(payer[covered]).astype(np.int64), _tally(payer[~covered]).astype(np.int64)


def payers_frame(
    ids: pl.Series,
    payer: np.ndarray,
    covers: np.ndarray,
    age: np.ndarray,
    months_alive: np.ndarray,
    encounters: Claims,
    medications: Claims,
    procedure_patient: np.ndarray,
    immunization_patient: np.ndarray,
) -> pl.DataFrame:
    """One row per payer, in Synthea's column order.

    ``payer``, ``covers`` (the payer pays a share), ``age`` (at the last active day) and
    ``months_alive`` are per patient; procedures and immunizations are billed to the patient's payer.
    """
    customers = _tally(payer).astype(np.int64)
    medicare_months = np.maximum(months_alive - MEDICARE_AGE * 12, 0)
    months = np.minimum(np.where(payer == 0, medicare_months, months_alive), REPORTED_MONTHS)
    member_months = _tally(payer, months).astype(np.int64)
    quality = np.clip(1.0 - 0.006 * np.maximum(age - 20.0, 0.0), 0.4, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        quality_average = np.where(customers > 0, _tally(payer, quality) / customers, np.nan)
    billed = (encounters, medications)
    covered = sum(_tally(claims.payer, claims.covered) for claims in billed)
    uncovered = sum(_tally(claims.payer, claims.total - claims.covered) for claims in billed)
    covered_encounters, uncovered_encounters = _split(encounters.payer, encounters.covered > 0)
    covered_medications, uncovered_medications = _split(medications.payer, medications.covered > 0)
    covered_procedures, uncovered_procedures = _split(payer[procedure_patient], covers[procedure_patient])
    covered_immunizations, uncovered_immunizations = _split(payer[immunization_patient], covers[immunization_patient])
    premium = np.asarray([p.monthly_premium for p in PAYERS])
    return pl.DataFrame(
        {
            "Id": ids,
            "NAME": [p.name for p in PAYERS],
            "ADDRESS": pl.Series([p.address for p in PAYERS], dtype=pl.String),
            "CITY": pl.Series([p.city for p in PAYERS], dtype=pl.String),
            "STATE_HEADQUARTERED": pl.Series([p.state for p in PAYERS], dtype=pl.String),
            "ZIP": pl.Series([p.zip_code for p in PAYERS], dtype=pl.String),
            "PHONE": pl.Series([p.phone for p in PAYERS], dtype=pl.String),
            "AMOUNT_COVERED": np.round(covered, 2),
            "AMOUNT_UNCOVERED": np.round(uncovered, 2),
            "REVENUE": np.round(member_months * premium, 2),
            "COVERED_ENCOUNTERS": covered_encounters,
            "UNCOVERED_ENCOUNTERS": uncovered_encounters,
            "COVERED_MEDICATIONS": covered_medications,
            "UNCOVERED_MEDICATIONS": uncovered_medications,
            "COVERED_PROCEDURES": covered_procedures,
            "UNCOVERED_PROCEDURES": uncovered_procedures,
            "COVERED_IMMUNIZATIONS": covered_immunizations,
            "UNCOVERED_IMMUNIZATIONS": uncovered_immunizations,
            "UNIQUE_CUSTOMERS": customers,
            "QOLS_AVG": quality_average,
            "MEMBER_MONTHS": member_months,
        }
    )
