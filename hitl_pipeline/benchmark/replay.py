"""Replay a stream through the pipeline's loop step, one strategy at one budget at a time.

Per batch, in the pipeline's order (``core.loop``):

1. the champion scores the batch *before* its labels are seen (``score_batch``, plus
   ``escalation_scores``): that is the batch's accuracy and macro-F1;
2. the drift alarm of the pipeline's ``no_dataset_drift`` check compares the batch with
   the seed rows of the champion's data (``compute_drift`` on ``drift_reference``, as the
   ``drift_report`` asset does);
3. the strategy picks what people label. ``default`` is the pipeline's routing with its
   run-config defaults (``route_batch``, the budget as ``review_capacity``), and when
   the drift alarm fired, also the drift response ``drift_alert_sensor`` starts (a
   second routing with ``drift=True``; the union is labelled, as Label Studio holds one
   task per item). The baselines label as many items as the default did in the batch;
   the oracle labels everything;
4. the audit check (``audit_pass_rate_holds``) judges the audit sample's answers so far
   when the labels are collected; when it fails, ``concept_drift_sensor`` starts the
   same drift response for this batch, and its extra items are labelled too;
5. the labels join the dataset as ``training_dataset`` joins them
   (``assemble_dataset``: the gate's held-out share, the selection share, the rest);
   ``train_challenger`` fits the challenger as ``candidate_model`` does,
   ``judge_challenger`` is ``passes_gate``, and on a promotion ``refit_threshold`` is
   ``routing_threshold``. The labels of batch ``b`` are stamped as labelled on day
   ``b``, so the windows in days count batches as the pipeline's daily partitions;
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hitl_pipeline.benchmark.checkpoint import ReplayStore
from hitl_pipeline.benchmark.config import (
    BUDGET_FREE,
    ORACLE_WINDOW_DAYS,
    STRATEGIES,
    BenchmarkConfig,
)
from hitl_pipeline.benchmark.report import (
    CORRECT,
    labels_for_gain,
    pair_with_none,
    summarise,
    write_outputs,
)
from hitl_pipeline.benchmark.strategies import CHOOSERS, ChooserState
from hitl_pipeline.benchmark.stream import TARGET, load_stream, split_stream
from hitl_pipeline.core.committee import fit_committee
from hitl_pipeline.core.drift import DriftPolicy
from hitl_pipeline.core.gate import HUMAN_HOLDOUT
from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.loop import (
    TRAINING,
    LoopSettings,
    assemble_dataset,
    drift_reference,
    escalation_scores,
    judge_challenger,
    refit_threshold,
    reviewed_items,
    route_batch,
    train_challenger,
)
from hitl_pipeline.core.loop_health import audit_verdict
from hitl_pipeline.core.ood import fit_ood_detector
from hitl_pipeline.core.routing import REASON_AUDIT, has_reason
from hitl_pipeline.core.types import (
    ITEM_ID,
    LABEL,
    LABEL_SOURCE,
    LABELLED_AT,
    PARTITION,
    PREDICTED_LABEL,
    REASONS,
    BatchSchema,
)

if TYPE_CHECKING:
    from tqdm import tqdm

EPOCH = pd.Timestamp("2000-01-01", tz="UTC")  # labels of batch b are "labelled" on day b


def oracle_settings(settings: LoopSettings) -> LoopSettings:
    """The oracle's settings: the pipeline's, plus a window of recent labels among its
    training variants when they have none (``config.ORACLE_WINDOW_DAYS``)."""
    if settings.training.window_days is not None:
        return settings
    training = dataclasses.replace(settings.training, window_days=ORACLE_WINDOW_DAYS)
    return dataclasses.replace(settings, training=training)


def run_settings(
    settings: LoopSettings, *, budget: float, batch_rows: int, repeat: int
) -> LoopSettings:
    """The pipeline's settings for one run: the budget as the review capacity, the
    repeat as the training, routing and gate seed and as a new split of the human
    labels; everything else as given.

    Repeat 0 is the pipeline's own split (``dataset.holdout_salt`` as set). A repeat
    that kept it would give a deterministic strategy such as least confidence the same
    gate rows, training rows and so the same promotions every time: its spread would
    show only the training seed, while which labels end up judging decides a run
    (which challenger passes around a change). Every strategy gets the same split in
    the same repeat, so the runs of one repeat stay paired.
    """
    capacity = math.floor(budget * batch_rows + 0.5)
    salt = settings.dataset.holdout_salt
    return dataclasses.replace(
        settings,
        routing=dataclasses.replace(settings.routing, review_capacity=capacity, seed=repeat),
        training=dataclasses.replace(settings.training, seed=repeat),
        gate=dataclasses.replace(settings.gate, seed=settings.gate.seed + repeat),
        dataset=dataclasses.replace(
            settings.dataset, holdout_salt=salt if repeat == 0 else f"{salt}:repeat-{repeat}"
        ),
    )


class DriftAlarms:
    """The drift alarm per batch and reference, computed once and shared by the runs
    (those of one process: with ``--jobs``, each worker keeps its own).

    The reference is ``drift_reference`` of the champion's training rows, as in the
    ``drift_report`` asset (its seed rows), so the runs share the alarms.
    """

    def __init__(self, schema: BatchSchema, enabled: bool, policy: DriftPolicy) -> None:
        self.schema, self.enabled, self.policy = schema, enabled, policy
        self._cache: dict[tuple[str, int], Any] = {}

    def __call__(self, reference: pd.DataFrame, batch: pd.DataFrame, b: int) -> Any | None:
        if not self.enabled:
            return None
        ids = "\x1f".join(sorted(reference[ITEM_ID].astype(str)))
        key = (hashlib.sha256(ids.encode()).hexdigest(), b)
        if key not in self._cache:
            from hitl_pipeline.core.drift import compute_drift

            self._cache[key] = compute_drift(reference, batch, self.schema, policy=self.policy)[0]
        return self._cache[key]


@dataclass
class Champion:
    """The serving model of one run and what routing derives from it."""

    model: Any
    version: int
    training: pd.DataFrame
    previous: Any | None = None
    threshold: float | None = None


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
    alarms: DriftAlarms | None = None,
    picks_per_batch: Sequence[int] | None = None,
    keep_ids: bool = False,
    tick: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Run one strategy at one budget over the stream; one record per batch.

    Args:
        picks_per_batch: For a baseline, how many items it labels in each batch (the
            ``default`` run's spend at this budget and repeat, so that every strategy is
            compared at the same labels); None: ``budget`` of each batch.
        keep_ids: Add ``reviewed_ids`` (the labelled item ids, sorted) to each record.

    Returns:
        Records with the batch's accuracy at scoring (and ``correct``, per row, for
        ``report.pair_with_none``), labels spent, the alarms, whether the drift response
        ran, the gate's verdict and whether it promoted.
    """
    settings = run_settings(
        config.settings, budget=budget, batch_rows=config.batch_rows, repeat=repeat
    )
    if strategy == "oracle":
        settings = oracle_settings(settings)
    alarms = alarms or DriftAlarms(schema, config.drift_check, settings.drift)
    human = seed_train.iloc[0:0].assign(**{LABEL_SOURCE: pd.Series(dtype=object)})
    # the first champion as the retrain job trains it before any label exists
    frames = assemble_dataset(seed_train, fixed_holdout, human, schema, settings.dataset)
    first = train_challenger(frames, schema, settings.training).model
    champion = Champion(first, 1, frames[TRAINING])
    helpers = _Helpers(strategy, schema, settings, repeat)
    helpers.refresh(champion)
    audits: list[pd.DataFrame] = []
    labels_used, records = 0, []
    for b, batch in enumerate(batches):
        scores = score_batch(champion.model, batch, schema, model_version=str(champion.version))
        truth = batch[TARGET].astype(str).to_numpy()
        predicted = scores[PREDICTED_LABEL].astype(str).to_numpy()
        drift = alarms(drift_reference(champion.training), batch, b)
        data_alarm = bool(drift is not None and drift.dataset_drift)
        respond = strategy == "default" and data_alarm
        k = math.floor(budget * len(batch) + 0.5)
        if picks_per_batch is not None:
            k = picks_per_batch[b]
        routing = (
            _DefaultRouting(scores, batch, champion, helpers) if strategy == "default" else None
        )
        if routing is not None and respond:
            routing.respond(drift)
        picks, reasons = _choose(strategy, k, scores, helpers, routing)
        audits.append(_audit_outcomes(batch, b, picks, reasons, predicted, truth))
        # the audit check runs when the labels are collected
        concept_alarm = audit_verdict(pd.concat(audits, ignore_index=True), settings.audit).alert
        if routing is not None and concept_alarm and not respond:
            # concept_drift_sensor: the drift response's boosted review of this batch
            routing.respond(drift)
            more, more_reasons = _choose(strategy, k, scores, helpers, routing)
            new = ~np.isin(more, picks)
            picks = np.concatenate([picks, more[new]])
            reasons = pd.concat([reasons, more_reasons[new]], ignore_index=True)
            audits.append(_audit_outcomes(batch, b, more[new], more_reasons[new], predicted, truth))
            respond = True
        labels_used += len(picks)
        record: dict[str, Any] = {
            "strategy": strategy,
            "budget": budget,
            "repeat": repeat,
            "batch": b,
            "rows": len(batch),
            "accuracy": float(np.mean(predicted == truth)),
            CORRECT: predicted == truth,  # paired with never retraining, then dropped
            "macro_f1": _macro_f1(truth, predicted),
            "champion": champion.version,
            "labels": len(picks),
            "labels_cumulative": labels_used,
            "data_drift_alarm": data_alarm,
            "concept_drift_alarm": bool(concept_alarm),
            "drift_response": respond,
            "promoted": False,
        }
        if keep_ids:
            record["reviewed_ids"] = sorted(batch[ITEM_ID].astype(str).to_numpy()[picks])
        if len(picks):
            got = batch.iloc[picks].assign(
                **{
                    LABEL_SOURCE: "human",
                    LABELLED_AT: EPOCH + pd.Timedelta(days=b),
                    PARTITION: f"{b:05d}",
                }
            )
            human = pd.concat([human, got], ignore_index=True)
            record.update(
                _retrain(human, batch, champion, helpers, audits, (seed_train, fixed_holdout))
            )
            if record["promoted"]:
                champion = record.pop("_champion")
            record.pop("_champion", None)
        records.append(record)
        tick()
    return records


def _audit_outcomes(
    batch: pd.DataFrame,
    b: int,
    picks: np.ndarray,
    reasons: pd.Series,
    predicted: np.ndarray,
    truth: np.ndarray,
) -> pd.DataFrame:
    """The audited items among the picks, as the ledger holds them for the audit check."""
    audited = has_reason(reasons.reset_index(drop=True), REASON_AUDIT).to_numpy()
    return pd.DataFrame(
        {
            ITEM_ID: batch[ITEM_ID].astype(str).to_numpy()[picks][audited],
            LABEL: truth[picks][audited],
            PREDICTED_LABEL: predicted[picks][audited],
            REASONS: REASON_AUDIT,
            PARTITION: f"{b:05d}",
        }
    )


class _Helpers:
    """What a strategy derives from the champion: the committee, the OOD detector."""

    def __init__(
        self, strategy: str, schema: BatchSchema, settings: LoopSettings, repeat: int
    ) -> None:
        self.strategy, self.schema, self.settings, self.repeat = strategy, schema, settings, repeat
        self.ood: Any | None = None
        self.chooser = ChooserState(schema, repeat)

    def refresh(self, champion: Champion) -> None:
        if self.strategy == "committee":
            self.chooser.committee = fit_committee(
                champion.training, self.schema, self.settings.training, seed=self.repeat
            )
        if self.strategy == "default":
            # the predictions asset fits it on the champion's training data, seed 0
            self.ood = fit_ood_detector(champion.training, self.schema)


class _DefaultRouting:
    """The pipeline's routing of one batch: the regular run, and the drift response once
    an alarm asks for it (both on the same escalation scores, computed once)."""

    def __init__(
        self, scores: pd.DataFrame, batch: pd.DataFrame, champion: Champion, helpers: _Helpers
    ) -> None:
        self.helpers, self.threshold = helpers, champion.threshold
        self.escalated = escalation_scores(
            scores,
            batch,
            helpers.schema,
            champion=champion.model,
            previous=champion.previous,
            ood=helpers.ood,
        )
        self.routed = [self._route(drift=False, columns=())]

    def _route(self, *, drift: bool, columns: Sequence[str]) -> pd.DataFrame:
        return route_batch(
            self.escalated,
            self.helpers.settings.routing,
            self.helpers.schema,
            threshold=self.threshold,
            drift=drift,
            drifted_columns=columns,
        )

    def respond(self, drift: Any | None) -> None:
        """Add the drift response's routing (drift_review_job), once."""
        if len(self.routed) == 1:
            columns = drift.drifted_columns if drift is not None else ()
            self.routed.append(self._route(drift=True, columns=columns))


def _choose(
    strategy: str,
    k: int,
    scores: pd.DataFrame,
    helpers: _Helpers,
    routing: _DefaultRouting | None,
) -> tuple[np.ndarray, pd.Series]:
    """Positions in the batch of the items labelled, and their reasons."""
    n = len(scores)
    if strategy == "none":
        return np.zeros(0, dtype=int), pd.Series(dtype=object)
    if strategy == "oracle":
        return np.arange(n), pd.Series("oracle", index=range(n))
    if routing is None:
        picks = np.asarray(CHOOSERS[strategy](scores, min(k, n), helpers.chooser), dtype=int)
        return picks, pd.Series(strategy, index=range(len(picks)))
    items = reviewed_items(*routing.routed)
    position = {item: i for i, item in enumerate(routing.escalated[ITEM_ID].astype(str))}
    picks = np.array([position[i] for i in items.index], dtype=int)
    return picks, items.reset_index(drop=True)


def _retrain(
    human: pd.DataFrame,
    batch: pd.DataFrame,
    champion: Champion,
    helpers: _Helpers,
    audits: list[pd.DataFrame],
    seed: tuple[pd.DataFrame, pd.DataFrame],
) -> dict[str, Any]:
    """``training_dataset`` -> ``candidate_model`` -> ``passes_gate`` -> ``champion_model``
    -> ``routing_threshold``, on the labels so far.

    Returns:
        Record fields: ``promoted``, ``gate`` (the reasons, cut), the chosen training
        variant, and on a promotion ``_champion``, the new champion.
    """
    schema, settings = helpers.schema, helpers.settings
    frames = assemble_dataset(seed[0], seed[1], human, schema, settings.dataset)
    trained = train_challenger(frames, schema, settings.training)
    decision = judge_challenger(
        frames, schema, challenger=trained.model, champion=champion.model, policy=settings.gate
    )
    out: dict[str, Any] = {
        "promoted": bool(decision.promote),
        "gate": "; ".join(decision.reasons)[:300],
        "human_weight_used": trained.metrics.get("human_weight_used", np.nan),
        "window_days_used": trained.metrics.get("window_days_used", np.nan),
        "window_keeps_seed": trained.metrics.get("window_keeps_seed", np.nan),
        "half_life_days_used": trained.metrics.get("half_life_days_used", np.nan),
    }
    if decision.promote:
        new = Champion(trained.model, champion.version + 1, frames[TRAINING], champion.model)
        audited = set(pd.concat(audits, ignore_index=True)[ITEM_ID]) if audits else set()
        choice = refit_threshold(
            new.model,
            frames[HUMAN_HOLDOUT],
            batch,
            schema,
            settings.routing,
            audited_ids=audited,
            model_version=str(new.version),
        )
        new.threshold = choice.threshold if choice is not None else None
        helpers.refresh(new)
        out["_champion"] = new
    return out


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


Run = tuple[str, float, int]  # one replay: strategy, budget, repeat
Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Replayer:
    """What every replay of one benchmark shares: the split stream, the config and the
    drift alarms. Built once; with ``--jobs`` each worker process receives it once."""

    schema: BatchSchema
    seed_train: pd.DataFrame
    fixed_holdout: pd.DataFrame
    batches: list[pd.DataFrame]
    config: BenchmarkConfig
    alarms: DriftAlarms

    def __call__(
        self,
        run: Run,
        picks_per_batch: Sequence[int] | None,
        tick: Callable[[], None] = lambda: None,
    ) -> Records:
        """``replay`` of ``run`` on the shared stream."""
        strategy, budget, repeat = run
        return replay(
            strategy,
            budget,
            repeat,
            schema=self.schema,
            seed_train=self.seed_train,
            fixed_holdout=self.fixed_holdout,
            batches=self.batches,
            config=self.config,
            alarms=self.alarms,
            picks_per_batch=picks_per_batch,
            tick=tick,
        )


def default_for(run: Run) -> Run | None:
    """The ``default`` replay a baseline labels as many items per batch as (same budget
    and repeat); None for the strategies that depend on no other replay."""
    strategy, budget, repeat = run
    return ("default", budget, repeat) if strategy in CHOOSERS else None


def baseline_picks(run: Run, done: dict[Run, Records]) -> list[int] | None:
    """The labels per batch of ``run``'s default, from its finished records; None when
    ``run`` is not a baseline or no default is replayed (then it spends its budget)."""
    default = default_for(run)
    if default is None or default not in done:
        return None
    return [record["labels"] for record in done[default]]


def replay_and_keep(
    replayer: Replayer,
    store: ReplayStore,
    run: Run,
    picks_per_batch: Sequence[int] | None,
    tick: Callable[[], None] = lambda: None,
) -> Records:
    """Replay ``run`` and keep it in ``store`` at once, so that a stop later loses none of
    it."""
    records = replayer(run, picks_per_batch, tick)
    store.save(*run, records)
    return records


def _runs(config: BenchmarkConfig) -> list[Run]:
    """Every replay, in the order their records are reported: the default before the
    baselines (which label as many items per batch as it did)."""
    strategies = list(dict.fromkeys(["none", "default", *config.strategies, "oracle"]))
    if "default" not in config.strategies:
        strategies.remove("default")
    return [
        (s, b if s not in BUDGET_FREE else 0.0, r)
        for s in strategies
        for b in (config.budgets if s not in BUDGET_FREE else (0.0,))
        for r in range(config.repeats)
    ]


def _replay_in_turn(
    runs: list[Run], replayer: Replayer, store: ReplayStore, bar: tqdm
) -> dict[Run, Records]:
    """Each replay after the other in this process, or loaded when already finished."""
    done: dict[Run, Records] = {}
    for run in runs:
        strategy, budget, repeat = run
        bar.set_postfix_str(f"{strategy} {budget:g} #{repeat}")
        records = store.load(*run)
        if records is None:
            picks = baseline_picks(run, done)
            records = replay_and_keep(replayer, store, run, picks, tick=lambda: bar.update(1))
        else:
            bar.update(len(replayer.batches))
        done[run] = records
    return done


def _run(config: BenchmarkConfig) -> BenchmarkResult:
    schema, frame = load_stream(config)
    seed_train, fixed, batches = split_stream(frame, config)
    runs = _runs(config)
    from tqdm import tqdm

    bar = tqdm(
        total=len(runs) * len(batches),
        desc=f"benchmark {Path(config.data).name}",
        unit="batch",
        disable=not config.progress,
    )
    alarms = DriftAlarms(schema, config.drift_check, config.settings.drift)
    replayer = Replayer(schema, seed_train, fixed, batches, config, alarms)
    store = ReplayStore(config)
    finished = store.finished(runs)
    if finished:
        print(
            f"resuming: {finished} of {len(runs)} replays already finished in "
            f"{store.folder} are loaded, not replayed (--fresh replays them all)",
            file=sys.stderr,
        )
    if config.jobs == 1:
        done = _replay_in_turn(runs, replayer, store, bar)
    else:
        from hitl_pipeline.benchmark.parallel import replay_in_pool

        done = replay_in_pool(runs, replayer, store, bar)
    bar.close()
    # in the order of ``runs`` whatever order they finished in: the same frames for any --jobs
    records = [record for run in runs for record in done[run]]
    per_batch = pd.DataFrame.from_records(pair_with_none(records, config.settings.gate))
    summary = summarise(per_batch, config.budgets)
    gain_table = labels_for_gain(summary)
    files = write_outputs(config, per_batch, summary, gain_table)
    return BenchmarkResult(per_batch, summary, gain_table, files)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for resolved ``cli.add_arguments`` arguments; print the summary."""
    from hitl_pipeline.benchmark.cli import config_from_args

    result = run_benchmark(config_from_args(args))
    md = [f for f in result.files if f.suffix == ".md"]
    if md:
        print(md[0].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(f) for f in result.files))
    return 0
