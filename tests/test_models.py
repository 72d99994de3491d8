from datetime import date, datetime

import pyarrow as pa
import pytest

from carecast import stages
from carecast.home import CarecastHome
from carecast.models.project import ModelDefinitionError, load_model
from carecast.project import Project
from carecast.runtime import Runtime
from tests import raw_tables
from tests.reference import is_valid_email


@pytest.fixture
def runtime(home: CarecastHome, project: Project) -> Runtime:
    return Runtime.open(home, project, as_of=date(2026, 11, 23))


def _consents(rows: list[tuple]) -> pa.Table:
    names = [
        "consent_id",
        "patient_id",
        "purpose",
        "channel",
        "signed_at",
        "expires_at",
        "revoked_at",
        "remuneration_disclosed",
        "document_id",
        "expiry_event",
        "expiry_event_at",
    ]
    types = [pa.string()] * 4 + [pa.timestamp("us")] * 3 + [pa.bool_(), pa.string(), pa.string(), pa.timestamp("us")]
    rows = [row if len(row) == len(names) else (*row, None, None) for row in rows]
    return pa.Table.from_pylist(
        [dict(zip(names, r, strict=True)) for r in rows], schema=pa.schema(list(zip(names, types, strict=True)))
    )


def test_latest_consent_wins_even_when_its_expiry_is_null(runtime: Runtime) -> None:
    # arg_max would skip the newest row (NULL expiry) and keep the expired older one
    runtime.lake.write(
        "raw_consents_consents",
        _consents(
            [
                ("c1", "p1", "Marketing", "email", datetime(2024, 1, 1), datetime(2025, 1, 1), None, True, "DOC-1"),
                ("c2", "p1", "marketing", "EMAIL", datetime(2025, 6, 1), None, None, True, "DOC-2"),
                ("c3", "p2", "marketing", "email", datetime(2025, 6, 1), None, datetime(2025, 7, 1), False, "DOC-3"),
            ]
        ),
    )
    stages.run_model(runtime, "stg_consents")
    result = stages.run_model(runtime, "mart_consent_latest")
    latest = runtime.lake.read("mart_consent_latest").table.sort_by("patient_id").to_pylist()
    assert [(r["patient_id"], r["consent_id"], r["expires_at"]) for r in latest] == [
        ("p1", "c2", None),
        ("p2", "c3", None),
    ]
    assert all(t.passed for t in result.tests)
    assert result.metadata["columns_read"] == {
        "stg_consents": [
            "channel",
            "consent_id",
            "document_id",
            "expires_at",
            "expiry_event",
            "expiry_event_at",
            "is_remuneration_disclosed",
            "patient_id",
            "purpose",
            "revoked_at",
            "signed_at",
        ]
    }


def test_model_tests_report_failing_rows_without_values(runtime: Runtime) -> None:
    runtime.lake.write(
        "raw_consents_consents",
        _consents(
            [
                ("c1", "p1", "telepathy", "email", datetime(2024, 1, 1), None, None, True, "DOC-1"),
            ]
        ),
    )
    result = stages.run_model(runtime, "stg_consents")
    failed = {t.name: t.failing_rows for t in result.tests if not t.passed}
    assert failed == {"purpose__accepted_values": 1}
    assert "telepathy" not in repr(result.metadata)


def test_a_model_without_yaml_is_refused(tmp_path) -> None:
    (tmp_path / "staging").mkdir()
    sql = tmp_path / "staging" / "stg_orphans.sql"
    sql.write_text("select 1 as x")
    with pytest.raises(ModelDefinitionError, match="no stg_orphans.yml"):
        load_model(sql)


ADDRESSES = {
    "ann.lee.12@example.org": True,
    "o'brien+news@mail.test": True,
    "user@.example.org": False,  # empty first label: an SMTP server refuses it (553)
    "a@@b.test": False,
    "a b@mail.test": False,
    "dot.@example.org": False,
    "a@example.org.": False,
    "a@localhost": False,
    "": False,
}


def test_email_validity_agrees_with_email_validator(runtime: Runtime) -> None:
    ids = [f"p{i}" for i in range(len(ADDRESSES))]
    runtime.lake.write("raw_synthea_patients", raw_tables.patients(dict.fromkeys(ids, date(1970, 1, 1))))
    contacts = raw_tables.contacts(ids)
    runtime.lake.write("raw_crm_contacts", contacts.set_column(1, "email", pa.array(list(ADDRESSES))))
    runtime.lake.write("raw_synthea_encounters", raw_tables.encounters([]))
    runtime.lake.write("raw_synthea_payers", raw_tables.payers())
    for model in (
        "stg_patients",
        "stg_contacts",
        "stg_encounters",
        "stg_payers",
        "int_patient_visits",
        "mart_patient_profile",
    ):
        stages.run_model(runtime, model)
    profile = runtime.lake.read("mart_patient_profile", ["patient_id", "has_valid_email"]).table.to_pylist()
    judged = {row["patient_id"]: row["has_valid_email"] for row in profile}

    for patient_id, (address, expected) in zip(ids, ADDRESSES.items(), strict=True):
        assert judged[patient_id] is expected, address
        assert is_valid_email(address) is expected, address
