"""The landing layout: ``landing/<source>/<batch>/<file>[.enc]``, and which batches are complete.

A batch is complete once it holds ``_SUCCESS`` (written last), or a ``manifest.json`` whose listed
files are all present (``{"files": {"patients.csv": {"sha256": "<hex of the plain bytes>"}}}``; the
digests are checked when each file is read, so a truncated or altered file is refused). Batches
are applied in the order they became complete, then by source and name.

Sources and their files: ``synthea`` (``<table>.csv``), ``crm`` and ``consents`` (``<table>.csv``),
``events`` (``events.ndjson``), and ``fhir`` (``<ResourceType>.ndjson``, optionally ``.gz``), whose
resources are mapped to the ``synthea`` and ``consents`` tables, so both feed the same raw datasets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from carecast.crypto.kms import Kms
from carecast.crypto.sealed_file import SUFFIX as SEALED_SUFFIX
from carecast.crypto.sealed_file import seal_bytes
from carecast.registry import SchemaRegistry, raw_dataset_name

SUCCESS_MARKER = "_SUCCESS"
MANIFEST = "manifest.json"
FHIR_SOURCE = "fhir"
FILE_FORMATS = {"events": "ndjson"}


class NoCompleteBatchError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class LandedFile:
    source: str
    """The landing source the file came in (``fhir`` for FHIR resources)."""
    batch: str
    target_source: str
    """The declared source whose table the rows belong to (``synthea`` for a FHIR Patient file)."""
    table: str
    path: Path
    format: str
    """``csv``, ``ndjson``, or a FHIR resource type."""
    expected_sha256: str | None = None

    @property
    def dataset(self) -> str:
        return raw_dataset_name(self.target_source, self.table)

    @property
    def sealed(self) -> bool:
        return self.path.name.endswith(SEALED_SUFFIX)

    def stamp(self) -> tuple[int, int]:
        """Size and modification time: what tells a file rewritten in place from the one applied."""
        stat = self.path.stat()
        return stat.st_size, stat.st_mtime_ns

    @property
    def name(self) -> str:
        """The file's name as the sender wrote it (without our sealing suffix)."""
        return self.path.name.removesuffix(SEALED_SUFFIX)


@dataclass(frozen=True)
class Batch:
    source: str
    name: str
    path: Path
    completed_ns: int

    def manifest(self) -> dict[str, str | None] | None:
        return _read_manifest(self.path)


def _is_complete(folder: Path) -> int | None:
    """When the batch became complete (ns), or None while it is still being written."""
    marker = folder / SUCCESS_MARKER
    if marker.exists():
        return marker.stat().st_mtime_ns
    try:
        listed = _read_manifest(folder)
    except ValueError:  # still being written, or broken: not complete either way
        return None
    if not listed:
        return None
    present = all((folder / name).exists() or (folder / (name + SEALED_SUFFIX)).exists() for name in listed)
    return (folder / MANIFEST).stat().st_mtime_ns if present else None


def _read_manifest(folder: Path) -> dict[str, str | None] | None:
    """File name -> expected SHA-256 (None when not given), or None without a manifest."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text()).get("files", {})
        return {name: (entry or {}).get("sha256") for name, entry in files.items()}
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f'{path}: not a manifest ({{"files": {{name: {{"sha256": ...}}}}}})') from None


def complete_batches(landing: Path, sources: list[str] | None = None) -> list[Batch]:
    """Every complete batch of the given sources (all by default), in the order they were completed."""
    batches = []
    for source_dir in sorted(p for p in landing.glob("*") if p.is_dir()):
        if sources is not None and source_dir.name not in sources:
            continue
        for folder in sorted(p for p in source_dir.iterdir() if p.is_dir()):
            completed = _is_complete(folder)
            if completed is not None:
                batches.append(Batch(source_dir.name, folder.name, folder, completed))
    return sorted(batches, key=lambda b: (b.completed_ns, b.source, b.name))


def batch_files(batch: Batch, registry: SchemaRegistry) -> list[LandedFile]:
    """The files of a batch that carecast knows how to load (sealed preferred over plain)."""
    expected = batch.manifest() or {}
    found = []
    for name, (target_source, table, file_format) in sorted(_known_files(batch.source, registry).items()):
        for path in (batch.path / (name + SEALED_SUFFIX), batch.path / name):
            if path.exists():
                found.append(
                    LandedFile(batch.source, batch.name, target_source, table, path, file_format, expected.get(name))
                )
                break
    return found


def _known_files(source: str, registry: SchemaRegistry) -> dict[str, tuple[str, str, str]]:
    """File name -> (declared source, table, format) for one landing source."""
    if source == FHIR_SOURCE:
        from carecast.ingest.fhir import RESOURCE_TABLES

        return {
            f"{resource}.{extension}": (*RESOURCE_TABLES[resource], resource)
            for resource in RESOURCE_TABLES
            for extension in ("ndjson", "ndjson.gz")
        }
    if source not in registry.sources:
        return {}
    file_format = FILE_FORMATS.get(source, "csv")
    return {f"{table}.{file_format}": (source, table, file_format) for table in registry.sources[source].tables}


def pending_files(
    landing: Path,
    registry: SchemaRegistry,
    applied: dict[tuple[str, str, str, str], tuple[int, int]],
    datasets: set[str] | None = None,
    sources: list[str] | None = None,
) -> list[LandedFile]:
    """Landed files of complete batches not yet applied, or rewritten since (``applied`` maps (dataset,
    source, batch, file name) to the size and mtime the ingest journal recorded), in batch order."""
    return [
        landed
        for batch in complete_batches(landing, sources)
        for landed in batch_files(batch, registry)
        if (datasets is None or landed.dataset in datasets)
        and applied.get((landed.dataset, landed.source, landed.batch, landed.name)) != landed.stamp()
    ]


def land_batch(folder: Path, landing: Path, source: str | None, kms: Kms, registry: SchemaRegistry) -> Path:
    """Put a batch folder into the landing area, each known file sealed, ``_SUCCESS`` last.

    A folder already under ``landing/<source>/`` is used where it is (it still needs its marker or
    manifest). Files carecast does not load (a Synthea export's allergies.csv, say) are left behind.
    """
    folder = folder.resolve()
    if folder.parent.parent == landing.resolve():
        return folder
    if source is None:
        raise ValueError("say which source the batch is (--source) when it is not under the landing folder")
    target = landing / source / folder.name
    if target.exists():
        raise FileExistsError(f"{target} exists: batch names are never reused (name the new batch differently)")
    known = set(_known_files(source, registry))
    target.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        if path.name in known:
            seal_bytes(path.read_bytes(), target / (path.name + SEALED_SUFFIX), kms)
    if (folder / MANIFEST).exists():
        (target / MANIFEST).write_bytes((folder / MANIFEST).read_bytes())
    (target / SUCCESS_MARKER).touch()
    return target
