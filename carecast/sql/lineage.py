"""Which columns of which tables a query needs, from its parsed form (sqlglot), before it runs.

This is what makes "minimum necessary" a property of the pipeline: the loader decrypts exactly
these columns and no others.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

DIALECT = "duckdb"


class SqlLineageError(ValueError):
    pass


def required_columns(sql: str, schema: dict[str, list[str]]) -> dict[str, set[str]]:
    """Map each base table the query reads to the set of its columns the query uses.

    ``schema`` lists the available columns of every table the query may reference; ``select *`` is
    expanded against it, so a star reads every column, and shows it.
    """
    try:
        tree = sqlglot.parse_one(sql, dialect=DIALECT)
    except sqlglot.errors.ParseError as error:
        raise SqlLineageError(
            f"cannot parse SQL: {error.errors[0]['description'] if error.errors else error}"
        ) from None
    sqlglot_schema = {table: {column: "VARCHAR" for column in columns} for table, columns in schema.items()}
    try:
        qualified = qualify(
            tree,
            schema=sqlglot_schema,
            dialect=DIALECT,
            validate_qualify_columns=True,
            quote_identifiers=False,
            identify=False,
        )
        # Import CTEs (`source as (select * from ...)`) pass every column on; drop the ones no
        # later step uses, so a star in an import CTE does not count as reading them.
        qualified = pushdown_projections(qualified)
    except sqlglot.errors.OptimizeError as error:
        raise SqlLineageError(str(error)) from None
    # sqlglot folds unquoted identifiers to lower case, as DuckDB matches them: map back to the
    # stored spelling (Synthea's columns are upper case).
    spelling = {table.lower(): (table, {c.lower(): c for c in columns}) for table, columns in schema.items()}
    needed: dict[str, set[str]] = {}
    for scope in traverse_scope(qualified):
        for source in scope.sources.values():
            if isinstance(source, exp.Table):
                needed.setdefault(source.name.lower(), set())
        for column in scope.columns:
            source = scope.sources.get(column.table)
            if isinstance(source, exp.Table):
                needed[source.name.lower()].add(column.name.lower())
    unknown = sorted(table for table in needed if table not in spelling)
    if unknown:
        raise SqlLineageError(f"query reads undeclared table(s) {unknown}")
    resolved: dict[str, set[str]] = {}
    for table, columns in needed.items():
        table_name, column_names = spelling[table]
        resolved[table_name] = {column_names[column] for column in columns}
    return resolved
