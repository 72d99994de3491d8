"""The tests a model's YAML declares (not_null, unique, accepted_values, relationships), run over its output.

Results carry counts of failing rows, never the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from carecast.lake import Lake
from carecast.models.project import ModelSpec


@dataclass(frozen=True)
class ModelTestResult:
    name: str
    column: str
    test: str
    failing_rows: int

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0


def declared_tests(spec: ModelSpec) -> list[tuple[str, str, dict[str, Any]]]:
    """(check name, column, test with arguments) for every test in the spec, in file order."""
    found = []
    for column, column_spec in spec.columns.items():
        for test in column_spec.tests:
            test_name, arguments = (test, {}) if isinstance(test, str) else next(iter(test.items()))
            found.append((f"{column}__{test_name}", column, {"test": test_name, **arguments}))
    return found


def run_model_tests(table: pa.Table, spec: ModelSpec, lake: Lake) -> list[ModelTestResult]:
    results = []
    for name, column, test in declared_tests(spec):
        values = table.column(column)
        match test["test"]:
            case "not_null":
                failing = values.null_count
            case "unique":
                failing = len(values) - values.null_count - len(pc.unique(values.drop_null()))
            case "accepted_values":
                accepted = pa.array(test["values"], type=values.type)
                failing = len(values) - values.null_count - (pc.sum(pc.is_in(values, accepted)).as_py() or 0)
            case "relationships":
                parents = lake.read(test["to"], [test["field"]]).table.column(test["field"])
                present = pc.is_in(values, parents)
                failing = len(values) - values.null_count - (pc.sum(present).as_py() or 0)
            case other:
                raise ValueError(f"{spec.model}: unknown test {other!r} on {column}")
        results.append(ModelTestResult(name=name, column=column, test=test["test"], failing_rows=int(failing or 0)))
    return results
