"""Envelope encryption for records that are not Parquet (mailbox copies, pseudonym secrets).

A data key is made once per batch, wrapped by the KMS under a class's master key, and stored next to
the records it protects; each record is AES-256-GCM sealed with a fresh nonce and caller-chosen
associated data, so a record moved to another place fails to open.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carecast.crypto.kms import Kms

NONCE_BYTES = 12


@dataclass(frozen=True)
class DataKey:
    key_id: str
    wrapped: bytes
    _plaintext: bytes

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self._plaintext).encrypt(nonce, data, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        return AESGCM(self._plaintext).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)

    @property
    def secret(self) -> bytes:
        """The raw key, for keyed hashing (pseudonyms); never store or log it."""
        return self._plaintext


def new_data_key(kms: Kms, key_class: str) -> DataKey:
    key_id = kms.current_key_id(key_class)
    plaintext = secrets.token_bytes(32)
    return DataKey(key_id=key_id, wrapped=kms.wrap(plaintext, key_id), _plaintext=plaintext)


def open_data_key(kms: Kms, key_id: str, wrapped: bytes) -> DataKey:
    return DataKey(key_id=key_id, wrapped=wrapped, _plaintext=kms.unwrap(wrapped, key_id))
