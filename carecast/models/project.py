"""Discover the SQL models under ``dbt_like_models/`` and the YAML that declares each one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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

    def render(self, as_of: date) -> str:
        return render_sql(self.template, as_of)


def _environment(as_of: date | None, refs: list[str], sources: list[tuple[str, str]]) -> SandboxedEnvironment:
    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

    def ref(name: str) -> str:
        refs.append(name)
        return name

    def source(source_name: str, table: str) -> str:
        sources.append((source_name, table))
        return raw_dataset_name(source_name, table)

    def var(name: str) -> str:
        if name != "as_of":
            raise ModelDefinitionError(f"unknown var {name!r} (only 'as_of' is defined)")
        # A date object rendered by us, never text from a user: the literal is safe to inline.
        return f"DATE '{(as_of or date(2000, 1, 1)).isoformat()}'"

    environment.globals.update(ref=ref, source=source, var=var)
    return environment


def render_sql(template: str, as_of: date) -> str:
    return _environment(as_of, [], []).from_string(template).render()


def find_dependencies(template: str, path: Path) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    refs: list[str] = []
    sources: list[tuple[str, str]] = []
    try:
        _environment(None, refs, sources).from_string(template).render()
    except Exception as error:
        raise ModelDefinitionError(f"{path}: cannot render ({type(error).__name__}: {error})") from None
    return tuple(dict.fromkeys(refs)), tuple(dict.fromkeys(sources))


def load_model(path: Path) -> SqlModel:
    spec_path = path.with_suffix(".yml")
    if not spec_path.exists():
        raise ModelDefinitionError(f"{path}: no {spec_path.name} declaring its grain and columns")
    try:
        spec = ModelSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    except ValidationError as error:
        raise ModelDefinitionError(f"{spec_path}: {error}") from None
    if spec.model != path.stem:
        raise ModelDefinitionError(f"{spec_path}: declares model {spec.model!r}, file is {path.stem!r}")
    template = path.read_text()
    refs, sources = find_dependencies(template, path)
    layer = path.parent.name
    if layer not in LAYERS:
        raise ModelDefinitionError(f"{path}: models live in one of {LAYERS}")
    return SqlModel(name=path.stem, layer=layer, path=path, template=template, spec=spec, refs=refs, sources=sources)


def discover_models(models_dir: Path) -> dict[str, SqlModel]:
    models = {path.stem: load_model(path) for path in sorted(models_dir.glob("*/*.sql"))}
    for model in models.values():
        unknown = [ref for ref in model.refs if ref not in models]
        if unknown:
            raise ModelDefinitionError(f"{model.path}: ref to unknown model(s) {unknown}")
    return models


def declare_models(registry: SchemaRegistry, models: dict[str, SqlModel]) -> None:
    for model in models.values():
        registry.declare(model.name, {name: column.class_ for name, column in model.spec.columns.items()})
