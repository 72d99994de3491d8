"""Segments: analyst SQL files with a header saying what they are, who owns them and for which purposes.

A segment's header is a block of ``-- key: value`` comment lines at the top of the file::

    -- name: breast_cancer_screening_due
    -- owner: population-health
    -- description: Women 50-74 with no screening mammogram in the last 2 years.
    -- purposes: treatment, operations
    -- grain: one row per patient

The body is one SELECT returning one row per ``patient_id``, referring to models with ``ref()``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from carecast.models.project import ModelDefinitionError, find_dependencies, render_sql
from carecast.registry import SchemaRegistry

PURPOSES = ("treatment", "operations", "marketing", "fundraising")
_HEADER_LINE = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")


class SegmentHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    owner: str
    description: str
    purposes: tuple[str, ...]
    grain: str = "one row per patient"

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

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def dataset(self) -> str:
        return f"segment_{self.name}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, as_of) -> str:
        return render_sql(self.template, as_of)


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
    refs, sources = find_dependencies(template, path)
    if sources:
        raise ModelDefinitionError(f"{path}: segments read models through ref(), not raw sources")
    return Segment(header=header, path=path, template=template, refs=refs)


def discover_segments(segments_dir: Path) -> dict[str, Segment]:
    return {path.stem: load_segment(path) for path in sorted(segments_dir.glob("*.sql"))}


def declare_segments(registry: SchemaRegistry, segments: dict[str, Segment]) -> None:
    for segment in segments.values():
        registry.declare(segment.dataset, {"patient_id": "operational"})
