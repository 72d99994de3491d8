"""Envelope encryption for records that are not Parquet (sealed files, mailbox copies, the pseudonym key).

A data key is made once per batch, wrapped by the KMS under a class's master key for one binding
context (the artifact it protects), and stored next to the records; each record is AES-256-GCM
sealed with a fresh nonce and caller-chosen associated data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carecast.crypto.kms import Kms

NONCE_BYTES = 12


@dataclass(frozen=True)
class DataKey:
    master_key_id: str
    context: str
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


def new_data_key(kms: Kms, key_class: str, context: str) -> DataKey:
    master_key_id = kms.master_key_id(key_class)
    plaintext = secrets.token_bytes(32)
    wrapped = kms.wrap(plaintext, master_key_id, context)
    return DataKey(master_key_id=master_key_id, context=context, wrapped=wrapped, _plaintext=plaintext)


def open_data_key(kms: Kms, master_key_id: str, wrapped: bytes, context: str) -> DataKey:
    plaintext = kms.unwrap(wrapped, master_key_id, context)
    return DataKey(master_key_id=master_key_id, context=context, wrapped=wrapped, _plaintext=plaintext)
