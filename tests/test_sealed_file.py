import pytest

from carecast.crypto import sealed_file
from carecast.crypto.kms import LocalKms
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
    (tmp_path / "truncated.enc").write_bytes(raw[:-last_chunk])
    with pytest.raises(SealedFileError, match="chunk 1"):
        open_sealed(tmp_path / "truncated.enc", kms)
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    (tmp_path / "flipped.enc").write_bytes(bytes(flipped))
    with pytest.raises(SealedFileError):
        open_sealed(tmp_path / "flipped.enc", kms)
    (tmp_path / "plain.csv").write_bytes(b"Id\n1\n")
    with pytest.raises(SealedFileError, match="not a sealed file"):
        open_sealed(tmp_path / "plain.csv", kms)
