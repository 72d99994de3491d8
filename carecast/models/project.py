"""Discover the SQL models under ``dbt_like_models/`` and the YAML that declares each one."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carecast.registry import PhiClass, SchemaRegistry, raw_dataset_name

LAYERS = ("staging", "intermediate", "marts")


class ModelDefinitionError(ValueError):
    pass


class ModelColumn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    class_: PhiClass = Field(alias="class")
    description: str = ""
    tests: list[str | dict[str, Any]] = Field(default_factory=list)

    @property
    def relationship_targets(self) -> tuple[str, ...]:
        return tuple(t["relationships"]["to"] for t in self.tests if isinstance(t, dict) and "relationships" in t)


_RELATIVE_DATE = re.compile(r"^as_of(?:([+-])([0-9]+)d)?$")


def resolve_date_bound(bound: date | str, as_of: date) -> date:
    """A ``between`` bound as a date: a literal date, or ``as_of`` / ``as_of+Nd`` / ``as_of-Nd``."""
    if isinstance(bound, date):
        return bound
    found = _RELATIVE_DATE.match(bound)
    if found is None:
        raise ValueError(f"bad date bound {bound!r}")
    sign, days = found.groups()
    return as_of + timedelta(days=(-1 if sign == "-" else 1) * int(days or 0))


class _Expectation(BaseModel):
    """One Great Expectations check on one column of the model's output (see docs/authoring.md).

    ``critical``: a failure blocks the assets downstream (a blocking Dagster asset check, ERROR);
    ``warning``: a failure is reported (WARN) and nothing stops.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    expect: str
    column: str
    severity: Literal["critical", "warning"]
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    """The asset check's name; ``gx_<expect>_<column>`` when not given."""

    @property
    def check_name(self) -> str:
        return self.name or f"gx_{self.expect}_{self.column}"


class NotNullExpectation(_Expectation):
    expect: Literal["not_null"]


class UniqueExpectation(_Expectation):
    expect: Literal["unique"]


class TypeExpectation(_Expectation):
    expect: Literal["type"]
    type: Literal["string", "boolean", "double", "date", "timestamp"]


class BetweenExpectation(_Expectation):
    """Dates between ``min`` and ``max``, both inclusive by day: a date literal, or ``as_of`` (the run
    date), ``as_of+Nd``, ``as_of-Nd``. ``max: as_of`` means "not after the run date"."""

    expect: Literal["between"]
    min: date | str | None = None
    max: date | str | None = None

    @field_validator("min", "max")
    @classmethod
    def _date_or_relative(cls, bound: date | str | None) -> date | str | None:
        if not isinstance(bound, str) or _RELATIVE_DATE.match(bound):
            return bound
        try:
            return date.fromisoformat(bound)
        except ValueError:
            raise ValueError(f"{bound!r} is neither a date (YYYY-MM-DD) nor as_of, as_of+Nd, as_of-Nd") from None

    @model_validator(mode="after")
    def _one_bound_at_least(self) -> BetweenExpectation:
        if self.min is None and self.max is None:
            raise ValueError("between needs min, max or both")
        return self


class RegexExpectation(_Expectation):
    """Every non-NULL value matches ``pattern``, which must be anchored (``^...$``): GX searches."""

    expect: Literal["regex"]
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _anchored_and_valid(cls, pattern: str) -> str:
        if not (pattern.startswith("^") and pattern.endswith("$")):
            raise ValueError(f"pattern {pattern!r} must be anchored with ^ and $ (values are searched)")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"pattern {pattern!r} does not compile: {error}") from None
        return pattern


class AcceptedValuesExpectation(_Expectation):
    expect: Literal["accepted_values"]
    values: list[str | bool | int] = Field(min_length=1)


class EmailExpectation(_Expectation):
    """email-validator's syntax check (no DNS). ``allow_test_domains`` admits the reserved ``.test``
    domain (synthetic data); special-use domains are refused otherwise."""

    expect: Literal["email"]
    allow_test_domains: bool = False


class RelationshipExpectation(_Expectation):
    """Every non-NULL value is a value of ``field`` in model ``to`` (referential integrity)."""

    expect: Literal["relationship"]
    to: str
    field: str


Expectation = Annotated[
    NotNullExpectation
    | UniqueExpectation
    | TypeExpectation
    | BetweenExpectation
    | RegexExpectation
    | AcceptedValuesExpectation
    | EmailExpectation
    | RelationshipExpectation,
    Field(discriminator="expect"),
]


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    grain: str
    description: str = ""
    columns: dict[str, ModelColumn]
    expectations: list[Expectation] = Field(default_factory=list)
    """The model's Great Expectations suite (run after ``tests``; see carecast/models/expectations.py)."""

    @model_validator(mode="after")
    def _expectations_name_declared_columns_once(self) -> ModelSpec:
        seen: set[str] = set()
        for expectation in self.expectations:
            if expectation.column not in self.columns:
                raise ValueError(
                    f"expectation {expectation.check_name}: column {expectation.column!r} is not declared under columns"
                )
            if expectation.check_name in seen:
                raise ValueError(f"two expectations are named {expectation.check_name!r}; give one a `name:`")
            seen.add(expectation.check_name)
        return self

    @property
    def relationship_targets(self) -> tuple[str, ...]:
        """Models the column tests and the expectations check references against."""
        from_tests = (target for column in self.columns.values() for target in column.relationship_targets)
        from_expectations = (e.to for e in self.expectations if isinstance(e, RelationshipExpectation))
        return tuple(dict.fromkeys([*from_tests, *from_expectations]))


@dataclass(frozen=True)
class SqlModel:
    name: str
    layer: str
    path: Path
    template: str
    spec: ModelSpec
    refs: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    @property
    def inputs(self) -> tuple[str, ...]:
        """Datasets the model reads, as stored in the lake."""
        return tuple(sorted({*self.refs, *(raw_dataset_name(s, t) for s, t in self.sources)}))

    @property
    def upstream(self) -> tuple[str, ...]:
        """Datasets that must exist before the model runs: its inputs and the targets of its relationship
        tests and expectations."""
        return tuple(sorted({*self.inputs, *self.spec.relationship_targets}))

    def render(self, as_of: date) -> str:
        return render_sql(self.template, as_of)


@dataclass
class Dependencies:
    """What a template's ``ref()``, ``source()`` and ``segment()`` calls name, in order of first use."""

    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)


def segment_dataset_name(segment: str) -> str:
    return f"segment_{segment}"


def _environment(as_of: date | None, found: Dependencies) -> SandboxedEnvironment:
    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

    def ref(name: str) -> str:
        found.refs.append(name)
        return name

    def source(source_name: str, table: str) -> str:
        found.sources.append((source_name, table))
        return raw_dataset_name(source_name, table)

    def segment(name: str) -> str:
        found.segments.append(name)
        return segment_dataset_name(name)

    def var(name: str) -> str:
        if name != "as_of":
            raise ModelDefinitionError(f"unknown var {name!r} (only 'as_of' is defined)")
        # A date object rendered by us, never text from a user: the literal is safe to inline.
        return f"DATE '{(as_of or date(2000, 1, 1)).isoformat()}'"

    environment.globals.update(ref=ref, source=source, segment=segment, var=var)
    return environment


def render_sql(template: str, as_of: date) -> str:
    return _environment(as_of, Dependencies()).from_string(template).render()


def find_dependencies(template: str, path: Path) -> Dependencies:
    found = Dependencies()
    try:
        _environment(None, found).from_string(template).render()
    except Exception as error:
        raise ModelDefinitionError(f"{path}: cannot render ({type(error).__name__}: {error})") from None
    return Dependencies(
        refs=list(dict.fromkeys(found.refs)),
        sources=list(dict.fromkeys(found.sources)),
        segments=list(dict.fromkeys(found.segments)),
    )


def load_spec(path: Path) -> ModelSpec:
    """The YAML next to a model or seed file: its grain, and every column's class and tests."""
    spec_path = path.with_suffix(".yml")
    if not spec_path.exists():
        raise ModelDefinitionError(f"{path}: no {spec_path.name} declaring its grain and columns")
    try:
        spec = ModelSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    except ValidationError as error:
        raise ModelDefinitionError(f"{spec_path}: {error}") from None
    if spec.model != path.stem:
        raise ModelDefinitionError(f"{spec_path}: declares model {spec.model!r}, file is {path.stem!r}")
    return spec


def load_model(path: Path) -> SqlModel:
    spec = load_spec(path)
    template = path.read_text()
    found = find_dependencies(template, path)
    if found.segments:
        raise ModelDefinitionError(f"{path}: models cannot read segments ({found.segments}); segments read models")
    layer = path.parent.name
    if layer not in LAYERS:
        raise ModelDefinitionError(f"{path}: models live in one of {LAYERS}")
    return SqlModel(
        name=path.stem,
        layer=layer,
        path=path,
        template=template,
        spec=spec,
        refs=tuple(found.refs),
        sources=tuple(found.sources),
    )


def discover_models(models_dir: Path, known: set[str] = frozenset()) -> dict[str, SqlModel]:
    """``known``: other names a ``ref()`` may point at (seeds)."""
    models = {path.stem: load_model(path) for path in sorted(models_dir.glob("*/*.sql"))}
    for model in models.values():
        unknown = [ref for ref in model.refs if ref not in models and ref not in known]
        if unknown:
            raise ModelDefinitionError(f"{model.path}: ref to unknown model(s) {unknown}")
        targets = [t for t in model.spec.relationship_targets if t not in models and t not in known]
        if targets:
            raise ModelDefinitionError(f"{model.path.with_suffix('.yml')}: relationship to unknown model(s) {targets}")
    return models


def declare_models(registry: SchemaRegistry, models: dict[str, SqlModel]) -> None:
    for model in models.values():
        registry.declare(model.name, {name: column.class_ for name, column in model.spec.columns.items()})
