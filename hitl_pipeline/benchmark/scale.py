"""``hitl-pipeline benchmark-scale``: millions of rows through the pipeline's own code.

For each size a batch of the demo stream's schema is written to a landing file in row
groups (never whole), then a fresh Python process per size replays what the assets of
``s01_ingest`` ... ``s04_selection`` do, with their functions (``core.streaming``) and
their default settings: validate the landed file chunk by chunk into a validated file;
score it with the champion (plus the out-of-distribution score the inference asset adds)
into a predictions file; compare a seeded sample of it with the champion's reference for
drift (Evidently, with the HTML report); route it in two passes, writing every decision
and keeping the review queue. The champion's bare ``predict_proba`` is timed in the same
process on the same rows read the same way: on each chunk just before the pipeline
scores it (``BareClock``; its time is left out of the inference stage's), then once more
after the steps (with ``--bare-before`` also before them). The fastest pass is the
baseline (``ratio_to_bare``); ``ratio_to_bare_interleaved`` compares with the pass taken
under the same load as the scoring, as a shared machine's load changes while it runs.

The champion is trained the way the demo bootstraps its first one, with the core
training function on the demo stream's seed rows (``core.training.train_model``,
default ``TrainingParams``); MLflow is left out, as loading a model from it is not part
of the per-row cost. ``scale.json`` holds per size: ``rows``, ``seconds`` (inference +
monitoring + selection), ``rows_per_second``, ``peak_rss_mb`` (the process's peak
resident set, generation excluded), ``bare_predict_rows_per_second``, each stage's
seconds, and the settings. On a machine shared with other work the wall-clock ratio
moves with the load while each part runs, so the same figures are also kept in the
process's CPU seconds (``cpu_seconds``, ``bare_predict_cpu_seconds``,
``cpu_ratio_to_bare``, ``stage_cpu_seconds``), which other processes barely change.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy modules load when a benchmark runs, not with the CLI
    from hitl_pipeline.core.drift import DriftPolicy
    from hitl_pipeline.core.routing import RoutingPolicy

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
GENERATE_ROWS = 100_000  # rows drawn at a time when writing a landing file
MODEL_VERSION_NAME = "1"


def parse_sizes(text: str) -> list[int]:
    """``"100000,1e6,10_000_000"`` -> ``[100000, 1000000, 10000000]``.

    Raises:
        ValueError: On an empty list or a size below 1, naming the option.
    """
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            value = int(float(part)) if "e" in part.lower() else int(part)
        except ValueError as exc:
            raise ValueError(f"--rows: {part!r} is not a whole number of rows") from exc
        if value < 1:
            raise ValueError(f"--rows: sizes must be >= 1, got {value}")
        sizes.append(value)
    if not sizes:
        raise ValueError("--rows: give at least one size, e.g. --rows 100000,1000000")
    return sizes


def _stream(rows_per_batch: int) -> Any:
    from hitl_pipeline.demo.stream import DriftingStream

    # drift_at_batch=0: every generated row follows the drifted regime (a demo batch
    # from the second on), so the drift check and the routing triggers have work to do
    return DriftingStream(rows_per_batch=rows_per_batch, drift_at_batch=0)


def generate_batch(path: Path, rows: int, *, generate_rows: int = GENERATE_ROWS) -> Path:
    """Write a landing file of ``rows`` demo-stream rows, one row group per draw.

    Rows are drawn ``generate_rows`` at a time (batch ``i`` of the demo stream, ids
    ``b{i}-{j}`` unique across the file) without the label, as production lands them.
    """
    from hitl_pipeline.core.chunks import ParquetSink
    from hitl_pipeline.core.types import LABEL

    stream = _stream(min(rows, generate_rows))
    with ParquetSink(path) as sink:
        index = 0
        while sink.rows < rows:
            batch = stream.batch(index).drop(columns=[LABEL])
            sink.write(batch.iloc[: rows - sink.rows])
            index += 1
    return path


def _champion() -> tuple[Any, Any, Any]:
    """(model, seed training rows, seed holdout rows), as the demo bootstraps them."""
    from hitl_pipeline.core.training import TrainingParams, train_model
    from hitl_pipeline.core.types import LABEL
    from hitl_pipeline.demo.stream import DEMO_SCHEMA

    train, holdout = _stream(400).seed_sets()
    train = train.rename(columns={LABEL: DEMO_SCHEMA.target})
    holdout = holdout.rename(columns={LABEL: DEMO_SCHEMA.target})
    model = train_model(train, DEMO_SCHEMA, TrainingParams()).model
    return model, train, holdout


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(
    landing: Path,
    workdir: Path,
    *,
    chunk_rows: int | None = None,
    routing: RoutingPolicy | None = None,
    drift: DriftPolicy | None = None,
    threads: int = 1,
    bare_before_steps: bool = False,
) -> dict[str, Any]:
    """Replay ingest, inference, monitoring and selection on one landed file; time them.

    Run in a process of its own per size, so ``peak_rss_mb`` is this batch's.

    Returns:
        The figures of one size (see the module docs).
    """
    from threadpoolctl import threadpool_limits

    from hitl_pipeline.core.chunks import DEFAULT_CHUNK_ROWS, parquet_chunks
    from hitl_pipeline.core.drift import DriftPolicy, compute_drift, drift_columns, drift_sample
    from hitl_pipeline.core.inference import score_batch
    from hitl_pipeline.core.loop import drift_reference, escalation_scores
    from hitl_pipeline.core.ood import fit_ood_detector
    from hitl_pipeline.core.routing import RoutingPolicy
    from hitl_pipeline.core.streaming import (
        repeated_id_hashes,
        route_file,
        score_to_file,
        validate_chunks,
    )
    from hitl_pipeline.demo.stream import DEMO_SCHEMA

    chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS
    schema = DEMO_SCHEMA
    routing = routing or RoutingPolicy()
    drift = drift or DriftPolicy()
    workdir.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    cpu: dict[str, float] = {}  # the process's CPU seconds per stage (all its threads)
    peaks: dict[str, float] = {}  # the process's peak RSS after each stage
    with threadpool_limits(limits=threads):
        model, train, holdout = _champion()
        detector = fit_ood_detector(train, schema)
        # the monitoring asset scores the champion's holdout as the confidence reference
        reference_scores = score_batch(model, holdout, schema, model_version=MODEL_VERSION_NAME)
        reference = drift_reference(train)

        start, cpu_start = time.perf_counter(), time.process_time()
        ids = parquet_chunks(landing, chunk_rows, columns=[schema.id_column])
        ingest = validate_chunks(
            parquet_chunks(landing, chunk_rows),
            schema,
            repeated_ids=repeated_id_hashes(c[schema.id_column] for c in ids),
            valid_path=workdir / "validated.parquet",
            quarantine_path=workdir / "quarantine.parquet",
        )
        stages["ingest"] = time.perf_counter() - start
        cpu["ingest"] = time.process_time() - cpu_start
        peaks["ingest"] = _peak_rss_mb()
        bare_before = (
            _bare_predict(model, workdir / "validated.parquet", schema, chunk_rows)
            if bare_before_steps
            else None
        )

        # each chunk's bare predict_proba is also timed just before the pipeline scores
        # it (and taken out of the stage's time): a baseline taken under the same load
        during = BareClock(model, schema.feature_names)
        start, cpu_start = time.perf_counter(), time.process_time()
        scored = score_to_file(
            model,
            during.interleave(parquet_chunks(workdir / "validated.parquet", chunk_rows)),
            workdir / "predictions.parquet",
            schema,
            model_version=MODEL_VERSION_NAME,
            extra=functools.partial(
                _escalate, schema=schema, model=model, detector=detector, step=escalation_scores
            ),
        )
        stages["inference"] = time.perf_counter() - start - during.seconds
        cpu["inference"] = time.process_time() - cpu_start - during.cpu_seconds
        peaks["inference"] = _peak_rss_mb()

        start, cpu_start = time.perf_counter(), time.process_time()
        sample, _ = drift_sample(
            parquet_chunks(
                workdir / "predictions.parquet", chunk_rows, columns=drift_columns(schema)
            ),
            drift.sample_rows,
            id_column=schema.id_column,
        )
        summary, html = compute_drift(
            reference,
            sample,
            schema,
            reference_scores=reference_scores,
            current_scores=sample,
            policy=drift,
        )
        (workdir / "drift.html").write_text(html, encoding="utf-8")
        stages["monitoring"] = time.perf_counter() - start
        cpu["monitoring"] = time.process_time() - cpu_start
        peaks["monitoring"] = _peak_rss_mb()
        del sample

        start, cpu_start = time.perf_counter(), time.process_time()
        routed = route_file(
            workdir / "predictions.parquet",
            workdir / "decisions.parquet",
            routing,
            schema,
            drifted_columns=summary.drifted_columns,
            chunk_rows=chunk_rows,
        )
        stages["selection"] = time.perf_counter() - start
        cpu["selection"] = time.process_time() - cpu_start
        peaks["selection"] = _peak_rss_mb()
        pipeline_peak = _peak_rss_mb()

        # the same champion's predict_proba on the same rows, read the same way; only
        # the predict_proba calls are timed. Also after the steps (and with
        # bare_before_steps before them): on a shared machine the load changes, and the
        # fastest pass is the strictest baseline.
        bare_after = _bare_predict(model, workdir / "validated.parquet", schema, chunk_rows)
    passes = [(during.seconds, during.cpu_seconds), bare_after]
    if bare_before is not None:
        passes.append(bare_before)
    bare, bare_cpu = min(p[0] for p in passes), min(p[1] for p in passes)

    rows = ingest.valid_rows
    seconds = stages["inference"] + stages["monitoring"] + stages["selection"]
    cpu_seconds = cpu["inference"] + cpu["monitoring"] + cpu["selection"]
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds, 1) if seconds else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "pipeline_peak_rss_mb": round(pipeline_peak, 1),
        "bare_predict_seconds": round(bare, 2),
        "bare_predict_seconds_interleaved": round(during.seconds, 2),
        "bare_predict_seconds_after": round(bare_after[0], 2),
        "bare_predict_seconds_before": None if bare_before is None else round(bare_before[0], 2),
        "bare_predict_rows_per_second": round(rows / bare, 1) if bare else None,
        "ratio_to_bare": round(bare / seconds, 3) if seconds else None,
        "ratio_to_bare_interleaved": round(during.seconds / seconds, 3) if seconds else None,
        "cpu_seconds": round(cpu_seconds, 2),
        "bare_predict_cpu_seconds": round(bare_cpu, 2),
        "cpu_ratio_to_bare": round(bare_cpu / cpu_seconds, 3) if cpu_seconds else None,
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "stage_cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "peak_rss_mb_after_stage": {k: round(v, 1) for k, v in peaks.items()},
        "quarantined_rows": ingest.quarantined_rows,
        "mean_confidence": round(scored.mean_confidence, 4),
        "drift_share": summary.drift_share,
        "drift_sample_rows": summary.current_rows,
        "to_review": routed.plan.to_review,
        "review_queue_rows": len(routed.review),
        "routing_candidates": routed.plan.candidates,
        "reasons": routed.reasons,
    }


class BareClock:
    """Times the champion's bare ``predict_proba`` on chunks of rows (seconds and CPU)."""

    def __init__(self, model: Any, features: list[str]) -> None:
        self.model, self.features = model, features
        self.seconds = self.cpu_seconds = 0.0

    def interleave(self, chunks: Iterable[Any]) -> Iterator[Any]:
        """Yield the chunks as they are, each timed first."""
        for chunk in chunks:
            features = chunk[self.features]
            start, cpu_start = time.perf_counter(), time.process_time()
            self.model.predict_proba(features)
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu_start
            yield chunk


def _bare_predict(model: Any, validated: Path, schema: Any, chunk_rows: int) -> tuple[float, float]:
    """Seconds and CPU seconds spent in ``predict_proba`` over the validated rows, chunk
    by chunk."""
    from hitl_pipeline.core.chunks import parquet_chunks

    clock = BareClock(model, schema.feature_names)
    for _ in clock.interleave(parquet_chunks(validated, chunk_rows)):
        pass
    return clock.seconds, clock.cpu_seconds


def _escalate(scores: Any, rows: Any, *, schema: Any, model: Any, detector: Any, step: Any) -> Any:
    return step(scores, rows, schema, champion=model, previous=None, ood=detector)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(
    sizes: list[int],
    out: Path,
    *,
    chunk_rows: int | None = None,
    threads: int = 1,
    keep_files: bool = False,
    bare_before_steps: bool = False,
    echo: bool = True,
) -> dict[str, Any]:
    """Generate each size's batch, measure it in a fresh process, write ``scale.json``.

    Returns:
        The ``scale.json`` content.
    """
    from hitl_pipeline.core.chunks import DEFAULT_CHUNK_ROWS
    from hitl_pipeline.core.drift import DriftPolicy
    from hitl_pipeline.core.routing import RoutingPolicy

    chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for rows in sizes:
        workdir = out / f"rows-{rows}"
        workdir.mkdir(parents=True, exist_ok=True)
        landing = workdir / "landing.parquet"
        started = time.perf_counter()
        generate_batch(landing, rows)
        generated = time.perf_counter() - started
        load_before = _load_average()
        result_file = workdir / "result.json"
        result_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "hitl_pipeline.benchmark.scale",
            "--landing",
            str(landing),
            "--workdir",
            str(workdir),
            "--chunk-rows",
            str(chunk_rows),
            "--threads",
            str(threads),
            "--result",
            str(result_file),
            *(["--bare-before"] if bare_before_steps else []),
        ]
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode != 0 or not result_file.is_file():
            raise RuntimeError(
                f"benchmark-scale: the run for {rows} rows failed (exit {done.returncode}):\n"
                + done.stderr[-4000:]
            )
        result = json.loads(result_file.read_text(encoding="utf-8"))
        result["generate_seconds"] = round(generated, 2)
        result["load_average_before"] = load_before
        result["load_average_after"] = _load_average()
        results.append(result)
        if not keep_files:
            for name in ("landing", "validated", "predictions", "decisions", "quarantine"):
                (workdir / f"{name}.parquet").unlink(missing_ok=True)
        if echo:
            print(_row(result), flush=True)
    report = {
        "sizes": results,
        "settings": {
            "chunk_rows": chunk_rows,
            "threads": threads,
            "drift_sample_rows": DriftPolicy().sample_rows,
            "review_capacity": RoutingPolicy().review_capacity,
            "max_candidates": RoutingPolicy().max_candidates,
            "routing": asdict(RoutingPolicy()),
            "champion": "core.training.train_model, default TrainingParams, on the demo "
            "stream's 2,000 seed rows; out-of-distribution score on (as the inference "
            "asset with a dataset version); no committee (a first champion has no "
            "previous one)",
            "batch": "demo stream schema, drifted regime, no labels",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    (out / "scale.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


HEADER = (
    f"{'rows':>11} {'seconds':>8} {'rows/s':>10} {'bare rows/s':>12} {'ratio':>6} "
    f"{'cpu ratio':>9} {'peak MB':>8}  stages (ingest/inference/monitoring/selection s)"
)


def _row(result: dict[str, Any]) -> str:
    stages = result["stage_seconds"]
    return (
        f"{result['rows']:>11,} {result['seconds']:>8.1f} {result['rows_per_second']:>10,.0f} "
        f"{result['bare_predict_rows_per_second']:>12,.0f} {result['ratio_to_bare']:>6.2f} "
        f"{result['cpu_ratio_to_bare']:>9.2f} {result['peak_rss_mb']:>8.0f}  "
        f"{stages['ingest']:.1f}/{stages['inference']:.1f}/"
        f"{stages['monitoring']:.1f}/{stages['selection']:.1f}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``benchmark-scale`` options."""
    parser.add_argument(
        "--rows",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated batch sizes (default 100000,1000000,10000000)",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for scale.json")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per chunk read and written (default: the pipeline's, "
        "ProductionSource.chunk_rows)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1), for both runs"
    )
    parser.add_argument(
        "--keep-files", action="store_true", help="keep the Parquet files of each size"
    )
    parser.add_argument(
        "--bare-before",
        action="store_true",
        help="time predict_proba before the steps too and keep the faster (a stricter "
        "baseline on a machine whose load changes; one more pass over the rows)",
    )


def cmd_benchmark_scale(args: argparse.Namespace) -> int:
    """Run ``benchmark-scale``; 2 on bad options, with what to change."""
    try:
        sizes = parse_sizes(args.rows)
        if args.chunk_rows is not None and args.chunk_rows < 1:
            raise ValueError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
    except ValueError as exc:
        print(f"benchmark-scale: {exc}", file=sys.stderr)
        return 2
    print(HEADER, flush=True)
    try:
        run(
            sizes,
            args.out,
            chunk_rows=args.chunk_rows,
            threads=args.threads,
            keep_files=args.keep_files,
            bare_before_steps=args.bare_before,
        )
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"wrote {args.out / 'scale.json'}")
    return 0


def _child(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hitl_pipeline.benchmark.scale")
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--bare-before", action="store_true")
    args = parser.parse_args(argv)
    result = measure(
        args.landing,
        args.workdir,
        chunk_rows=args.chunk_rows,
        threads=args.threads,
        bare_before_steps=args.bare_before,
    )
    args.result.write_text(json.dumps(result, indent=2, default=_plain), encoding="utf-8")
    return 0


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(_child())
