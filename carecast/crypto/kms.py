"""Key management behind one interface.

Master keys never leave the KMS; callers hand it data keys to wrap and unwrap. Every call is written
to the access log with the key id and its class, so "which keys did this run use" has an answer.
The local KMS keeps master keys as files under ``CARECAST_HOME/keys/master`` (mode 0600, created on
first use); a cloud KMS implements the same three methods.
"""

from __future__ import annotations

import json
import os
import secrets
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carecast.crypto.access_log import AccessLog

KEY_CLASSES = (
    "identifier",
    "clinical",
    "demographic",
    "operational",
    "footer",
    "message",
    "pseudonym",
    "landing",
)
"""PHI classes of columns (identifier, clinical, demographic, operational), the Parquet footer,
rendered messages (kept apart so retention can shred them), the pseudonym (HMAC) key and sealed
landing files."""


class UnknownKeyError(KeyError):
    pass


# Key ids appear in Parquet's column-key property ("id:col,col;id:col"), so they avoid ':', ';', ','.


class Kms(ABC):
    access_log: AccessLog

    @abstractmethod
    def current_key_id(self, key_class: str) -> str:
        """The key id new data of this class is wrapped under."""

    @abstractmethod
    def key_class(self, key_id: str) -> str:
        """The class a key id belongs to."""

    @abstractmethod
    def _wrap(self, data_key: bytes, key_id: str) -> bytes: ...

    @abstractmethod
    def _unwrap(self, wrapped: bytes, key_id: str) -> bytes: ...

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        wrapped = self._wrap(data_key, key_id)
        self.access_log.append("wrap", key_id, self.key_class(key_id))
        return wrapped

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        data_key = self._unwrap(wrapped, key_id)
        self.access_log.append("unwrap", key_id, self.key_class(key_id))
        return data_key


class LocalKms(Kms):
    """Master keys in files; AES-256-GCM key wrapping with the key id as associated data."""

    def __init__(self, keys_dir: Path):
        self.keys_dir = keys_dir
        self.master_dir = keys_dir / "master"
        self.keyring_path = keys_dir / "keyring.json"
        self.access_log = AccessLog(keys_dir / "access.jsonl")
        self._cache: dict[str, bytes] = {}

    def current_key_id(self, key_class: str) -> str:
        if key_class not in KEY_CLASSES:
            raise UnknownKeyError(f"no key class {key_class!r}; known: {', '.join(KEY_CLASSES)}")
        version = self._keyring().get(key_class, 1)
        key_id = f"local/{key_class}/v{version}"
        self._master_key(key_id, create=True)
        return key_id

    def key_class(self, key_id: str) -> str:
        try:
            provider, key_class, _version = key_id.split("/")
        except ValueError:
            raise UnknownKeyError(f"malformed key id {key_id!r}") from None
        if provider != "local" or key_class not in KEY_CLASSES:
            raise UnknownKeyError(f"unknown key id {key_id!r}")
        return key_class

    def _wrap(self, data_key: bytes, key_id: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self._master_key(key_id)).encrypt(nonce, data_key, key_id.encode())

    def _unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        master = self._master_key(key_id)
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], key_id.encode())

    def _keyring(self) -> dict[str, int]:
        if not self.keyring_path.exists():
            return {}
        return json.loads(self.keyring_path.read_text())

    def _master_key(self, key_id: str, create: bool = False) -> bytes:
        if key_id in self._cache:
            return self._cache[key_id]
        key_class = self.key_class(key_id)
        path = self.master_dir / f"{key_class}.{key_id.rsplit('/', 1)[1]}.key"
        if not path.exists():
            if not create:
                raise UnknownKeyError(f"master key {key_id} does not exist (destroyed or never made)")
            _create_secret_file(path, secrets.token_bytes(32))
        material = path.read_bytes()
        if len(material) != 32:
            raise UnknownKeyError(f"master key {key_id} ({key_class}) is damaged")
        self._cache[key_id] = material
        return material


def _create_secret_file(path: Path, material: bytes) -> None:
    """Create a 0600 file atomically; if another process won the race, keep its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(material)
        handle.flush()
        os.fsync(handle.fileno())
