"""The schema registry: the PHI class of every column of every dataset, declared once.

Sources declare their columns in ``dbt_like_models/sources.yml``, models in the YAML next to their
SQL, segments in their header, and carecast's own datasets (quarantine, audiences, outboxes) in
``carecast/datasets.yml``. Writing a column that no declaration covers is refused.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

PhiClass = Literal["identifier", "clinical", "demographic", "operational", "message"]
ColumnType = Literal["string", "date", "timestamp", "float", "integer", "boolean"]


class UndeclaredColumnError(ValueError):
    pass


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    class_: PhiClass = Field(alias="class")
    type: ColumnType = "string"
    required: bool = False
    not_null: bool = False
    description: str = ""


class TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    """A newer batch's row replaces the stored row with the same key."""
    replace_by: str | None = None
    """For a table of histories without a key of its own: a batch replaces every stored row that shares
    this column's value with one of its rows (a patient's whole history)."""
    columns: dict[str, ColumnSpec]

    @model_validator(mode="after")
    def _one_way_to_update(self) -> TableSpec:
        if (self.key is None) == (self.replace_by is None):
            raise ValueError("declare exactly one of key (an id per row) or replace_by (a patient's history)")
        missing = [c for c in (self.key, self.replace_by) if c is not None and c not in self.columns]
        if missing:
            raise ValueError(f"{missing} must be a declared column")
        return self


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    tables: dict[str, TableSpec]


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: dict[str, SourceSpec]


def raw_dataset_name(source: str, table: str) -> str:
    return f"raw_{source}_{table}"


def quarantine_dataset_name(source: str, table: str) -> str:
    return f"quarantine_{source}_{table}"


QUARANTINE_COLUMNS = {
    "_batch": "operational",
    "_file": "operational",
    "_line": "operational",
    "_rule": "operational",
    "_column": "operational",
}


@dataclass
class SchemaRegistry:
    """Dataset name (or glob pattern) -> column -> PHI class."""

    _exact: dict[str, dict[str, str]] = field(default_factory=dict)
    _patterns: dict[str, dict[str, str]] = field(default_factory=dict)
    sources: dict[str, SourceSpec] = field(default_factory=dict)

    def declare(self, dataset: str, classes: dict[str, str]) -> None:
        target = self._patterns if any(ch in dataset for ch in "*?[") else self._exact
        target.setdefault(dataset, {}).update(classes)

    def declared(self, dataset: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for pattern, classes in self._patterns.items():
            if fnmatch.fnmatchcase(dataset, pattern):
                merged.update(classes)
        merged.update(self._exact.get(dataset, {}))
        return merged

    def classes_for(self, dataset: str, columns: list[str]) -> dict[str, str]:
        declared = self.declared(dataset)
        undeclared = [column for column in columns if column not in declared]
        if undeclared:
            raise UndeclaredColumnError(
                f"dataset {dataset!r}: column(s) {undeclared} have no declared PHI class; "
                "declare them (sources.yml, the model's YAML, the segment header or carecast/datasets.yml)"
            )
        return {column: declared[column] for column in columns}

    def table_spec(self, source: str, table: str) -> TableSpec:
        return self.sources[source].tables[table]


def load_registry(project_dir: Path) -> SchemaRegistry:
    registry = SchemaRegistry()
    sources_path = project_dir / "dbt_like_models" / "sources.yml"
    sources = SourcesFile.model_validate(yaml.safe_load(sources_path.read_text()))
    registry.sources = dict(sources.sources)
    for source_name, source in sources.sources.items():
        for table_name, table in source.tables.items():
            classes = {name: spec.class_ for name, spec in table.columns.items()}
            registry.declare(raw_dataset_name(source_name, table_name), classes)
            registry.declare(quarantine_dataset_name(source_name, table_name), classes | QUARANTINE_COLUMNS)
    builtin = yaml.safe_load(resources.files("carecast").joinpath("datasets.yml").read_text())
    for dataset, columns in builtin["datasets"].items():
        registry.declare(dataset, columns)
    return registry
