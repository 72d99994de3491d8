"""Segment unit tests: YAML fixtures next to the SQL (given rows per model -> expected patient ids).

``segments/<name>.test.yml``::

    as_of: 2026-06-01
    cases:
      - name: a woman of 60 never screened is due
        given:
          mart_patient_profile:
            - {patient_id: p1, sex: F, age: 60}
        expect: [p1]

Models a case does not give are empty; seeds not given are the real CSV; columns not given are NULL.
Included segments are computed from the same given rows (or taken from ``given`` under their dataset
name, ``segment_<name>``). The segment runs exactly as in production: confined DuckDB, sensitive
rows withheld for its purposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carecast.models.project import ModelDefinitionError
from carecast.models.runner import withhold_sensitive
from carecast.project import Project
from carecast.segments import Segment, check_segment_output
from carecast.sql.engine import run_query


class FixtureCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    given: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    expect: list[str]


class FixtureFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: date
    cases: list[FixtureCase] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    segment: str
    case: str
    expected: tuple[str, ...]
    got: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.expected == self.got


def fixture_path(segment: Segment) -> Path:
    return segment.path.with_name(f"{segment.name}.test.yml")


def load_fixtures(segment: Segment) -> FixtureFile:
    path = fixture_path(segment)
    if not path.exists():
        raise ModelDefinitionError(f"{segment.path}: no fixture test ({path.name}) next to it")
    try:
        return FixtureFile.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as error:
        raise ModelDefinitionError(f"{path}: {error}") from None


def run_segment_fixtures(project: Project, name: str) -> list[CaseResult]:
    segment = project.segments[name]
    fixtures = load_fixtures(segment)
    results = []
    for case in fixtures.cases:
        tables = _given_tables(project, segment, case)
        members = _compute(project, segment, tables, fixtures.as_of, computed={})
        got = tuple(sorted(members.column("patient_id").to_pylist()))
        results.append(CaseResult(segment=name, case=case.name, expected=tuple(sorted(case.expect)), got=got))
    return results


def _given_tables(project: Project, segment: Segment, case: FixtureCase) -> dict[str, pa.Table]:
    where = f"{fixture_path(segment)}: case {case.name!r}"
    tables = {}
    for dataset, rows in case.given.items():
        declared = list(project.registry.declared(dataset))
        if not declared:
            raise ModelDefinitionError(f"{where}: gives rows for {dataset!r}, which is no model, seed or segment")
        unknown = sorted({column for row in rows for column in row} - set(declared))
        if unknown:
            raise ModelDefinitionError(f"{where}: {dataset} has no column(s) {unknown}")
        tables[dataset] = _table(rows, declared)
    return tables


def _table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    """Each column from the values the rows give it (a row may leave any out), NULL where none do."""
    given = {column for row in rows for column in row}
    return pa.table({c: pa.array([row.get(c) for row in rows]) if c in given else pa.nulls(len(rows)) for c in columns})


def _compute(
    project: Project, segment: Segment, given: dict[str, pa.Table], as_of: date, computed: dict[str, pa.Table]
) -> pa.Table:
    withheld = project.policy.withheld_categories(segment.header.purposes)
    tables = {}
    for dataset in segment.refs:
        if dataset in given:
            table = given[dataset]
        elif dataset in project.seeds:
            table = project.seeds[dataset].read()
        else:
            table = _table([], list(project.registry.declared(dataset)))
        tables[dataset], _removed = withhold_sensitive(table, withheld)
    for name in segment.includes:
        included = project.segments[name]
        if included.dataset in given:
            computed[name] = given[included.dataset]
        elif name not in computed:
            computed[name] = _compute(project, included, given, as_of, computed)
        tables[included.dataset] = computed[name]
    return check_segment_output(segment, run_query(segment.render(as_of), tables))
