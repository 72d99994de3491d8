"""Discover the SQL models under ``dbt_like_models/`` and the YAML that declares each one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    grain: str
    description: str = ""
    columns: dict[str, ModelColumn]


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
        """Datasets that must exist before the model runs: its inputs and its relationship tests' targets."""
        parents = {target for column in self.spec.columns.values() for target in column.relationship_targets}
        return tuple(sorted({*self.inputs, *parents}))

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
    return models


def declare_models(registry: SchemaRegistry, models: dict[str, SqlModel]) -> None:
    for model in models.values():
        registry.declare(model.name, {name: column.class_ for name, column in model.spec.columns.items()})
