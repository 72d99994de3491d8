"""Segment SQL confinement: what an analyst may write, what is refused, and where the refusal points."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carecast.models.project import render_sql, segment_dataset_name
from carecast.segments import discover_segments
from carecast.sql.confine import SqlConfinementError, confine_query

MODELS = {"mart_patient_profile", "mart_clinical_facts", "stg_procedures", "mart_behavior"}
PATH = "segments/x.sql"
PHI = "secret.patient@example.org"
HEADER = (
    "-- name: x\n"
    "-- owner: population-health\n"
    "-- description: a test segment\n"
    "-- purposes: operations\n"
    "-- grain: one row per patient\n"
)


def _refusal(sql: str, allowed: set[str] = MODELS) -> str:
    with pytest.raises(SqlConfinementError) as refused:
        confine_query(sql, allowed, PATH)
    return str(refused.value)


@pytest.mark.parametrize(
    "sql",
    [
        # the shape every segment has: a header, import CTEs, a final select
        HEADER + "with seniors as (\n  select patient_id from mart_patient_profile where age >= 65\n)\n"
        "select * from seniors",
        # joins, including DuckDB's semi and anti joins
        "select p.patient_id from mart_patient_profile p join mart_clinical_facts f using (patient_id)",
        "select patient_id from mart_patient_profile semi join mart_clinical_facts using (patient_id)",
        "select patient_id from mart_patient_profile anti join stg_procedures using (patient_id)",
        "select p.patient_id from mart_patient_profile p left join stg_procedures s"
        " on s.patient_id = p.patient_id where s.patient_id is null",
        # set operations
        "select patient_id from mart_patient_profile union all select patient_id from mart_behavior"
        " except select patient_id from stg_procedures",
        # subqueries in WHERE: IN, EXISTS, scalar
        "select patient_id from mart_patient_profile where patient_id in (select patient_id from stg_procedures)",
        "select patient_id from mart_patient_profile p where exists"
        " (select 1 from stg_procedures s where s.patient_id = p.patient_id)",
        "select patient_id from mart_patient_profile where age > (select avg(age) from mart_patient_profile)",
        # window functions and QUALIFY
        "select patient_id, row_number() over (partition by sex order by age desc) as rank"
        " from mart_patient_profile qualify rank = 1",
        # interval arithmetic and date literals
        "select patient_id from stg_procedures where performed_at >= date '2025-01-01' - interval 2 year",
        # DuckDB's FROM-first form, and a parenthesised query
        "from mart_patient_profile select patient_id",
        "(select patient_id from mart_patient_profile)",
        "select * from (mart_patient_profile)",
        # unquoted and quoted names match declared models case-insensitively, as DuckDB does
        'select PATIENT_ID from MART_PATIENT_PROFILE join "Mart_Behavior" using (patient_id)',
        # an inline code list (VALUES) and a lateral subquery read nothing from outside
        "select * from mart_clinical_facts f join (values ('E11'), ('E10')) codes(code) on f.code = codes.code",
        "select * from mart_patient_profile p, lateral (select count(*) from stg_procedures s"
        " where s.patient_id = p.patient_id) n",
        # a recursive CTE refers to itself
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 3) select * from n",
        # a CTE named like a model shadows it in the main query
        "with mart_behavior as (select 1 as patient_id) select * from mart_behavior",
        # list functions named like table functions are fine outside FROM
        "select patient_id, range(3) as r, generate_series(1, 2) as g, unnest([1, 2]) as u from mart_patient_profile",
        # the standard PIVOT clause (with its IN list) reads only its table
        "select * from mart_clinical_facts pivot (count(*) for code in ('E11', 'I10'))",
        # a trailing semicolon, with or without a comment, is still one statement
        "select 1 from mart_behavior;",
        "select 1 from mart_behavior; -- done",
    ],
)
def test_queries_over_declared_models_are_accepted(sql: str) -> None:
    confine_query(sql, MODELS, PATH)


def test_ref_rendered_names_are_accepted() -> None:
    # what the analyst writes: Jinja turns ref() into the bare model name and var() into a date literal
    template = (
        HEADER + "select patient_id\nfrom {{ ref('stg_procedures') }}\n"
        "where performed_at >= {{ var('as_of') }} - interval 2 year\n"
    )
    confine_query(render_sql(template, date(2025, 6, 1)), {"stg_procedures"}, PATH)


def test_every_shipped_segment_is_accepted() -> None:
    # the rules must not refuse real analyst SQL; each segment may read its refs and included segments
    for segment in discover_segments(Path(__file__).resolve().parents[1] / "segments").values():
        allowed = [*segment.refs, *map(segment_dataset_name, segment.includes)]
        confine_query(segment.render(date(2025, 6, 1)), allowed, segment.path)


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        # DDL
        ("create table t as select 1", "CREATE statement"),
        ("create macro m(a) as a", "CREATE statement"),
        ("drop table mart_behavior", "DROP statement"),
        ("alter table mart_behavior add column c int", "ALTER statement"),
        ("truncate mart_behavior", "TRUNCATE statement"),
        # DML, also behind a WITH, where the first keyword is not enough
        ("insert into mart_behavior values (1)", "INSERT statement"),
        ("update mart_behavior set a = 1", "UPDATE statement"),
        ("delete from mart_behavior", "DELETE statement"),
        ("merge into mart_behavior using stg_procedures s on true when matched then delete", "MERGE statement"),
        ("with a as (select 1) insert into mart_behavior select * from a", "INSERT statement"),
        ("with a as (insert into mart_behavior values (1) returning *) select * from a", "INSERT statement"),
        # files, databases and extensions
        ("copy mart_behavior to 'out.csv'", "COPY statement"),
        ("attach 'other.db' as other", "ATTACH statement"),
        ("detach other", "DETACH statement"),
        ("install httpfs", "INSTALL statement"),
        ("load httpfs", "LOAD statement"),  # sqlglot: exp.Command
        ("export database 'dump'", "EXPORT statement"),  # sqlglot: parse error
        ("import database 'dump'", "IMPORT statement"),  # sqlglot: parse error
        # session state
        ("pragma enable_profiling", "PRAGMA statement"),
        ("set threads = 1", "SET statement"),
        ("reset threads", "RESET statement"),  # sqlglot: exp.Command
        ("use other", "USE statement"),
        ("call pragma_version()", "CALL statement"),  # sqlglot: exp.Command
        ("checkpoint", "CHECKPOINT statement"),  # sqlglot: a column named checkpoint
        ("explain select 1", "EXPLAIN statement"),  # sqlglot: exp.Command
        # not a SELECT query
        ("values (1)", "VALUES statement"),
        ("select 1 into t", "SELECT ... INTO"),
        ("select * from (describe mart_behavior)", "DESCRIBE statement"),
        ("select * from (pivot mart_behavior on channel using count(*))", "PIVOT statement"),
        ("-- nothing but a comment\n", "an empty segment"),
        # a second statement, even a harmless one
        ("select 1; drop table mart_behavior", "a second statement"),
        ("select 1; select 2", "a second statement"),
    ],
)
def test_statements_other_than_one_query_are_refused(sql: str, construct: str) -> None:
    assert f": {construct} is not allowed: a segment is exactly one SELECT query" in _refusal(sql)


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        # file and network readers
        ("select * from read_csv('x.csv')", "table function read_csv"),
        ("select * from read_csv_auto('x.csv')", "table function read_csv_auto"),
        ("select * from read_parquet('s3://bucket/x.parquet')", "table function read_parquet"),
        ("select * from read_json('x.json')", "table function read_json"),
        ("select * from parquet_scan('x.parquet')", "table function parquet_scan"),
        ("select * from glob('*')", "table function glob"),
        ("select * from sqlite_scan('x.db', 't')", "table function sqlite_scan"),
        ("select * from postgres_scan('dsn', 'public', 't')", "table function postgres_scan"),
        # any function in table position, even a harmless or unknown one
        ("select * from range(10)", "table function range"),
        ("select * from generate_series(1, 3)", "table function generate_series"),
        ("select * from mart_behavior, unnest([1, 2])", "table function unnest"),
        ("select * from some_extension_scan('x')", "table function some_extension_scan"),
        # SQL that runs SQL, and the catalog
        ("select * from query('select 1')", "table function query"),
        ("select * from query_table('mart_behavior')", "table function query_table"),
        ("select * from duckdb_settings()", "table function duckdb_settings"),
        # a string in FROM is a file (sqlglot makes it a quoted identifier)
        ("select * from 'x.csv'", "a file path in FROM"),
        ("select * from mart_behavior join 'https://example.org/x.csv' using (a)", "a file path in FROM"),
    ],
)
def test_table_functions_and_paths_are_refused(sql: str, construct: str) -> None:
    assert f": {construct} is not allowed: segments read declared models only" in _refusal(sql)


@pytest.mark.parametrize(
    ("sql", "function"),
    [
        # the environment and settings, from the select list
        ("select getenv('HOME') from mart_behavior", "getenv"),
        ("select current_setting('threads')", "current_setting"),
        # file contents as a scalar value
        ("select read_text('/etc/passwd')", "read_text"),
        ("select read_blob('x')", "read_blob"),
        # catalog and extension functions, in a scalar subquery
        ("select (select count(*) from mart_behavior where duckdb_extensions() is null)", "duckdb_extensions"),
        ("select * from mart_behavior where a = (select load_extension('x'))", "load_extension"),
        # schema-qualified calls are the same function
        ("select system.main.getenv('HOME')", "getenv"),
    ],
)
def test_denied_functions_are_refused_anywhere(sql: str, function: str) -> None:
    assert f": function {function} is not allowed: segments read declared models only" in _refusal(sql)


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        # a schema, even main, reaches past the declared models
        ("select * from main.mart_behavior", "qualified table 'main.mart_behavior'"),
        ("select * from information_schema.tables", "qualified table 'information_schema.tables'"),
        ("select * from system.main.duckdb_tables", "qualified table 'system.main.duckdb_tables'"),
        # bare names that are not declared: a typo, and DuckDB's catalog views
        ("select * from mart_foo", "unknown table 'mart_foo'"),
        ("select * from duckdb_tables", "unknown table 'duckdb_tables'"),
        # a CTE is not visible before it is defined, nor inside its own (non-recursive) body
        ("with a as (select * from b), b as (select 1) select * from a", "unknown table 'b'"),
        ("with pg_tables as (select * from pg_tables) select * from pg_tables", "unknown table 'pg_tables'"),
        # a CTE inside a subquery is not visible outside it
        ("select * from (with c as (select 1) select * from c) s join c using (a)", "unknown table 'c'"),
    ],
)
def test_tables_other_than_declared_models_are_refused(sql: str, construct: str) -> None:
    assert f": {construct} is not allowed: " in _refusal(sql)


def test_unknown_table_lists_the_declared_models() -> None:
    assert _refusal("select * from mart_foo", {"mart_b", "mart_a"}) == (
        f"{PATH}:1: unknown table 'mart_foo' is not allowed: segments read declared models only"
        " (declared models: mart_a, mart_b)"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        # the header does not shift lines; a scalar denied function points at its own line
        (
            HEADER + "select patient_id\nfrom mart_behavior\nwhere channel = 'sms'\n"
            "  and patient_id in (select getenv('HOME'))\n",
            f"{PATH}:9: function getenv is not allowed",
        ),
        # a second statement points at its first token, after blank lines
        (HEADER + "select 1;\n\ndrop table mart_behavior;\n", f"{PATH}:8: a second statement is not allowed"),
        # DML behind a WITH points at its keyword, not at the WITH
        (
            HEADER + "with a as (select 1)\n\ninsert into mart_behavior\nselect * from a\n",
            f"{PATH}:8: INSERT statement is not allowed",
        ),
        # an unknown table in the middle of a join chain
        (
            HEADER + "select *\nfrom mart_behavior b\njoin stg_procedures p using (patient_id)\n"
            "join\n  mart_secret s using (patient_id)\n",
            f"{PATH}:10: unknown table 'mart_secret' is not allowed",
        ),
        # the first violation in source order wins, not the first one found
        (
            "select *\nfrom mart_foo\nwhere a in (select 1 from main.x)\n",
            f"{PATH}:2: unknown table 'mart_foo' is not allowed",
        ),
        # a parse error carries sqlglot's line and a description without the source
        (
            HEADER + "select patient_id\nfrom mart_behavior\nwhere channel = 'sms' and\n",
            f"{PATH}:8: SQL that does not parse is not allowed: ",
        ),
        # an unterminated string points where it opened, not at the end of the file
        (
            HEADER + "select patient_id\nfrom mart_behavior\nwhere channel = 'sms\n\n\n",
            f"{PATH}:8: SQL that does not tokenize is not allowed",
        ),
    ],
)
def test_refusals_point_at_the_line(sql: str, message: str) -> None:
    assert _refusal(sql).startswith(message)


@pytest.mark.parametrize(
    "sql",
    [
        # a literal in a clause before the violation
        f"select * from mart_behavior where email = '{PHI}' and a in (select getenv('HOME'))",
        # a literal as the argument of the refused function, and as a path
        f"select getenv('{PHI}')",
        f"select * from read_csv('{PHI}')",
        f"select * from '{PHI}'",
        # a literal in a second statement, and in a refused statement
        f"select 1; delete from mart_behavior where email = '{PHI}'",
        f"copy (select '{PHI}') to 'x.csv'",
        # parse errors: sqlglot's messages quote the source around the error, and sometimes the token
        f"select * from mart_behavior where email = '{PHI}' and",
        f"select '{PHI}' from",
        # ...a numeric token ("got <Token ... text: 8675309 ...>"): a record number is PHI too
        "select * from mart_behavior join 8675309",
        # ...and that token's comments
        f"select * from mart_behavior join -- call {PHI}\n 8675309",
        # a string as part of a table name (sqlglot makes it an identifier)
        f"select * from mart_behavior join '{PHI}'.t using (a)",
        f"select * from mart_behavior join ('{PHI}') using (a)",
        # an unterminated literal: the tokenizer's message quotes it
        f"select * from mart_behavior where email = '{PHI}",
        # a literal inside a comment
        f"-- ask {PHI}\nselect * from mart_foo",
    ],
)
def test_refusals_never_quote_literal_values(sql: str) -> None:
    message = _refusal(sql)
    assert PHI not in message and "secret" not in message and "8675309" not in message


IDENTIFIERS = st.from_regex(r"t_[a-z0-9_]{0,12}", fullmatch=True)
COMMENT_LINES = st.lists(st.one_of(st.just(""), st.from_regex(r"-- [ -~]{0,30}", fullmatch=True)), max_size=12)
BASES = [
    # (SQL with a violation, the line it is on); {name} is a random identifier
    ("select a\nfrom {name}\n", 2, "unknown table"),
    ("select a\nfrom mart_behavior\nwhere {name} = getenv('x')\n", 3, "function getenv"),
    ("select {name}\nfrom mart_behavior;\nselect 2\n", 3, "a second statement"),
    ("select {name}\nfrom\n  main.{name}\n", 3, "qualified table"),
    ("select {name}\nfrom mart_behavior\nwhere\n", 3, "SQL that does not parse"),
]


@pytest.mark.parametrize(("template", "line", "construct"), BASES)
@settings(max_examples=40, deadline=None)
@given(name=IDENTIFIERS, comments=COMMENT_LINES)
def test_prepended_lines_shift_the_reported_line(
    template: str, line: int, construct: str, name: str, comments: list[str]
) -> None:
    prefix = "".join(f"{comment}\n" for comment in comments)
    message = _refusal(prefix + template.format(name=name))
    assert message.startswith(f"{PATH}:{line + len(comments)}: {construct}")
