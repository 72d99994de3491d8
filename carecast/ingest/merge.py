"""Apply a validated batch to a raw table: newer records replace older ones by id, nothing else moves.

A table with a ``key`` (patients by ``Id``, contacts by ``patient_id``, ...) takes each batch row in
place of the stored row with the same key. A table of a patient's history without a key of its own
(conditions, observations, ...) declares ``replace_by: PATIENT``: a batch carries each patient's full
history, so it replaces every stored row of the patients it names. Each write is a new immutable lake
version, so earlier versions stay readable and a past campaign can be re-explained from its inputs.

The merged version holds the batch's rows first, then the stored rows it leaves: the order a batch
streamed block by block (``StreamingMerge``) can write without holding the batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from carecast.lake import VersionWriter
from carecast.registry import TableSpec


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    """Batch rows whose key (or patient) the table did not have."""
    updated: int
    """Batch rows that replace a stored row with different values."""
    unchanged: int
    """Batch rows identical to a stored row: applying them changed nothing."""
    removed: int
    """Stored rows that are no longer there (replaced by a patient's newer history)."""


def merge_batch(stored: pl.DataFrame | None, batch: pl.DataFrame, spec: TableSpec) -> tuple[pl.DataFrame, MergeCounts]:
    if stored is None:
        return batch, MergeCounts(inserted=batch.height, updated=0, unchanged=0, removed=0)
    schema = merged_schema(stored.schema, batch.schema, spec)
    stored, batch = aligned(stored, schema), aligned(batch, schema)
    by = merge_column(spec)
    incoming = batch.get_column(by).drop_nulls().unique()
    kept = stored.filter(pl.col(by).is_in(incoming.implode()).not_())
    unchanged = batch.join(stored, on=batch.columns, how="semi", nulls_equal=True).height
    known = batch.filter(pl.col(by).is_in(stored.get_column(by).unique().implode())).height
    merged = pl.concat([batch, kept], how="vertical")
    return merged, _counts(spec, batch.height, known, unchanged, stored.height, kept.height)


def merged_schema(stored: pl.Schema | None, batch: pl.Schema, spec: TableSpec) -> pl.Schema:
    """The declared columns either side has, in declaration order (an older export may lack some);
    where both have a column, the stored type wins."""
    dtypes = {**dict(batch), **dict(stored or {})}
    return pl.Schema({name: dtypes[name] for name in spec.columns if name in dtypes})


def aligned(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, in its order; a column it lacks is all null."""
    missing = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    return frame.with_columns(missing).select(schema.names())


def merge_column(spec: TableSpec) -> str:
    """The column newer rows replace older ones by: the key, or the patient whose history it is."""
    by = spec.key or spec.replace_by
    if by is None:
        raise ValueError("a raw table needs a key or replace_by to apply newer batches")
    return by


def _counts(spec: TableSpec, batch: int, known: int, unchanged: int, stored: int, kept: int) -> MergeCounts:
    removed = stored - kept - (known if spec.key else unchanged)
    return MergeCounts(inserted=batch - known, updated=known - unchanged, unchanged=unchanged, removed=max(removed, 0))


_NO_FINGERPRINTS = pl.Series("fingerprint", [], pl.UInt64)


class KeySet:
    """A growing set of keys that says, for one block of keys at a time, which of them it holds.

    ``Series.is_in`` hashes its argument on every call, so a block is the argument and the set is what
    is scanned: each call makes one pass over the set's 64-bit hashes (about 10 ns a key), then
    compares the few candidates exactly. Null keys are never held: every key and ``replace_by``
    column is declared ``not_null``, so a null key is quarantined anyway.
    """

    _SEED = 20_231_123

    def __init__(self) -> None:
        self._held: pl.DataFrame | None = None

    def add(self, keys: pl.Series) -> None:
        keys = keys.drop_nulls()
        held = pl.DataFrame({"hash": keys.hash(self._SEED), "key": keys})
        if self._held is None:
            self._held = held
        else:
            self._held.vstack(held, in_place=True)

    def contains(self, keys: pl.Series) -> pl.Series:
        if self._held is None:
            return pl.repeat(False, len(keys), dtype=pl.Boolean, eager=True)
        candidates = self._held.filter(pl.col("hash").is_in(keys.hash(self._SEED).implode())).get_column("key")
        return keys.is_in(candidates.implode()).fill_null(False)


class StreamingMerge:
    """``merge_batch`` for a batch that arrives in blocks, writing as it goes: the same rows, in the
    same order, and the same counts, without holding the batch or the stored version.

    Each block's rows are written when they arrive; ``finish`` then copies the stored rows the batch
    leaves, row group by row group. Held in memory: the stored version's key column, and for each
    batch row that replaces a stored one its key and a 64-bit fingerprint of its values (two rows are
    taken as identical when their fingerprints are; ``unchanged`` is a count, so a collision, about
    one in 2**64, can only miscount, never lose a row).
    """

    def __init__(
        self,
        spec: TableSpec,
        writer: VersionWriter,
        schema: pl.Schema,
        stored_keys: pl.Series | None,
    ):
        self._spec = spec
        self._by = merge_column(spec)
        self._writer = writer
        self._schema = schema
        self._stored_key_column = stored_keys
        self._stored_keys: KeySet | None = None
        if stored_keys is not None:
            self._stored_keys = KeySet()
            self._stored_keys.add(stored_keys)
        self._replacing = KeySet()
        self._replacing_fingerprints = [_NO_FINGERPRINTS]
        self._batch_rows = 0
        self._known = 0

    def add(self, batch: pl.DataFrame) -> None:
        batch = aligned(batch, self._schema)
        self._writer.write(batch.to_arrow())
        self._batch_rows += batch.height
        if self._stored_keys is None:
            return
        known = batch.filter(self._stored_keys.contains(batch.get_column(self._by)))
        self._known += known.height
        self._replacing.add(known.get_column(self._by).unique())
        self._replacing_fingerprints.append(known.hash_rows())

    def finish(self, stored_row_groups: Iterable[pa.Table]) -> MergeCounts:
        """Copy through the stored rows no batch row replaced (``stored_row_groups`` in the order of the
        stored key column); the counts of the whole merge."""
        if self._stored_key_column is None:
            return MergeCounts(inserted=self._batch_rows, updated=0, unchanged=0, removed=0)
        replaced = self._replacing.contains(self._stored_key_column)
        replaced_fingerprints = [_NO_FINGERPRINTS]
        offset = kept_rows = 0
        for table in stored_row_groups:
            stored = aligned(pl.from_arrow(table), self._schema)
            replaced_here = replaced.slice(offset, stored.height)
            kept = stored.filter(replaced_here.not_())
            self._writer.write(kept.to_arrow())
            replaced_fingerprints.append(stored.filter(replaced_here).hash_rows())
            offset += stored.height
            kept_rows += kept.height
        batch_fingerprints = pl.concat(self._replacing_fingerprints)
        unchanged = int(batch_fingerprints.is_in(pl.concat(replaced_fingerprints).implode()).sum())
        return _counts(self._spec, self._batch_rows, self._known, unchanged, offset, kept_rows)
