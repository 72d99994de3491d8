"""A landed extract as a stream: its plain bytes chunk by chunk, hashed as they pass, cut into blocks
of whole records that Polars can parse one at a time.

A CSV block starts with the file's header line and ends at a newline outside any quoted field (a
field may hold newlines between its quotes: RFC 4180, and what Polars reads); an NDJSON block ends
at any newline. Each block knows how many file lines came before it, so the lines errors name are
still the file's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from carecast.crypto.kms import Kms
from carecast.crypto.sealed_file import CHUNK_BYTES, iter_sealed
from carecast.ingest.landing import LandedFile
from carecast.ingest.readers import ExtractError

BLOCK_BYTES = 16 << 20
RUN_ON_BYTES = 256 << 20
"""A record still open after this many bytes past a block (an unterminated quote) is refused rather
than read into memory to the end of the file."""
_QUOTE = ord('"')


@dataclass(frozen=True)
class Block:
    data: bytes
    """Whole lines of the file; for CSV, the header line first."""
    line_offset: int
    """File lines between the header (CSV) or the start (NDJSON) and the first line of the block."""


class Plaintext:
    """A landed file's plain bytes in chunks (decrypted if sealed), hashed as they pass.

    Iterating again continues where the last iteration stopped; ``drain`` reads what is left, so the
    digest of a file whose parsing failed midway is still known.
    """

    def __init__(self, landed: LandedFile, kms: Kms):
        self._chunks = iter_sealed(landed.path, kms) if landed.sealed else _file_chunks(landed.path)
        self._sha256 = hashlib.sha256()
        self.exhausted = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._sha256.update(chunk)
            yield chunk
        self.exhausted = True

    def drain(self) -> None:
        for _chunk in self:
            pass

    def hexdigest(self) -> str:
        if not self.exhausted:
            raise RuntimeError("the digest of a file is known once all of it has been read")
        return self._sha256.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(CHUNK_BYTES), b"")


def split_blocks(chunks: Iterable[bytes], name: str, file_format: str, block_bytes: int) -> Iterator[Block]:
    """Cut the chunks into blocks of about ``block_bytes`` (more when a record is longer), each of
    whole records; the last block is what is left at the end, cut short or not. A file with a header
    and no records still gives one block; a file of nothing but whitespace is refused as empty."""
    quoted = file_format == "csv"
    pending = _Pending(iter(chunks))
    while not pending.data or pending.data.isspace():
        if not pending.read_more():
            raise ExtractError(f"{name}: file is empty")
    header = pending.take(_header_end(pending, name)) if quoted else b""
    line_offset, cut_once = 0, False
    while True:
        while not pending.exhausted and len(pending.data) <= block_bytes:
            pending.read_more()
        if pending.exhausted and not pending.data and cut_once:
            return
        end = record_end(pending.data, block_bytes, quoted) if len(pending.data) > block_bytes else None
        if end is None:
            if not pending.exhausted:
                _refuse_run_on(pending, name, file_format, line_offset + header.count(b"\n") + 1, block_bytes)
                pending.read_more()
                continue
            end = len(pending.data)
        data = pending.take(end, prefix=header)
        yield Block(data, line_offset)
        line_offset, cut_once = line_offset + data.count(b"\n", len(header)), True


class _Pending:
    """Bytes read but not yet cut into a block."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self.data = bytearray()
        self.exhausted = False

    def read_more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            self.exhausted = True
            return False
        self.data += chunk
        return True

    def take(self, end: int, prefix: bytes = b"") -> bytes:
        """``prefix`` and the first ``end`` bytes, which are then dropped (copied once)."""
        with memoryview(self.data) as view:
            taken = b"".join((prefix, view[:end]))
        del self.data[:end]
        return taken


def _header_end(pending: _Pending, name: str) -> int:
    """Where a CSV file's header line ends (the whole file when it is all there is)."""
    while (end := record_end(pending.data, 0, quoted=True)) is None:
        _refuse_run_on(pending, name, "csv", 1, 0)
        if not pending.read_more():
            return len(pending.data)
    return end


def _refuse_run_on(pending: _Pending, name: str, file_format: str, line: int, block_bytes: int) -> None:
    """Refuse a record (starting on file line ``line``) that has not ended ``RUN_ON_BYTES`` past a block."""
    if len(pending.data) > block_bytes + RUN_ON_BYTES:
        problem = "malformed quoting: a quoted field" if file_format == "csv" else "a line"
        raise ExtractError(
            f"{name}:{line}: cannot be parsed as {file_format}: {problem} runs on for more than "
            f"{RUN_ON_BYTES >> 20} MiB"
        )


def record_end(data: bytes | bytearray, target: int, quoted: bool) -> int | None:
    """Just past the newline that ends a record nearest ``target`` in ``data`` (which starts at a
    record boundary): the last one before it, else the first after it; None if ``data`` holds no end.

    With ``quoted`` (CSV), a newline between the quotes of a field ends nothing. A field's quotes
    come in pairs (an escaped quote is written twice), so a newline ends a record exactly when the
    quotes before it are even in number. The searches jump from quote to quote rather than from line
    to line, so a long multi-line field costs no more than a short one.
    """
    end = _end_before(data, target, quoted)
    if end < 0:
        end = _end_after(data, target, quoted)
    return end + 1 if end >= 0 else None


def _end_before(data: bytes | bytearray, target: int, quoted: bool) -> int:
    """The last newline before ``target`` that ends a record, or -1."""
    end = data.rfind(b"\n", 0, target)
    quotes = data.count(_QUOTE, 0, end) if quoted and end >= 0 else 0
    while end >= 0 and quotes % 2:
        # inside a quoted field: so is every newline back to the last quote before this one
        earlier = data.rfind(b"\n", 0, data.rfind(_QUOTE, 0, end))
        quotes -= data.count(_QUOTE, earlier + 1, end)
        end = earlier
    return end


def _end_after(data: bytes | bytearray, target: int, quoted: bool) -> int:
    """The first newline from ``target`` on that ends a record, or -1."""
    end = data.find(b"\n", target)
    quotes = data.count(_QUOTE, 0, end) if quoted and end >= 0 else 0
    while end >= 0 and quotes % 2:
        # inside a quoted field: so is every newline up to the next quote
        closing = data.find(_QUOTE, end)
        later = data.find(b"\n", closing) if closing >= 0 else -1
        quotes += data.count(_QUOTE, end, later) if later >= 0 else 0
        end = later
    return end
