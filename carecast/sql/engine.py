"""A confined DuckDB session over decrypted Arrow tables.

No files are read (external access off, configuration locked after the tables are registered) and
nothing spills to disk, so PHI never reaches a temp file in the clear. The connection is closed on
exit (DuckDB 2.0's binding reports leaks at interpreter exit otherwise).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import duckdb
import pyarrow as pa

_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


class QueryError(RuntimeError):
    """A query failed; the engine's message is kept with every quoted value removed."""


def redact(message: str) -> str:
    """Drop quoted literals (DuckDB quotes the offending value: "Could not convert string 'x'")."""
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    return _QUOTED.sub("<value>", first_line)


@contextlib.contextmanager
def confined_duckdb(tables: dict[str, pa.Table], threads: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    config: dict[str, str | int] = {"temp_directory": "", "max_temp_directory_size": "0KiB"}
    if threads:
        config["threads"] = threads
    connection = duckdb.connect(":memory:", config=config)
    try:
        for name, table in tables.items():
            connection.register(name, table)
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        yield connection
    except duckdb.Error as error:
        raise QueryError(f"DuckDB {type(error).__name__}: {redact(str(error))}") from None
    finally:
        connection.close()


def run_query(sql: str, tables: dict[str, pa.Table]) -> pa.Table:
    with confined_duckdb(tables) as connection:
        return connection.sql(sql).to_arrow_table()
