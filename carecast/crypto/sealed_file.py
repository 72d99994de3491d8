"""Sealed files: whole extracts encrypted at rest, for landing batches that arrive as files.

Real extracts often arrive encrypted (PGP over SFTP, SSE-KMS buckets); carecast's own landing files
(generated data, copied exports) are sealed with this format so no plaintext extract sits on disk.

Layout: ``CCSEAL1\\n`` | header length (4 bytes) | header JSON (key id, wrapped data key, nonce
prefix) | chunks, each ``length (4 bytes) | AES-256-GCM ciphertext``. Each chunk's nonce is the
prefix plus its index, and its associated data binds the header, the index and whether it is the
last chunk, so reordering, truncation or splicing of chunks fails to open.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carecast.crypto.envelope import new_data_key, open_data_key
from carecast.crypto.kms import Kms

MAGIC = b"CCSEAL1\n"
SUFFIX = ".enc"
CHUNK_BYTES = 4 << 20
_LENGTH = struct.Struct(">I")


class SealedFileError(ValueError):
    pass


def _associated_data(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">Q?", index, last)


def binding_context(path: Path) -> str:
    """Where a sealed file belongs (``sealed:<source>/<batch>/<name>``): its key opens nowhere else."""
    return f"sealed:{path.parent.parent.name}/{path.parent.name}/{path.name}"


def seal_bytes(data: bytes, target: Path, kms: Kms, key_class: str = "landing") -> Path:
    """Write ``data`` sealed to ``target`` (atomically, via a temporary name); return the path."""
    pieces = (data[start : start + CHUNK_BYTES] for start in range(0, max(len(data), 1), CHUNK_BYTES))
    return seal_chunks(pieces, target, kms, key_class)


def seal_chunks(pieces: Iterable[bytes], target: Path, kms: Kms, key_class: str = "landing") -> Path:
    """``seal_bytes`` for plaintext that arrives in pieces (an extract larger than memory): each
    piece, of at most ``CHUNK_BYTES``, becomes one chunk."""
    data_key = new_data_key(kms, key_class, binding_context(target))
    prefix = secrets.token_bytes(8)
    header = json.dumps(
        {"key_id": data_key.master_key_id, "wrapped": data_key.wrapped.hex(), "nonce_prefix": prefix.hex()},
        sort_keys=True,
    ).encode()
    aead = AESGCM(data_key.secret)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(MAGIC + _LENGTH.pack(len(header)) + header)
            for index, (piece, last) in enumerate(_marking_the_last(iter(pieces))):
                if len(piece) > CHUNK_BYTES:
                    raise ValueError(f"a piece of {len(piece)} bytes is over the chunk size ({CHUNK_BYTES})")
                nonce = prefix + struct.pack(">I", index)
                sealed = aead.encrypt(nonce, piece, _associated_data(header, index, last))
                handle.write(_LENGTH.pack(len(sealed)) + sealed)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, target)
    return target


def _marking_the_last(pieces: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Each piece and whether it is the last (no pieces at all: one empty last piece)."""
    previous = next(pieces, b"")
    for piece in pieces:
        yield previous, False
        previous = piece
    yield previous, True


def iter_sealed(path: Path, kms: Kms) -> Iterator[bytes]:
    """The plaintext of a sealed file chunk by chunk (at most ``CHUNK_BYTES`` each), for files larger
    than memory.

    Each chunk is authenticated before it is yielded, and only the last chunk of the file was sealed as
    last: a file cut at a chunk boundary fails on its new last chunk, as one cut mid-chunk does. So a
    caller acts on what it read only once the iterator is exhausted without an error.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if handle.read(len(MAGIC)) != MAGIC:
            raise SealedFileError(f"{path}: not a sealed file")
        header = handle.read(_read_length(handle, path, "header"))
        fields = json.loads(header)
        data_key = open_data_key(kms, fields["key_id"], bytes.fromhex(fields["wrapped"]), binding_context(path))
        aead = AESGCM(data_key.secret)
        prefix = bytes.fromhex(fields["nonce_prefix"])
        index = 0
        while handle.tell() < size:
            sealed = handle.read(_read_length(handle, path, f"chunk {index}"))
            last = handle.tell() >= size
            try:
                yield aead.decrypt(prefix + struct.pack(">I", index), sealed, _associated_data(header, index, last))
            except InvalidTag:
                raise SealedFileError(
                    f"{path}: chunk {index} fails authentication (damaged, truncated or altered)"
                ) from None
            index += 1
    if index == 0:
        raise SealedFileError(f"{path}: truncated (no chunks)")


def open_sealed(path: Path, kms: Kms) -> bytes:
    """The whole plaintext, for callers that hold it in memory anyway."""
    return b"".join(iter_sealed(path, kms))


def _read_length(handle: BinaryIO, path: Path, what: str) -> int:
    raw = handle.read(_LENGTH.size)
    if len(raw) < _LENGTH.size:
        raise SealedFileError(f"{path}: {what} truncated (its length is cut off)")
    return _LENGTH.unpack(raw)[0]
