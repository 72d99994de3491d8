"""The lake: immutable, versioned, encrypted Parquet datasets.

Every column is encrypted with the key of its PHI class (declared in the schema registry), the footer
with a key of its own, with double wrapping (data keys wrapped by key-encryption keys, which the KMS
wraps under master keys). A read names the columns it needs; Parquet then unwraps only the keys of
those columns, and the KMS access log shows it. DuckDB and Polars never see files, only the
decrypted Arrow tables this module returns.

Each version is a folder ``<dataset>/vNNNNNN/`` holding ``data.parquet`` and its key material
(``_KEY_MATERIAL_FOR_data.parquet.json``), kept outside the file so master-key rotation can re-wrap
the keys of an immutable file without rewriting it. Every key is wrapped for the binding context
``lake:<dataset>@v<N>``: a version folder copied over another fails to decrypt instead of being read
as the wrong data.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe

from carecast.crypto.kms import EPOCH_CLASSES, KeyBindingError, Kms, UnknownKeyError
from carecast.registry import SchemaRegistry

VERSION_FOLDER = re.compile(r"^v(\d{6})$")
DATA_FILE = "data.parquet"
KEY_MATERIAL_FILE = f"_KEY_MATERIAL_FOR_{DATA_FILE}.json"
ROW_GROUP_ROWS = 1_000_000
_CACHE_LIFETIME = timedelta(minutes=10)


class DatasetNotFoundError(LookupError):
    pass


class LakeIntegrityError(ValueError):
    """A version's keys do not open: the files were swapped, altered, or their key destroyed."""


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    version: int
    path: Path
    rows: int | None
    """Known for a version just written; None for one looked up (counting would decrypt the footer)."""
    sha256: str
    key_ids: tuple[str, ...]

    @property
    def ref(self) -> str:
        """Short, PHI-free reference used in lineage metadata: ``dataset@v3#<sha prefix>``."""
        return f"{self.dataset}@v{self.version}#{self.sha256[:12]}"

    @property
    def context(self) -> str:
        return binding_context(self.dataset, self.version)


@dataclass(frozen=True)
class LakeRead:
    table: pa.Table
    version: DatasetVersion
    columns: tuple[str, ...]
    key_ids: tuple[str, ...]


def binding_context(dataset: str, version: int) -> str:
    return f"lake:{dataset}@v{version}"


class _KmsBridge(pqe.KmsClient):
    """Lets Parquet's key tools call our KMS (and so write the access log), for one file.

    When re-wrapping, keys of epoch classes stay on the version they were found under, so
    rotation never extends the life of data that retention will shred.
    """

    def __init__(self, kms: Kms, context: str, keep_epochs: bool = False):
        super().__init__()
        self._kms = kms
        self._context = context
        self._keep_epochs = keep_epochs
        self._seen_versions: dict[str, int | None] = {}

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        version = None
        if self._keep_epochs and self._kms.key_class(master_key_identifier) in EPOCH_CLASSES:
            version = self._seen_versions.get(master_key_identifier)
        wrapped = self._kms.wrap(key_bytes, master_key_identifier, self._context, version=version)
        return base64.b64encode(wrapped).decode()

    def unwrap_key(self, wrapped_key: str | bytes, master_key_identifier: str) -> bytes:
        blob = base64.b64decode(wrapped_key)
        self._seen_versions[master_key_identifier] = self._kms.wrapped_version(blob)
        return self._kms.unwrap(blob, master_key_identifier, self._context)


class VersionWriter:
    """The open version of ``Lake.writer``: each ``write`` adds the table's rows as row groups."""

    def __init__(self, parquet_writer: pq.ParquetWriter, row_group_rows: int):
        self._parquet_writer = parquet_writer
        self._row_group_rows = row_group_rows
        self.rows = 0
        self.discarded = False
        self.version: DatasetVersion | None = None
        """The version written, once the ``Lake.writer`` block has ended and published it."""

    def write(self, table: pa.Table) -> None:
        self._parquet_writer.write_table(table, row_group_size=self._row_group_rows)
        self.rows += table.num_rows

    def discard(self) -> None:
        """Leave nothing behind when the block ends (the data turned out not to be needed)."""
        self.discarded = True


class Lake:
    def __init__(self, root: Path, kms: Kms, registry: SchemaRegistry):
        self.root = root
        self.kms = kms
        self.registry = registry

    def _crypto_factory(self, context: str, keep_epochs: bool = False) -> pqe.CryptoFactory:
        # A factory per file and operation: its key cache then lives for one read or write, so the
        # access log records the unwraps of every operation, and each file gets its own context.
        return pqe.CryptoFactory(lambda _config: _KmsBridge(self.kms, context, keep_epochs))

    def _decryption_properties(self, found: DatasetVersion) -> pqe.FileDecryptionProperties:
        return self._crypto_factory(found.context).file_decryption_properties(
            pqe.KmsConnectionConfig(),
            pqe.DecryptionConfiguration(cache_lifetime=_CACHE_LIFETIME),
            parquet_file_path=str(found.path),
        )

    def write(self, dataset: str, table: pa.Table, row_group_rows: int = ROW_GROUP_ROWS) -> DatasetVersion:
        """A new version of ``dataset``; smaller ``row_group_rows`` let readers take shards (``read(shard=)``)."""
        with self.writer(dataset, table.schema, row_group_rows) as out:
            out.write(table)
        return out.version

    @contextlib.contextmanager
    def writer(self, dataset: str, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS) -> Iterator[VersionWriter]:
        """A new version of ``dataset`` written table by table, for data that does not fit in memory at once.

        The version is written to a hidden temporary folder and appears whole when the block ends
        without an exception and without ``discard()``; otherwise nothing is left. Its number (and so
        the binding context of its keys) is fixed when the block starts.
        """
        classes = self.registry.classes_for(dataset, schema.names)
        column_keys: dict[str, list[str]] = defaultdict(list)
        for column, column_class in classes.items():
            column_keys[self.kms.master_key_id(column_class)].append(column)
        config = pqe.EncryptionConfiguration(
            footer_key=self.kms.master_key_id("footer"),
            column_keys=dict(column_keys),
            encryption_algorithm="AES_GCM_V1",
            double_wrapping=True,
            plaintext_footer=False,
            internal_key_material=False,
            cache_lifetime=_CACHE_LIFETIME,
        )
        folder = self.root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        version = self._latest_number(dataset) + 1
        temporary = folder / f".v{version:06d}.{os.getpid()}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        try:
            factory = self._crypto_factory(binding_context(dataset, version))
            with self.kms.access_log.observe() as entries:
                properties = factory.file_encryption_properties(
                    pqe.KmsConnectionConfig(), config, parquet_file_path=str(temporary / DATA_FILE)
                )
            with pq.ParquetWriter(
                temporary / DATA_FILE, schema, encryption_properties=properties, compression="zstd"
            ) as parquet_writer:
                out = VersionWriter(parquet_writer, row_group_rows)
                yield out
        except BaseException:
            _remove_unpublished(temporary)
            raise
        if out.discarded:
            _remove_unpublished(temporary)
            return
        final = folder / f"v{version:06d}"
        os.rename(temporary, final)  # a version appears whole, or not at all
        out.version = DatasetVersion(
            dataset=dataset,
            version=version,
            path=final / DATA_FILE,
            rows=out.rows,
            sha256=_file_sha256(final / DATA_FILE),
            key_ids=tuple(sorted({entry["key_id"] for entry in entries})),
        )

    def read(
        self,
        dataset: str,
        columns: list[str] | None = None,
        version: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> LakeRead:
        """Decrypt the given columns of a dataset version (the latest when none is given); with ``shard``
        (index, count) only the row groups whose number is ``index`` modulo ``count``."""
        found = self.version(dataset, version)
        with self.kms.access_log.observe() as entries, self._opened(found, columns) as (parquet_file, wanted):
            if shard is None:
                table = parquet_file.read(columns=wanted, use_threads=True)
            else:
                index, count = shard
                groups = range(index, parquet_file.num_row_groups, count)
                table = parquet_file.read_row_groups(groups, columns=wanted, use_threads=True)
        key_ids = tuple(sorted({entry["key_id"] for entry in entries}))
        return LakeRead(table=table, version=found, columns=tuple(wanted), key_ids=key_ids)

    def read_row_groups(
        self, dataset: str, columns: list[str] | None = None, version: int | None = None
    ) -> Iterator[pa.Table]:
        """Decrypt a version one row group at a time (the latest when none is given), for a caller that
        passes a version larger than memory through."""
        found = self.version(dataset, version)
        with self._opened(found, columns) as (parquet_file, wanted):
            for index in range(parquet_file.num_row_groups):
                yield parquet_file.read_row_group(index, columns=wanted, use_threads=True)

    @contextlib.contextmanager
    def _opened(self, found: DatasetVersion, columns: list[str] | None) -> Iterator[tuple[pq.ParquetFile, list[str]]]:
        """The version's file opened for decryption, and the columns to read (all when none are given)."""
        with _integrity(found):
            parquet_file = pq.ParquetFile(found.path, decryption_properties=self._decryption_properties(found))
            try:
                available = parquet_file.schema_arrow.names
                wanted = available if columns is None else list(dict.fromkeys(columns))
                missing = [name for name in wanted if name not in available]
                if missing:
                    raise KeyError(f"{found.dataset} v{found.version} has no column(s) {missing}")
                yield parquet_file, wanted
            finally:
                parquet_file.close()

    def schema(self, dataset: str, version: int | None = None) -> pa.Schema:
        """The Arrow schema of a stored version (decrypts the footer only)."""
        found = self.version(dataset, version)
        with _integrity(found):
            return pq.read_schema(found.path, decryption_properties=self._decryption_properties(found))

    def columns(self, dataset: str, version: int | None = None) -> list[str]:
        """Column names of a stored version (decrypts the footer only)."""
        return self.schema(dataset, version).names

    def rewrap(self, dataset: str, version: int) -> None:
        """Re-wrap a version's keys under the current master key versions (epoch classes excepted)."""
        found = self.version(dataset, version)
        with _integrity(found):
            self._crypto_factory(found.context, keep_epochs=True).rotate_master_keys(
                pqe.KmsConnectionConfig(), str(found.path), double_wrapping=True
            )

    def key_versions(self, dataset: str, version: int) -> dict[str, int | None]:
        """Master key id -> the version its keys are wrapped under, read from the key material
        (no KMS call): which artifacts a master key version still protects."""
        material_path = self.version(dataset, version).path.with_name(KEY_MATERIAL_FILE)
        found: dict[str, int | None] = {}
        for raw in json.loads(material_path.read_text()).values():
            material = json.loads(raw)
            wrapped = material.get("wrappedKEK") or material["wrappedDEK"]
            found[material["masterKeyID"]] = self.kms.wrapped_version(base64.b64decode(wrapped))
        return found

    def version(self, dataset: str, version: int | None = None) -> DatasetVersion:
        number = self._latest_number(dataset) if version is None else version
        path = self.root / dataset / f"v{number:06d}" / DATA_FILE
        if number == 0 or not path.exists():
            raise DatasetNotFoundError(f"dataset {dataset!r} has no version {number or '(none yet)'}")
        return DatasetVersion(
            dataset=dataset, version=number, path=path, rows=None, sha256=_file_sha256(path), key_ids=()
        )

    def exists(self, dataset: str) -> bool:
        return self._latest_number(dataset) > 0

    def datasets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def version_numbers(self, dataset: str) -> list[int]:
        folder = self.root / dataset
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := VERSION_FOLDER.match(p.name)))

    def _latest_number(self, dataset: str) -> int:
        return max(self.version_numbers(dataset), default=0)


@contextlib.contextmanager
def _integrity(found: DatasetVersion) -> Iterator[None]:
    """Turn a key that will not open into an error naming the dataset version (Arrow re-raises the
    KMS error from its callback as it is)."""
    try:
        yield
    except (KeyBindingError, UnknownKeyError) as error:
        raise LakeIntegrityError(
            f"{found.dataset} v{found.version}: its keys do not open ({type(error).__name__}): "
            "files swapped, altered, or shredded"
        ) from None


def _remove_unpublished(temporary: Path) -> None:
    """Remove a version that was never published, and its dataset's folder if that leaves it empty
    (so ``datasets()`` does not list a dataset without versions)."""
    shutil.rmtree(temporary, ignore_errors=True)
    with contextlib.suppress(OSError):
        temporary.parent.rmdir()


def _file_sha256(path: Path) -> str:
    """A version's files never change once written, so a digest is computed once per file (the cache
    key includes size and modification time, so a swapped file is hashed afresh)."""
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=4096)
def _digest(path: str, _size: int, _mtime_ns: int, _inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
