"""Apply a validated batch to a raw table: newer records replace older ones by id, nothing else moves.

A table with a ``key`` (patients by ``Id``, contacts by ``patient_id``, ...) takes each batch row in
place of the stored row with the same key. A table of a patient's history without a key of its own
(conditions, observations, ...) declares ``replace_by: PATIENT``: a batch carries each patient's full
history, so it replaces every stored row of the patients it names. Each write is a new immutable lake
version, so earlier versions stay readable and a past campaign can be re-explained from its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

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
    stored, batch = _aligned(stored, batch, spec)
    by = spec.key or spec.replace_by
    if by is None:
        raise ValueError("a raw table needs a key or replace_by to apply newer batches")
    incoming = batch.get_column(by).drop_nulls().unique()
    kept = stored.filter(pl.col(by).is_in(incoming.implode()).not_())
    unchanged = batch.join(stored, on=batch.columns, how="semi", nulls_equal=True).height
    known = batch.filter(pl.col(by).is_in(stored.get_column(by).unique().implode())).height
    merged = pl.concat([kept, batch], how="vertical")
    removed = stored.height - kept.height - (known if spec.key else unchanged)
    counts = MergeCounts(
        inserted=batch.height - known,
        updated=known - unchanged,
        unchanged=unchanged,
        removed=max(removed, 0),
    )
    return merged, counts


def _aligned(stored: pl.DataFrame, batch: pl.DataFrame, spec: TableSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The same columns, in declaration order, on both sides (an older export may lack some)."""
    columns = [name for name in spec.columns if name in stored.columns or name in batch.columns]
    dtypes = {**dict(batch.schema), **dict(stored.schema)}

    def complete(frame: pl.DataFrame) -> pl.DataFrame:
        missing = [pl.lit(None, dtype=dtypes[c]).alias(c) for c in columns if c not in frame.columns]
        return frame.with_columns(missing).select(columns)

    return complete(stored), complete(batch)
