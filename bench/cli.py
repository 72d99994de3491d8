"""Orchestration: generate, time carecast's stages, time the naive script, compare, report.

The parent only starts children and collects numbers; it imports none of the measured code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.isolation import run_isolated
from bench.report import table, write_json

CARECAST_STAGES = ("ingest", "models", "segments", "audiences", "render", "deliver", "report")
SEGMENTS_AUDIENCES_TARGET_SECONDS = 30.0
SEGMENTS_AUDIENCES_TARGET_RATIO = 10.0
DEFAULT_MAIL_SAMPLE = 50_000
DEFAULT_EVENTS = 1_000_000
ENGAGEMENT_TARGET_SECONDS = 60.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help="messages in the delivery bench (render, DKIM-sign, send to Postfix and to the embedded sink; "
        "default: as many as --patients)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help=f"SES events in the engagement bench (ingest + report rebuild; default {DEFAULT_EVENTS:,})",
    )
    parser.add_argument("--keep", type=Path, help="use this folder as CARECAST_HOME and keep it afterwards")
    parser.add_argument(
        "--mail-sample",
        type=int,
        default=DEFAULT_MAIL_SAMPLE,
        help="the naive render+deliver loop sends at most this many messages and scales its time up "
        f"linearly to the whole audience (default {DEFAULT_MAIL_SAMPLE:,})",
    )
    return parser


@contextlib.contextmanager
def _home(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=False)
        yield keep.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="carecast-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure_carecast(home: Path, patients: int) -> dict[str, dict[str, Any]]:
    measured = {"generate": run_isolated("bench.workload:generate", home, patients)}
    _progress(f"generate: {measured['generate']['seconds']:.1f} s")
    for stage in CARECAST_STAGES:
        measured[stage] = run_isolated("bench.carecast_stages:run_stage", home, stage)
        _progress(f"{stage}: {measured[stage]['seconds']:.1f} s")
    return measured


def _measure_naive(home: Path, mail_sample: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    plain, naive_lake, plain_marts = home / "naive-plain-landing", home / "naive-lake", home / "naive-plain-marts"
    try:
        try:
            run_isolated("bench.naive_ingest:decrypt_landing", home, plain)
            ingest = run_isolated("bench.naive_ingest:naive_ingest", plain, naive_lake)
        finally:
            shutil.rmtree(plain, ignore_errors=True)
        _progress(f"naive ingest: {ingest['seconds']:.1f} s")
        pipeline = run_isolated("bench.naive_pipeline:naive_pipeline", home, naive_lake, mail_sample)
        _progress("naive pipeline: " + ", ".join(f"{k} {v:.1f} s" for k, v in pipeline["seconds"].items()))
    finally:
        shutil.rmtree(naive_lake, ignore_errors=True)
    try:
        run_isolated("bench.naive_segments:decrypt_marts", home, plain_marts)
        segments = run_isolated("bench.naive_segments:naive_segments", plain_marts)
        _progress("naive segments/audiences: " + ", ".join(f"{k} {v:.1f} s" for k, v in segments["seconds"].items()))
    finally:
        shutil.rmtree(plain_marts, ignore_errors=True)
    return ingest, pipeline, segments


def _measure_delivery(home: Path, messages: int) -> dict[str, dict[str, Any]]:
    """Render + deliver ``messages`` to Postfix (naive sample to the same server) and to the sink."""
    measured = {}
    for name, target, args in (
        ("deliver_postfix", "bench.delivery:to_postfix", (home / "postfix-work",)),
        ("deliver_sink", "bench.delivery:to_embedded_sink", ()),
    ):
        folder = home / name
        run_isolated("bench.delivery:prepare", folder, messages)
        measured[name] = run_isolated(target, folder, *args)
        _progress(f"{name}: {measured[name]['seconds']:.1f} s, {measured[name]['messages_per_second']:,}/s")
        shutil.rmtree(folder, ignore_errors=True)
    naive = measured["deliver_postfix"].pop("naive")
    _progress(f"naive delivery: {naive['rate']}/s over {naive['messages']:,} messages")
    for entry in measured.values():
        entry["baseline_seconds"] = round(messages / naive["rate"], 1)
        entry["baseline_sampled_rows"] = naive["messages"]
    return measured


def _measure_engagement(home: Path, events: int) -> dict[str, Any]:
    """Ingest ``events`` SES events and rebuild the report; the naive script on the same batch."""
    folder = home / "engagement"
    try:
        prepared = run_isolated("bench.engagement:prepare", folder, events)
        measured = run_isolated("bench.engagement:carecast_engagement", folder)
        naive = run_isolated("bench.engagement:naive_engagement", folder, home / "naive-engagement.db")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        (home / "naive-engagement.db").unlink(missing_ok=True)
    _progress(
        f"engagement: {measured['seconds']:.1f} s (ingest {measured['ingest_seconds']} s, report "
        f"{measured['report_seconds']} s) for {prepared['events']:,} events; naive {naive['seconds']:.1f} s"
    )
    return {**measured, "baseline_seconds": naive["seconds"], "baseline_peak_mb": naive["peak_mb"]}


def _stage(seconds: float, baseline: float | None, peak_mb: float, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "baseline_seconds": None if baseline is None else round(baseline, 3),
        "peak_mb": peak_mb,
        "ratio": None if baseline is None or seconds <= 0 else round(baseline / seconds, 2),
        **extra,
    }


def _summarize(
    patients: int,
    carecast: dict[str, dict[str, Any]],
    ingest: dict[str, Any],
    pipeline: dict[str, Any],
    segments: dict[str, Any],
    parquet: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    baselines = {"ingest": ingest["seconds"], **pipeline["seconds"], **segments["seconds"]}
    baseline_peaks = {
        "ingest": ingest["peak_mb"],
        **dict.fromkeys(pipeline["seconds"], pipeline["peak_mb"]),
        **dict.fromkeys(segments["seconds"], segments["peak_mb"]),
    }
    stages: dict[str, dict[str, Any]] = {}
    for name, measured in carecast.items():
        extra: dict[str, Any] = {"rows": measured["rows"]}
        if name in baseline_peaks:
            extra["baseline_peak_mb"] = baseline_peaks[name]
        if name in ("render", "deliver") and pipeline["sampled_rows"] is not None:
            extra["baseline_sampled_rows"] = pipeline["sampled_rows"]
        if "workers" in measured:
            extra["workers"] = measured["workers"]
        peak = measured.get("peak_mb_with_workers", measured["peak_mb"])
        stages[name] = _stage(measured["seconds"], baselines.get(name), peak, **extra)
    stages["parquet_encrypted"] = _stage(
        parquet["seconds"], parquet["baseline_seconds"], parquet["peak_mb"], rows=parquet["rows"]
    )
    return stages


def _segments_check(carecast: dict[str, dict[str, Any]], naive: dict[str, Any]) -> dict[str, Any]:
    """carecast's and the naive script's member counts per segment, and per audience its size and every
    exclusion count; ``match`` only when all of them agree."""
    ours_segments, ours_audiences = carecast["segments"]["segments"], carecast["audiences"]["audiences"]
    segments = {
        name: {
            "carecast": ours_segments.get(name),
            "naive": naive["segments"].get(name, {}).get("members"),
            "seconds": carecast["segments"]["segment_seconds"].get(name),
            "naive_seconds": naive["segments"].get(name, {}).get("seconds"),
        }
        for name in sorted({*ours_segments, *naive["segments"]})
    }
    audiences = {}
    for name in sorted({*ours_audiences, *naive["audiences"]}):
        ours, theirs = ours_audiences.get(name, {}), naive["audiences"].get(name, {})
        audiences[name] = {
            "purpose": ours.get("purpose"),
            "carecast": ours.get("members"),
            "naive": theirs.get("members"),
            "excluded_carecast": ours.get("excluded"),
            "excluded_naive": theirs.get("excluded"),
            "seconds": ours.get("seconds"),
            "naive_seconds": theirs.get("seconds"),
        }
    for entry in segments.values():
        entry["match"] = entry["carecast"] is not None and entry["carecast"] == entry["naive"]
    for entry in audiences.values():
        entry["match"] = (
            entry["carecast"] is not None
            and entry["carecast"] == entry["naive"]
            and entry["excluded_carecast"] == entry["excluded_naive"]
        )
    match = all(e["match"] for e in segments.values()) and all(e["match"] for e in audiences.values())
    return {"match": match, "segments": segments, "audiences": audiences}


def _combined(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """segments + audiences together, against the issue's targets (under 30 s, at least 10x the baseline)."""
    seconds = stages["segments"]["seconds"] + stages["audiences"]["seconds"]
    baseline = stages["segments"]["baseline_seconds"] + stages["audiences"]["baseline_seconds"]
    ratio = baseline / seconds if seconds > 0 else None
    return {
        "seconds": round(seconds, 3),
        "baseline_seconds": round(baseline, 3),
        "ratio": None if ratio is None else round(ratio, 2),
        "peak_mb": max(stages["segments"]["peak_mb"], stages["audiences"]["peak_mb"]),
        "target_seconds": SEGMENTS_AUDIENCES_TARGET_SECONDS,
        "target_ratio": SEGMENTS_AUDIENCES_TARGET_RATIO,
        "meets_seconds": seconds < SEGMENTS_AUDIENCES_TARGET_SECONDS,
        "meets_ratio": ratio is not None and ratio >= SEGMENTS_AUDIENCES_TARGET_RATIO,
    }


def _print_segments(carecast: dict[str, dict[str, Any]], naive: dict[str, Any], check: dict[str, Any]) -> None:
    seconds = carecast["segments"]["segment_seconds"]
    print(f"{'segment':<56} {'members':>9} {'naive':>9} {'s':>7} {'naive s':>8}")
    for name, entry in check["segments"].items():
        theirs = naive["segments"].get(name, {}).get("seconds")
        print(
            f"{name:<56} {entry['carecast'] or 0:>9,d} {entry['naive'] or 0:>9,d} {seconds.get(name, 0):>7.2f} "
            f"{theirs or 0:>8.2f}{'' if entry['match'] else '  MISMATCH'}"
        )
    print(f"{'audience (campaign, purpose)':<56} {'members':>9} {'naive':>9} {'s':>7} {'naive s':>8}")
    for name, entry in check["audiences"].items():
        ours = carecast["audiences"]["audiences"].get(name, {}).get("seconds", 0)
        theirs = naive["audiences"].get(name, {}).get("seconds", 0)
        label = f"{name} ({entry['purpose']})"
        print(
            f"{label:<56} {entry['carecast'] or 0:>9,d} {entry['naive'] or 0:>9,d} {ours:>7.2f} {theirs:>8.2f}"
            f"{'' if entry['match'] else '  MISMATCH'}"
        )


def _fail_loudly(check: dict[str, Any]) -> None:
    for kind in ("segments", "audiences"):
        for name, entry in check[kind].items():
            if not entry["match"]:
                _progress(f"MISMATCH {kind[:-1]} {name}: carecast and the naive baseline differ: {entry}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    with _home(args.keep) as home:
        carecast = _measure_carecast(home, args.patients)
        ingest, pipeline, segments = _measure_naive(home, args.mail_sample)
        parquet = run_isolated("bench.parquet_cost:parquet_cost", home)
        delivery = _measure_delivery(home, args.messages or args.patients)
        engagement = _measure_engagement(home, args.events)
    stages = _summarize(args.patients, carecast, ingest, pipeline, segments, parquet)
    for name, entry in delivery.items():
        stages[name] = _stage(
            entry["seconds"],
            entry["baseline_seconds"],
            entry["peak_mb"],
            rows=entry["rows"],
            messages_per_second=entry["messages_per_second"],
            render_seconds=entry["render_seconds"],
            baseline_sampled_rows=entry["baseline_sampled_rows"],
            **{k: entry[k] for k in ("postfix_cpu_ms_per_message", "postfix_confirmed") if k in entry},
        )
    stages["engagement"] = _stage(
        engagement["seconds"],
        engagement["baseline_seconds"],
        engagement["peak_mb"],
        rows=engagement["rows"],
        ingest_seconds=engagement["ingest_seconds"],
        report_seconds=engagement["report_seconds"],
        baseline_peak_mb=engagement["baseline_peak_mb"],
        target_seconds=ENGAGEMENT_TARGET_SECONDS,
        meets_target=engagement["seconds"] < ENGAGEMENT_TARGET_SECONDS,
    )
    audience = {"carecast": carecast["audiences"]["campaign_audience"], "naive": pipeline["rows"]["audience"]}
    check = _segments_check(carecast, segments)
    combined = _combined(stages)
    summary = {
        "patients": args.patients,
        "stages": stages,
        "segments_audiences": combined,
        "audience_check": {**audience, "match": audience["carecast"] == audience["naive"]},
        "segments_check": check,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(f"carecast bench: {args.patients:,} patients (peak MB = whole child process, interpreter included)")
    print(table(stages))
    print(
        f"segments+audiences: carecast {combined['seconds']:.2f} s (target < {combined['target_seconds']:.0f} s: "
        f"{'met' if combined['meets_seconds'] else 'NOT met'}), naive {combined['baseline_seconds']:.2f} s, "
        f"{combined['ratio']:.2f}× (target ≥ {combined['target_ratio']:.0f}×: "
        f"{'met' if combined['meets_ratio'] else 'NOT met'}), peak {combined['peak_mb']:,.0f} MB"
    )
    _print_segments(carecast, segments, check)
    print(f"segments check: {'every segment and audience agrees' if check['match'] else 'MISMATCH'}")
    print(f"campaign audience (render/deliver): carecast {audience['carecast']:,}, naive {audience['naive']:,}")
    naive_sent = {k: pipeline["rows"][k] for k in ("delivered", "bounced")}
    print(f"sent: carecast {carecast['deliver']['states']}, naive {naive_sent}")
    print(f"excluded: carecast {carecast['audiences']['excluded']}, naive pipeline {pipeline['excluded']}")
    if pipeline["sampled_rows"] is not None:
        print(f"naive render/deliver timed on {pipeline['sampled_rows']:,} recipients, scaled to the audience")
    print(f"results: {write_json(summary)}")
    print(json.dumps(summary))
    status = 0
    if not summary["audience_check"]["match"]:
        _progress("audience sizes differ between carecast and the naive baseline")
        status = 1
    if not check["match"]:
        _fail_loudly(check)
        status = 1
    return status
