"""Segments that break the purpose policy or the confinement are refused when the project loads,
before any data is read (these projects have no data home at all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecast.models.project import ModelDefinitionError
from carecast.project import load_project
from carecast.sql.confine import SqlConfinementError
from tests.project_copy import copy_project


def _header(name: str, purposes: str, extra: str = "") -> str:
    return f"-- name: {name}\n-- owner: tests\n-- description: a test segment\n-- purposes: {purposes}\n{extra}"


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def _refused(project_dir: Path, name: str, text: str) -> str:
    (project_dir / "segments" / f"{name}.sql").write_text(text)
    with pytest.raises(ModelDefinitionError) as refused:
        load_project(project_dir)
    return str(refused.value)


def test_fundraising_may_not_read_clinical_columns(project_dir: Path) -> None:
    # 45 CFR 164.514(f): fundraising may use demographics and dates of service, not diagnoses
    message = _refused(
        project_dir,
        "donors_with_asthma",
        _header("donors_with_asthma", "fundraising")
        + "select patient_id from {{ ref('mart_clinical_facts') }} where code = '195967001'\n",
    )
    assert "purpose 'fundraising' may not use clinical columns" in message
    assert "mart_clinical_facts.code" in message


def test_marketing_may_not_name_a_sensitive_code(project_dir: Path) -> None:
    text = _header("hiv_outreach", "marketing") + (
        "select patient_id\nfrom {{ ref('mart_clinical_facts') }}\nwhere fact_type = 'condition'\n"
        "    and code in ('44054006', '86406008')\n"
    )
    message = _refused(project_dir, "hiv_outreach", text)
    assert message.startswith(f"{project_dir / 'segments' / 'hiv_outreach.sql'}:8:")
    assert "'hiv'" in message and "['marketing']" in message


def test_a_like_pattern_that_reaches_a_sensitive_code_is_refused(project_dir: Path) -> None:
    text = _header("stress", "marketing") + (
        "select patient_id from {{ ref('mart_clinical_facts') }} where code like '7359%'\n"
    )
    assert "mental_health" in _refused(project_dir, "stress", text)


def test_naming_the_category_itself_is_refused(project_dir: Path) -> None:
    text = _header("by_category", "fundraising, marketing") + (
        "select patient_id from {{ ref('mart_behavior') }}\nwhere 'substance_use' = 'substance_use'\n"
    )
    assert "'substance_use'" in _refused(project_dir, "by_category", text)


def test_marketing_reads_clinical_facts_only_where_rows_are_tagged(project_dir: Path) -> None:
    # stg_conditions has no sensitive_category: its HIV rows could not be withheld
    text = _header("prediabetes_raw", "marketing") + (
        "select distinct patient_id from {{ ref('stg_conditions') }} where condition_code = '15777000'\n"
    )
    message = _refused(project_dir, "prediabetes_raw", text)
    assert "stg_conditions" in message and "sensitive_category" in message


def test_treatment_may_use_sensitive_codes(project_dir: Path) -> None:
    # HIV care reminders are treatment: allowed by purposes.yaml, and the project loads
    (project_dir / "segments" / "hiv_care.sql").write_text(
        _header("hiv_care", "treatment")
        + "select distinct patient_id from {{ ref('mart_clinical_facts') }} where code = '86406008'\n"
    )
    project = load_project(project_dir)
    assert project.policy.withheld_categories(("treatment",)) == frozenset()
    assert project.policy.withheld_categories(("treatment", "marketing")) == project.policy.categories


def test_an_included_segment_must_allow_the_same_purposes(project_dir: Path) -> None:
    text = _header("lapsed_and_due", "marketing") + (
        "select patient_id from {{ segment('lapsed_engagement') }}\n"
        "intersect\nselect patient_id from {{ segment('colorectal_screening_due') }}\n"
    )
    message = _refused(project_dir, "lapsed_and_due", text)
    assert "'colorectal_screening_due'" in message and "['marketing']" in message


def test_segments_may_not_include_each_other_in_a_cycle(project_dir: Path) -> None:
    (project_dir / "segments" / "a.sql").write_text(
        _header("a", "treatment") + "select patient_id from {{ segment('b') }}\n"
    )
    message = _refused(project_dir, "b", _header("b", "treatment") + "select patient_id from {{ segment('a') }}\n")
    assert "cycle" in message


@pytest.mark.parametrize(
    ("body", "line", "construct"),
    [
        # a file reader in FROM would read anything the process can
        ("select *\nfrom read_csv('/etc/passwd')", 6, "read_csv"),
        # a second statement after the SELECT
        ("select patient_id from {{ ref('mart_behavior') }};\ndrop table mart_behavior", 6, "second statement"),
        # tables are declared models and segments only
        ("select patient_id from duckdb_settings()", 5, "duckdb_settings"),
    ],
)
def test_forbidden_constructs_are_refused_with_file_and_line(
    project_dir: Path, body: str, line: int, construct: str
) -> None:
    (project_dir / "segments" / "sneaky.sql").write_text(_header("sneaky", "operations") + body + "\n")
    with pytest.raises(SqlConfinementError) as refused:
        load_project(project_dir)
    message = str(refused.value)
    assert message.startswith(f"{project_dir / 'segments' / 'sneaky.sql'}:{line}: ")
    assert construct in message and "/etc/passwd" not in message


def test_declared_extra_columns_must_be_what_the_segment_returns(project_dir: Path) -> None:
    message = _refused(
        project_dir,
        "with_extra",
        _header("with_extra", "operations", "-- columns: age years\n")
        + "select patient_id, age from {{ ref('mart_patient_profile') }}\n",
    )
    assert "'name (class)'" in message


def test_an_extra_column_keeps_the_class_it_is_computed_from(project_dir: Path) -> None:
    # a clinical value declared demographic would be stored under the wrong key and reach templates as such
    message = _refused(
        project_dir,
        "relabelled",
        _header("relabelled", "treatment", "-- columns: hba1c (demographic)\n")
        + "select patient_id, value_number as hba1c from {{ ref('mart_latest_labs') }} where lab_code = '4548-4'\n",
    )
    assert "'hba1c' is declared demographic" in message and "mart_latest_labs.value_number" in message
