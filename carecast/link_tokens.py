"""Opaque, authenticated, expiring tokens for unsubscribe, click and open links.

A token names a patient only by ``patient_key`` (the keyed pseudonym, never an id or address),
plus the campaign, purpose, kind, optional link name, issue time and expiry. All of it is
encrypted, so a token reveals nothing, not even the pseudonym, to whoever holds a link.

Construction: ``key version (1 byte) || AES-SIV(key, plaintext, ad=[key version])``, base64url
without padding. The plaintext is a compact binary record (patient key as 16 raw bytes, kind as one
byte, two uint32 Unix times, three length-prefixed UTF-8 strings): 45 bytes plus the three strings,
so an unsubscribe token for campaign ``flu-shot-reminder-2025`` and purpose ``treatment`` is 102
characters, a click token for link ``book-appointment`` 123.

Why AES-SIV (RFC 5297, ``cryptography``'s ``AESSIV``) and not the alternatives:

* Fernet (AES-128-CBC + HMAC) spends 57 bytes of overhead plus CBC padding (160+ characters), issues
  about 50k tokens/s, and carries its timestamp in the clear.
* AES-GCM needs a unique 96-bit nonce per token. Random nonces add 12 bytes (16 characters) to every
  token, and a key that issues a million tokens per campaign for years spends a budget: NIST allows
  2**32 random-nonce encryptions per key, because one nonce collision leaks GCM's authentication key.
* AES-SIV needs no nonce (the 16-byte synthetic IV is also the tag) and cannot be broken by nonce
  reuse. It is deterministic: identical claims issued in the same second give the same token, which
  only tells that two copies of the same link are the same link.

Keys: data keys wrapped under the KMS class ``link`` are kept in ``keys/link_token.wrapped``, each
bound to its version (``link_token:v<N>``). The newest version issues; every listed version verifies,
so tokens survive ``rotate_link_token_key``; ``prune_link_token_keys`` drops versions no unexpired
token can use. When the ``link`` *master* key rotates, ``rewrap_link_token_keys`` moves the wrapped
keys to the new master version (same keys, so links already sent keep working after the old master
version is destroyed). The 64-byte AES-256-SIV key is derived from the 32-byte data key with
HKDF-SHA256. Versions are one byte: at most 255 over a home's lifetime.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carecast.crypto.envelope import new_data_key
from carecast.crypto.kms import Kms

LINK_TOKEN_FILE = "link_token.wrapped"
KEY_CLASS = "link"
Kind = Literal["unsubscribe", "click", "open"]
KINDS: tuple[Kind, ...] = get_args(Kind)
DEFAULT_TTL = timedelta(days=45)
MIN_UNSUBSCRIBE_TTL = timedelta(days=30)
"""An unsubscribe link must keep working for at least 30 days after the message is sent (CAN-SPAM
asks for 30 days; RFC 8058 one-click unsubscribe assumes the link still works when clicked)."""
MAX_TTL = timedelta(days=400)
"""Bounds how long a retired key must be kept (see ``prune_link_token_keys``)."""

_HKDF_INFO = b"carecast link token v1: AES-256-SIV"
_FIXED = struct.Struct(">16sBII")  # patient key, kind, issued, expires (Unix seconds)
_KIND_TIMES = struct.Struct(">BII")  # the same record after the patient key
_SIV_TAG = 16
_MIN_BYTES = 1 + _SIV_TAG + _FIXED.size + 3
_MAX_TOKEN_CHARS = 2048
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_PATIENT_KEY = re.compile(r"[0-9a-f]{32}")
_HEX = re.compile(r"[0-9a-f]*")
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # with "=" deleted in the same pass: unpadded base64url


class InvalidToken(Exception):
    """A token that does not verify. Messages never include any part of the token."""


class ForgedToken(InvalidToken):
    """Not a token this home issued with a key it still has: altered, truncated or foreign."""


class ExpiredToken(InvalidToken):
    """Authentic but past its expiry. ``claims`` lets an unsubscribe still be honoured."""

    def __init__(self, message: str, claims: TokenClaims):
        super().__init__(message)
        self.claims = claims


@dataclass(frozen=True)
class TokenClaims:
    patient_key: str
    campaign: str
    purpose: str
    kind: Kind
    link: str | None
    issued_at: datetime
    expires_at: datetime
    key_version: int


class LinkTokens:
    """Issue and verify link tokens with a home's token keys (``{version: 32-byte data key}``)."""

    def __init__(self, keys: dict[int, bytes]):
        if not keys:
            raise ValueError("at least one link token key is needed")
        if any(not 1 <= version <= 255 for version in keys):
            raise ValueError("link token key versions are 1..255")
        self._ciphers = {version: AESSIV(_derive(secret)) for version, secret in keys.items()}
        self.current_version = max(keys)
        self._header = bytes([self.current_version])
        self._associated = [self._header]
        self._encrypt = self._ciphers[self.current_version].encrypt

    @classmethod
    def load_or_create(cls, kms: Kms, keys_dir: Path) -> LinkTokens:
        """The home's token keys, creating the first one (under the ``link`` master key) if there is none."""
        path = keys_dir / LINK_TOKEN_FILE
        if not path.exists():
            _create_first_key(kms, keys_dir)
        keys = {
            entry["version"]: kms.unwrap(bytes.fromhex(entry["wrapped"]), entry["key_id"], _context(entry["version"]))
            for entry in _read(path)["keys"]
        }
        return cls(keys)

    @property
    def versions(self) -> list[int]:
        return sorted(self._ciphers)

    def issue(
        self,
        patient_key: str,
        campaign: str,
        purpose: str,
        kind: Kind,
        link: str | None = None,
        ttl: timedelta = DEFAULT_TTL,
        now: datetime | None = None,
    ) -> str:
        if not (isinstance(patient_key, str) and _PATIENT_KEY.fullmatch(patient_key)):
            raise ValueError("patient_key must be 32 lowercase hex characters (a pseudonym)")
        return self._seal(bytes.fromhex(patient_key) + _tail(campaign, purpose, kind, link, ttl, now))

    def issue_many(
        self,
        patient_keys: list[str],
        campaign: str,
        purpose: str,
        kind: Kind,
        link: str | None = None,
        ttl: timedelta = DEFAULT_TTL,
        now: datetime | None = None,
    ) -> list[str]:
        """``issue`` for many patients with the same claims otherwise: one validation, one shared tail,
        one hex decode of all keys, and per token only the encryption and the base64."""
        tail = _tail(campaign, purpose, kind, link, ttl, now)
        joined = "".join(patient_keys)
        if any(len(key) != 32 for key in patient_keys) or not _HEX.fullmatch(joined):
            raise ValueError("patient keys must be 32 lowercase hex characters (pseudonyms)")
        raw = bytes.fromhex(joined)
        header, associated, encrypt, b2a = self._header, self._associated, self._encrypt, binascii.b2a_base64
        return [
            b2a(header + encrypt(raw[start : start + 16] + tail, associated), newline=False)
            .translate(_URLSAFE, b"=")
            .decode("ascii")
            for start in range(0, len(raw), 16)
        ]

    def verify(self, token: str, now: datetime | None = None) -> TokenClaims:
        """The claims of an authentic, unexpired token; raises ForgedToken or ExpiredToken."""
        sealed = _decode(token)
        cipher = self._ciphers.get(sealed[0])
        if cipher is None:
            raise ForgedToken("link token is not authentic (no key of this home signed it)")
        try:
            plaintext = cipher.decrypt(sealed[1:], [sealed[:1]])
        except InvalidTag:
            raise ForgedToken("link token is not authentic") from None
        claims = _parse(plaintext, sealed[0])
        if _timestamp(now) >= int(claims.expires_at.timestamp()):
            raise ExpiredToken("link token has expired", claims)
        return claims

    def _seal(self, plaintext: bytes) -> str:
        sealed = self._header + self._encrypt(plaintext, self._associated)
        return binascii.b2a_base64(sealed, newline=False).translate(_URLSAFE, b"=").decode("ascii")


def rotate_link_token_key(kms: Kms, keys_dir: Path) -> int:
    """Add a newer token key (it issues from now on; older ones keep verifying); return its version."""
    with _locked(keys_dir):
        path = keys_dir / LINK_TOKEN_FILE
        stored = _read(path) if path.exists() else {"keys": []}
        version = max((entry["version"] for entry in stored["keys"]), default=0) + 1
        if version > 255:
            raise ValueError("no link token key version left (255 used); tokens carry the version in one byte")
        stored["keys"].append(_new_entry(kms, version))
        _write(path, stored)
        return version


def prune_link_token_keys(keys_dir: Path, now: datetime | None = None) -> list[int]:
    """Drop keys that cannot have signed an unexpired token: those superseded more than ``MAX_TTL`` ago.

    A version stops issuing when the next one is created, and no token lives longer than MAX_TTL.
    """
    cutoff = _timestamp(now) - int(MAX_TTL.total_seconds())
    with _locked(keys_dir):
        path = keys_dir / LINK_TOKEN_FILE
        stored = _read(path)
        entries = sorted(stored["keys"], key=lambda entry: entry["version"])
        dropped = [
            older["version"]
            for older, newer in pairwise(entries)
            if datetime.fromisoformat(newer["created_at"]).timestamp() < cutoff
        ]
        if dropped:
            stored["keys"] = [entry for entry in entries if entry["version"] not in dropped]
            _write(path, stored)
        return dropped


def rewrap_link_token_keys(kms: Kms, keys_dir: Path) -> bool:
    """Move every wrapped token key to the current ``link`` master key version (same keys, same tokens),
    so retiring an old master key version does not invalidate the links already sent."""
    with _locked(keys_dir):
        path = keys_dir / LINK_TOKEN_FILE
        if not path.exists():
            return False
        stored = _read(path)
        for entry in stored["keys"]:
            context = _context(entry["version"])
            secret = kms.unwrap(bytes.fromhex(entry["wrapped"]), entry["key_id"], context)
            entry["wrapped"] = kms.wrap(secret, entry["key_id"], context).hex()
        _write(path, stored)
        return True


def _tail(campaign: str, purpose: str, kind: Kind, link: str | None, ttl: timedelta, now: datetime | None) -> bytes:
    """Everything after the patient key, validated once (shared by every token of an ``issue_many``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if (kind == "click") != (link is not None):
        raise ValueError("a link name is required for click tokens and only for them")
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise ValueError(f"ttl must be positive and at most {MAX_TTL.days} days")
    if kind == "unsubscribe" and ttl < MIN_UNSUBSCRIBE_TTL:
        raise ValueError(f"unsubscribe tokens must stay valid at least {MIN_UNSUBSCRIBE_TTL.days} days")
    issued = _timestamp(now)
    expires = issued + math.ceil(ttl.total_seconds())
    if expires > 0xFFFFFFFF:
        raise ValueError("expiry does not fit the token's time field")
    fixed = _KIND_TIMES.pack(KINDS.index(kind), issued, expires)
    return fixed + _text(campaign, "campaign") + _text(purpose, "purpose") + _text(link or "", "link", empty=True)


def _text(value: str, what: str, empty: bool = False) -> bytes:
    encoded = value.encode("utf-8")
    if not encoded and not empty:
        raise ValueError(f"{what} may not be empty")
    if len(encoded) > 255:
        raise ValueError(f"{what} is longer than 255 UTF-8 bytes")
    return bytes([len(encoded)]) + encoded


def _parse(plaintext: bytes, version: int) -> TokenClaims:
    """Parse an authenticated plaintext; a malformed one cannot come from this code, so it is forged."""
    try:
        patient, kind, issued, expires = _FIXED.unpack_from(plaintext)
        fields, offset = [], _FIXED.size
        for _ in range(3):
            length = plaintext[offset]
            fields.append(plaintext[offset + 1 : offset + 1 + length].decode("utf-8"))
            offset += 1 + length
        if offset != len(plaintext) or not fields[0] or not fields[1]:
            raise ValueError
        return TokenClaims(
            patient_key=patient.hex(),
            campaign=fields[0],
            purpose=fields[1],
            kind=KINDS[kind],
            link=fields[2] or None,
            issued_at=datetime.fromtimestamp(issued, UTC),
            expires_at=datetime.fromtimestamp(expires, UTC),
            key_version=version,
        )
    except (IndexError, ValueError, struct.error):
        raise ForgedToken("link token is not authentic (malformed content)") from None


def _decode(token: object) -> bytes:
    """Strict base64url: only the alphabet, no padding, and canonical (re-encodes to the same text),
    so no two strings are the same token."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not _BASE64URL.fullmatch(token):
        raise ForgedToken("link token is not authentic (malformed)")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise ForgedToken("link token is not authentic (malformed)") from None
    if len(raw) < _MIN_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
        raise ForgedToken("link token is not authentic (malformed)")
    return raw


def _timestamp(now: datetime | None) -> int:
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return int(moment.timestamp())


def _derive(secret: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=64, salt=None, info=_HKDF_INFO).derive(secret)


def _context(version: int) -> str:
    return f"link_token:v{version}"


def _new_entry(kms: Kms, version: int) -> dict:
    data_key = new_data_key(kms, KEY_CLASS, _context(version))
    return {
        "version": version,
        "key_id": data_key.master_key_id,
        "wrapped": data_key.wrapped.hex(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _create_first_key(kms: Kms, keys_dir: Path) -> None:
    """Under the lock, so a racing process (creating or rotating) never replaces a key in use."""
    with _locked(keys_dir):
        path = keys_dir / LINK_TOKEN_FILE
        if not path.exists():
            _write(path, {"keys": [_new_entry(kms, 1)]})


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _write(path: Path, stored: dict) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(stored, indent=2))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(keys_dir: Path) -> Iterator[None]:
    """Serialize changes to the token key file across processes."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    with open(keys_dir / "link_token.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
