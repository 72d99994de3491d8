"""Applying an extract block by block gives what applying it whole gives: the same lake rows in the
same order, the same quarantine (with the file's lines), counts, changes and errors; a sealed file
cut or altered midway is refused and leaves nothing written."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carecast.crypto import sealed_file
from carecast.crypto.kms import LocalKms
from carecast.crypto.sealed_file import SealedFileError, open_sealed, seal_bytes
from carecast.home import CarecastHome
from carecast.ingest import load
from carecast.ingest.blocks import split_blocks
from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import batch_files, complete_batches, pending_files
from carecast.ingest.load import IngestReport, apply_file
from carecast.ingest.merge import KeySet
from carecast.ingest.readers import ExtractError
from carecast.lake import Lake
from carecast.project import Project
from carecast.registry import TableSpec
from carecast.synth import augment_synthea
from tests.conftest import SYNTHEA_27

CORPUS = Path(__file__).parent / "data" / "broken_extracts"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
WHOLE = {"stream_bytes": 1 << 62}
BLOCK_BYTES = 1024


def _streamed(block_bytes: int = BLOCK_BYTES) -> dict[str, int]:
    return {"stream_bytes": 0, "block_bytes": block_bytes}


@dataclass
class Applied:
    """Everything applying pending files left behind, in a form two runs can be compared in."""

    reports: list[dict | str]
    tables: dict[str, pl.DataFrame]
    versions: dict[str, list[int]]


def _home(template: Path, target: Path) -> CarecastHome:
    shutil.copytree(template, target)
    return CarecastHome(target)


def _lake(home: CarecastHome, project: Project) -> Lake:
    return Lake(home.lake, LocalKms(home.keys), project.registry)


def _apply_pending(home: CarecastHome, project: Project, mode: dict[str, int]) -> Applied:
    """Apply every pending file, oldest batch first; a dataset stops at its first broken file."""
    lake = _lake(home, project)
    reports: list[dict | str] = []
    broken: set[str] = set()
    with IngestJournal(home.state_db) as journal:
        for landed in pending_files(home.landing, project.registry, journal.applied()):
            if landed.dataset in broken:
                continue
            try:
                reports.append(_comparable(apply_file(lake, journal, landed, **mode)))
            except ExtractError as error:
                reports.append(str(error))
                broken.add(landed.dataset)
    assert not list(home.lake.glob("*/.v*")), "no temporary version is left behind"
    tables = {dataset: pl.from_arrow(lake.read(dataset).table) for dataset in lake.datasets()}
    versions = {dataset: lake.version_numbers(dataset) for dataset in lake.datasets()}
    return Applied(reports, tables, versions)


def _comparable(report: IngestReport) -> dict:
    """The report without what differs between two writes of the same rows (digests of the files)."""
    fields = dict(report.__dict__)
    for name in ("loaded", "quarantine"):
        version = fields.pop(name)
        fields[name] = (version.version, version.rows) if version else None
    fields["changes"] = report.changes.__dict__ if report.changes else None
    fields["reconciled"] = report.reconciled
    return fields


def _assert_same(whole: Applied, streamed: Applied) -> None:
    assert streamed.reports == whole.reports
    assert streamed.versions == whole.versions
    assert streamed.tables.keys() == whole.tables.keys()
    for dataset, table in whole.tables.items():
        assert streamed.tables[dataset].equals(table, null_equal=True), dataset


# --- the synthea-27 export, its engagement extracts, and a correcting second batch ---------------------


def _correction(frame: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """A later batch for ``frame``'s table: some records changed (one with a quoted multi-line value),
    some unchanged, a record of someone new, a broken row and a repeated record; for a patient-history
    table each patient named carries a history one row shorter."""
    by = spec.key or spec.replace_by
    text = [c for c in frame.columns if c != by and c in spec.columns and spec.columns[c].type == "string"][-1]
    typed = next(
        (c for c in frame.columns if c in spec.columns and spec.columns[c].type in ("date", "timestamp")), None
    )
    owners = frame.get_column(by).unique(maintain_order=True).head(4)
    named = frame.filter(pl.col(by).is_in(owners.implode()))
    named = named.slice(1) if spec.replace_by else named
    numbered = pl.int_range(pl.len())
    edited = named.with_columns(
        pl.when(numbered == 0)
        .then(pl.lit('two lines\nwith "quotes", and, commas'))
        .when(numbered % 2 == 1)
        .then(pl.col(text) + " (corrected)")
        .otherwise(pl.col(text))
        .alias(text)
    )
    someone_new = frame.head(1).with_columns(pl.lit("new-0001").alias(by))
    broken = frame.head(1).with_columns(
        pl.lit("not-a-date").alias(typed) if typed else pl.lit(None, pl.String).alias(by)
    )
    return pl.concat([edited, someone_new, broken, edited.head(1)])


@pytest.fixture(scope="module")
def synthea_homes(tmp_path_factory: pytest.TempPathFactory, project: Project) -> Path:
    """A data home with two sealed batches of every source but FHIR: the synthea-27 export with its
    engagement extracts, then corrections of every table."""
    home = CarecastHome(tmp_path_factory.mktemp("synthea") / "home").ensure()
    kms = LocalKms(home.keys)
    augment_synthea(SYNTHEA_27, home.landing, kms=kms, batch="batch-0001")
    for batch in complete_batches(home.landing):
        for landed in batch_files(batch, project.registry):
            spec = project.registry.table_spec(landed.target_source, landed.table)
            data = open_sealed(landed.path, kms)
            folder = home.landing / landed.source / "batch-0002"
            folder.mkdir(parents=True, exist_ok=True)
            if landed.format == "csv":
                correction = _correction(pl.read_csv(data, infer_schema=False), spec).write_csv()
            else:
                frame = pl.read_ndjson(data, infer_schema_length=None).select(pl.all().cast(pl.String))
                correction = _correction(frame, spec).write_ndjson()
            seal_bytes(correction.encode(), folder / f"{landed.name}.enc", kms)
            (folder / "_SUCCESS").touch()
    return home.root


@pytest.fixture(scope="module")
def synthea_applied(synthea_homes: Path, tmp_path_factory: pytest.TempPathFactory, project: Project) -> dict:
    root = tmp_path_factory.mktemp("applied")
    return {
        mode: _apply_pending(_home(synthea_homes, root / mode), project, arguments)
        for mode, arguments in (("whole", WHOLE), ("streamed", _streamed()))
    }


def test_synthea_27_and_its_corrections_apply_the_same_block_by_block(synthea_applied: dict) -> None:
    whole, streamed = synthea_applied["whole"], synthea_applied["streamed"]
    _assert_same(whole, streamed)
    # it was a real test: two batches of every table, with updates, quarantine and multi-line values
    assert len(whole.reports) == 2 * 11 and all(isinstance(report, dict) for report in whole.reports)
    corrections = [report for report in whole.reports if report["batch"] == "batch-0002"]
    assert all(report["changes"]["updated"] and report["rows_quarantined"] for report in corrections)
    assert all(report["reconciled"] for report in whole.reports)
    descriptions = whole.tables["raw_synthea_conditions"].get_column("DESCRIPTION")
    assert descriptions.str.contains("\n").any()
    assert {"raw_synthea_encounters", "quarantine_events_events"} <= whole.tables.keys()


def test_every_streamed_file_spanned_many_blocks(synthea_homes: Path, project: Project) -> None:
    kms = LocalKms(synthea_homes / "keys")
    landing = synthea_homes / "landing"
    for batch in complete_batches(landing):
        for landed in batch_files(batch, project.registry):
            data = open_sealed(landed.path, kms)
            blocks = list(split_blocks([data], landed.name, landed.format, BLOCK_BYTES))
            assert len(blocks) >= min(3, len(data) // BLOCK_BYTES), landed.path


# --- the broken-extract corpus ------------------------------------------------------------------------


def _corpus_home(root: Path, file_name: str) -> CarecastHome:
    case = EXPECTED[file_name]
    home = CarecastHome(root).ensure()
    folder = home.landing / case.get("source", "synthea") / "batch-0001"
    folder.mkdir(parents=True)
    (folder / f"{case['table']}.{file_name.rsplit('.', 1)[1]}").write_bytes((CORPUS / file_name).read_bytes())
    (folder / "_SUCCESS").touch()
    return home


@pytest.mark.parametrize("block_bytes", [7, 64])
@pytest.mark.parametrize("file_name", sorted(EXPECTED))
def test_the_broken_extract_corpus_fails_or_loads_the_same(
    tmp_path: Path, project: Project, file_name: str, block_bytes: int
) -> None:
    whole = _apply_pending(_corpus_home(tmp_path / "whole", file_name), project, WHOLE)
    streamed = _apply_pending(_corpus_home(tmp_path / "streamed", file_name), project, _streamed(block_bytes))
    _assert_same(whole, streamed)
    if "error" in EXPECTED[file_name]:
        assert not streamed.tables, "a broken file writes nothing"


# --- CSV quoting across block boundaries ---------------------------------------------------------------

CONDITIONS = "\n".join(
    [
        "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION",
        '2020-01-01,,p1,e1,1,"a description\nover two lines"',
        '2020-01-02,,p1,e2,2,"one ""quoted"" word,\nand a comma, and\n\nthree more lines"',
        "not-a-date,,p2,e3,3,plain",
        '2020-01-03,,p2,e4,4,"=HYPERLINK(""http://x"")"',
        '2020-01-04,,,e5,5,"no patient\non two lines"',
        "2020-01-05,,p3,e6,6,last",
        "",
    ]
).encode()


def _conditions_home(root: Path, content: bytes) -> CarecastHome:
    home = CarecastHome(root).ensure()
    folder = home.landing / "synthea" / "batch-0001"
    folder.mkdir(parents=True)
    (folder / "conditions.csv").write_bytes(content)
    (folder / "_SUCCESS").touch()
    return home


@pytest.mark.parametrize("block_bytes", [1, 13, 40, 57, 90, 1000])
def test_quoted_newlines_across_block_boundaries(tmp_path: Path, project: Project, block_bytes: int) -> None:
    whole = _apply_pending(_conditions_home(tmp_path / "whole", CONDITIONS), project, WHOLE)
    streamed = _apply_pending(_conditions_home(tmp_path / "streamed", CONDITIONS), project, _streamed(block_bytes))
    _assert_same(whole, streamed)
    quarantined = streamed.tables["quarantine_synthea_conditions"].select("_line", "_rule", "_column").rows()
    assert quarantined == [("4", "type_date", "START"), ("6", "not_null", "PATIENT")]
    assert streamed.tables["raw_synthea_conditions"].get_column("DESCRIPTION").to_list()[:3] == [
        "a description\nover two lines",
        'one "quoted" word,\nand a comma, and\n\nthree more lines',
        '=HYPERLINK("http://x")',
    ]


@pytest.mark.parametrize(
    ("last_lines", "error"),
    [
        (
            b"2020-01-06,,p4,e7,7,x,extra\n",
            "conditions.csv:13: cannot be parsed as csv: 7 fields where the header has 6",
        ),
        (b"2020-01-06,,p4,e7", "conditions.csv:13: truncated (the last row has 4 of 6 fields)"),
        (b"2020-01-06,,p4,e7,7,\xff\n", "conditions.csv:13: not UTF-8 (a byte at column 21 cannot be decoded)"),
    ],
)
@pytest.mark.parametrize("block_bytes", [1, 40, 1000])
def test_errors_after_multi_line_fields_name_the_file_line(
    tmp_path: Path, project: Project, last_lines: bytes, error: str, block_bytes: int
) -> None:
    text = CONDITIONS + last_lines
    whole = _apply_pending(_conditions_home(tmp_path / "whole", text), project, WHOLE)
    streamed = _apply_pending(_conditions_home(tmp_path / "streamed", text), project, _streamed(block_bytes))
    _assert_same(whole, streamed)
    [message] = streamed.reports
    assert message.startswith(error)


# --- digests: manifests and repeated files ------------------------------------------------------------


@pytest.mark.parametrize("mode", [WHOLE, _streamed(16)], ids=["whole", "streamed"])
def test_a_digest_decides_before_a_problem_found_midway(tmp_path: Path, project: Project, mode: dict) -> None:
    home = _corpus_home(tmp_path / "home", "truncated.csv")
    (home.landing / "synthea" / "batch-0001" / "manifest.json").write_text(
        json.dumps({"files": {"patients.csv": {"sha256": "0" * 64}}})
    )
    applied = _apply_pending(home, project, mode)
    assert (
        applied.reports == ["patients.csv: does not match the digest in its batch manifest (truncated or altered)"]
        and not applied.tables
    )  # the file is truncated too, but its digest names the problem first


@pytest.mark.parametrize("mode", [WHOLE, _streamed(16)], ids=["whole", "streamed"])
def test_a_repeated_delivery_is_a_duplicate_and_writes_nothing(tmp_path: Path, project: Project, mode: dict) -> None:
    home = _conditions_home(tmp_path / "home", CONDITIONS)
    shutil.copytree(home.landing / "synthea" / "batch-0001", home.landing / "synthea" / "batch-0002")
    applied = _apply_pending(home, project, mode)
    assert applied.reports[1]["duplicate_of"] == "synthea/batch-0001/conditions.csv"
    assert applied.versions == {"raw_synthea_conditions": [1], "quarantine_synthea_conditions": [1]}


# --- sealed files cut or altered midway ---------------------------------------------------------------


def _chunk_offsets(raw: bytes) -> list[int]:
    """Where each chunk of a sealed file starts (its length prefix)."""
    offset = len(sealed_file.MAGIC)
    offset += 4 + int.from_bytes(raw[offset : offset + 4], "big")
    offsets = []
    while offset < len(raw):
        offsets.append(offset)
        offset += 4 + int.from_bytes(raw[offset : offset + 4], "big")
    return offsets


def _cut_at_last_chunk(raw: bytes) -> bytes:
    return raw[: _chunk_offsets(raw)[-1]]


def _flip_a_late_byte(raw: bytes) -> bytes:
    damaged = bytearray(raw)
    damaged[_chunk_offsets(raw)[-3] + 10] ^= 1
    return bytes(damaged)


def _drop_a_middle_chunk(raw: bytes) -> bytes:
    offsets = _chunk_offsets(raw)
    middle = len(offsets) // 2
    return raw[: offsets[middle]] + raw[offsets[middle + 1] :]


@pytest.mark.parametrize("damage", [_cut_at_last_chunk, _flip_a_late_byte, _drop_a_middle_chunk])
def test_a_sealed_file_cut_or_altered_midway_is_refused_and_nothing_is_written(
    tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch, damage
) -> None:
    monkeypatch.setattr(sealed_file, "CHUNK_BYTES", 64)
    home = CarecastHome(tmp_path / "home").ensure()
    kms = LocalKms(home.keys)
    lake = _lake(home, project)
    rows = [f"2020-01-{day:02d},,p{day},e{day},{day},condition {day}" for day in range(1, 29)]
    for batch, lines in (("batch-0001", rows[:3]), ("batch-0002", rows)):
        folder = home.landing / "synthea" / batch
        folder.mkdir(parents=True)
        text = "\n".join(["START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION", *lines, ""])
        seal_bytes(text.encode(), folder / "conditions.csv.enc", kms)
        (folder / "_SUCCESS").touch()
    sealed = home.landing / "synthea" / "batch-0002" / "conditions.csv.enc"
    assert len(_chunk_offsets(sealed.read_bytes())) > 10
    sealed.write_bytes(damage(sealed.read_bytes()))
    with IngestJournal(home.state_db) as journal:
        first, second = pending_files(home.landing, project.registry, journal.applied())
        apply_file(lake, journal, first, **_streamed(100))
        with pytest.raises(SealedFileError, match=r"batch-0002/conditions\.csv\.enc: chunk \d+ fails authentication"):
            apply_file(lake, journal, second, **_streamed(100))
        assert [f.batch for f in pending_files(home.landing, project.registry, journal.applied())] == ["batch-0002"]
    assert lake.version_numbers("raw_synthea_conditions") == [1]
    assert lake.read("raw_synthea_conditions").table.num_rows == 3
    assert not list(home.lake.glob("*/.v*"))


# --- the block splitter -------------------------------------------------------------------------------

_field = st.text(alphabet='ab ,"\n', max_size=8)
_records = st.lists(st.lists(_field, min_size=3, max_size=3), min_size=0, max_size=25)


def _csv(records: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([["x", "y", "z"], *records])
    return out.getvalue().encode()


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=_records,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
    block_bytes=st.integers(min_value=1, max_value=60),
    cut_short=st.booleans(),
)
def test_csv_blocks_hold_whole_records_and_count_lines(
    records: list[list[str]], cuts: list[int], block_bytes: int, cut_short: bool
) -> None:
    data = _csv(records)
    if cut_short and records:
        data = data.rstrip(b"\n")  # a last row without its newline: the last block keeps it as it is
    header, body = data.split(b"\n", 1)
    blocks = list(split_blocks(_pieces(data, cuts), "f.csv", "csv", block_bytes))
    assert all(block.data.startswith(header + b"\n") for block in blocks)
    bodies = [block.data[len(header) + 1 :] for block in blocks]
    assert b"".join(bodies) == body
    # each block parses to whole records, and together to the file's records
    assert [row for block in blocks for row in _rows(block.data)[1:]] == _rows(data)[1:]
    assert all(piece.endswith(b"\n") for piece in bodies[:-1])
    assert [block.line_offset for block in blocks] == [b"".join(bodies[:i]).count(b"\n") for i in range(len(blocks))]
    frames = [pl.read_csv(io.BytesIO(block.data), infer_schema=False) for block in blocks]
    assert pl.concat(frames).equals(pl.read_csv(io.BytesIO(data), infer_schema=False), null_equal=True)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.text(alphabet='ab"\\\n{}', max_size=6), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=5),
    block_bytes=st.integers(min_value=1, max_value=40),
)
def test_ndjson_blocks_hold_whole_lines(values: list[str], cuts: list[int], block_bytes: int) -> None:
    data = "".join(json.dumps({"v": value}) + "\n" for value in ["first", *values]).encode()
    blocks = list(split_blocks(_pieces(data, cuts), "f.ndjson", "ndjson", block_bytes))
    assert b"".join(block.data for block in blocks) == data
    assert all(block.data.endswith(b"\n") for block in blocks)
    lines = [json.loads(line) for block in blocks for line in block.data.splitlines()]
    assert lines == [{"v": value} for value in ["first", *values]]


@pytest.mark.parametrize("content", [b"", b"  \n\n \r\n"])
def test_a_file_of_nothing_but_whitespace_is_empty(content: bytes) -> None:
    with pytest.raises(ExtractError, match="f.csv: file is empty"):
        list(split_blocks(_pieces(content, [1, 3]), "f.csv", "csv", 2))


def test_an_unterminated_quote_is_refused_before_it_fills_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from carecast.ingest import blocks

    monkeypatch.setattr(blocks, "RUN_ON_BYTES", 100)
    lines = [b"a,b\n", b"1,2\n", b'3,"never closed\n'] + [b"4,5\n"] * 1000
    with pytest.raises(ExtractError, match=r"f.csv:3: cannot be parsed as csv: malformed quoting"):
        list(split_blocks(iter(lines), "f.csv", "csv", 10))


@settings(max_examples=100, deadline=None)
@given(blocks=st.lists(st.lists(st.one_of(st.none(), st.text(alphabet="abc", max_size=3)), max_size=12), max_size=6))
def test_a_key_set_answers_exactly_what_it_holds(blocks: list[list[str | None]]) -> None:
    keys, held = KeySet(), set()
    for block in blocks:
        series = pl.Series("Id", block, dtype=pl.String)
        assert keys.contains(series).to_list() == [key is not None and key in held for key in block]
        keys.add(series)
        held |= {key for key in block if key is not None}


def test_the_threshold_and_the_block_size_are_settings(
    tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    block_sizes: list[int] = []
    streaming = load._apply_streaming
    monkeypatch.setattr(load, "_apply_streaming", lambda *args: block_sizes.append(args[-1]) or streaming(*args))
    assert load.default_stream_bytes() >= 256 << 20
    _apply_pending(_conditions_home(tmp_path / "default", CONDITIONS), project, {})
    assert block_sizes == [], "a small file is applied whole"
    monkeypatch.setenv("CARECAST_INGEST_STREAM_BYTES", str(len(CONDITIONS)))
    monkeypatch.setenv("CARECAST_INGEST_BLOCK_BYTES", "50")
    applied = _apply_pending(_conditions_home(tmp_path / "set", CONDITIONS), project, {})
    assert block_sizes == [50] and applied.reports[0]["rows_read"] == 6
    monkeypatch.setenv("CARECAST_INGEST_STREAM_BYTES", "a lot")
    with pytest.raises(ValueError, match="CARECAST_INGEST_STREAM_BYTES must be a number of bytes"):
        _apply_pending(_conditions_home(tmp_path / "wrong", CONDITIONS), project, {})


def test_an_ndjson_key_that_appears_after_quarantined_rows_is_refused_when_streamed(
    tmp_path: Path, project: Project
) -> None:
    def event(number: int, occurred_at: str, **extra: str) -> str:
        fields = {"event_id": f"e{number}", "event_type": "open", "occurred_at": occurred_at, "patient_id": "p1"}
        return json.dumps({**fields, **extra}) + "\n"

    content = (event(1, "not-a-time") + event(2, "2026-01-01T00:00:00Z") + event(3, "bad", campaign="flu")).encode()

    def home(name: str) -> CarecastHome:
        home = CarecastHome(tmp_path / name).ensure()
        folder = home.landing / "events" / "batch-0001"
        folder.mkdir(parents=True)
        (folder / "events.ndjson").write_bytes(content)
        (folder / "_SUCCESS").touch()
        return home

    whole = _apply_pending(home("whole"), project, WHOLE)
    assert whole.tables["quarantine_events_events"].get_column("campaign").to_list() == [None, "flu"]
    streamed = _apply_pending(home("streamed"), project, _streamed(len(content) // 3))
    assert streamed.reports == [
        "events.ndjson:3: column(s) ['campaign'] first appear after rows were quarantined; "
        "apply this file whole (raise CARECAST_INGEST_STREAM_BYTES above its size)"
    ]
    assert not streamed.tables
