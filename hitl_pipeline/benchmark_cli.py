"""The ``benchmark`` sub-command's arguments, importable without the heavy benchmark.

``hitl_pipeline.benchmark`` pulls in scikit-learn and the whole ``core`` (seconds to
import); the CLI builds its parser on every command, so the arguments live here and the
benchmark is imported only when the sub-command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument("--data", required=True, type=Path, help="CSV or Parquet file")
    parser.add_argument("--target", required=True, help="label column")
    parser.add_argument("--time-column", default=None, help="sort by this column (dropped)")
    parser.add_argument("--drop", default="", help="comma-separated columns to ignore")
    parser.add_argument("--seed-rows", type=int, default=2000, help="rows of the seed set")
    parser.add_argument("--batch-rows", type=int, default=500, help="rows per batch")
    parser.add_argument("--budgets", default="0.02,0.05,0.10", help="label shares of a batch")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGY_NAMES), help="comma-separated, of: %(default)s"
    )
    parser.add_argument("--repeats", type=int, default=3, help="seeds per strategy and budget")
    parser.add_argument("--out", type=Path, default=Path("benchmark-out"), help="output folder")
    parser.add_argument("--max-rows", type=int, default=None, help="replay at most N rows")
    parser.add_argument(
        "--estimator",
        default=None,
        choices=["hist_gradient_boosting", "logistic_regression"],
        help="default: the pipeline's",
    )
    parser.add_argument("--max-iter", type=int, default=None, help="default: the pipeline's")
    parser.add_argument(
        "--gate-min-rows", type=int, default=None, help="gate evidence (default: the pipeline's)"
    )
    parser.add_argument("--no-drift-check", action="store_true", help="skip Evidently")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=1, help="threads per model fit")
    parser.add_argument(
        "--explore-share",
        type=float,
        default=0.0,
        help="default strategy: share of the budget for a random sample (routing's explore_share)",
    )


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed ``add_arguments`` arguments."""
    from hitl_pipeline.benchmark import run_from_args

    return run_from_args(args)
