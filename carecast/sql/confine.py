"""Confine an analyst's segment SQL to one read-only query over declared models, before it runs.

The engine (``carecast.sql.engine``) already runs DuckDB with external access off and its
configuration locked; that is the last line of defence. This is the first: the rendered SQL is
parsed (sqlglot, DuckDB dialect) and refused, with ``file:line``, unless it is

* exactly one statement, and a query: SELECT (or DuckDB's FROM-first form), WITH, UNION /
  INTERSECT / EXCEPT, a parenthesised query. CTE and subquery bodies are queries too (or VALUES,
  or a bare table), and ``SELECT ... INTO`` is refused. Anything else (DDL, DML, COPY, ATTACH, INSTALL/LOAD, PRAGMA,
  SET/RESET, CALL, EXPORT/IMPORT, USE, DESCRIBE, PIVOT statements, and whatever sqlglot falls back
  to ``exp.Command`` for) is refused by the first keyword, before parsing, or by the tree shape.
* reading only tables it may read: each table is a CTE visible at that point or one of the declared
  models, unqualified (``main.x``, ``information_schema.tables`` and ``system.main.x`` are refused).
* reading no files, network, environment or catalog. Two rules, because either alone leaks:
  nothing but a plain name may stand in table position (this catches every table function,
  including readers and extensions we have never heard of, ``range()``, ``unnest()`` and a string
  path such as ``FROM 'x.csv'``), and a denylist of functions is refused anywhere (DuckDB's scalar
  readers and system functions, such as ``read_text``, ``getenv`` or ``current_setting``, can be
  called in a select list or a scalar subquery, where the first rule does not look).

Messages name keywords, tables and functions, never literal values: a WHERE clause may hold PHI
(an email, a medical record number). sqlglot's own messages quote the source, so they are not
passed on; parse errors keep the line and sqlglot's description only if no literal is in it.

Lines are 1-based lines of the rendered file, which rendering keeps equal to the source's. A node's
line comes from the first source position (``meta['start']``) among it and its descendants (sqlglot
30 records positions on identifiers, literals and function names, not on clauses); a statement's
from its keyword token. Leading ``--`` comments are attached to tokens, so they never shift a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

_DUCKDB = Dialect.get_or_raise("duckdb")

_QUERY_STARTS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.FROM, TokenType.L_PAREN})
_LITERAL_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.NUMBER,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
    }
)

# Refused anywhere in a query, by name or prefix (lower case). Table functions are refused by
# position already; these are here for their scalar forms and as documentation.
_DENIED_FUNCTIONS = frozenset(
    {
        # files and the network
        "glob",
        "sniff_csv",
        "st_read",
        "arrow_scan",
        # SQL that runs SQL
        "query",
        "query_table",
        "json_execute_serialized_sql",
        "sql_auto_complete",
        # environment, settings, secrets, extensions, storage
        "getenv",
        "current_setting",
        "getvariable",
        "which_secret",
        "load_extension",
        "checkpoint",
        "force_checkpoint",
    }
)
_DENIED_PREFIXES = (
    "read_",  # read_csv(_auto), read_parquet, read_json*, read_ndjson*, read_text, read_blob, read_xlsx
    "parquet_",  # parquet_scan, parquet_metadata, parquet_schema, ...
    "sqlite_",
    "postgres_",
    "mysql_",
    "iceberg_",
    "delta_",
    "duckdb_",  # the catalog: duckdb_settings(), duckdb_tables(), duckdb_secrets(), ...
    "pragma_",  # pragma_table_info(), pragma_database_list(), ...
)

_READ_MODELS_ONLY = "segments read declared models only"
_ONE_QUERY = "a segment is exactly one SELECT query"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN_REPR = re.compile(
    r"<Token token_type: TokenType\.(\w+), text: .*?, line: \d+, col: \d+, start: \d+, end: \d+, comments: \[.*?\]>",
    re.DOTALL,
)
_MISSING_FROM = re.compile(r"from \d+:(\d+)")


class SqlConfinementError(ValueError):
    """Names the file, the 1-based line and the refused construct; never quotes literal values from the SQL."""


@dataclass(frozen=True)
class _Violation:
    start: int
    construct: str
    reason: str


def confine_query(sql: str, allowed_tables: Iterable[str], path: str | Path) -> None:
    """Raise SqlConfinementError for the first violation, in source order; return if the query may run.

    ``allowed_tables`` are the declared models the segment may read (bare names, any case).
    """
    tokens = _tokenize(sql, path)
    refusal = _statement_refusal(tokens)
    if refusal is None:
        query = _parse(sql, tokens, path)
        allowed = {table.lower() for table in allowed_tables}
        violations = [_root_refusal(query, tokens), *_walk(query, sql, tokens, allowed)]
        refusal = min((v for v in violations if v is not None), key=lambda v: v.start, default=None)
    if refusal is not None:
        raise SqlConfinementError(
            f"{path}:{_line(sql, refusal.start)}: {refusal.construct} is not allowed: {refusal.reason}"
        )


def _line(sql: str, offset: int) -> int:
    return sql.count("\n", 0, offset) + 1


def _tokenize(sql: str, path: str | Path) -> list[Token]:
    try:
        return _DUCKDB.tokenize(sql)
    except TokenError as error:
        # The message quotes the source around the error; only the position is kept. An
        # unterminated string reports where it opened ("Missing ' from line:offset"); anything
        # else (an unterminated comment) ran off the end of the input.
        missing = _MISSING_FROM.search(str(error.__cause__ or ""))
        offset = int(missing.group(1)) if missing else len(sql)
        raise SqlConfinementError(
            f"{path}:{_line(sql, offset)}: SQL that does not tokenize is not allowed: unterminated string, "
            "identifier or comment"
        ) from None


def _statements(tokens: list[Token]) -> list[list[Token]]:
    """Split on ``;`` as sqlglot's parser does, dropping empty statements (a trailing ``;``)."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _statement_refusal(tokens: list[Token]) -> _Violation | None:
    """Refuse by tokens what is not one query, before sqlglot parses (and logs) it as a Command."""
    statements = _statements(tokens)
    if not statements:
        return _Violation(0, "an empty segment", _ONE_QUERY)
    first = statements[0][0]
    if first.token_type not in _QUERY_STARTS:
        return _Violation(first.start, f"{_keyword(first)} statement", _ONE_QUERY)
    if len(statements) > 1:
        return _Violation(statements[1][0].start, "a second statement", _ONE_QUERY)
    return None


def _keyword(token: Token) -> str:
    if token.token_type in _LITERAL_TOKENS or not _IDENTIFIER.fullmatch(token.text):
        return "a non-keyword"
    return token.text.upper()


def _parse(sql: str, tokens: list[Token], path: str | Path) -> exp.Expr:
    # error_message_context=0: sqlglot quotes that many characters of source in its messages and
    # in the warning it logs when it falls back to exp.Command; the source may hold PHI.
    parser = _DUCKDB.parser(error_message_context=0)
    try:
        parsed = parser.parse(tokens, sql)
    except ParseError as error:
        details = error.errors[0] if error.errors else {}
        line = details.get("line") or 1
        description = _safe_description(details.get("description"), tokens)
        raise SqlConfinementError(f"{path}:{line}: SQL that does not parse is not allowed: {description}") from None
    # one statement, checked by tokens; a ';' carrying a comment parses as exp.Semicolon
    return next(tree for tree in parsed if tree is not None and not isinstance(tree, exp.Semicolon))


def _safe_description(description: str | None, tokens: list[Token]) -> str:
    """sqlglot's description, unless it might quote the query's literals or comments.

    Some descriptions embed a token (``got <Token token_type: ..., text: ..., comments: ...>``):
    it is replaced by its type. Others quote a literal's text (``Invalid numeric interval literal:
    '...'``). If a token or any literal's text is still in there, only "syntax error" is said.
    """
    text = _TOKEN_REPR.sub(r"\1", (description or "").strip())
    literals = {token.text for token in tokens if token.token_type in _LITERAL_TOKENS and token.text}
    if not text or "<Token" in text or any(literal in text for literal in literals):
        return "syntax error"
    return text


def _root_refusal(query: exp.Expr, tokens: list[Token]) -> _Violation | None:
    """WITH passes the token check, but may lead to INSERT, UPDATE, DELETE, ... rather than a query."""
    inner = query
    while isinstance(inner, exp.Subquery):
        inner = inner.this
    if isinstance(inner, (exp.Select, exp.SetOperation)):
        return None
    keyword = _statement_name(inner)
    return _Violation(_keyword_start(tokens, keyword), f"{keyword} statement", _ONE_QUERY)


def _statement_name(node: exp.Expr) -> str:
    name = node.this if isinstance(node, exp.Command) else node.key
    return name.upper() if _IDENTIFIER.fullmatch(name) else "a non-query"


def _keyword_start(tokens: list[Token], keyword: str) -> int:
    """Offset of the first token outside parentheses spelled ``keyword``, else of the first token."""
    depth = 0
    for token in tokens:
        depth += (token.token_type == TokenType.L_PAREN) - (token.token_type == TokenType.R_PAREN)
        if depth == 0 and token.text.upper() == keyword:
            return token.start
    return tokens[0].start


def _walk(node: exp.Expr, sql: str, tokens: list[Token], allowed: set[str]) -> Iterator[_Violation]:
    """Violations in and under ``node``; a refused node is not looked into (one message per construct)."""
    violation = _refusal(node, sql, tokens, allowed)
    if violation is not None:
        yield violation
        return
    for child in node.iter_expressions():
        yield from _walk(child, sql, tokens, allowed)


def _refusal(node: exp.Expr, sql: str, tokens: list[Token], allowed: set[str]) -> _Violation | None:
    if isinstance(node, exp.Into):
        return _Violation(_start(node, tokens), "SELECT ... INTO", _ONE_QUERY)
    # a body is a query, VALUES, or a bare table (DuckDB reads FROM (x) as FROM x)
    if isinstance(node, (exp.Subquery, exp.CTE)) and not isinstance(node.this, (exp.Query, exp.Values, exp.Table)):
        return _Violation(_start(node, tokens), f"{_statement_name(node.this)} statement", _ONE_QUERY)
    if isinstance(node, (exp.From, exp.Join, exp.Lateral)):
        return _source_refusal(node.this, sql, tokens)
    if isinstance(node, exp.Table):
        return _table_refusal(node, sql, tokens, allowed)
    if isinstance(node, exp.Func) and _is_denied(node, sql):
        return _Violation(_start(node, tokens), f"function {_function_name(node, sql)}", _READ_MODELS_ONLY)
    return None


def _source_refusal(source: exp.Expr, sql: str, tokens: list[Token]) -> _Violation | None:
    """What stands in table position is a table, a subquery, VALUES or LATERAL: no function call."""
    if isinstance(source, (exp.Table, exp.Subquery, exp.Values, exp.Lateral)):
        return None
    construct = f"table function {_function_name(source, sql)}" if isinstance(source, exp.Func) else source.key
    return _Violation(_start(source, tokens), construct, _READ_MODELS_ONLY)


def _table_refusal(table: exp.Table, sql: str, tokens: list[Token], allowed: set[str]) -> _Violation | None:
    start = _start(table, tokens)
    if isinstance(table.this, exp.Func):
        return _Violation(start, f"table function {_function_name(table.this, sql)}", _READ_MODELS_ONLY)
    if not isinstance(table.this, exp.Identifier):
        return _Violation(start, f"{table.this.key} in table position", _READ_MODELS_ONLY)
    if any(_is_literal(part, tokens) for part in table.parts):
        # sqlglot 30 turns FROM 'x.csv' (and 'x'.y) into quoted identifiers: only the token tells
        return _Violation(start, "a file path in FROM", _READ_MODELS_ONLY)
    if table.args.get("db") or table.args.get("catalog"):
        name = ".".join(part.name for part in table.parts)
        return _Violation(start, f"qualified table '{name}'", "declared models are named without a schema")
    if table.name.lower() in allowed or table.name.lower() in _visible_ctes(table):
        return None
    declared = ", ".join(sorted(allowed)) or "none"
    return _Violation(start, f"unknown table '{table.name}'", f"{_READ_MODELS_ONLY} (declared models: {declared})")


def _is_literal(identifier: exp.Identifier, tokens: list[Token]) -> bool:
    start = identifier.meta.get("start")
    return any(token.start == start and token.token_type in _LITERAL_TOKENS for token in tokens)


def _visible_ctes(table: exp.Table) -> set[str]:
    """CTE names the table may refer to, as DuckDB resolves them: an enclosing query's WITH, and
    within a WITH only the CTEs before this one (and itself, if RECURSIVE). Anything else named
    like a CTE is a catalog table, and must be declared."""
    visible: set[str] = set()
    child: exp.Expr = table
    ancestor = table.parent
    while ancestor is not None:
        if isinstance(ancestor, exp.With):
            end = child.index + 1 if ancestor.recursive else child.index
            visible.update(cte.alias.lower() for cte in ancestor.expressions[:end])
        elif isinstance(ancestor.args.get("with_"), exp.With) and child.arg_key != "with_":
            visible.update(cte.alias.lower() for cte in ancestor.args["with_"].expressions)
        child, ancestor = ancestor, ancestor.parent
    return visible


def _is_denied(function: exp.Func, sql: str) -> bool:
    names = {_function_name(function, sql)}
    if not isinstance(function, exp.Anonymous):
        names.add(function.sql_name().lower())  # read_csv_auto(...) may parse as exp.ReadCSV
    return any(name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES) for name in names)


def _function_name(function: exp.Func, sql: str) -> str:
    """The name as written (``range``, not sqlglot's ``GENERATE_SERIES``), when sqlglot kept its position."""
    if isinstance(function, exp.Anonymous):
        return function.name.lower()
    meta = function.meta
    written = sql[meta["start"] : meta["end"] + 1] if "start" in meta else ""
    return written.lower() if _IDENTIFIER.fullmatch(written) else function.sql_name().lower()


def _start(node: exp.Expr, tokens: list[Token]) -> int:
    """The first source offset recorded on the node or its descendants, else the statement's first token."""
    starts = [descendant.meta["start"] for descendant in node.walk() if "start" in descendant.meta]
    return min(starts, default=tokens[0].start)
