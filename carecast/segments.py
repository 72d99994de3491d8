"""Segments: analyst SQL files with a header saying what they are, who owns them and for which purposes.

A segment's header is a block of ``-- key: value`` comment lines at the top of the file::

    -- name: breast_cancer_screening_due
    -- owner: population-health
    -- description: Women 50-74 with no screening mammogram in the last 2 years.
    -- purposes: treatment, operations
    -- grain: one row per patient
    -- columns: last_mammogram_at (clinical)

The body is one SELECT returning one row per ``patient_id`` first, then only the extra columns the
header declares (with their class; templates may use them). It reads models with ``ref()`` and other
segments with ``segment()``, to include or exclude their members.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from carecast.models.project import ModelDefinitionError, find_dependencies, render_sql, segment_dataset_name
from carecast.policy import PURPOSES
from carecast.registry import PhiClass, SchemaRegistry

_HEADER_LINE = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
_DECLARED_COLUMN = re.compile(r"^([a-z_][a-z0-9_]*)\s*\(\s*([a-z]+)\s*\)$")


class SegmentHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    owner: str
    description: str
    purposes: tuple[str, ...]
    grain: str = "one row per patient"
    columns: dict[str, PhiClass] = {}

    @field_validator("columns", mode="before")
    @classmethod
    def _declared_columns(cls, value: str | dict[str, str]) -> dict[str, str]:
        if not isinstance(value, str):
            return value
        columns = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            match = _DECLARED_COLUMN.match(item)
            if not match:
                raise ValueError(f"declare each extra column as 'name (class)', got {item!r}")
            columns[match.group(1)] = match.group(2)
        if "patient_id" in columns:
            raise ValueError("patient_id is always the first column; declare only the extra ones")
        return columns

    @field_validator("purposes", mode="before")
    @classmethod
    def _split(cls, value: str | tuple[str, ...]) -> tuple[str, ...]:
        items = tuple(p.strip() for p in value.split(",")) if isinstance(value, str) else tuple(value)
        unknown = [p for p in items if p not in PURPOSES]
        if unknown or not items:
            raise ValueError(f"purposes must be some of {PURPOSES}, got {list(items)}")
        return items


@dataclass(frozen=True)
class Segment:
    header: SegmentHeader
    path: Path
    template: str
    refs: tuple[str, ...]
    includes: tuple[str, ...]
    """Other segments this one reads (to include or exclude their members)."""

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def dataset(self) -> str:
        return segment_dataset_name(self.name)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Datasets the segment reads, as stored in the lake."""
        return (*self.refs, *(segment_dataset_name(name) for name in self.includes))

    @property
    def columns(self) -> dict[str, str]:
        return {"patient_id": "operational", **self.header.columns}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, as_of) -> str:
        return render_sql(self.template, as_of)


def check_segment_output(segment: Segment, table: pa.Table) -> pa.Table:
    """Grain and columns as the header declares them: patient_id first, each patient once."""
    expected = list(segment.columns)
    if table.column_names != expected:
        raise ModelDefinitionError(
            f"{segment.path}: returns columns {table.column_names}; the header declares {expected} "
            "(patient_id first, then the extra columns under 'columns:')"
        )
    if pc.count_distinct(table.column("patient_id")).as_py() != table.num_rows:
        raise ModelDefinitionError(f"{segment.path}: returns a patient more than once (grain is one row per patient)")
    return table


def parse_header(text: str, path: Path) -> SegmentHeader:
    fields: dict[str, str] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _HEADER_LINE.match(line)
        if not match:
            break
        key, value = match.groups()
        if key in fields:
            raise ModelDefinitionError(f"{path}:{line_number}: header field {key!r} given twice")
        fields[key] = value
    try:
        return SegmentHeader.model_validate(fields)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ModelDefinitionError(f"{path}:1: segment header: {problems}") from None


def load_segment(path: Path) -> Segment:
    template = path.read_text()
    header = parse_header(template, path)
    if header.name != path.stem:
        raise ModelDefinitionError(f"{path}:1: header name {header.name!r} differs from the file name")
    found = find_dependencies(template, path)
    if found.sources:
        raise ModelDefinitionError(f"{path}: segments read models through ref(), not raw sources")
    if header.name in found.segments:
        raise ModelDefinitionError(f"{path}: a segment cannot read itself")
    return Segment(header=header, path=path, template=template, refs=tuple(found.refs), includes=tuple(found.segments))


def discover_segments(segments_dir: Path) -> dict[str, Segment]:
    segments = {path.stem: load_segment(path) for path in sorted(segments_dir.glob("*.sql"))}
    for segment in segments.values():
        unknown = [name for name in segment.includes if name not in segments]
        if unknown:
            raise ModelDefinitionError(f"{segment.path}: segment() names unknown segment(s) {unknown}")
    for name in segments:
        _refuse_cycles(segments, name, ())
    return segments


def _refuse_cycles(segments: dict[str, Segment], name: str, path: tuple[str, ...]) -> None:
    if name in path:
        cycle = " -> ".join((*path[path.index(name) :], name))
        raise ModelDefinitionError(f"{segments[name].path}: segments include each other in a cycle ({cycle})")
    for included in segments[name].includes:
        _refuse_cycles(segments, included, (*path, name))


def in_dependency_order(segments: dict[str, Segment], names: list[str]) -> list[str]:
    """The named segments and every segment they include, each after the ones it reads."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        for included in segments[name].includes:
            visit(included)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def declare_segments(registry: SchemaRegistry, segments: dict[str, Segment]) -> None:
    for segment in segments.values():
        registry.declare(segment.dataset, segment.columns)
