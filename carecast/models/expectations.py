"""A model's Great Expectations suite: built from the ``expectations:`` its YAML declares, run over its output.

GX Core (1.x) is imported lazily, on the first validation: it takes seconds to import, and loading the
code location must not pay for it. It runs in an ephemeral context (in-memory stores, no data docs, no
``gx/`` folder, analytics off, progress bars off) over a pandas frame of the columns the suite needs.

GX results carry failing values (``partial_unexpected_list``, ``partial_unexpected_counts``, index
lists, ``observed_value`` of aggregate expectations, exception messages). Validation asks for the least
GX can give (``BASIC`` with no partial values), and in any case only the fields of
:class:`ExpectationResult` (counts and percentages) leave this module; the GX result object does not.

Two kinds are not plain GX expectations over the model's columns:

- ``email``: a custom column map expectation, ``ExpectColumnValuesToBeValidEmail``, whose metric runs
  ``email_validator.validate_email(..., check_deliverability=False)`` once per distinct value.
- ``relationship``: ``ExpectColumnValuesToBeInSet(value_set=[True])`` over a membership column computed
  here with Arrow (is the value among the parent's). Passing the parent's values as the value set
  is quadratic in GX 1.24: every metric it resolves rebuilds the expectation's configuration
  (pydantic ``.dict()`` of the whole list, ~80 times per expectation), 28 s for 100k parents.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from carecast.lake import DatasetNotFoundError, Lake
from carecast.models.project import (
    AcceptedValuesExpectation,
    BetweenExpectation,
    EmailExpectation,
    Expectation,
    ModelSpec,
    NotNullExpectation,
    RegexExpectation,
    RelationshipExpectation,
    TypeExpectation,
    UniqueExpectation,
    resolve_date_bound,
)

if TYPE_CHECKING:
    import pandas as pd

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",  # SUMMARY adds partial_unexpected_counts and index lists; BASIC still lists values
    "partial_unexpected_count": 0,  # GX then fetches no unexpected values at all
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}

PANDAS_TYPES = {
    "string": "str",
    "boolean": "bool",
    "double": "float64",
    # pandas has one datetime type: dates and timestamps are both datetime64 once converted
    "date": "datetime64",
    "timestamp": "datetime64",
}

_CHECK = "carecast_check"
"""The key in each GX expectation's ``meta`` naming its check: GX returns results in its own order."""

_LOCK = threading.Lock()
"""``gx.get_context`` sets a process-wide current context: one validation at a time per process."""


@dataclass(frozen=True)
class ExpectationResult:
    """What leaves a validation: which check, and counts. Never a value of the data."""

    name: str
    """The asset check's name (``gx_<expect>_<column>`` unless the YAML names it)."""
    expectation: str
    """The GX expectation type, e.g. ``expect_column_values_to_not_be_null``."""
    column: str
    severity: str
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    """As GX computes it: of the non-NULL values (of all values for ``not_null``)."""

    @property
    def passed(self) -> bool:
        return self.success

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    def counts(self) -> dict[str, int | float]:
        """The counts GX reported (none for an aggregate check such as a column's type)."""
        found = {
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
        }
        return {key: value for key, value in found.items() if value is not None}


class ExpectationConfigError(ValueError):
    """A declared expectation cannot apply to the model's output (missing column, wrong type)."""


def run_expectations(table: pa.Table, spec: ModelSpec, lake: Lake, as_of: date) -> list[ExpectationResult]:
    """Validate a model's output against its suite; parents of relationships are read from the lake."""
    parents: dict[tuple[str, str], pa.Array | None] = {}
    for expectation in spec.expectations:
        if isinstance(expectation, RelationshipExpectation) and (expectation.to, expectation.field) not in parents:
            try:
                read = lake.read(expectation.to, [expectation.field])
            except DatasetNotFoundError:
                # Only when the model runs without its upstream (the asset graph orders them): the
                # check cannot be evaluated, so it fails, without counts.
                parents[(expectation.to, expectation.field)] = None
                continue
            parents[(expectation.to, expectation.field)] = pc.unique(read.table.column(expectation.field).drop_null())
    return validate(table, spec.model, spec.expectations, as_of, parents)


def validate(
    table: pa.Table,
    suite_name: str,
    expectations: list[Expectation],
    as_of: date,
    parents: Mapping[tuple[str, str], pa.Array | None] | None = None,
) -> list[ExpectationResult]:
    """Run ``expectations`` over ``table`` as one GX suite; one result per expectation, in their order.

    ``parents`` maps (model, field) of each relationship to the parent's values (None: not available).
    """
    if not expectations:
        return []
    parents = parents or {}
    _check_columns(table, suite_name, expectations)
    unavailable = {
        e.check_name
        for e in expectations
        if isinstance(e, RelationshipExpectation) and parents.get((e.to, e.field)) is None
    }
    to_run = [e for e in expectations if e.check_name not in unavailable]
    gx_expectations: list[Any] = []
    outcomes: dict[str, dict[str, Any]] = {}
    if to_run:
        frame = _frame(table, to_run, parents)
        gx = _gx()
        gx_expectations = [_gx_expectation(gx, e, frame, as_of) for e in to_run]
        with _LOCK:
            outcomes = _run_suite(gx, suite_name, gx_expectations, frame)
    results = []
    for expectation, gx_expectation in zip(expectations, _aligned(expectations, gx_expectations), strict=True):
        if gx_expectation is None:
            results.append(_result(expectation, "expect_column_values_to_be_in_set", success=False))
            continue
        outcome = outcomes.get(expectation.check_name)
        if outcome is None:
            raise RuntimeError(f"{suite_name}: GX returned no result for {expectation.check_name}")
        results.append(_result(expectation, gx_expectation.expectation_type, **outcome))
    return results


def _aligned(expectations: list[Expectation], gx_expectations: list[Any]) -> list[Any]:
    by_name = {e.meta[_CHECK]: e for e in gx_expectations}
    return [by_name.get(e.check_name) for e in expectations]


def _result(expectation: Expectation, expectation_type: str, **outcome: Any) -> ExpectationResult:
    return ExpectationResult(
        name=expectation.check_name,
        expectation=expectation_type,
        column=expectation.column,
        severity=expectation.severity,
        **outcome,
    )


def _check_columns(table: pa.Table, suite_name: str, expectations: list[Expectation]) -> None:
    for expectation in expectations:
        where = f"{suite_name}: expectation {expectation.check_name}"
        if expectation.column not in table.column_names:
            raise ExpectationConfigError(f"{where}: the output has no column {expectation.column!r}")
        column_type = table.schema.field(expectation.column).type
        temporal = pa.types.is_temporal(column_type) or pa.types.is_null(column_type)
        if isinstance(expectation, BetweenExpectation) and not temporal:
            raise ExpectationConfigError(f"{where}: between needs a date or timestamp column, not {column_type}")


def _frame(table: pa.Table, expectations: list[Expectation], parents: Mapping[tuple[str, str], Any]) -> pd.DataFrame:
    """The columns the suite reads, as pandas; dates and timestamps as datetime64[ns] where they fit
    (GX compares those vectorized, other units value by value), plus one membership column per
    relationship."""
    columns: dict[str, pa.ChunkedArray] = {}
    for expectation in expectations:
        if expectation.column not in columns:
            columns[expectation.column] = _nanoseconds(table.column(expectation.column))
        if isinstance(expectation, RelationshipExpectation):
            values = table.column(expectation.column)
            present = pc.is_in(values, value_set=parents[(expectation.to, expectation.field)])
            # NULL where the child value is NULL: GX leaves those out, as a relationships test does
            columns[_membership_column(expectation)] = pc.if_else(pc.is_null(values), None, present)
    return pa.table(columns).to_pandas(date_as_object=False)


def _nanoseconds(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if not (pa.types.is_date(values.type) or pa.types.is_timestamp(values.type)):
        return values
    tz = getattr(values.type, "tz", None)
    try:
        return pc.cast(values, pa.timestamp("ns", tz=tz))
    except pa.ArrowInvalid:  # a value outside 1677-2262: GX compares the native unit value by value
        return values


def _membership_column(expectation: RelationshipExpectation) -> str:
    return f"__{expectation.check_name}__in_{expectation.to}"


def _gx_expectation(gx: SimpleNamespace, expectation: Expectation, frame: pd.DataFrame, as_of: date) -> Any:
    expect = gx.gx.expectations
    meta = {_CHECK: expectation.check_name}
    column = expectation.column
    match expectation:
        case NotNullExpectation():
            return expect.ExpectColumnValuesToNotBeNull(column=column, meta=meta)
        case UniqueExpectation():
            return expect.ExpectColumnValuesToBeUnique(column=column, meta=meta)
        case TypeExpectation():
            return expect.ExpectColumnValuesToBeOfType(column=column, type_=PANDAS_TYPES[expectation.type], meta=meta)
        case BetweenExpectation():
            low, high = _day_bounds(expectation, as_of, aware=getattr(frame[column].dtype, "tz", None) is not None)
            return expect.ExpectColumnValuesToBeBetween(
                column=column, min_value=low, max_value=high, strict_max=high is not None, meta=meta
            )
        case RegexExpectation():
            return expect.ExpectColumnValuesToMatchRegex(column=column, regex=expectation.pattern, meta=meta)
        case AcceptedValuesExpectation():
            return expect.ExpectColumnValuesToBeInSet(column=column, value_set=list(expectation.values), meta=meta)
        case EmailExpectation():
            return gx.ExpectColumnValuesToBeValidEmail(
                column=column, allow_test_domains=expectation.allow_test_domains, meta=meta
            )
        case RelationshipExpectation():
            return expect.ExpectColumnValuesToBeInSet(
                column=_membership_column(expectation), value_set=[True], meta=meta
            )
    raise TypeError(f"unknown expectation {expectation!r}")


def _day_bounds(expectation: BetweenExpectation, as_of: date, aware: bool) -> tuple[datetime | None, datetime | None]:
    """Inclusive by day: from ``min`` at midnight to before midnight after ``max``."""

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=UTC if aware else None)

    low = high = None
    if expectation.min is not None:
        low = midnight(resolve_date_bound(expectation.min, as_of))
    if expectation.max is not None:
        high = midnight(resolve_date_bound(expectation.max, as_of) + timedelta(days=1))
    return low, high


def _run_suite(gx: SimpleNamespace, suite_name: str, gx_expectations: list[Any], frame: pd.DataFrame) -> dict:
    """Validate in a fresh ephemeral context; keep only success and counts of each result."""
    context = gx.gx.get_context(mode="ephemeral", project_config=gx.context_config())
    batch_definition = (
        context.data_sources.add_pandas("carecast")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    suite = gx.gx.ExpectationSuite(name=suite_name, expectations=gx_expectations)
    if len(suite.expectations) != len(gx_expectations):  # GX logs and drops a configuration it refuses
        raise RuntimeError(f"{suite_name}: GX refused {len(gx_expectations) - len(suite.expectations)} expectation(s)")
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(suite, result_format=RESULT_FORMAT)
    outcomes = {}
    for result in validation.results:
        counts = result.result or {}
        outcomes[result.expectation_config.meta[_CHECK]] = {
            "success": bool(result.success),
            "element_count": _integer(counts.get("element_count")),
            "unexpected_count": _integer(counts.get("unexpected_count")),
            "unexpected_percent": _number(counts.get("unexpected_percent")),
        }
    return outcomes


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# The profile mart's rule (mart_patient_profile.has_valid_email): an RFC 5321 dot-atom local part of at
# most 64 characters, a domain of letter-digit-hyphen labels and an alphabetic TLD, 254 at most.
_PLAINLY_VALID = re.compile(
    r"(?=.{1,254}$)(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
AUDIT_SAMPLE = 2000


def judge_emails(values: Any, allow_test_domains: bool) -> dict[Any, bool]:
    """Distinct value -> accepted by email-validator (syntax only).

    email-validator costs ~60 µs an address, over a minute per million. So addresses the mart's strict
    rule accepts (a subset of what email-validator accepts, checked in the tests) are taken as valid
    once a sample of them is confirmed by email-validator; everything else is judged by it one by one.
    Should the sample disagree even once, every address is judged by email-validator.
    """
    plain = [v for v in values if isinstance(v, str) and _PLAINLY_VALID.fullmatch(v)]
    sample = plain[:: max(1, len(plain) // AUDIT_SAMPLE)]
    trusted = set(plain) if all(_valid_email(v, allow_test_domains) for v in sample) else set()
    return {v: True if v in trusted else _valid_email(v, allow_test_domains) for v in values}


def _valid_email(value: Any, allow_test_domains: bool) -> bool:
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(value, str):
        return False
    try:
        validate_email(value, check_deliverability=False, test_environment=allow_test_domains)
    except EmailNotValidError:
        return False
    return True


@functools.cache
def _gx() -> SimpleNamespace:
    """Import GX (once, on first use), silence its logger and declare carecast's custom expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX logs a failed metric's exception message at ERROR, and such a message can quote a value
    # (say, one that would not parse): its records go nowhere, the check fails without counts.
    gx_logger = logging.getLogger("great_expectations")
    gx_logger.addHandler(logging.NullHandler())
    gx_logger.propagate = False
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import ColumnMapExpectation
    from great_expectations.expectations.metrics.map_metric_provider import (
        ColumnMapMetricProvider,
        column_condition_partial,
    )

    class ColumnValuesValidEmail(ColumnMapMetricProvider):
        """True per value email-validator accepts; each distinct value is judged once."""

        condition_metric_name = "column_values.carecast_valid_email"
        condition_value_keys = ("allow_test_domains",)

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column, allow_test_domains=False, **kwargs):
            return column.map(judge_emails(column.unique(), bool(allow_test_domains))).astype(bool)

    class ExpectColumnValuesToBeValidEmail(ColumnMapExpectation):
        """Expect each non-NULL value to be an email address email-validator accepts (syntax only)."""

        allow_test_domains: bool = False
        map_metric = "column_values.carecast_valid_email"
        success_keys = ("mostly", "allow_test_domains")

    def context_config() -> DataContextConfig:
        return DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )

    return SimpleNamespace(
        gx=gx,
        context_config=context_config,
        ExpectColumnValuesToBeValidEmail=ExpectColumnValuesToBeValidEmail,
        metric=ColumnValuesValidEmail,
    )
