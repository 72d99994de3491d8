"""Raw landed tables built by hand, for tests that write a tiny lake and run the real models on it."""

from datetime import date, datetime

import pyarrow as pa

PAYERS = {
    "pay-medicare": "Medicare",
    "pay-medicaid": "Medicaid",
    "pay-dual": "Dual Eligible",
    "pay-aetna": "Aetna",
    "pay-humana": "Humana",
    "pay-none": "NO_INSURANCE",
}


def patients(births: dict[str, date]) -> pa.Table:
    ids = list(births)
    return pa.table(
        {
            "Id": ids,
            "BIRTHDATE": pa.array(list(births.values())),
            "DEATHDATE": pa.array([None] * len(ids), pa.date32()),
            "FIRST": ids,
            "LAST": ids,
            "GENDER": ["F"] * len(ids),
            "RACE": ["white"] * len(ids),
            "ETHNICITY": ["nonhispanic"] * len(ids),
            "STATE": ["Massachusetts"] * len(ids),
            "ZIP": ["02155"] * len(ids),
        }
    )


def contacts(ids: list[str]) -> pa.Table:
    return pa.table(
        {
            "patient_id": ids,
            "email": [f"{i}@example.org" for i in ids],
            "preferred_language": ["en"] * len(ids),
            "email_opt_in": [True] * len(ids),
            "updated_at": pa.array([None] * len(ids), pa.timestamp("us")),
        }
    )


def encounters(rows: list[tuple[str, str, datetime, str | None]]) -> pa.Table:
    """(encounter id, patient, start, payer) per row."""
    return pa.table(
        {
            "Id": pa.array([r[0] for r in rows], pa.string()),
            "START": pa.array([r[2] for r in rows], pa.timestamp("us")),
            "STOP": pa.array([r[2] for r in rows], pa.timestamp("us")),
            "PATIENT": pa.array([r[1] for r in rows], pa.string()),
            "PAYER": pa.array([r[3] for r in rows], pa.string()),
            "ENCOUNTERCLASS": pa.array(["ambulatory"] * len(rows), pa.string()),
            "CODE": pa.array(["185349003"] * len(rows), pa.string()),
            "DESCRIPTION": pa.array(["Encounter for check up (procedure)"] * len(rows), pa.string()),
            "REASONCODE": pa.array([None] * len(rows), pa.string()),
        }
    )


def payers() -> pa.Table:
    return pa.table({"Id": list(PAYERS), "NAME": list(PAYERS.values())})


def landed(project, source: str, table: str, rows: list[dict[str, str]]) -> pa.Table:
    """A raw table as ingest would store it: CSV-like text rows cast by the same validation code.

    Every declared column is present (text NULL where the rows give none); any row that would be
    quarantined fails the test that built it.
    """
    import polars as pl

    from carecast.ingest.validate import validate

    spec = project.registry.table_spec(source, table)
    frame = pl.DataFrame(
        {c: [row.get(c) for row in rows] for c in spec.columns}, schema=dict.fromkeys(spec.columns, pl.String)
    )
    validated = validate(frame, spec)
    assert validated.quarantined.height == 0, validated.reasons
    return validated.loaded.to_arrow()
