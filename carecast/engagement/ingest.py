"""Feedback batches: provider feedback from ``CARECAST_HOME/landing/feedback/<batch>/`` into the store.

A batch is complete as any landing batch is (``_SUCCESS`` written last, or a ``manifest.json`` whose
files are all there; a listed SHA-256 is checked against the plain bytes). Its files, each plain or
sealed (``.enc``, preferred when both exist):

* ``*.json``, ``*.ndjson`` (optionally gzipped, recognised by its magic bytes): Amazon SES events
  (``ses_events.py``);
* ``*.eml``: one received email each: a DSN, an abuse report, or an auto-reply (``mail_feedback.py``).

Other files are left alone. The ``events`` landing source stays what it was (the endpoint's own NDJSON
history feeding the ``raw_events_events`` dataset): feedback has its own source so neither reader
sees the other's files.

Every item parsed ends in exactly one bucket: recorded (new), duplicate (stored already), unmatched (no
known message), ignored (well-formed, not engagement) or rejected (unparseable), so the report
reconciles. The journal (``feedback_batches``) keeps each batch's fingerprint (its files' names, sizes
and modification times): a batch ingested already is a no-op before any file is opened; a batch
rewritten in place is read again, and its events already stored count as duplicates.

Events are recorded a chunk at a time, each chunk one short transaction, so the endpoint's writes are
never kept waiting behind a large batch; the next chunk is parsed on a worker thread meanwhile. A
batch that stops half way (a sealed file that fails to open, a digest that does not match) is not
journaled: the next run reads it again, and what the first run stored counts as duplicates.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from carecast.crypto.kms import Kms
from carecast.crypto.sealed_file import SUFFIX as SEALED_SUFFIX
from carecast.crypto.sealed_file import open_sealed
from carecast.engagement.events import EngagementEvents, RecordReport
from carecast.engagement.feedback import FeedbackEvent, Ignored, Parsed, Rejected
from carecast.engagement.mail_feedback import parse_mail
from carecast.engagement.ses_events import parse_ses
from carecast.home import CarecastHome
from carecast.ingest.landing import MANIFEST, SUCCESS_MARKER, Batch, NoCompleteBatchError, complete_batches
from carecast.ingest.readers import ExtractError

FEEDBACK_SOURCE = "feedback"
SES_SUFFIXES = (".json", ".ndjson", ".json.gz", ".ndjson.gz")
MAIL_SUFFIX = ".eml"
EVENTS_PER_CHUNK = 200_000
"""Events per ``record`` call (one transaction of a few seconds at most, so the endpoint's writes wait
briefly); fewer, larger transactions write each index page fewer times."""
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class EventIngestReport:
    """What ingesting one feedback batch did, in counts only."""

    batch: str
    already_ingested: bool = False
    files: int = 0
    items: int = 0
    recorded: int = 0
    duplicates: int = 0
    unmatched: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    """Events recorded, per kind."""
    suppressions_added: Counter[str] = field(default_factory=Counter)

    @property
    def matched(self) -> int:
        return self.recorded + self.duplicates

    @property
    def reconciled(self) -> bool:
        """Every item parsed is in exactly one bucket."""
        buckets = self.recorded + self.duplicates + self.unmatched
        return self.items == buckets + sum(self.ignored.values()) + sum(self.rejected.values())

    def add(self, recorded: RecordReport) -> None:
        self.recorded += recorded.recorded
        self.duplicates += recorded.duplicates
        self.unmatched += recorded.unmatched
        self.kinds.update(recorded.kinds)
        self.suppressions_added.update(recorded.suppressions_added)

    def counts(self) -> dict:
        return {
            "files": self.files,
            "items": self.items,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "unmatched": self.unmatched,
            "ignored": dict(sorted(self.ignored.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "kinds": dict(sorted(self.kinds.items())),
            "suppressions_added": dict(sorted(self.suppressions_added.items())),
        }


def feedback_landing(home: CarecastHome) -> Path:
    return home.landing / FEEDBACK_SOURCE


def pending_event_batches(home: CarecastHome) -> list[Path]:
    """Complete feedback batches not ingested yet (or rewritten since), in the order they completed:
    what a sensor launches ``ingest_event_batch`` for."""
    with EngagementEvents(home.state_db) as store:
        return [
            batch.path
            for batch in complete_batches(home.landing, [FEEDBACK_SOURCE])
            if store.batch_fingerprint(batch.name) != _fingerprint(feedback_files(batch.path))
        ]


def ingest_event_batch(home: CarecastHome, kms: Kms, batch_dir: Path) -> EventIngestReport:
    """Parse a complete feedback batch, record its events and their suppressions, journal it."""
    batch = _complete(batch_dir.resolve())
    files = feedback_files(batch.path)
    fingerprint = _fingerprint(files)
    report = EventIngestReport(batch.name, files=len(files))
    expected = batch.manifest() or {}
    with EngagementEvents(home.state_db) as store:
        if store.batch_fingerprint(batch.name) == fingerprint:
            return EventIngestReport(batch.name, already_ingested=True, files=len(files))
        items = (item for path in files for item in _parse_file(path, kms, expected))
        for chunk in _parsed_ahead(_chunks(items, EVENTS_PER_CHUNK)):
            report.items += len(chunk)
            events = []
            for item in chunk:
                if isinstance(item, FeedbackEvent):
                    events.append(item)
                else:
                    (report.ignored if isinstance(item, Ignored) else report.rejected)[item.reason] += 1
            report.add(store.record(events))
        store.record_batch(batch.name, fingerprint, report.counts())
    return report


def feedback_files(batch_dir: Path) -> list[Path]:
    """The batch's SES and email files, sealed preferred over plain, by name."""
    chosen: dict[str, Path] = {}
    for path in sorted(batch_dir.iterdir()):
        name = path.name.removesuffix(SEALED_SUFFIX)
        if not path.is_file() or name.startswith(".") or name == MANIFEST:
            continue
        if name.endswith((*SES_SUFFIXES, MAIL_SUFFIX)) and (path.name != name or name not in chosen):
            chosen[name] = path
    return [chosen[name] for name in sorted(chosen)]


def _complete(batch_dir: Path) -> Batch:
    """The batch at ``<landing>/<source>/<batch>``, if it is complete."""
    for batch in complete_batches(batch_dir.parent.parent, [batch_dir.parent.name]):
        if batch.path == batch_dir:
            return batch
    raise NoCompleteBatchError(
        f"{batch_dir}: not a complete batch (it needs {SUCCESS_MARKER}, or a {MANIFEST} whose files are all there)"
    )


def _fingerprint(files: list[Path]) -> str:
    stamps = "\n".join(f"{path.name}\x1f{path.stat().st_size}\x1f{path.stat().st_mtime_ns}" for path in files)
    return hashlib.sha256(stamps.encode()).hexdigest()


def _parse_file(path: Path, kms: Kms, expected: dict[str, str | None]) -> Iterator[Parsed]:
    name = path.name.removesuffix(SEALED_SUFFIX)
    data = open_sealed(path, kms) if path.name != name else path.read_bytes()
    digest = expected.get(name)
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise ExtractError(f"{name}: its bytes do not match the SHA-256 in {MANIFEST}")
    if name.endswith(MAIL_SUFFIX):
        yield from parse_mail(data)
        return
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            yield Rejected("not_gzip")
            return
    yield from parse_ses(data)


def _parsed_ahead(chunks: Iterator[list[Parsed]]) -> Iterator[list[Parsed]]:
    """The chunks, each parsed on a worker thread while the caller records the one before: parsing
    (PyArrow and Python) and recording (SQLite, which releases the GIL) then share the two cores.
    On an error either side, at most the chunk being parsed is finished before it propagates."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-parse") as worker:
        upcoming = worker.submit(next, chunks, None)
        while (chunk := upcoming.result()) is not None:
            upcoming = worker.submit(next, chunks, None)
            yield chunk


def _chunks(items: Iterable[Parsed], size: int) -> Iterator[list[Parsed]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
