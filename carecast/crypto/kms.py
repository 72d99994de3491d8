"""Key management behind one interface.

Master keys never leave the KMS; callers hand it data keys to wrap and unwrap. A master key has a
stable name per class (``local/identifier``) and versions: wrapping uses the current version and
the wrapped blob records which one, so rotation adds a version without renaming anything, and
re-wrapping moves data to it. Every wrap and unwrap names a *binding context* (which artifact the
key belongs to, e.g. ``lake:stg_patients@v3``): it is authenticated with the wrapped key, so a key
moved to another artifact fails to unwrap. Every call goes to the access log with the key id and
version, class, and who asked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
    "mailbox",
    "pseudonym",
    "landing",
    "dkim",
    "link",
)
"""PHI classes of columns (identifier, clinical, demographic, operational), the Parquet footer,
rendered messages and the sink's mailbox copies (kept apart so retention can shred them), the
pseudonym (HMAC) key, sealed landing files, DKIM private keys and the key that signs the tokens in
unsubscribe and tracking links."""

EPOCH_CLASSES = ("message", "mailbox")
"""Classes whose versions are retention epochs: never re-wrapped to a newer version, destroyed on
expiry, so destroying a version shreds what was written under it."""


class UnknownKeyError(KeyError):
    pass


class KeyBindingError(ValueError):
    """A wrapped key did not unwrap: it belongs to another artifact, or it was altered."""


@dataclass(frozen=True)
class KeyVersion:
    key_class: str
    version: int
    created_at: str
    state: str  # active (current), retired (superseded, still readable), destroyed
    retired_at: str | None = None

    @property
    def key_id(self) -> str:
        return f"local/{self.key_class}/v{self.version}"


class Kms(ABC):
    access_log: AccessLog

    @abstractmethod
    def master_key_id(self, key_class: str) -> str:
        """The stable name data of this class is wrapped under (its id in Parquet key material).

        Names appear in Parquet's column-key property ("id:col,col;id:col"), so they avoid ':', ';', ','.
        """

    @abstractmethod
    def key_class(self, master_key_id: str) -> str: ...

    @abstractmethod
    def _wrap(self, data_key: bytes, master_key_id: str, context: str, version: int | None) -> tuple[bytes, str]:
        """Return the wrapped blob and the versioned key id used."""

    @abstractmethod
    def _unwrap(self, wrapped: bytes, master_key_id: str, context: str) -> tuple[bytes, str]:
        """Return the data key and the versioned key id that unwrapped it."""

    @abstractmethod
    def rotate(self, key_class: str) -> str:
        """Make a new current version for a class; return its versioned key id."""

    def wrap(self, data_key: bytes, master_key_id: str, context: str = "", version: int | None = None) -> bytes:
        """Wrap under the current version, or under ``version`` (to keep an epoch key where it is)."""
        wrapped, versioned_id = self._wrap(data_key, master_key_id, context, version)
        self.access_log.append("wrap", versioned_id, self.key_class(master_key_id))
        return wrapped

    def unwrap(self, wrapped: bytes, master_key_id: str, context: str = "") -> bytes:
        data_key, versioned_id = self._unwrap(wrapped, master_key_id, context)
        self.access_log.append("unwrap", versioned_id, self.key_class(master_key_id))
        return data_key

    def wrapped_version(self, wrapped: bytes) -> int | None:
        """The master key version a blob was wrapped under, when the KMS can tell without a call."""
        return None


_BLOB_MAGIC = b"CK1"
_VERSION = struct.Struct(">I")


class LocalKms(Kms):
    """Master keys in files (``keys/master/<class>.v<N>.key``, 0600); AES-256-GCM key wrapping with
    the versioned key id and the binding context as associated data."""

    def __init__(self, keys_dir: Path):
        self.keys_dir = keys_dir
        self.master_dir = keys_dir / "master"
        self.keyring_path = keys_dir / "keyring.json"
        self.access_log = AccessLog(keys_dir / "access.jsonl")
        self._cache: dict[tuple[str, int], bytes] = {}

    def master_key_id(self, key_class: str) -> str:
        self._require_class(key_class)
        self._current_version(key_class)
        return f"local/{key_class}"

    def key_class(self, master_key_id: str) -> str:
        parts = master_key_id.split("/")
        if len(parts) not in (2, 3) or parts[0] != "local" or parts[1] not in KEY_CLASSES:
            raise UnknownKeyError(f"unknown key id {master_key_id!r}")
        return parts[1]

    def current_key_id(self, key_class: str) -> str:
        return f"local/{key_class}/v{self._current_version(key_class)}"

    def versions(self, key_class: str | None = None) -> list[KeyVersion]:
        keyring = self._keyring()
        classes = [key_class] if key_class else sorted(keyring)
        return [
            KeyVersion(
                key_class=c,
                version=int(v),
                created_at=info["created_at"],
                state=info["state"],
                retired_at=info.get("retired_at"),
            )
            for c in classes
            for v, info in sorted(keyring.get(c, {}).get("versions", {}).items(), key=lambda item: int(item[0]))
        ]

    def _wrap(self, data_key: bytes, master_key_id: str, context: str, version: int | None) -> tuple[bytes, str]:
        key_class = self.key_class(master_key_id)
        version = version or self._current_version(key_class)
        nonce = secrets.token_bytes(12)
        aad = _aad(key_class, version, context)
        sealed = AESGCM(self._material(key_class, version)).encrypt(nonce, data_key, aad)
        return _BLOB_MAGIC + _VERSION.pack(version) + nonce + sealed, f"local/{key_class}/v{version}"

    def _unwrap(self, wrapped: bytes, master_key_id: str, context: str) -> tuple[bytes, str]:
        key_class = self.key_class(master_key_id)
        version = self.wrapped_version(wrapped)
        if version is None:
            raise KeyBindingError(f"not a carecast-wrapped key for {master_key_id}")
        material = self._material(key_class, version)
        body = wrapped[len(_BLOB_MAGIC) + _VERSION.size :]
        try:
            data_key = AESGCM(material).decrypt(body[:12], body[12:], _aad(key_class, version, context))
        except Exception:
            raise KeyBindingError(
                f"key wrapped under local/{key_class}/v{version} does not unwrap for {context or 'this artifact'}: "
                "it belongs to another artifact, or was altered"
            ) from None
        return data_key, f"local/{key_class}/v{version}"

    def wrapped_version(self, wrapped: bytes) -> int | None:
        if not wrapped.startswith(_BLOB_MAGIC) or len(wrapped) < len(_BLOB_MAGIC) + _VERSION.size + 12:
            return None
        return _VERSION.unpack_from(wrapped, len(_BLOB_MAGIC))[0]

    @contextlib.contextmanager
    def _keyring_lock(self) -> Iterator[None]:
        """Serialize keyring changes across processes (the multiprocess executor runs steps in parallel)."""
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        with open(self.keys_dir / "keyring.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def rotate(self, key_class: str) -> str:
        self._require_class(key_class)
        with self._keyring_lock():
            return self._rotate_locked(key_class)

    def _rotate_locked(self, key_class: str, only_if_missing: bool = False) -> str:
        keyring = self._keyring()
        if only_if_missing and keyring.get(key_class, {}).get("current"):
            return f"local/{key_class}/v{keyring[key_class]['current']}"
        entry = keyring.setdefault(key_class, {"current": 0, "versions": {}})
        previous = entry["current"]
        if previous:
            entry["versions"][str(previous)]["state"] = "retired"
            entry["versions"][str(previous)]["retired_at"] = _now()
        entry["current"] = previous + 1
        entry["versions"][str(previous + 1)] = {"created_at": _now(), "state": "active"}
        _create_secret_file(self._key_path(key_class, previous + 1), secrets.token_bytes(32))
        self._save_keyring(keyring)
        return f"local/{key_class}/v{previous + 1}"

    def destroy(self, key_class: str, version: int) -> str:
        """Overwrite and delete a master key version: whatever it wraps can no longer be read."""
        with self._keyring_lock():
            return self._destroy_locked(key_class, version)

    def _destroy_locked(self, key_class: str, version: int) -> str:
        keyring = self._keyring()
        entry = keyring[key_class]
        if version == entry["current"]:
            raise ValueError(f"local/{key_class}/v{version} is current; rotate before destroying it")
        path = self._key_path(key_class, version)
        if path.exists():
            with open(path, "r+b") as handle:
                handle.write(secrets.token_bytes(32))
                handle.flush()
                os.fsync(handle.fileno())
            path.unlink()
        self._cache.pop((key_class, version), None)
        entry["versions"][str(version)]["state"] = "destroyed"
        entry["versions"][str(version)]["destroyed_at"] = _now()
        self._save_keyring(keyring)
        return f"local/{key_class}/v{version}"

    def _require_class(self, key_class: str) -> None:
        if key_class not in KEY_CLASSES:
            raise UnknownKeyError(f"no key class {key_class!r}; known: {', '.join(KEY_CLASSES)}")

    def _current_version(self, key_class: str) -> int:
        current = self._keyring().get(key_class, {}).get("current", 0)
        if current == 0:
            with self._keyring_lock():
                return int(self._rotate_locked(key_class, only_if_missing=True).rsplit("/v", 1)[1])
        return current

    def _key_path(self, key_class: str, version: int) -> Path:
        return self.master_dir / f"{key_class}.v{version}.key"

    def _material(self, key_class: str, version: int) -> bytes:
        cached = self._cache.get((key_class, version))
        if cached is not None:
            return cached
        path = self._key_path(key_class, version)
        if not path.exists():
            raise UnknownKeyError(f"master key local/{key_class}/v{version} does not exist (destroyed or never made)")
        material = path.read_bytes()
        if len(material) != 32:
            raise UnknownKeyError(f"master key local/{key_class}/v{version} is damaged")
        self._cache[(key_class, version)] = material
        return material

    def _keyring(self) -> dict:
        if not self.keyring_path.exists():
            return {}
        return json.loads(self.keyring_path.read_text())

    def _save_keyring(self, keyring: dict) -> None:
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.keyring_path.with_name(f".keyring.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(keyring, indent=2, sort_keys=True))
        os.replace(temporary, self.keyring_path)


def _aad(key_class: str, version: int, context: str) -> bytes:
    return f"local/{key_class}/v{version}|{context}".encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
