"""Replay any time-ordered labelled table as a production stream and compare strategies.

``hitl-pipeline benchmark --data FILE --target COLUMN ...`` measures label efficiency:
how much of the accuracy that full labelling (the oracle) wins back over a model that is
never retrained, each review strategy recovers, per share of labels spent.

The replay is prequential and uses the pipeline's own code, not a copy:

1. the first ``seed_rows`` rows are the seed (a fixed share of them the fixed held-out
   set, split by ``core.datasets.split_holdout``); ``core.training.train_model`` fits the
   first champion;
2. each following batch of ``batch_rows`` rows is scored by the champion
   (``core.inference.score_batch``) *before* its labels are seen: that is the batch's
   accuracy and macro-F1;
3. the strategy spends the budget (``budget * batch rows`` labels); the ``default``
   strategy is ``core.routing.route_predictions`` with the pipeline's triggers (low
   confidence at the cost-fitted threshold of ``core.threshold``, champion vs previous
   champion disagreement, out-of-distribution from ``core.ood``, the audit sample), the
   drift verdict of ``core.drift.compute_drift`` and the diverse, stratified ranking;
4. the labels join the data as the pipeline joins them (``split_holdout`` keeps a share
   as the recent held-out set, ``merge_labelled`` merges the rest), a challenger is
   trained as ``candidate_model`` trains it (the human weight chosen on the gate's
   window of the recent held-out rows), and ``core.gate.decide`` promotes it or keeps
   the champion, on the same metrics as the pipeline's ``passes_gate``. The labels of
   batch ``b`` are stamped as labelled on day ``b``, so the gate's ``recent_days``
   window counts batches as the pipeline's daily partitions.

Outputs in ``--out``: ``per_batch.csv``, ``summary.csv``/``summary.json``/``summary.md``
(accuracy and macro-F1 overall, labels used, share of the oracle's gain recovered, worst
batch against the never-retrained model), ``labels_for_gain.csv`` (labels needed for
50/80/90% of the oracle's gain), ``accuracy_by_batch.png`` and ``gain_vs_labels.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.benchmark_cli import DEFAULT_BATCH_ROWS, DEFAULT_SEED_ROWS, STRATEGY_NAMES
from hitl_pipeline.core.committee import committee_disagreement, disagreement, fit_committee
from hitl_pipeline.core.datasets import merge_labelled, split_holdout, stable_uniform
from hitl_pipeline.core.gate import (
    HOLDOUT,
    HUMAN_HOLDOUT,
    GatePolicy,
    decide,
    gate_evidence,
    recent_window,
)
from hitl_pipeline.core.inference import probability_matrix, score_batch
from hitl_pipeline.core.ood import fit_ood_detector, ood_scores
from hitl_pipeline.core.routing import RoutingPolicy, has_reason, route_predictions
from hitl_pipeline.core.threshold import calibrate, choose_threshold
from hitl_pipeline.core.training import Estimator, TrainingParams, train_model
from hitl_pipeline.core.types import (
    CONFIDENCE,
    DISAGREEMENT,
    ENTROPY,
    ITEM_ID,
    LABEL_SOURCE,
    LABELLED_AT,
    MARGIN,
    OOD_SCORE,
    PREDICTED_LABEL,
    REASONS,
    ROUTE,
    ROUTE_REVIEW,
    BatchSchema,
    FeatureSpec,
)

STRATEGIES = STRATEGY_NAMES
BUDGET_FREE = ("none", "oracle")  # their result does not depend on the budget
GAIN_LEVELS = (0.5, 0.8, 0.9)
MIN_ORACLE_GAIN = 0.01  # accuracy points the oracle must win for gain shares to mean much
_TARGET = "label"
_EPOCH = pd.Timestamp("2000-01-01", tz="UTC")  # labels of batch b are "labelled" on day b


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to replay and how.

    Attributes:
        data: A CSV or Parquet file, one labelled row per item, in time order (or with
            ``time_column`` to sort by).
        target: The label column.
        time_column: Sorts the rows; dropped from the features.
        drop: Columns that are not features (ids, leakage).
        seed_rows: Rows of the seed set (the first champion's data).
        batch_rows: Rows per production batch.
        budgets: Label budgets as shares of a batch.
        strategies: Which strategies to run (``STRATEGIES``).
        repeats: Repeats with different seeds (training, sampling, audit).
        out: Output folder.
        max_rows: Use at most this many rows of the file (after sorting).
        estimator, max_iter: Training parameters (defaults: the pipeline's).
        holdout_fraction: Share of the seed rows kept as the fixed held-out set.
        human_holdout_fraction: Share of acquired labels kept for the gate (as the
            pipeline's ``training_dataset``).
        gate: The gate's policy (the pipeline's defaults).
        audit_rate: The default strategy's audit rate (within the budget).
        drift_check: Run the pipeline's Evidently drift check per batch (default
            strategy only; the seed rows are the reference).
        progress: Show a progress bar.
        threads: Threads per model fit (OpenMP / BLAS).
        explore_share: The default strategy's ``RoutingPolicy.explore_share``.
    """

    data: Path
    target: str
    time_column: str | None = None
    drop: tuple[str, ...] = ()
    seed_rows: int = DEFAULT_SEED_ROWS
    batch_rows: int = DEFAULT_BATCH_ROWS
    budgets: tuple[float, ...] = (0.02, 0.05, 0.10)
    strategies: tuple[str, ...] = STRATEGIES
    repeats: int = 3
    out: Path = Path("benchmark-out")
    max_rows: int | None = None
    estimator: Estimator = TrainingParams.estimator
    max_iter: int = TrainingParams.max_iter
    holdout_fraction: float = 0.2
    human_holdout_fraction: float = 0.25
    gate: GatePolicy = field(default_factory=GatePolicy)
    audit_rate: float = 0.03
    drift_check: bool = True
    progress: bool = True
    threads: int = 1
    explore_share: float = 0.0
    human_weight: float = TrainingParams.human_weight


# --- the stream ----------------------------------------------------------------------
def read_table(path: Path) -> pd.DataFrame:
    """A CSV (optionally compressed) or Parquet file as a frame."""
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def infer_schema(
    frame: pd.DataFrame, *, target: str, max_categories: int = 50
) -> tuple[BatchSchema, pd.DataFrame]:
    """A ``BatchSchema`` for a labelled frame: numeric or categorical per column.

    A column is numeric when every non-null value parses as a number, except integer
    codes with at most 10 distinct values stored as text. Categorical columns keep their
    ``max_categories`` most frequent levels declared (the rest is encoded as unknown).

    Args:
        frame: Feature columns plus ``target`` (and ``item_id``, which is skipped).
        target: The label column.
        max_categories: Most declared levels per categorical column.

    Returns:
        ``(schema, frame)``: the frame with numerics as float64, categoricals and the
        label as ``str`` (nulls kept), the label renamed to ``label``.
    """
    out = pd.DataFrame({ITEM_ID: frame[ITEM_ID].astype(str)})
    features: list[FeatureSpec] = []
    for column in frame.columns:
        if column in (ITEM_ID, target):
            continue
        values = frame[column]
        parsed = pd.to_numeric(values, errors="coerce")
        numeric = bool(parsed.notna().sum() == values.notna().sum()) and values.notna().any()
        whole = bool(np.all(np.mod(parsed.dropna(), 1) == 0))
        if numeric and values.dtype == object and whole and parsed.nunique() <= 10:
            numeric = False  # integer codes written as text: categories, not quantities
        if numeric:
            out[column] = parsed.astype("float64")
            features.append(FeatureSpec(column, "numeric", nullable=bool(parsed.isna().any())))
        else:
            text = values.map(lambda v: None if pd.isna(v) else str(v)).astype(object)
            out[column] = text
            levels = tuple(text.value_counts().index[:max_categories].astype(str))
            features.append(FeatureSpec(column, "categorical", nullable=bool(text.isna().any())))
            del levels  # unknown levels are ignored by the encoder; no closed list needed
    labels = frame[target].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    out[_TARGET] = labels
    classes = tuple(sorted(labels.dropna().unique()))
    return BatchSchema(features=tuple(features), classes=classes), out


def load_stream(config: BenchmarkConfig) -> tuple[BatchSchema, pd.DataFrame]:
    """Read, order, cap and type the file; rows without a label are dropped."""
    frame = read_table(Path(config.data))
    if config.target not in frame:
        raise ValueError(f"no column {config.target!r} in {config.data}")
    if config.time_column:
        frame = frame.sort_values(config.time_column, kind="mergesort")
    drop = [c for c in (*config.drop, config.time_column) if c and c in frame]
    frame = frame.drop(columns=drop)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    if config.max_rows is not None:
        frame = frame.head(config.max_rows)
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    frame = frame.drop(columns=unnamed)  # a saved index is not a feature
    frame = frame.rename(columns=str)
    frame.insert(0, ITEM_ID, [f"r{i:08d}" for i in range(len(frame))])
    return infer_schema(frame, target=config.target)


# --- strategies ----------------------------------------------------------------------
@dataclass
class LoopState:
    """What a strategy may look at when choosing (everything the pipeline would have)."""

    schema: BatchSchema
    params: TrainingParams
    training: pd.DataFrame
    champion: Any
    previous: Any | None
    committee: list[Any]
    ood: Any | None
    labelled_outcomes: pd.DataFrame  # confidence, correct, weight of past reviewed items
    seed: int


Chooser = Callable[[pd.DataFrame, int, LoopState, dict[str, Any]], tuple[np.ndarray, pd.Series]]


def _top(values: np.ndarray, k: int, ids: np.ndarray) -> np.ndarray:
    order = np.lexsort((ids, -values))
    return order[:k]


def _plain(score: Callable[[pd.DataFrame], np.ndarray], code: str) -> Chooser:
    def choose(scores, k, state, _extra):
        picks = _top(score(scores), k, scores[ITEM_ID].to_numpy())
        return picks, pd.Series(code, index=scores.index[picks])

    return choose


def _random(scores, k, state, _extra):
    draw = stable_uniform(scores[ITEM_ID].astype(str), f"random:{state.seed}")
    picks = np.argsort(draw, kind="stable")[:k]
    return picks, pd.Series("random", index=scores.index[picks])


def _committee(scores, k, state, _extra):
    if len(state.committee) < 2:
        values = 1.0 - scores[MARGIN].to_numpy()
    else:
        values = committee_disagreement(state.committee, scores, state.schema)
    picks = _top(values, k, scores[ITEM_ID].to_numpy())
    return picks, pd.Series("committee", index=scores.index[picks])


def default_policy(
    k: int, n: int, audit_rate: float, seed: int, explore_share: float = 0.0
) -> RoutingPolicy:
    """The pipeline's routing policy, sized so that reviews plus audit spend ``k``.

    The audit sample is the pipeline's rate of the auto-accepted, but at most a tenth of
    the budget: it measures the loop (and re-fits the threshold) rather than teach the
    model, and at a 2% budget the full rate would take every label.
    """
    n_audit = min(math.floor(audit_rate * max(n - k, 0) + 0.5), k // 10)
    capacity = k - n_audit
    return RoutingPolicy(
        review_capacity=capacity,
        audit_rate=n_audit / (n - capacity) if n_audit else 0.0,
        drift_capacity_multiplier=1.0,  # the budget is the budget
        fill_capacity=True,
        explore_share=explore_share,
        seed=seed,
    )


def _default(scores, k, state, extra):
    schema = state.schema
    scores = scores.copy()
    if state.previous is not None:
        features = scores[schema.feature_names]
        scores[DISAGREEMENT] = disagreement(
            [
                probability_matrix(state.champion, features, schema.classes),
                probability_matrix(state.previous, features, schema.classes),
            ]
        )
    if state.ood is not None:
        scores[OOD_SCORE] = ood_scores(state.ood, scores, schema)
    policy = default_policy(
        k, len(scores), extra["audit_rate"], state.seed, extra.get("explore_share", 0.0)
    )
    outcomes = state.labelled_outcomes
    calibration = calibrate(
        outcomes[CONFIDENCE].to_numpy(),
        outcomes["correct"].to_numpy(),
        weights=outcomes["weight"].to_numpy(),
    )
    choice = choose_threshold(
        scores[CONFIDENCE].to_numpy(),
        cost_wrong_accept=policy.cost_wrong_accept,
        cost_review=policy.cost_review,
        capacity=policy.review_capacity,
        calibration=calibration,
    )
    policy = dataclasses.replace(policy, confidence_threshold=min(max(choice.threshold, 0), 1))
    drift = extra.get("drift")
    routed = route_predictions(
        scores,
        policy,
        drift=bool(drift and drift.dataset_drift),
        schema=schema,
        drifted_columns=drift.drifted_columns if drift else (),
    )
    picks = np.flatnonzero((routed[ROUTE] == ROUTE_REVIEW).to_numpy())[:k]
    return picks, routed[REASONS].iloc[picks].set_axis(scores.index[picks])


CHOOSERS: dict[str, Chooser] = {
    "random": _random,
    "least_confidence": _plain(lambda s: 1.0 - s[CONFIDENCE].to_numpy(), "least_confidence"),
    "margin": _plain(lambda s: 1.0 - s[MARGIN].to_numpy(), "margin"),
    "entropy": _plain(lambda s: s[ENTROPY].to_numpy(), "entropy"),
    "committee": _committee,
    "default": _default,
}


# --- one replay ----------------------------------------------------------------------
def replay(
    strategy: str,
    budget: float,
    repeat: int,
    *,
    schema: BatchSchema,
    seed_train: pd.DataFrame,
    fixed_holdout: pd.DataFrame,
    batches: Sequence[pd.DataFrame],
    config: BenchmarkConfig,
    drift: Sequence[Any] | None = None,
    tick: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Run one strategy at one budget over the stream; one record per batch."""
    params = TrainingParams(
        estimator=config.estimator,
        max_iter=config.max_iter,
        seed=repeat,
        human_weight=config.human_weight,
    )
    champion = train_model(seed_train, schema, params).model
    state = LoopState(
        schema=schema,
        params=params,
        training=seed_train,
        champion=champion,
        previous=None,
        committee=[],
        ood=None,
        labelled_outcomes=pd.DataFrame({CONFIDENCE: [], "correct": [], "weight": []}),
        seed=repeat,
    )

    def refresh_helpers() -> None:
        if strategy == "committee":
            state.committee = fit_committee(state.training, schema, params, seed=repeat)
        if strategy == "default":
            state.ood = fit_ood_detector(state.training, schema, seed=repeat)

    refresh_helpers()
    human = seed_train.iloc[0:0].assign(**{LABEL_SOURCE: pd.Series(dtype=object)})
    version, labels_used, records = 1, 0, []
    for b, batch in enumerate(batches):
        scores = score_batch(state.champion, batch, schema, model_version=str(version))
        truth = batch[_TARGET].astype(str).to_numpy()
        predicted = scores[PREDICTED_LABEL].astype(str).to_numpy()
        record = {
            "strategy": strategy,
            "budget": budget,
            "repeat": repeat,
            "batch": b,
            "rows": len(batch),
            "accuracy": float(np.mean(predicted == truth)),
            "macro_f1": _macro_f1(truth, predicted),
            "champion": version,
        }
        k = 0 if strategy == "none" else len(batch)
        if strategy in CHOOSERS:
            k = min(len(batch), math.floor(budget * len(batch) + 0.5))
            extra = {
                "audit_rate": config.audit_rate,
                "drift": drift[b] if drift else None,
                "explore_share": config.explore_share,
            }
            picks, reasons = CHOOSERS[strategy](scores, k, state, extra)
        else:
            picks = np.arange(k)
            reasons = pd.Series("oracle", index=scores.index[picks])
        picks = np.asarray(picks, dtype=int)
        labels_used += len(picks)
        record.update(labels=len(picks), labels_cumulative=labels_used, promoted=False)
        if len(picks):
            got = batch.iloc[picks].assign(
                **{LABEL_SOURCE: "human", LABELLED_AT: _EPOCH + pd.Timedelta(days=b)}
            )
            human = pd.concat([human, got], ignore_index=True)
            correct = predicted[picks] == truth[picks]
            audited = has_reason(reasons.reset_index(drop=True), "audit").to_numpy()
            weight = np.where(audited, 1.0 / max(config.audit_rate, 1e-9), 1.0)
            new = pd.DataFrame(
                {
                    CONFIDENCE: scores[CONFIDENCE].to_numpy()[picks],
                    "correct": correct.astype(float),
                    "weight": weight,
                }
            )
            state.labelled_outcomes = pd.concat([state.labelled_outcomes, new], ignore_index=True)
            recent, human_train = split_holdout(
                human, fraction=config.human_holdout_fraction, salt=f"bench:{repeat}"
            )
            training = merge_labelled(seed_train, human_train, schema)
            # the training recipe is chosen on the rows the gate will judge (the
            # pipeline's candidate_model does the same)
            window = recent_window(recent, config.gate)
            challenger = train_model(training, schema, params, select_on=window).model
            # the pipeline's gate, on the same evaluation sets as ``passes_gate`` (the
            # window is already cut; gate_evidence cutting it again changes nothing)
            evidence = gate_evidence(
                {HOLDOUT: fixed_holdout, HUMAN_HOLDOUT: window},
                schema,
                challenger=challenger,
                champion=state.champion,
                policy=config.gate,
            )
            decision = decide(
                evidence=evidence, policy=config.gate, segments=config.gate.segments(schema)
            )
            record["gate"] = "; ".join(decision.reasons)[:300]
            if decision.promote:
                version += 1
                state.previous, state.champion, state.training = (
                    state.champion,
                    challenger,
                    training,
                )
                refresh_helpers()
                record["promoted"] = True
        records.append(record)
        tick()
    return records


def _macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, average="macro", zero_division=0))


# --- the whole benchmark -------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkResult:
    per_batch: pd.DataFrame
    summary: pd.DataFrame
    labels_for_gain: pd.DataFrame
    files: tuple[Path, ...]


def split_stream(
    frame: pd.DataFrame, config: BenchmarkConfig
) -> tuple[pd.DataFrame, pd.DataFrame, list[pd.DataFrame]]:
    """Seed training rows, fixed held-out rows and the batches, in time order."""
    if len(frame) < config.seed_rows + config.batch_rows:
        raise ValueError(
            f"{len(frame)} rows: need at least seed_rows + batch_rows "
            f"({config.seed_rows} + {config.batch_rows})"
        )
    seed = frame.iloc[: config.seed_rows]
    fixed, seed_train = split_holdout(seed, fraction=config.holdout_fraction, salt="bench-fixed")
    rest = frame.iloc[config.seed_rows :]
    n_batches = len(rest) // config.batch_rows
    batches = [
        rest.iloc[i * config.batch_rows : (i + 1) * config.batch_rows].reset_index(drop=True)
        for i in range(n_batches)
    ]
    return seed_train, fixed, batches


def _drift_per_batch(seed_train, batches, schema) -> list[Any]:
    from hitl_pipeline.core.drift import compute_drift

    return [compute_drift(seed_train, batch, schema)[0] for batch in batches]


def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Replay the file for every strategy, budget and repeat, and write the outputs.

    Returns:
        The per-batch records, the summary, the labels-for-gain table and the files
        written.
    """
    unknown = sorted(set(config.strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies: {', '.join(unknown)} (known: {STRATEGIES})")
    from threadpoolctl import threadpool_limits

    # gradient boosting's OpenMP threads spin-wait on a busy machine: one thread per
    # fit was 10x faster than the default under load, and no slower when idle
    with threadpool_limits(limits=config.threads):
        return _run(config)


def _run(config: BenchmarkConfig) -> BenchmarkResult:
    schema, frame = load_stream(config)
    seed_train, fixed, batches = split_stream(frame, config)
    strategies = list(dict.fromkeys(["none", *config.strategies, "oracle"]))
    runs = [
        (s, b if s not in BUDGET_FREE else 0.0, r)
        for s in strategies
        for b in (config.budgets if s not in BUDGET_FREE else (0.0,))
        for r in range(config.repeats)
    ]
    from tqdm import tqdm

    bar = tqdm(
        total=len(runs) * len(batches),
        desc=f"benchmark {Path(config.data).name}",
        unit="batch",
        disable=not config.progress,
    )
    drift = None
    if "default" in strategies and config.drift_check:
        bar.set_postfix_str("drift check")
        drift = _drift_per_batch(seed_train, batches, schema)
    records: list[dict[str, Any]] = []
    for strategy, budget, repeat in runs:
        bar.set_postfix_str(f"{strategy} {budget:g} #{repeat}")
        records += replay(
            strategy,
            budget,
            repeat,
            schema=schema,
            seed_train=seed_train,
            fixed_holdout=fixed,
            batches=batches,
            config=config,
            drift=drift,
            tick=lambda: bar.update(1),
        )
    bar.close()
    per_batch = pd.DataFrame.from_records(records)
    summary = summarise(per_batch, config.budgets)
    gain_table = labels_for_gain(summary)
    files = write_outputs(config, per_batch, summary, gain_table, drift_batches=drift)
    return BenchmarkResult(per_batch, summary, gain_table, files)


def _expand_budget_free(per_batch: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    free = per_batch[per_batch["strategy"].isin(BUDGET_FREE)]
    return pd.concat(
        [per_batch[~per_batch["strategy"].isin(BUDGET_FREE)]]
        + [free.assign(budget=b) for b in budgets],
        ignore_index=True,
    )


def summarise(per_batch: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    """One row per strategy and budget: overall figures, averaged over repeats.

    ``gain_share`` is ``(acc - acc_none) / (acc_oracle - acc_none)`` on the mean
    per-batch accuracy (NaN when the oracle wins less than ``MIN_ORACLE_GAIN``),
    ``gain_share_std`` the spread of that share over the repeats (each against its own
    repeat's none and oracle runs; NaN with one repeat);
    ``worst_vs_none`` the lowest per-batch accuracy difference to
    the never-retrained model (mean over repeats); ``label_share`` labels used over rows
    streamed.
    """
    data = _expand_budget_free(per_batch, budgets)
    per_run = (
        data.groupby(["strategy", "budget", "repeat"])
        .agg(
            accuracy=("accuracy", "mean"),
            macro_f1=("macro_f1", "mean"),
            labels=("labels", "sum"),
            rows=("rows", "sum"),
            promotions=("promoted", "sum"),
        )
        .reset_index()
    )
    none = (
        data[data["strategy"] == "none"].groupby(["budget", "repeat", "batch"])["accuracy"].mean()
    )
    joined = data.join(none.rename("none_accuracy"), on=["budget", "repeat", "batch"])
    joined["vs_none"] = joined["accuracy"] - joined["none_accuracy"]
    worst = (
        joined.groupby(["strategy", "budget", "repeat"])["vs_none"].min().rename("worst_vs_none")
    )
    per_run = per_run.join(worst, on=["strategy", "budget", "repeat"])
    per_run["run_gain_share"] = _run_gain_shares(per_run)
    summary = (
        per_run.groupby(["strategy", "budget"])
        .agg(
            accuracy=("accuracy", "mean"),
            accuracy_std=("accuracy", "std"),
            macro_f1=("macro_f1", "mean"),
            labels=("labels", "mean"),
            rows=("rows", "mean"),
            promotions=("promotions", "mean"),
            worst_vs_none=("worst_vs_none", "mean"),
            gain_share_std=("run_gain_share", "std"),
        )
        .reset_index()
    )
    summary["accuracy_std"] = summary["accuracy_std"].fillna(0.0)
    summary["label_share"] = summary["labels"] / summary["rows"]
    base = summary[summary["strategy"] == "none"].set_index("budget")["accuracy"]
    top = summary[summary["strategy"] == "oracle"].set_index("budget")["accuracy"]
    gain = summary["accuracy"] - summary["budget"].map(base)
    span = summary["budget"].map(top) - summary["budget"].map(base)
    summary["gain_over_none"] = gain
    # below MIN_ORACLE_GAIN there is nothing to recover: a share of it is noise
    recoverable = span >= MIN_ORACLE_GAIN
    summary["gain_share"] = np.where(recoverable, gain / span.where(recoverable, 1.0), np.nan)
    ref = {
        name: summary[summary["strategy"] == name].set_index("budget")["accuracy"]
        for name in ("random", "least_confidence")
    }
    for name, series in ref.items():
        summary[f"beats_{name}"] = summary["accuracy"] > summary["budget"].map(series)
    order = {s: i for i, s in enumerate(STRATEGIES)}
    return summary.sort_values(
        ["budget", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c
    ).reset_index(drop=True)


def _run_gain_shares(per_run: pd.DataFrame) -> pd.Series:
    """Each run's gain share against the none and oracle runs of its repeat.

    Their spread across repeats (``gain_share_std``) says how much of a difference
    between two strategies' ``gain_share`` is seed noise; NaN where the repeat's oracle
    wins less than ``MIN_ORACLE_GAIN``.
    """
    keys = ["budget", "repeat"]
    base = per_run[per_run["strategy"] == "none"].set_index(keys)["accuracy"]
    top = per_run[per_run["strategy"] == "oracle"].set_index(keys)["accuracy"]
    index = pd.MultiIndex.from_frame(per_run[keys])
    low = base.reindex(index).to_numpy()
    span = top.reindex(index).to_numpy() - low
    share = (per_run["accuracy"].to_numpy() - low) / np.where(span >= MIN_ORACLE_GAIN, span, np.nan)
    return pd.Series(share, index=per_run.index)


def labels_for_gain(summary: pd.DataFrame) -> pd.DataFrame:
    """Labels (share of rows) each strategy needs for 50/80/90% of the oracle's gain.

    Linear interpolation of ``gain_share`` against ``label_share`` over the budgets run,
    starting from (0, 0); NaN when the largest budget does not reach the level.
    """
    rows = []
    for strategy, group in summary.groupby("strategy"):
        if strategy in BUDGET_FREE:
            continue
        group = group.sort_values("label_share")
        x = np.concatenate([[0.0], group["label_share"].to_numpy()])
        y = np.concatenate([[0.0], group["gain_share"].to_numpy()])
        row: dict[str, Any] = {"strategy": strategy}
        for level in GAIN_LEVELS:
            row[f"labels_for_{int(level * 100)}pct"] = _first_crossing(x, y, level)
        rows.append(row)
    return pd.DataFrame(rows)


def _first_crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    for i in range(1, len(x)):
        if not np.isfinite(y[i]):
            continue
        if y[i] >= level:
            y0 = y[i - 1] if np.isfinite(y[i - 1]) else 0.0
            if y[i] == y0:
                return float(x[i])
            return float(x[i - 1] + (level - y0) * (x[i] - x[i - 1]) / (y[i] - y0))
    return float("nan")


# --- outputs -------------------------------------------------------------------------
def write_outputs(
    config: BenchmarkConfig,
    per_batch: pd.DataFrame,
    summary: pd.DataFrame,
    gain_table: pd.DataFrame,
    *,
    drift_batches: Sequence[Any] | None = None,
) -> tuple[Path, ...]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "per_batch.csv", out / "summary.csv", out / "summary.json"]
    per_batch.to_csv(files[0], index=False)
    summary.to_csv(files[1], index=False)
    payload = {
        "data": str(config.data),
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(config).items()
            if k != "gate"
        },
        "gate": dataclasses.asdict(config.gate),
        "batches_drifted": [bool(d.dataset_drift) for d in drift_batches]
        if drift_batches
        else None,
        "summary": json.loads(summary.to_json(orient="records")),
        "labels_for_gain": json.loads(gain_table.to_json(orient="records")),
        "targets": targets(summary, gain_table),
    }
    files.append(out / "summary.json")
    files[2].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    md = out / "summary.md"
    md.write_text(
        markdown_report(config, summary, gain_table, payload["targets"]), encoding="utf-8"
    )
    files.append(md)
    files += plot(per_batch, summary, out, config.budgets)
    return tuple(dict.fromkeys(files))


def targets(summary: pd.DataFrame, gain_table: pd.DataFrame) -> dict[str, Any]:
    """The issue's targets for the default strategy, each with its figure."""
    default = summary[summary["strategy"] == "default"]
    if default.empty:
        return {}
    within = default[default["label_share"] <= 0.10 + 1e-9]
    best_share = float(within["gain_share"].max()) if len(within) else float("nan")
    oracle = summary[summary["strategy"] == "oracle"]["gain_over_none"]
    return {
        "oracle_gain_over_never_retrained": float(oracle.max()) if len(oracle) else float("nan"),
        "gain_share_with_at_most_10pct_labels": best_share,
        "meets_90pct_of_oracle_gain": bool(best_share >= 0.9),
        "worst_batch_vs_never_retrained": float(default["worst_vs_none"].min()),
        "never_below_never_retrained": bool(default["worst_vs_none"].min() >= 0),
        "beats_random_every_budget": bool(default.get("beats_random", pd.Series([False])).all()),
        "beats_least_confidence_every_budget": bool(
            default.get("beats_least_confidence", pd.Series([False])).all()
        ),
    }


def markdown_report(
    config: BenchmarkConfig,
    summary: pd.DataFrame,
    gain_table: pd.DataFrame,
    target_figures: dict[str, Any],
) -> str:
    cols = [
        "strategy",
        "budget",
        "accuracy",
        "accuracy_std",
        "macro_f1",
        "labels",
        "label_share",
        "gain_share",
        "gain_share_std",
        "worst_vs_none",
        "promotions",
    ]
    lines = [
        f"# Benchmark: {Path(config.data).name} (target `{config.target}`)",
        "",
        f"seed rows {config.seed_rows}, batch rows {config.batch_rows}, repeats "
        f"{config.repeats}, estimator {config.estimator} ({config.max_iter} rounds). "
        "Accuracy is prequential (each batch scored before its labels), averaged over batches "
        "and repeats; gain share = (accuracy - none) / (oracle - none).",
        "",
        _md_table(summary[cols]),
        "",
        "## Labels needed (share of streamed rows) for a share of the oracle's gain",
        "",
        _md_table(gain_table) if len(gain_table) else "(no budgeted strategy run)",
        "",
        "## Targets (default strategy)",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in target_figures.items()]
    return "\n".join(lines) + "\n"


def _md_table(frame: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "n/a" if not np.isfinite(v) else f"{v:.4f}"
        return str(v)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    sep = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def plot(
    per_batch: pd.DataFrame, summary: pd.DataFrame, out: Path, budgets: Sequence[float]
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _expand_budget_free(per_batch, budgets)
    mean = data.groupby(["strategy", "budget", "batch"])["accuracy"].mean().reset_index()
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        for strategy in [s for s in STRATEGIES if s in set(mean["strategy"])]:
            line = mean[(mean["strategy"] == strategy) & (mean["budget"] == budget)]
            style = "--" if strategy in BUDGET_FREE else "-"
            width = 2.5 if strategy == "default" else 1.2
            ax.plot(line["batch"], line["accuracy"], style, lw=width, label=strategy)
        ax.set_title(f"budget {budget:.0%} of each batch")
        ax.set_xlabel("batch")
        ax.set_ylabel("accuracy at scoring")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    first = out / "accuracy_by_batch.png"
    fig.savefig(first, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, group in summary.groupby("strategy"):
        if strategy in BUDGET_FREE:
            continue
        group = group.sort_values("label_share")
        ax.plot(
            np.concatenate([[0], group["label_share"]]),
            np.concatenate([[0], group["gain_share"]]),
            "o-",
            lw=2.5 if strategy == "default" else 1.2,
            label=strategy,
        )
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlabel("labels spent (share of streamed rows)")
    ax.set_ylabel("share of the oracle's gain over never retrained")
    ax.legend(fontsize=8)
    fig.tight_layout()
    second = out / "gain_vs_labels.png"
    fig.savefig(second, dpi=100)
    plt.close(fig)
    return [first, second]


# --- command line ---------------------------------------------------------------------
def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """A ``BenchmarkConfig`` from ``benchmark_cli.add_arguments`` arguments."""
    gate = GatePolicy()
    if args.gate_min_rows is not None:
        gate = dataclasses.replace(gate, min_eval_rows=args.gate_min_rows)
    return BenchmarkConfig(
        data=args.data,
        target=args.target,
        time_column=args.time_column,
        drop=tuple(c.strip() for c in args.drop.split(",") if c.strip()),
        seed_rows=args.seed_rows,
        batch_rows=args.batch_rows,
        budgets=tuple(float(b) for b in args.budgets.split(",") if b.strip()),
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        repeats=args.repeats,
        out=args.out,
        max_rows=args.max_rows,
        estimator=args.estimator or TrainingParams.estimator,
        max_iter=args.max_iter or TrainingParams.max_iter,
        gate=gate,
        drift_check=not args.no_drift_check,
        progress=not args.no_progress,
        threads=args.threads,
        explore_share=args.explore_share,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark and print the Markdown summary and the files written."""
    result = run_benchmark(config_from_args(args))
    md = [f for f in result.files if f.suffix == ".md"]
    if md:
        print(md[0].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(f) for f in result.files))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hitl_pipeline.benchmark ...`` (the same as ``hitl-pipeline benchmark``)."""
    from hitl_pipeline.benchmark_cli import add_arguments, resolve_dataset

    parser = argparse.ArgumentParser(prog="hitl-pipeline benchmark", description=__doc__)
    add_arguments(parser)
    return run_from_args(resolve_dataset(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
