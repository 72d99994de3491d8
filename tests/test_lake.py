import pyarrow as pa
import pytest

from carecast.lake import DatasetNotFoundError, Lake
from carecast.registry import UndeclaredColumnError

CANARY_NAME = "Zebulon913"
CANARY_DIAGNOSIS = "Canary syndrome (disorder)"


def _patients() -> pa.Table:
    return pa.table(
        {
            "Id": ["p1", "p2"],
            "BIRTHDATE": pa.array([None, None], pa.date32()),
            "FIRST": [CANARY_NAME, "Ada12"],
            "GENDER": ["F", "M"],
            "STATE": ["Massachusetts", "Massachusetts"],
        }
    )


def test_every_column_is_encrypted_and_reads_back(lake: Lake) -> None:
    version = lake.write("raw_synthea_patients", _patients())
    assert version.version == 1 and version.rows == 2
    raw = version.path.read_bytes()
    assert CANARY_NAME.encode() not in raw and b"Massachusetts" not in raw
    assert raw[-4:] == b"PARE", "an encrypted footer ends in PARE, not PAR1"
    assert lake.read("raw_synthea_patients").table.equals(_patients())


def test_a_read_unwraps_only_the_keys_of_the_columns_it_asks_for(lake: Lake) -> None:
    lake.write("raw_synthea_patients", _patients())
    demographic = lake.read("raw_synthea_patients", ["Id", "GENDER"])
    assert demographic.key_ids == ("local/demographic/v1", "local/footer/v1", "local/operational/v1")
    identifying = lake.read("raw_synthea_patients", ["FIRST"])
    assert "local/identifier/v1" in identifying.key_ids
    assert "local/demographic/v1" not in identifying.key_ids
    unwrapped = [e["class"] for e in lake.kms.access_log.entries() if e["op"] == "unwrap"]
    assert unwrapped.count("identifier") == 1


def test_versions_are_immutable_and_numbered(lake: Lake) -> None:
    first = lake.write("raw_synthea_patients", _patients())
    second = lake.write("raw_synthea_patients", _patients().slice(0, 1))
    assert (first.version, second.version) == (1, 2)
    assert lake.read("raw_synthea_patients").table.num_rows == 1
    assert lake.read("raw_synthea_patients", version=1).table.num_rows == 2
    assert first.path.exists() and first.sha256 != second.sha256


def test_a_column_without_a_declared_class_is_refused(lake: Lake) -> None:
    table = _patients().append_column("favourite_colour", pa.array(["red", "blue"]))
    with pytest.raises(UndeclaredColumnError, match="favourite_colour"):
        lake.write("raw_synthea_patients", table)
    assert not lake.exists("raw_synthea_patients")


def test_missing_dataset_and_missing_column_are_clear_errors(lake: Lake) -> None:
    with pytest.raises(DatasetNotFoundError):
        lake.read("raw_synthea_patients")
    lake.write("raw_synthea_patients", _patients())
    with pytest.raises(KeyError, match="LAST"):
        lake.read("raw_synthea_patients", ["LAST"])


def test_a_version_folder_copied_over_another_is_detected(lake: Lake) -> None:
    import shutil

    from carecast.lake import LakeIntegrityError

    first = lake.write("raw_synthea_patients", _patients())
    second = lake.write("raw_synthea_patients", _patients().slice(0, 1))
    shutil.rmtree(second.path.parent)
    shutil.copytree(first.path.parent, second.path.parent)
    with pytest.raises(LakeIntegrityError, match="raw_synthea_patients v2"):
        lake.read("raw_synthea_patients")
    assert lake.read("raw_synthea_patients", version=1).table.num_rows == 2


def test_a_version_written_table_by_table_is_one_version(lake: Lake) -> None:
    whole = lake.write("raw_synthea_patients", _patients())
    with lake.writer("raw_synthea_patients", _patients().schema) as out:
        out.write(_patients().slice(0, 1))
        assert lake.version_numbers("raw_synthea_patients") == [1], "not visible before it is complete"
        out.write(_patients().slice(1))
    assert (out.version.version, out.version.rows) == (2, 2)
    assert out.version.key_ids == whole.key_ids
    assert CANARY_NAME.encode() not in out.version.path.read_bytes()
    assert lake.read("raw_synthea_patients").table.equals(_patients())
    groups = list(lake.read_row_groups("raw_synthea_patients", ["Id"]))
    assert [group.to_pylist() for group in groups] == [[{"Id": "p1"}], [{"Id": "p2"}]]
    assert lake.schema("raw_synthea_patients") == lake.read("raw_synthea_patients").table.schema


def test_a_version_not_completed_leaves_nothing(lake: Lake) -> None:
    with (
        pytest.raises(RuntimeError, match="interrupted"),
        lake.writer("raw_synthea_patients", _patients().schema) as out,
    ):
        out.write(_patients())
        raise RuntimeError("interrupted")
    with lake.writer("raw_synthea_patients", _patients().schema) as out:
        out.write(_patients())
        out.discard()
    assert out.version is None
    assert not lake.exists("raw_synthea_patients") and lake.datasets() == []
    assert not any(lake.root.rglob("*.parquet"))
