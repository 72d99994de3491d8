"""Great Expectations suites of the models: each kind passes and fails on tiny tables, no value of the
data leaves a validation, a critical failure blocks the assets downstream in a real Dagster run while a
warning does not, GX stays quiet and off disk and network, and loading the definitions never imports it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from assets.models import model_assets
from carecast import stages
from carecast.home import CarecastHome
from carecast.lake import Lake
from carecast.models import expectations
from carecast.models.expectations import ExpectationConfigError, ExpectationResult, run_expectations, validate
from carecast.models.project import Expectation, ModelDefinitionError, load_model
from carecast.project import Project
from carecast.runtime import Runtime
from pipelines.resources import CarecastResource
from tests import raw_tables

CANARY = "canary.patient@example.org"
AS_OF = date(2026, 11, 23)
PARENTS = {("stg_patients", "patient_id"): pa.array(["p1", "p2"])}

_expectations = TypeAdapter(list[Expectation]).validate_python


def _one(declared: dict) -> list[Expectation]:
    return _expectations([{"column": "x", "severity": "warning", **declared}])


def _no_canary(results: list[ExpectationResult]) -> None:
    text = repr(results) + json.dumps([dataclasses.asdict(r) for r in results]) + repr([r.counts() for r in results])
    assert "canary" not in text.lower()
    assert "2999" not in text


# (declared expectation, values that pass, values that fail, failing rows among the non-NULL values)
CASES = {
    "not_null": ({"expect": "not_null"}, ["p1", CANARY], [CANARY, None, None], 2),
    "unique": ({"expect": "unique"}, [CANARY, "p2", None, None], [CANARY, "p2", CANARY], 2),
    "type_string": ({"expect": "type", "type": "string"}, [CANARY, None], [1.5, None], None),
    "type_timestamp": (
        {"expect": "type", "type": "timestamp"},
        pa.array([datetime(2020, 1, 1), None], pa.timestamp("us")),
        [CANARY, "2020-01-01"],
        None,
    ),
    "type_date": ({"expect": "type", "type": "date"}, [date(2020, 1, 1)], [CANARY], None),
    "type_boolean_with_nulls": ({"expect": "type", "type": "boolean"}, [True, None, False], [CANARY, None], None),
    "type_double": ({"expect": "type", "type": "double"}, [1.5, None], [CANARY], None),
    "between_dates": (
        {"expect": "between", "min": date(1900, 1, 1), "max": "as_of"},
        [date(1900, 1, 1), AS_OF, None],
        [date(1899, 12, 31), AS_OF, date(2026, 11, 24), date(2999, 12, 31), None],
        3,
    ),
    "between_timestamps_inclusive_by_day": (
        {"expect": "between", "max": "as_of"},
        pa.array([datetime(2026, 11, 23, 23, 59, 59), None], pa.timestamp("us")),
        pa.array([datetime(2026, 11, 24), datetime(2999, 12, 31), datetime(2020, 1, 1)], pa.timestamp("us")),
        2,
    ),
    "between_relative": (
        {"expect": "between", "min": "as_of-7d", "max": "as_of+1d"},
        [date(2026, 11, 16), date(2026, 11, 24)],
        [date(2026, 11, 15), date(2026, 11, 25)],
        2,
    ),
    "regex": ({"expect": "regex", "pattern": "^[0-9]{1,7}-[0-9]$"}, ["8302-2", None], ["8302-2", CANARY, "x8302-2"], 2),
    "accepted_values": ({"expect": "accepted_values", "values": ["F", "M"]}, ["F", "M", None], ["F", CANARY], 1),
    "email": (
        {"expect": "email"},
        [CANARY, "ann.lee@example.org", None],
        ["canary.patient@@example.org", "canary patient@example.org", CANARY, "canary.patient@localhost"],
        3,
    ),
    "email_test_domains": (
        {"expect": "email", "allow_test_domains": True},
        ["canary.patient@mail.test", None],
        ["canary.patient@.test", CANARY],
        1,
    ),
    "relationship": (
        {"expect": "relationship", "to": "stg_patients", "field": "patient_id"},
        ["p1", "p2", "p1", None],
        ["p1", CANARY, CANARY, None],
        2,
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_kind_passes_and_fails_with_counts_and_no_values(case: str) -> None:
    declared, passing, failing, failing_rows = CASES[case]
    expectations = _one(declared)
    [passed] = validate(pa.table({"x": passing}), "stg_test", expectations, AS_OF, PARENTS)
    [failed] = validate(pa.table({"x": failing}), "stg_test", expectations, AS_OF, PARENTS)
    assert passed.success, passed
    assert not failed.success, failed
    assert failed.name == f"gx_{declared['expect']}_x" and failed.column == "x" and failed.severity == "warning"
    assert failed.expectation.startswith("expect_column_values_to_")
    if failing_rows is not None:
        assert failed.unexpected_count == failing_rows
        assert failed.element_count == len(failing)
        # of the non-NULL values, except for not_null (of all values)
        among = len(failing) if declared["expect"] == "not_null" else sum(v is not None for v in failing)
        assert failed.unexpected_percent == pytest.approx(100 * failing_rows / among)
    _no_canary([passed, failed])


def test_results_keep_only_the_name_the_column_the_severity_and_counts() -> None:
    assert [f.name for f in dataclasses.fields(ExpectationResult)] == [
        "name",
        "expectation",
        "column",
        "severity",
        "success",
        "element_count",
        "unexpected_count",
        "unexpected_percent",
    ]


def test_a_whole_suite_answers_in_declaration_order_whatever_order_gx_uses() -> None:
    expectations = _expectations(
        [
            {"expect": "relationship", "column": "patient_id", "to": "stg_patients", "field": "patient_id"}
            | {"severity": "critical"},
            {"expect": "type", "column": "email", "type": "string", "severity": "critical"},
            {"expect": "email", "column": "email", "severity": "warning"},
            {"expect": "not_null", "column": "patient_id", "severity": "critical"},
            {"expect": "unique", "column": "email", "severity": "warning", "name": "email_once"},
        ]
    )
    table = pa.table({"patient_id": ["p1", "p9", None], "email": [CANARY, CANARY, "not-an-address"]})
    results = validate(table, "stg_contacts", expectations, AS_OF, PARENTS)
    assert [(r.name, r.success, r.unexpected_count) for r in results] == [
        ("gx_relationship_patient_id", False, 1),
        ("gx_type_email", True, None),
        ("gx_email_email", False, 1),
        ("gx_not_null_patient_id", False, 1),
        ("email_once", False, 2),
    ]
    _no_canary(results)


def test_a_relationship_whose_parent_is_not_in_the_lake_fails_without_counts(lake: Lake, project: Project) -> None:
    expectations = _one({"expect": "relationship", "to": "stg_patients", "field": "patient_id"})
    spec = project.models["stg_contacts"].spec.model_copy(
        update={"expectations": [e.model_copy(update={"column": "patient_id"}) for e in expectations]}
    )
    [result] = run_expectations(pa.table({"patient_id": ["p1"]}), spec, lake, AS_OF)
    assert not result.success and result.counts() == {}


def test_a_relationship_reads_the_parent_from_the_lake(lake: Lake, project: Project) -> None:
    lake.write("stg_patients", pa.table({"patient_id": ["p1", "p2"]}))
    spec = project.models["stg_contacts"].spec
    table = raw_tables.contacts(["p1", "p3"]).rename_columns(
        ["patient_id", "email", "preferred_language", "is_email_opted_in", "updated_at"]
    )
    results = {r.name: r for r in run_expectations(table, spec, lake, AS_OF)}
    assert results["gx_relationship_patient_id"].unexpected_count == 1
    assert results["gx_email_email"].success and results["gx_unique_patient_id"].success


def test_between_on_a_text_column_is_a_configuration_error() -> None:
    with pytest.raises(ExpectationConfigError, match="stg_test: expectation gx_between_x: between needs a date"):
        validate(pa.table({"x": [CANARY]}), "stg_test", _one({"expect": "between", "max": "as_of"}), AS_OF)


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ("{expect: nullable, column: a, severity: warning}", "does not match any of the expected tags"),
        ("{expect: not_null, column: b, severity: warning}", "column 'b' is not declared under columns"),
        ("{expect: not_null, column: a, severity: fatal}", "severity"),
        ("{expect: regex, column: a, pattern: '[0-9]+', severity: warning}", "must be anchored"),
        ("{expect: between, column: a, severity: warning}", "between needs min, max or both"),
        ("{expect: between, column: a, max: tomorrow, severity: warning}", "neither a date"),
        ("{expect: type, column: a, type: varchar, severity: warning}", "type"),
        ("{expect: unique, column: a, severity: warning, colour: red}", "Extra inputs are not permitted"),
        ("{expect: relationship, column: a, to: stg_nowhere, field: a, severity: warning}", "unknown model"),
    ],
)
def test_a_bad_expectation_is_refused_naming_the_file(tmp_path: Path, expectation: str, message: str) -> None:
    (tmp_path / "staging").mkdir()
    sql = tmp_path / "staging" / "stg_things.sql"
    sql.write_text("select 1 as a")
    sql.with_suffix(".yml").write_text(
        f"model: stg_things\ngrain: One row per thing.\ncolumns:\n  a: {{class: operational}}\n"
        f"expectations:\n  - {expectation}\n"
    )
    from carecast.models.project import discover_models

    with pytest.raises(ModelDefinitionError, match="stg_things.yml") as raised:
        discover_models(tmp_path)
    assert message in str(raised.value)


def test_two_expectations_with_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()
    sql = tmp_path / "staging" / "stg_things.sql"
    sql.write_text("select 1 as a")
    sql.with_suffix(".yml").write_text(
        "model: stg_things\ngrain: One row per thing.\ncolumns:\n  a: {class: operational}\nexpectations:\n"
        "  - {expect: not_null, column: a, severity: warning}\n  - {expect: not_null, column: a, severity: critical}\n"
    )
    with pytest.raises(ModelDefinitionError, match="two expectations are named 'gx_not_null_a'"):
        load_model(sql)


def test_every_staged_table_has_a_suite_with_critical_and_warning_checks(project: Project) -> None:
    staged = [model for model in project.models.values() if model.layer == "staging"]
    assert staged
    for model in staged:
        severities = {e.severity for e in model.spec.expectations}
        assert "critical" in severities, model.name
        kinds = {e.expect for e in model.spec.expectations}
        assert {"not_null"} <= kinds, model.name
    assert "stg_patients" in project.models["stg_contacts"].upstream


# --- Dagster: a critical failure blocks downstream assets; a warning does not -------------------------


def _only_the_suite(project: Project, name: str) -> Project:
    """The project with this model's YAML tests removed, so only its GX suite can block."""
    model = project.models[name]
    columns = {c: spec.model_copy(update={"tests": []}) for c, spec in model.spec.columns.items()}
    model = dataclasses.replace(model, spec=model.spec.model_copy(update={"columns": columns}))
    return dataclasses.replace(project, models={**project.models, name: model})


def _materialize_contacts(home: CarecastHome, project: Project, emails: list[str | None], ids: list[str]):
    runtime = Runtime.open(home, project, as_of=AS_OF)
    runtime.lake.write("raw_synthea_patients", raw_tables.patients(dict.fromkeys(["p1", "p2"], date(1970, 1, 1))))
    stages.run_model(runtime, "stg_patients")
    contacts = raw_tables.contacts(ids)
    runtime.lake.write("raw_crm_contacts", contacts.set_column(1, "email", pa.array(emails, pa.string())))

    project = _only_the_suite(project, "stg_contacts")
    [stg_contacts] = [a for a in model_assets(project) if a.key == dg.AssetKey("stg_contacts")]

    @dg.asset(deps=[stg_contacts.key])
    def campaign_audience() -> None:
        return None

    result = dg.materialize(
        [stg_contacts, campaign_audience],
        resources={"carecast": CarecastResource(home=str(home.root), as_of=AS_OF.isoformat())},
        raise_on_error=False,
    )
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    logs = repr(result.all_events) + repr(list(result.dagster_run.tags.items()))
    return result, materialized, checks, logs


def test_a_critical_failure_blocks_downstream_assets(home: CarecastHome, project: Project) -> None:
    result, materialized, checks, logs = _materialize_contacts(home, project, emails=[CANARY, CANARY], ids=["p1", "p1"])
    assert not result.success
    assert materialized == {"stg_contacts"}, "written, checked, and nothing downstream ran"
    assert not checks["gx_unique_patient_id"].passed
    assert checks["gx_unique_patient_id"].severity == dg.AssetCheckSeverity.ERROR
    assert {k: v.value for k, v in checks["gx_unique_patient_id"].metadata.items()} == {
        "element_count": 2,
        "unexpected_count": 2,
        "unexpected_percent": 100.0,
    }
    started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert started == {"stg_contacts"}, "the downstream step never starts"
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "blocking asset check failed" in failure.event_specific_data.error.message
    assert "canary" not in logs.lower()


def test_a_warning_failure_does_not_block(home: CarecastHome, project: Project) -> None:
    result, materialized, checks, logs = _materialize_contacts(
        home, project, emails=["canary.patient@@example.org", "ann@example.org"], ids=["p1", "p2"]
    )
    assert result.success
    assert materialized == {"stg_contacts", "campaign_audience"}
    email = checks["gx_email_email"]
    assert not email.passed and email.severity == dg.AssetCheckSeverity.WARN
    assert email.metadata["unexpected_count"].value == 1
    assert all(check.passed for name, check in checks.items() if name != "gx_email_email")
    assert "canary" not in logs.lower()


def test_check_specs_block_only_for_critical_expectations(project: Project) -> None:
    [stg_contacts] = [a for a in model_assets(project) if a.key == dg.AssetKey("stg_contacts")]
    specs = {spec.name: spec for spec in stg_contacts.check_specs}
    for expectation in project.models["stg_contacts"].spec.expectations:
        assert specs[expectation.check_name].blocking is (expectation.severity == "critical")
    assert specs["patient_id__unique"].blocking, "the YAML tests stay blocking"


# --- GX stays in its box -------------------------------------------------------------------------------

_QUIET_PROBE = """
import socket, sys
from datetime import date

def refuse(*args, **kwargs):
    raise OSError("network use during validation")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import pyarrow as pa
from pydantic import TypeAdapter
from carecast.models.expectations import validate
from carecast.models.project import Expectation

declared = TypeAdapter(list[Expectation]).validate_python([
    {"expect": "not_null", "column": "x", "severity": "critical"},
    {"expect": "regex", "column": "x", "pattern": "^[a-z]+$", "severity": "warning"},
    {"expect": "email", "column": "x", "severity": "warning"},
])
table = pa.table({"x": ["abc", None, "canary.patient@example.org"]})
results = validate(table, "stg_probe", declared, date(2026, 1, 1))
print([(r.name, r.success) for r in results])
print("gx" if "great_expectations" in sys.modules else "no gx")
"""


def test_validation_writes_nothing_uses_no_network_and_draws_no_progress_bars(tmp_path: Path) -> None:
    environment = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", _QUIET_PROBE],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines() == [
        "[('gx_not_null_x', False), ('gx_regex_x', False), ('gx_email_x', False)]",
        "gx",
    ]
    assert completed.stderr == "", "no progress bar, warning or log line"
    assert list(tmp_path.iterdir()) == [], "no gx/ folder, no ~/.great_expectations, no data docs"


def test_loading_the_definitions_does_not_import_great_expectations(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom pipelines.definitions import defs\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'great_expectations'))"
    )
    environment = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", probe], env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_an_expectation_gx_cannot_evaluate_fails_without_counts_and_logs_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    from carecast.models import expectations

    def explode(value, allow_test_domains):
        raise ValueError(f"cannot judge {value}")  # what a library error message may well do

    monkeypatch.setattr(expectations, "_valid_email", explode)
    declared = _expectations(
        [
            {"expect": "email", "column": "x", "severity": "warning"},
            {"expect": "not_null", "column": "x", "severity": "critical"},
        ]
    )
    with caplog.at_level("DEBUG"):
        email, not_null = validate(pa.table({"x": [CANARY]}), "stg_test", declared, AS_OF)
    assert not email.success and email.counts() == {}
    assert not_null.success and not_null.unexpected_count == 0
    captured = capfd.readouterr()
    assert "canary" not in (caplog.text + captured.out + captured.err).lower()
    _no_canary([email, not_null])


_DOT_ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}){0,3}"
_DOMAIN = "([A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?\\.){1,4}[A-Za-z]{2,12}"


@settings(max_examples=300, deadline=None)
@given(address=st.from_regex(f"{_DOT_ATOM}@{_DOMAIN}", fullmatch=True).filter(expectations._PLAINLY_VALID.fullmatch))
def test_every_address_the_fast_rule_trusts_is_one_email_validator_accepts(address: str) -> None:
    # the shortcut in judge_emails is only sound if the strict rule is a subset of email-validator's
    assert expectations._valid_email(address, allow_test_domains=True)


def test_a_sample_that_disagrees_sends_every_address_to_email_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def strict(value: object, allow_test_domains: bool) -> bool:
        calls.append(str(value))
        return str(value).startswith("ok")

    monkeypatch.setattr(expectations, "_valid_email", strict)
    values = [f"ok{i}@example.org" for i in range(50)] + ["no@example.org"]
    judged = expectations.judge_emails(values, allow_test_domains=True)
    assert judged["no@example.org"] is False and all(judged[v] for v in values[:50])
    assert set(calls) == set(values)
