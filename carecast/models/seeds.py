"""Seeds: small reference tables kept as CSV next to the models (value sets, code lists), read with ``ref()``.

A seed is project data written by people, not by a source system: it holds no PHI, and the YAML next
to it declares its grain and the class of each column like any model. Every value is text (codes
such as ``08`` or ``10939881000119104`` must not become numbers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from carecast.models.project import ModelDefinitionError, ModelSpec, load_spec
from carecast.registry import SchemaRegistry


@dataclass(frozen=True)
class Seed:
    name: str
    path: Path
    spec: ModelSpec

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def read(self) -> pa.Table:
        columns = list(self.spec.columns)
        table = pacsv.read_csv(
            self.path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()))
        )
        if table.column_names != columns:
            raise ModelDefinitionError(
                f"{self.path}: header {table.column_names} differs from the columns its YAML declares {columns}"
            )
        return table


def load_seed(path: Path) -> Seed:
    return Seed(name=path.stem, path=path, spec=load_spec(path))


def discover_seeds(models_dir: Path) -> dict[str, Seed]:
    return {path.stem: load_seed(path) for path in sorted((models_dir / "seeds").glob("*.csv"))}


def declare_seeds(registry: SchemaRegistry, seeds: dict[str, Seed]) -> None:
    for seed in seeds.values():
        registry.declare(seed.name, {name: column.class_ for name, column in seed.spec.columns.items()})
