"""Apply an extract block by block, for files larger than memory: the same rows, quarantine, counts
and errors as applying it whole (``load.apply_file`` chooses), written as it is read.

Each block of whole records (``blocks.split_blocks``) is parsed, validated and quarantined on its
own; its loaded rows go straight into the new lake version, and the stored rows the file leaves are
copied in after the last block (``merge.StreamingMerge``). The new versions become current only
when the whole file has been read, its digest checked and nothing failed; until then they are hidden
temporary folders, so a file that turns out broken at its end leaves nothing behind.

Held in memory besides one block: the keys of the file's rows so far (keyed tables: a repeated key
is quarantined file-wide, as in a whole file), and what ``StreamingMerge`` holds.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import polars as pl

from carecast.ingest.blocks import Block
from carecast.ingest.landing import LandedFile
from carecast.ingest.merge import KeySet, MergeCounts, StreamingMerge, merge_column, merged_schema
from carecast.ingest.quarantine import QuarantineSink
from carecast.ingest.readers import read_block
from carecast.ingest.validate import loaded_schema, validate
from carecast.lake import DatasetVersion, Lake
from carecast.registry import TableSpec


class StreamingLoad:
    """One file's new lake versions (loaded rows, quarantine), written block by block.

    Use as a context manager: the versions are published when the block ends without an error and
    without ``discard()``.
    """

    def __init__(self, lake: Lake, landed: LandedFile, spec: TableSpec):
        self._lake = lake
        self._landed = landed
        self._spec = spec
        self._first_line = 2 if landed.format == "csv" else 1
        self._seen_keys = KeySet() if spec.key else None
        self.rows_read = 0
        self.rows_loaded = 0
        self.rows_quarantined = 0
        self.columns: list[str] = []
        self.dropped: list[str] = []
        self.reasons: Counter[str] = Counter()

    def __enter__(self) -> StreamingLoad:
        with contextlib.ExitStack() as setup:
            self._stored = self._stored_version()
            schema = merged_schema(self._stored_schema(), loaded_schema(self._spec), self._spec)
            self._loaded = setup.enter_context(
                self._lake.writer(self._landed.dataset, pl.DataFrame(schema=schema).to_arrow().schema)
            )
            self._merge = StreamingMerge(self._spec, self._loaded, schema, self._stored_keys())
            self._stack = setup.pop_all()
        self._quarantine = QuarantineSink(self._lake, self._landed, self._stack)
        return self

    def __exit__(self, *exc_info) -> bool | None:
        return self._stack.__exit__(*exc_info)

    def add(self, block: Block) -> None:
        if self._landed.format == "ndjson" and block.data.isspace():
            return  # blank lines only: no records (Polars cannot parse a block of nothing)
        frame, dropped = read_block(block.data, self._landed.name, self._landed.format, self._spec, block.line_offset)
        result = validate(
            frame, self._spec, first_line=self._first_line + self.rows_read, seen_before=self._repeated_keys(frame)
        )
        self._merge.add(result.loaded)
        self._quarantine.add(result.quarantined)
        self.rows_read += frame.height
        self.rows_loaded += result.loaded.height
        self.rows_quarantined += result.quarantined.height
        self.columns += [name for name in frame.columns if name not in self.columns]
        self.dropped += [name for name in dropped if name not in self.dropped]
        self.reasons.update(result.reasons)

    def finish(self) -> MergeCounts:
        """After the last block: copy through the stored rows the file leaves; the merge's counts."""
        stored_rows = self._lake.read_row_groups(self._landed.dataset, version=self._stored) if self._stored else ()
        return self._merge.finish(stored_rows)

    def discard(self) -> None:
        """Publish nothing (the file repeats one already applied)."""
        self._loaded.discard()
        self._quarantine.discard()

    @property
    def loaded(self) -> DatasetVersion | None:
        return self._loaded.version

    @property
    def quarantine(self) -> DatasetVersion | None:
        return self._quarantine.version

    def _repeated_keys(self, frame: pl.DataFrame) -> pl.Series | None:
        """Rows whose key an earlier block had (keyed tables); the block's keys are then remembered."""
        if self._seen_keys is None or self._spec.key not in frame.columns:
            return None
        keys = frame.get_column(self._spec.key)
        repeated = self._seen_keys.contains(keys)
        self._seen_keys.add(keys)
        return repeated

    def _stored_version(self) -> int | None:
        dataset = self._landed.dataset
        return self._lake.version(dataset).version if self._lake.exists(dataset) else None

    def _stored_schema(self) -> pl.Schema | None:
        if self._stored is None:
            return None
        return pl.from_arrow(self._lake.schema(self._landed.dataset, self._stored).empty_table()).schema

    def _stored_keys(self) -> pl.Series | None:
        if self._stored is None:
            return None
        keys = self._lake.read(self._landed.dataset, [merge_column(self._spec)], version=self._stored)
        return pl.from_arrow(keys.table).to_series()
