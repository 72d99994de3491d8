import pytest

from carecast.crypto import sealed_file
from carecast.crypto.kms import KeyBindingError, LocalKms
from carecast.crypto.sealed_file import SealedFileError, open_sealed, seal_bytes


def test_round_trip_hides_the_content(kms: LocalKms, tmp_path) -> None:
    data = b"Id,FIRST\np1,Zebulon913\n"
    path = seal_bytes(data, tmp_path / "patients.csv.enc", kms)
    assert b"Zebulon913" not in path.read_bytes()
    assert open_sealed(path, kms) == data


@pytest.mark.parametrize("size", [0, 1, 10, 25])
def test_multi_chunk_round_trip(kms: LocalKms, tmp_path, monkeypatch, size: int) -> None:
    monkeypatch.setattr(sealed_file, "CHUNK_BYTES", 8)
    data = bytes(range(size))
    path = seal_bytes(data, tmp_path / "x.enc", kms)
    assert open_sealed(path, kms) == data


def test_truncation_and_tampering_are_detected(kms: LocalKms, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sealed_file, "CHUNK_BYTES", 8)
    path = seal_bytes(b"0123456789abcdefghij", tmp_path / "x.enc", kms)
    raw = path.read_bytes()
    last_chunk = 4 + 4 + 16  # length prefix + 4 bytes of data + tag
    path.write_bytes(raw[:-last_chunk])
    with pytest.raises(SealedFileError, match="chunk 1"):
        open_sealed(path, kms)
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(SealedFileError):
        open_sealed(path, kms)
    (tmp_path / "plain.csv").write_bytes(b"Id\n1\n")
    with pytest.raises(SealedFileError, match="not a sealed file"):
        open_sealed(tmp_path / "plain.csv", kms)


def test_a_sealed_file_moved_to_another_batch_does_not_open(kms: LocalKms, tmp_path) -> None:
    first = tmp_path / "synthea" / "batch-1"
    second = tmp_path / "synthea" / "batch-2"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    path = seal_bytes(b"Id\np1\n", first / "patients.csv.enc", kms)
    (second / "patients.csv.enc").write_bytes(path.read_bytes())
    with pytest.raises(KeyBindingError, match="sealed:synthea/batch-2/patients.csv.enc"):
        open_sealed(second / "patients.csv.enc", kms)
