import pytest

from carecast.sql.lineage import SqlLineageError, required_columns

SCHEMA = {
    "raw_synthea_patients": ["Id", "BIRTHDATE", "GENDER", "FIRST", "LAST", "ZIP"],
    "raw_synthea_procedures": ["PATIENT", "CODE", "DESCRIPTION", "START"],
}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # the jaffle-shop import CTE selects *, but only the renamed columns are used
        (
            "with source as (select * from raw_synthea_patients),"
            " renamed as (select Id as patient_id, GENDER as sex from source) select * from renamed",
            {"raw_synthea_patients": {"Id", "GENDER"}},
        ),
        # a top-level star reads every column, and lineage says so
        ("select * from raw_synthea_patients", {"raw_synthea_patients": set(SCHEMA["raw_synthea_patients"])}),
        # columns used only in WHERE, JOIN and window clauses are still read
        (
            "select p.Id from raw_synthea_patients p join raw_synthea_procedures x on x.PATIENT = p.Id"
            " where x.CODE = '1' qualify row_number() over (partition by p.GENDER order by x.START) = 1",
            {"raw_synthea_patients": {"Id", "GENDER"}, "raw_synthea_procedures": {"PATIENT", "CODE", "START"}},
        ),
        # counting rows reads no column of any class
        ("select count(*) from raw_synthea_patients", {"raw_synthea_patients": set()}),
        # unquoted identifiers match case-insensitively, as in DuckDB; the stored spelling comes back
        ("select id, gender from raw_synthea_patients", {"raw_synthea_patients": {"Id", "GENDER"}}),
    ],
)
def test_required_columns(sql: str, expected: dict[str, set[str]]) -> None:
    assert required_columns(sql, SCHEMA) == expected


def test_unknown_table_and_unknown_column_are_refused() -> None:
    with pytest.raises(SqlLineageError):
        required_columns("select * from raw_secret_notes", SCHEMA)
    with pytest.raises(SqlLineageError):
        required_columns("select SSN from raw_synthea_patients", SCHEMA)


def test_unparseable_sql_is_refused() -> None:
    with pytest.raises(SqlLineageError, match="cannot parse"):
        required_columns("select from where", SCHEMA)


def test_engine_errors_never_carry_the_offending_value() -> None:
    import pyarrow as pa

    from carecast.sql.engine import QueryError, run_query

    with pytest.raises(QueryError) as failure:
        run_query("select cast(FIRST as integer) from t", {"t": pa.table({"FIRST": ["Zebulon913"]})})
    assert "Zebulon913" not in str(failure.value) and "Conversion" in str(failure.value)


def test_the_engine_cannot_spill_read_files_or_be_reconfigured(tmp_path) -> None:
    import pyarrow as pa

    from carecast.sql.engine import QueryError, confined_duckdb

    secret = tmp_path / "notes.csv"
    secret.write_text("a\n1\n")
    with confined_duckdb({"t": pa.table({"a": [1]})}) as connection:
        assert connection.sql("select current_setting('temp_directory')").fetchall() == [("",)]
        assert connection.sql("select sum(a) from t").fetchall() == [(1,)]
    for statement in (f"select * from read_csv('{secret}')", "SET temp_directory = '/tmp/spill'"):
        with pytest.raises(QueryError), confined_duckdb({"t": pa.table({"a": [1]})}) as connection:
            connection.sql(statement).fetchall()
