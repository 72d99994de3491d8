"""Quarantined rows, kept encrypted in ``quarantine_<source>_<table>`` and accumulated across batches,
each with its batch, file, line, rule and column."""

from __future__ import annotations

import contextlib

import polars as pl
import pyarrow as pa

from carecast.ingest.landing import LandedFile
from carecast.ingest.merge import aligned
from carecast.ingest.readers import ExtractError
from carecast.lake import DatasetVersion, Lake, VersionWriter
from carecast.registry import quarantine_dataset_name


class QuarantineSink:
    """One file's quarantined rows, added block by block after the dataset's earlier rows.

    The new version is opened with the first rows (a file without any writes none) and published
    when ``stack`` closes without an error. Rows an earlier attempt at the same file left (a re-run
    after a crash) are replaced rather than kept twice. Every column is text: the rows as they came.
    """

    def __init__(self, lake: Lake, landed: LandedFile, stack: contextlib.ExitStack):
        self._lake = lake
        self._landed = landed
        self._stack = stack
        self._dataset = quarantine_dataset_name(landed.target_source, landed.table)
        self._batch = f"{landed.source}/{landed.batch}"
        self._schema = pl.Schema()
        self._writer: VersionWriter | None = None

    @property
    def version(self) -> DatasetVersion | None:
        """The version written, once ``stack`` has closed (None when no row was quarantined)."""
        return self._writer.version if self._writer else None

    def add(self, rows: pl.DataFrame) -> None:
        if not rows.height:
            return
        rows = rows.with_columns(_batch=pl.lit(self._batch), _file=pl.lit(self._landed.name))
        if self._writer is None:
            self._writer = self._open(rows.columns)
        late = [name for name in rows.columns if name not in self._schema]
        if late:
            # only an NDJSON file read block by block can name a column this late
            raise ExtractError(
                f"{self._landed.name}:{rows.get_column('_line')[0]}: column(s) {late} first appear after rows "
                "were quarantined; apply this file whole (raise CARECAST_INGEST_STREAM_BYTES above its size)"
            )
        self._writer.write(self._as_text(rows))

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()

    def _open(self, columns: list[str]) -> VersionWriter:
        """The earlier rows' columns, then this file's new ones; the earlier rows copied in first."""
        earlier = self._lake.version(self._dataset).version if self._lake.exists(self._dataset) else None
        earlier_columns = self._lake.schema(self._dataset, earlier).names if earlier else []
        names = [*earlier_columns, *(name for name in columns if name not in earlier_columns)]
        self._schema = pl.Schema(dict.fromkeys(names, pl.String))
        writer = self._stack.enter_context(
            self._lake.writer(self._dataset, pl.DataFrame(schema=self._schema).to_arrow().schema)
        )
        if earlier:
            for table in self._lake.read_row_groups(self._dataset, version=earlier):
                writer.write(self._as_text(self._without_this_file(pl.from_arrow(table))))
        return writer

    def _as_text(self, rows: pl.DataFrame) -> pa.Table:
        return aligned(rows, self._schema).cast(pl.String).to_arrow()

    def _without_this_file(self, earlier: pl.DataFrame) -> pl.DataFrame:
        if "_batch" not in earlier.columns:
            return earlier
        same_file = (pl.col("_batch") == self._batch) & (pl.col("_file") == self._landed.name)
        return earlier.filter(same_file.fill_null(False).not_())
