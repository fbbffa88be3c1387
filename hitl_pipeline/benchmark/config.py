"""What the benchmark replays, and with which settings of the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitl_pipeline.benchmark.cli import DEFAULT_BATCH_ROWS, DEFAULT_SEED_ROWS, STRATEGY_NAMES
from hitl_pipeline.core.loop import LoopSettings

STRATEGIES = STRATEGY_NAMES
BUDGET_FREE = ("none", "oracle")  # their result does not depend on the budget
# The full-label oracle also compares a window of its recent labels (when the settings
# give none), so that shares are measured against what every label allows: with all
# labels a window is a model of the current regime (0.770 against 0.762 without on the
# rainfall stream); with the few borderline labels routing picks it is not, and the
# pipeline's default has none (``TrainingParams.window_days``).
ORACLE_WINDOW_DAYS = 2.0
HOLDOUT_SALT = "bench-fixed"
# The pipeline's ops whose run config holds each part of ``LoopSettings``.
OP_SECTIONS = {
    "review_queue": "routing",
    "candidate_model": "training",
    "candidate_model_passes_gate": "gate",  # the passes_gate check's op
    "training_dataset": "dataset",
    "drift_report": "drift",
    "human_labels_audit_pass_rate_holds": "audit",  # the audit_pass_rate_holds check's op
}
# Keys of those ops' config that are the wiring's own, not loop settings.
WIRING_KEYS = {"use_fitted_threshold", "drift_response"}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to replay and how.

    Attributes:
        data: A CSV or Parquet file, one labelled row per item, in time order (or with
            ``time_column`` to sort by).
        target: The label column.
        time_column: Sorts the rows; dropped from the features.
        drop: Columns that are not features (ids, leakage).
        text_columns: Columns read as free text (``FeatureSpec.kind == "text"``); None:
            inferred from the values (long, mostly distinct strings, see
            ``core.text.looks_like_text``); () : no text column.
        seed_rows: Rows of the seed set (the first champion's data).
        batch_rows: Rows per production batch.
        budgets: Label budgets as shares of a batch: the ``default`` strategy's
            ``review_capacity`` (its audit sample included, as the pipeline spends it).
            When a drift or audit alarm makes it review more (the drift response), the
            other budgeted strategies label as many items as it did in that batch, so
            all are compared at the same labels (``labels`` and ``label_share`` in the
            outputs say what was spent).
        strategies: Which strategies to run (``STRATEGIES``).
        repeats: Repeats with different seeds (training, routing samples, the gate's
            bootstrap) and a different split of the human labels between training,
            variant choice and the gate (repeat 0: the pipeline's own split).
        out: Output folder.
        max_rows: Use at most this many rows of the file (after sorting).
        settings: The pipeline's loop settings (``LoopSettings()``: the defaults of the
            pipeline's run config). The budget sets ``routing.review_capacity``; each
            repeat sets ``training.seed`` and ``routing.seed``.
        holdout_fraction: Share of the seed rows kept as the fixed held-out set.
        drift_check: Run the pipeline's drift alarm per batch (Evidently); the
            ``default`` strategy answers an alarm as the pipeline's drift sensor does.
        progress: Show a progress bar.
        threads: Threads per model fit (OpenMP / BLAS).
        jobs: Replays run at once, each in a worker process (``benchmark.parallel``);
            each fit there still uses ``threads``. The records are the same for any
            number, so it is not part of what a kept replay depends on.
        fresh: Replay everything, ignoring the finished replays kept in ``out`` from an
            earlier run (``benchmark.checkpoint``); otherwise those with the same data,
            settings and code are loaded, so an interrupted run resumes.
    """

    data: Path
    target: str
    time_column: str | None = None
    drop: tuple[str, ...] = ()
    text_columns: tuple[str, ...] | None = None
    seed_rows: int = DEFAULT_SEED_ROWS
    batch_rows: int = DEFAULT_BATCH_ROWS
    budgets: tuple[float, ...] = (0.02, 0.05, 0.10)
    strategies: tuple[str, ...] = STRATEGIES
    repeats: int = 3
    out: Path = Path("benchmark-out")
    max_rows: int | None = None
    settings: LoopSettings = field(default_factory=LoopSettings)
    holdout_fraction: float = 0.2
    drift_check: bool = True
    progress: bool = True
    threads: int = 1
    jobs: int = 1
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(
                f"--jobs must be at least 1 (replays run in N worker processes), got {self.jobs}"
            )


def overrides_from_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """``section.field`` overrides from a Dagster run config of the pipeline.

    The same YAML a person launches in the Dagster launchpad
    (``ops: {review_queue: {config: {review_capacity: 50}}, ...}``) sets the
    replayed loop: ``review_queue`` -> ``routing``, ``candidate_model`` -> ``training``,
    ``candidate_model_passes_gate`` (the ``passes_gate`` check) -> ``gate``,
    ``training_dataset`` -> ``dataset``, ``drift_report`` -> ``drift``,
    ``human_labels_audit_pass_rate_holds`` -> ``audit``. Other ops are ignored.

    Raises:
        ValueError: When the run config has no ``ops`` mapping.
    """
    ops = run_config.get("ops", {})
    if not isinstance(ops, Mapping):
        raise ValueError("the run config's 'ops' must be a mapping of op name to config")
    out: dict[str, Any] = {}
    for op, section in OP_SECTIONS.items():
        values = (ops.get(op) or {}).get("config") or {}
        for key, value in values.items():
            if key not in WIRING_KEYS:
                out[f"{section}.{key}"] = tuple(value) if isinstance(value, list) else value
    return out
