"""The embedded sink's mailbox: every accepted message, envelope-encrypted in SQLite.

Each ``Mailbox`` instance makes one data key of class "message" (on its first store) and keeps it
wrapped in ``data_keys``; each row of ``messages`` is sealed with that key and ``mailbox:{seq}`` as
associated data, so a sealed blob copied to another row fails to open. Only the SHA-256 of the
Message-ID is kept in clear, which is enough to count duplicate deliveries without decrypting.

Durability without an fsync per message: the database runs in WAL mode with
``synchronous=NORMAL`` and stores are committed in batches (at most ``BATCH_SIZE`` messages or
``BATCH_SECONDS`` old, whichever comes first; ``flush``/``close`` commit the rest). One commit per
message costs about ten times the insert itself and would cap the sink below 1,000 messages/s.
A crash can lose the uncommitted tail of a batch; duplicates from the resulting retries show up in
``message_id_hashes``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from carecast.crypto.envelope import DataKey, new_data_key, open_data_key
from carecast.crypto.kms import Kms, UnknownKeyError

DB_FILE = "mailbox.db"
KEY_CLASS = "mailbox"
KEY_CONTEXT = "mailbox"
BATCH_SIZE = 256
BATCH_SECONDS = 0.25

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_ref INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    message_id_sha256 TEXT,
    key_ref INTEGER NOT NULL REFERENCES data_keys(key_ref),
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_message_id ON messages(message_id_sha256);
"""

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


@dataclass(frozen=True)
class StoredMessage:
    """One decrypted mailbox entry; PHI fields are kept out of ``repr``."""

    seq: int
    received_at: str
    message_id_sha256: str | None
    mail_from: str = field(repr=False)
    rcpt_tos: tuple[str, ...] = field(repr=False)
    data: bytes = field(repr=False)


def message_id_sha256(message_id: str) -> str:
    """The hash stored for a Message-ID value (whitespace-stripped, angle brackets kept)."""
    return hashlib.sha256(message_id.strip().encode("utf-8", "surrogateescape")).hexdigest()


def _message_id_hash(data: bytes) -> str | None:
    """Hash of the Message-ID header, found with a regex over the header block only.

    A full ``email`` parse per message would cost more than the encryption and the insert.
    """
    end = _HEADER_END.search(data)
    match = _MESSAGE_ID.search(data, 0, end.start() if end else len(data))
    if match is None:
        return None
    value = _FOLD.sub(b"", match.group(1)).decode("utf-8", "surrogateescape")
    return message_id_sha256(value)


class Mailbox:
    """Thread-safe: the SMTP handler stores from the sink's event-loop thread while tests and
    audits read from theirs. Writes share one connection behind a lock; reads open their own."""

    def __init__(self, folder: Path, kms: Kms):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB_FILE
        self._kms = kms
        self._lock = threading.Lock()
        self._data_key: DataKey | None = None
        self._key_ref: int | None = None
        self._closed = False
        self._pending = 0
        self._next_seq = 0
        self._batch_started = 0.0
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute("PRAGMA secure_delete=ON")
        self._connection.executescript(_SCHEMA)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def store(self, envelope_from: str, rcpt_tos: Sequence[str], data: bytes) -> None:
        payload = json.dumps(
            {
                "mail_from": envelope_from,
                "rcpt_tos": list(rcpt_tos),
                "data": base64.b64encode(data).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode("utf-8")
        digest = _message_id_hash(data)
        received_at = datetime.now(UTC).isoformat(timespec="microseconds")
        with self._lock:
            data_key, key_ref = self._session_key()
            seq = self._begin_batch()
            self._connection.execute(
                "INSERT INTO messages (seq, received_at, message_id_sha256, key_ref, sealed) VALUES (?, ?, ?, ?, ?)",
                (seq, received_at, digest, key_ref, data_key.seal(payload, _aad(seq))),
            )
            self._next_seq = seq + 1
            self._pending += 1
            if self._pending >= BATCH_SIZE or time.monotonic() - self._batch_started >= BATCH_SECONDS:
                self._commit()

    def flush(self) -> None:
        """Commit the messages stored so far."""
        with self._lock:
            if not self._closed:
                self._commit()

    def count(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def message_id_hashes(self) -> list[str]:
        """Message-ID hashes in arrival order, one per stored message that had a Message-ID."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT message_id_sha256 FROM messages WHERE message_id_sha256 IS NOT NULL ORDER BY seq"
            ).fetchall()
        return [row[0] for row in rows]

    def read_all(self) -> Iterator[StoredMessage]:
        """Decrypt every readable message in arrival order (each data key is unwrapped once, and
        logged); messages whose key retention destroyed are skipped: they no longer exist."""
        self.flush()
        keys: dict[int, DataKey] = {}
        reader = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
        try:
            for key_ref, key_id, wrapped in reader.execute("SELECT key_ref, key_id, wrapped FROM data_keys"):
                try:
                    keys[key_ref] = open_data_key(self._kms, key_id, wrapped, KEY_CONTEXT)
                except UnknownKeyError:
                    continue  # its master key version was destroyed by retention: shredded
            rows = reader.execute(
                "SELECT seq, received_at, message_id_sha256, key_ref, sealed FROM messages ORDER BY seq"
            )
            for seq, received_at, digest, key_ref, sealed in rows:
                if key_ref not in keys:
                    continue
                payload = json.loads(keys[key_ref].open(sealed, _aad(seq)))
                yield StoredMessage(
                    seq=seq,
                    received_at=received_at,
                    message_id_sha256=digest,
                    mail_from=payload["mail_from"],
                    rcpt_tos=tuple(payload["rcpt_tos"]),
                    data=base64.b64decode(payload["data"]),
                )
        finally:
            reader.close()

    def close(self) -> None:
        """Fold the WAL into the database file (synced) and close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._commit()
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._connection.close()

    def _begin_batch(self) -> int:
        """Open a write transaction if none is open; return the next seq (caller holds the lock).

        The transaction holds SQLite's write lock, so seq numbers handed out inside it are final.
        """
        if not self._connection.in_transaction:
            self._connection.execute("BEGIN IMMEDIATE")
            (self._next_seq,) = self._connection.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages").fetchone()
            self._batch_started = time.monotonic()
            self._pending = 0
        return self._next_seq

    def _commit(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("COMMIT")
        self._pending = 0

    def _session_key(self) -> tuple[DataKey, int]:
        """This instance's data key, made and wrapped on first use (caller holds the lock)."""
        if self._data_key is None or self._key_ref is None:
            data_key = new_data_key(self._kms, KEY_CLASS, KEY_CONTEXT)
            cursor = self._connection.execute(
                "INSERT INTO data_keys (key_id, wrapped) VALUES (?, ?)",
                (data_key.master_key_id, data_key.wrapped),
            )
            self._data_key, self._key_ref = data_key, cursor.lastrowid
        return self._data_key, self._key_ref


def _aad(seq: int) -> bytes:
    return f"mailbox:{seq}".encode()
