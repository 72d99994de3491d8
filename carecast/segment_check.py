"""The checks a segment passes before any data is read: confinement, minimum necessary, purposes.

From the SQL's parsed form alone (sqlglot) and the declared schemas, it works out the columns the
segment needs and their classes, and refuses a segment that

- is not a single SELECT over declared models and segments (``carecast.sql.confine``);
- reads a class of column that one of its purposes may not use (``purposes.yaml``);
- names a code of a sensitive category, or the category itself, that one of its purposes may not
  use (``seeds/sensitive_codes.csv``);
- reads clinical columns for such a purpose from a model that does not tag its rows with
  ``sensitive_category``, so the rows of withheld categories could not be filtered out;
- includes a segment that was not checked for all of its own purposes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage

from carecast.models.project import ModelDefinitionError
from carecast.models.runner import SENSITIVE_COLUMN
from carecast.policy import PurposePolicy
from carecast.registry import SchemaRegistry
from carecast.segments import Segment
from carecast.sql.confine import confine_query
from carecast.sql.lineage import DIALECT, required_columns

_CHECK_DATE = date(2000, 1, 1)


class SegmentPolicyError(ModelDefinitionError):
    pass


@dataclass(frozen=True)
class SegmentNeeds:
    columns: dict[str, set[str]]
    """Dataset -> the columns the segment reads."""
    classes: dict[str, dict[str, str]]
    """Dataset -> column -> class, for the columns read."""

    def columns_of_class(self, phi_class: str) -> list[str]:
        return sorted(
            f"{dataset}.{column}"
            for dataset, classes in self.classes.items()
            for column, column_class in classes.items()
            if column_class == phi_class
        )


def analyse_segment(segment: Segment, sql: str, registry: SchemaRegistry) -> SegmentNeeds:
    confine_query(sql, segment.inputs, segment.path)
    schema = {dataset: list(registry.declared(dataset)) for dataset in segment.inputs}
    columns = required_columns(sql, schema)
    classes = {dataset: registry.classes_for(dataset, sorted(names)) for dataset, names in columns.items()}
    for name, declared in segment.header.columns.items():
        _check_declared_class(segment, sql, schema, registry, name, declared)
    return SegmentNeeds(columns=columns, classes=classes)


def _check_declared_class(
    segment: Segment, sql: str, schema: dict[str, list[str]], registry: SchemaRegistry, name: str, declared: str
) -> None:
    """An extra output column keeps the class of what it is computed from, so it is stored under the
    right key and a template cannot pass a clinical value off as demographic."""
    try:
        node = lineage(name, sql, schema={d: dict.fromkeys(c, "VARCHAR") for d, c in schema.items()}, dialect=DIALECT)
    except (sqlglot.errors.SqlglotError, ValueError):
        raise SegmentPolicyError(
            f"{segment.path}: the header declares column {name!r}, which the query does not return"
        ) from None
    sources = {
        f"{leaf.source.name}.{leaf.name.split('.')[-1]}": registry.declared(leaf.source.name).get(
            leaf.name.split(".")[-1]
        )
        for leaf in node.walk()
        if isinstance(leaf.source, exp.Table) and not leaf.downstream
    }
    allowed = {c for c in sources.values() if c and c != "operational"} or set(sources.values()) or {declared}
    if declared not in allowed:
        raise SegmentPolicyError(
            f"{segment.path}: column {name!r} is declared {declared}, but it is computed from "
            f"{sorted(sources)} of class {sorted(allowed)}"
        )


def check_segment(
    segment: Segment, segments: dict[str, Segment], registry: SchemaRegistry, policy: PurposePolicy
) -> SegmentNeeds:
    sql = segment.render(_CHECK_DATE)
    needs = analyse_segment(segment, sql, registry)
    used_classes = {c for classes in needs.classes.values() for c in classes.values()}
    for purpose in segment.header.purposes:
        rule = policy.rule(purpose)
        refused = sorted(used_classes - set(rule.classes))
        if refused:
            raise SegmentPolicyError(
                f"{segment.path}: purpose {purpose!r} may not use {refused[0]} columns, and the segment reads "
                f"{needs.columns_of_class(refused[0])} (purposes.yaml allows {list(rule.classes)})"
            )
    withheld = policy.withheld_categories(segment.header.purposes)
    if withheld:
        _refuse_sensitive_literals(segment, sql, policy, withheld)
        _refuse_untagged_clinical_reads(segment, needs, registry)
    for included in segment.includes:
        missing = [p for p in segment.header.purposes if p not in segments[included].header.purposes]
        if missing:
            raise SegmentPolicyError(
                f"{segment.path}: includes segment {included!r}, which is not declared for purpose(s) {missing}"
            )
    return needs


def _refuse_sensitive_literals(segment: Segment, sql: str, policy: PurposePolicy, withheld: frozenset[str]) -> None:
    tree = sqlglot.parse_one(sql, dialect=DIALECT)
    for literal in tree.find_all(exp.Literal):
        if not literal.is_string:
            continue
        value = literal.this
        category = value if value in withheld else policy.sensitive_codes.get(value)
        if category is None and isinstance(literal.parent, exp.Like):
            category = _category_matching_pattern(value, policy, withheld)
        if category in withheld:
            purposes = [p for p in segment.header.purposes if category not in policy.rule(p).sensitive_categories]
            raise SegmentPolicyError(
                f"{segment.path}:{_line_of(sql, literal)}: names {value!r}, in the sensitive category "
                f"{category!r}, which purpose(s) {purposes} may not use (seeds/sensitive_codes.csv, purposes.yaml)"
            )


def _category_matching_pattern(pattern: str, policy: PurposePolicy, withheld: frozenset[str]) -> str | None:
    """A LIKE pattern that matches any withheld code uses that code's category."""
    regex = re.compile("".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern))
    return next(
        (cat for code, cat in sorted(policy.sensitive_codes.items()) if cat in withheld and regex.fullmatch(code)),
        None,
    )


def _line_of(sql: str, literal: exp.Literal) -> int:
    """1-based line of the literal's first occurrence (rendering keeps the file's line numbers)."""
    quoted = "'" + literal.this.replace("'", "''") + "'"
    position = sql.find(quoted)
    return sql.count("\n", 0, position) + 1 if position >= 0 else 1


def _refuse_untagged_clinical_reads(segment: Segment, needs: SegmentNeeds, registry: SchemaRegistry) -> None:
    for dataset, classes in sorted(needs.classes.items()):
        clinical = sorted(column for column, phi_class in classes.items() if phi_class == "clinical")
        if clinical and SENSITIVE_COLUMN not in registry.declared(dataset):
            raise SegmentPolicyError(
                f"{segment.path}: reads clinical columns {clinical} of {dataset}, which does not tag its rows "
                f"with {SENSITIVE_COLUMN}, so rows of sensitive categories could not be withheld for purpose(s) "
                f"{list(segment.header.purposes)}; read clinical facts from a model that has that column "
                "(mart_clinical_facts, mart_latest_labs)"
            )
