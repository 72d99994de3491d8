"""The lake: immutable, versioned, encrypted Parquet datasets.

Every column is encrypted with the key of its PHI class (declared in the schema registry), the footer
with a key of its own, with double wrapping (data keys wrapped by key-encryption keys, which the KMS
wraps under master keys). A read names the columns it needs; Parquet then unwraps only the keys of
those columns, and the KMS access log shows it. DuckDB and Polars never see files, only the
decrypted Arrow tables this module returns.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe

from carecast.crypto.kms import Kms
from carecast.registry import SchemaRegistry

VERSION_FILE = re.compile(r"^v(\d{6})\.parquet$")
ROW_GROUP_ROWS = 1_000_000
_CACHE_LIFETIME = timedelta(minutes=10)


class DatasetNotFoundError(LookupError):
    pass


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


@dataclass(frozen=True)
class LakeRead:
    table: pa.Table
    version: DatasetVersion
    columns: tuple[str, ...]
    key_ids: tuple[str, ...]


class _KmsBridge(pqe.KmsClient):
    """Lets Parquet's key tools call our KMS (and so write the access log)."""

    def __init__(self, kms: Kms):
        super().__init__()
        self._kms = kms

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return base64.b64encode(self._kms.wrap(key_bytes, master_key_identifier)).decode()

    def unwrap_key(self, wrapped_key: str | bytes, master_key_identifier: str) -> bytes:
        return self._kms.unwrap(base64.b64decode(wrapped_key), master_key_identifier)


class Lake:
    def __init__(self, root: Path, kms: Kms, registry: SchemaRegistry):
        self.root = root
        self.kms = kms
        self.registry = registry

    def _crypto_factory(self) -> pqe.CryptoFactory:
        # A factory per operation: its key cache then lives for one read or write, so the access
        # log records the unwraps of every operation, not only of the first in a process.
        return pqe.CryptoFactory(lambda _config: _KmsBridge(self.kms))

    def write(self, dataset: str, table: pa.Table) -> DatasetVersion:
        classes = self.registry.classes_for(dataset, table.column_names)
        column_keys: dict[str, list[str]] = defaultdict(list)
        for column, column_class in classes.items():
            column_keys[self.kms.current_key_id(column_class)].append(column)
        footer_key = self.kms.current_key_id("footer")
        config = pqe.EncryptionConfiguration(
            footer_key=footer_key,
            column_keys=dict(column_keys),
            encryption_algorithm="AES_GCM_V1",
            double_wrapping=True,
            plaintext_footer=False,
            cache_lifetime=_CACHE_LIFETIME,
        )
        properties = self._crypto_factory().file_encryption_properties(pqe.KmsConnectionConfig(), config)
        folder = self.root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        version = self._latest_number(dataset) + 1
        final_path = folder / f"v{version:06d}.parquet"
        temp_path = folder / f".v{version:06d}.parquet.{os.getpid()}.tmp"
        pq.write_table(
            table,
            temp_path,
            encryption_properties=properties,
            row_group_size=ROW_GROUP_ROWS,
            compression="zstd",
        )
        os.replace(temp_path, final_path)
        return DatasetVersion(
            dataset=dataset,
            version=version,
            path=final_path,
            rows=table.num_rows,
            sha256=_file_sha256(final_path),
            key_ids=tuple(sorted({footer_key, *column_keys})),
        )

    def read(self, dataset: str, columns: list[str] | None = None, version: int | None = None) -> LakeRead:
        """Decrypt the given columns of a dataset version (the latest when none is given)."""
        found = self.version(dataset, version)
        properties = self._crypto_factory().file_decryption_properties(
            pqe.KmsConnectionConfig(), pqe.DecryptionConfiguration(cache_lifetime=_CACHE_LIFETIME)
        )
        with self.kms.access_log.observe() as entries:
            parquet_file = pq.ParquetFile(found.path, decryption_properties=properties)
            available = parquet_file.schema_arrow.names
            wanted = available if columns is None else list(dict.fromkeys(columns))
            missing = [name for name in wanted if name not in available]
            if missing:
                raise KeyError(f"{dataset} v{found.version} has no column(s) {missing}")
            table = parquet_file.read(columns=wanted, use_threads=True)
            parquet_file.close()
        key_ids = tuple(sorted({entry["key_id"] for entry in entries}))
        return LakeRead(table=table, version=found, columns=tuple(wanted), key_ids=key_ids)

    def columns(self, dataset: str, version: int | None = None) -> list[str]:
        """Column names of a stored version (decrypts the footer only)."""
        found = self.version(dataset, version)
        properties = self._crypto_factory().file_decryption_properties(
            pqe.KmsConnectionConfig(), pqe.DecryptionConfiguration(cache_lifetime=_CACHE_LIFETIME)
        )
        return pq.read_schema(found.path, decryption_properties=properties).names

    def version(self, dataset: str, version: int | None = None) -> DatasetVersion:
        number = self._latest_number(dataset) if version is None else version
        path = self.root / dataset / f"v{number:06d}.parquet"
        if number == 0 or not path.exists():
            raise DatasetNotFoundError(f"dataset {dataset!r} has no version {number or '(none yet)'}")
        return DatasetVersion(
            dataset=dataset, version=number, path=path, rows=None, sha256=_file_sha256(path), key_ids=()
        )

    def exists(self, dataset: str) -> bool:
        return self._latest_number(dataset) > 0

    def _latest_number(self, dataset: str) -> int:
        folder = self.root / dataset
        if not folder.is_dir():
            return 0
        numbers = [int(m.group(1)) for p in folder.iterdir() if (m := VERSION_FILE.match(p.name))]
        return max(numbers, default=0)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
