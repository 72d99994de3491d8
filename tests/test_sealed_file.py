import pytest

from carecast.crypto import sealed_file
from carecast.crypto.kms import KeyBindingError, LocalKms
from carecast.crypto.sealed_file import SealedFileError, iter_sealed, open_sealed, seal_bytes, seal_chunks


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


def test_iter_sealed_gives_the_plaintext_chunk_by_chunk(kms: LocalKms, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sealed_file, "CHUNK_BYTES", 8)
    data = bytes(range(25))
    path = seal_bytes(data, tmp_path / "x.enc", kms)
    assert [len(chunk) for chunk in iter_sealed(path, kms)] == [8, 8, 8, 1]
    assert b"".join(iter_sealed(path, kms)) == data


def test_a_file_cut_at_a_chunk_boundary_fails_on_its_new_last_chunk(kms: LocalKms, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sealed_file, "CHUNK_BYTES", 8)
    path = seal_bytes(bytes(range(40)), tmp_path / "x.enc", kms)
    raw = path.read_bytes()
    path.write_bytes(raw[: -(4 + 8 + 16)])  # the last chunk gone: what is left is still well formed
    chunks = iter_sealed(path, kms)
    assert [next(chunks) for _ in range(3)] == [bytes(range(0, 8)), bytes(range(8, 16)), bytes(range(16, 24))]
    with pytest.raises(SealedFileError, match="chunk 3 fails authentication"):
        next(chunks)
    path.write_bytes(raw[: -(8 + 16) - 2])  # cut inside a length prefix
    with pytest.raises(SealedFileError, match="chunk 4 truncated"):
        b"".join(iter_sealed(path, kms))


def test_seal_chunks_seals_pieces_as_they_come(kms: LocalKms, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sealed_file, "CHUNK_BYTES", 8)
    pieces = [b"Id,FIRST", b"\np1,", b"", b"Zebulon9"]
    path = seal_chunks(iter(pieces), tmp_path / "x.enc", kms)
    assert list(iter_sealed(path, kms)) == pieces
    assert open_sealed(seal_chunks(iter([]), tmp_path / "empty.enc", kms), kms) == b""
    with pytest.raises(ValueError, match="over the chunk size"):
        seal_chunks(iter([b"123456789"]), tmp_path / "big.enc", kms)
    assert sorted(p.name for p in tmp_path.glob("*enc*")) == ["empty.enc", "x.enc"]
