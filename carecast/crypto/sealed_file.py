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
from pathlib import Path

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
    data_key = new_data_key(kms, key_class, binding_context(target))
    prefix = secrets.token_bytes(8)
    header = json.dumps(
        {"key_id": data_key.master_key_id, "wrapped": data_key.wrapped.hex(), "nonce_prefix": prefix.hex()},
        sort_keys=True,
    ).encode()
    aead = AESGCM(data_key.secret)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(MAGIC + _LENGTH.pack(len(header)) + header)
        chunks = range(0, max(len(data), 1), CHUNK_BYTES)
        for index, start in enumerate(chunks):
            last = index == len(chunks) - 1
            nonce = prefix + struct.pack(">I", index)
            sealed = aead.encrypt(nonce, data[start : start + CHUNK_BYTES], _associated_data(header, index, last))
            handle.write(_LENGTH.pack(len(sealed)) + sealed)
    os.replace(temporary, target)
    return target


def open_sealed(path: Path, kms: Kms) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise SealedFileError(f"{path}: not a sealed file")
    offset = len(MAGIC)
    (header_length,) = _LENGTH.unpack_from(raw, offset)
    offset += _LENGTH.size
    header = raw[offset : offset + header_length]
    offset += header_length
    fields = json.loads(header)
    data_key = open_data_key(kms, fields["key_id"], bytes.fromhex(fields["wrapped"]), binding_context(path))
    aead = AESGCM(data_key.secret)
    prefix = bytes.fromhex(fields["nonce_prefix"])
    parts, index = [], 0
    view = memoryview(raw)  # chunks are decrypted in place, not copied out first
    while offset < len(raw):
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        sealed = view[offset : offset + length]
        offset += length
        last = offset >= len(raw)
        try:
            parts.append(aead.decrypt(prefix + struct.pack(">I", index), sealed, _associated_data(header, index, last)))
        except Exception:
            raise SealedFileError(
                f"{path}: chunk {index} fails authentication (damaged, truncated or altered)"
            ) from None
        index += 1
    if index == 0:
        raise SealedFileError(f"{path}: truncated (no chunks)")
    return b"".join(parts)
