"""The benchmark replays the pipeline: same stream, same run config, same decisions.

One short drifting stream goes twice through the loop step:

- through real Dagster materializations of the pipeline's assets (``production_batch``,
  ``predictions``, ``drift_report`` with its check, ``review_queue`` and, when the drift
  check fails, the drift response the sensor starts; then ``training_dataset``,
  ``candidate_model``, the blocking ``passes_gate``, ``champion_model`` and
  ``routing_threshold``), with real MLflow (SQLite), a real DVC repository and the
  landing folder in a temporary home;
- through the benchmark's ``replay`` of the ``default`` strategy, with the settings read
  from the same Dagster run config.

Only the people are replaced: a stand-in ``human_labels`` asset answers every item
the pipeline routed to review from the ground truth, labelled on day ``b`` for batch
``b`` (the benchmark's convention), and keeps the ledger of reasons that
``routing_threshold`` reads. Label Studio's own path is covered by the end-to-end test.
Both sides must label the same items in every batch and promote on the same batches.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.benchmark.config import BenchmarkConfig, overrides_from_run_config
from hitl_pipeline.benchmark.replay import EPOCH, replay
from hitl_pipeline.benchmark.stream import TARGET, load_stream, split_stream
from hitl_pipeline.core.loop import LoopSettings, reviewed_items
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import (
    ITEM_ID,
    LABEL,
    LABEL_SOURCE,
    LABELLED_AT,
    PARTITION,
    PREDICTED_LABEL,
    REASONS,
)
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s01_ingest import production_batch
from hitl_pipeline.defs.s02_inference import predictions
from hitl_pipeline.defs.s03_monitoring import NO_DRIFT_CHECK, drift_report
from hitl_pipeline.defs.s04_selection import review_queue, routing_threshold
from hitl_pipeline.defs.s06_feedback import audit_pass_rate_holds
from hitl_pipeline.defs.s07_dataset import training_dataset
from hitl_pipeline.defs.s08_training import candidate_model, passes_gate
from hitl_pipeline.defs.s09_deployment import champion_model
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.settings import Settings

pytestmark = pytest.mark.slow

BATCHES, BATCH_ROWS, SEED_ROWS, BUDGET = 4, 200, 400, 0.25
# The run config a person would launch; the benchmark reads its loop settings from it.
RUN_CONFIG = {
    "ops": {
        "review_queue": {"config": {"review_capacity": int(BUDGET * BATCH_ROWS)}},
        "routing_threshold": {"config": {"review_capacity": int(BUDGET * BATCH_ROWS)}},
        "candidate_model": {"config": {"estimator": "logistic_regression"}},
        # a short stream gives the gate few recent rows: let it judge on fewer
        "candidate_model_passes_gate": {"config": {"min_eval_rows": 10, "min_slice_rows": 10}},
    }
}


def stream_csv(folder: Path) -> Path:
    """Two numeric features and a colour; from row 600 on ``x`` moves up and a new colour
    appears whose rule is reversed (the old colours keep theirs): data and concept drift."""
    rng = np.random.default_rng(3)
    n = SEED_ROWS + BATCHES * BATCH_ROWS
    late = np.arange(n) >= 600
    x, z = rng.normal(size=n) + np.where(late, 1.0, 0.0), rng.normal(size=n)
    colour = np.where(
        late & (rng.uniform(size=n) < 0.6), "green", rng.choice(["red", "blue"], size=n)
    )
    score = np.where(colour == "green", 1.5 - x, x) + 0.3 * z
    frame = pd.DataFrame({"x": x, "z": z, "colour": colour, "y": np.where(score > 0, "up", "down")})
    path = folder / "stream.csv"
    frame.to_csv(path, index=False)
    return path


def partition(b: int) -> str:
    return (pd.Timestamp("2026-03-02") + pd.Timedelta(days=b)).date().isoformat()


def labels_asset(labelled: dict[str, pd.DataFrame]) -> dg.AssetsDefinition:
    """Stands in for the people: the labels collected so far, and the ledger's reasons."""

    @dg.asset(name="human_labels", group_name="s06_feedback")
    def human_labels(local_store: LocalStore) -> pd.DataFrame:
        frame = labelled["labels"]
        local_store.write_ledger(
            pd.DataFrame(
                {
                    ITEM_ID: frame[ITEM_ID].astype(str),
                    "features": [{} for _ in range(len(frame))],
                    "reasons": [tuple(r.split(";")) for r in frame[REASONS]],
                    LABEL: frame[TARGET].astype(str),
                    PREDICTED_LABEL: frame[PREDICTED_LABEL].astype(str),
                    PARTITION: frame[PARTITION].astype(str),
                    "was_cancelled": False,
                }
            )
        )
        # as resolve_labels returns them: each label with its batch's partition
        return frame.drop(columns=[REASONS, PREDICTED_LABEL])

    return human_labels


def run_pipeline(home: Path, schema, seed_train, fixed, batches) -> tuple[list, list, list]:
    """Every batch through the real assets: per batch the labelled ids, whether a
    challenger was promoted, and whether the audit check failed."""
    with pytest.MonkeyPatch.context() as env, contextlib.ExitStack() as env_stack:
        env.setenv("HITL_HOME", str(home))
        for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
            env.delenv(var, raising=False)
        settings = Settings.from_env()
        settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
        save_schema(schema, settings.schema_path)
        for folder in (settings.seed, settings.landing):
            folder.mkdir(parents=True, exist_ok=True)
        seed_train.to_parquet(settings.seed / "train.parquet", index=False)
        fixed.to_parquet(settings.seed / "holdout.parquet", index=False)
        resources = build_resources(settings)
        resources.pop("label_studio")
        # entered: Dagster's definitions loader reads the state storage of the instance
        # in context, which must be a live one whatever earlier tests left behind
        instance = env_stack.enter_context(dg.DagsterInstance.ephemeral())
        labelled = {
            "labels": seed_train.iloc[0:0].assign(
                **{c: pd.Series(dtype=object) for c in (REASONS, PREDICTED_LABEL, PARTITION)}
            )
        }
        collect_assets = [labels_asset(labelled), audit_pass_rate_holds]
        retrain_assets = [
            labels_asset(labelled),
            training_dataset,
            candidate_model,
            passes_gate,
            champion_model,
            routing_threshold,
        ]
        scoring_assets = [production_batch, predictions, drift_report, review_queue]

        def collect() -> bool:
            """collect_labels_job: did the audit check fail (the concept-drift alarm)?"""
            result = dg.materialize(collect_assets, resources=resources, instance=instance)
            (audit,) = result.get_asset_check_evaluations()
            return not audit.passed

        def retrain() -> bool:
            """retrain_job: was the challenger promoted?"""
            ops = {k: v for k, v in RUN_CONFIG["ops"].items() if k != "review_queue"}
            result = dg.materialize(
                retrain_assets,
                resources=resources,
                run_config={"ops": ops},
                instance=instance,
                raise_on_error=False,  # a challenger that fails the gate stops the run there
            )
            return any(
                e.asset_key == dg.AssetKey("champion_model")
                for e in result.get_asset_materialization_events()
            )

        def score(b: int, *, drift_response: bool) -> tuple[pd.DataFrame, bool]:
            config = {**RUN_CONFIG["ops"]["review_queue"]["config"]}
            config["drift_response"] = drift_response
            run_config = {"ops": {"review_queue": {"config": config}}}
            result = dg.materialize(
                scoring_assets,
                partition_key=partition(b),
                resources=resources,
                run_config=run_config,
                instance=instance,
            )
            (check,) = [
                c for c in result.get_asset_check_evaluations() if c.check_name == NO_DRIFT_CHECK
            ]
            return result.output_for_node("review_queue"), not check.passed

        def answer(b: int, batch: pd.DataFrame, frames: list[pd.DataFrame]) -> list[str]:
            """The people answer every item routed in batch ``b``, from the truth."""
            reasons = reviewed_items(*frames)
            ids = list(reasons.index)
            predicted = frames[0].set_index(ITEM_ID)[PREDICTED_LABEL]
            got = batch[batch[ITEM_ID].isin(ids)].assign(
                **{
                    LABEL_SOURCE: "human",
                    LABELLED_AT: EPOCH + pd.Timedelta(days=b),
                    REASONS: batch[ITEM_ID].map(reasons),
                    PREDICTED_LABEL: batch[ITEM_ID].map(predicted),
                    PARTITION: f"{b:05d}",
                }
            )
            earlier = labelled["labels"][labelled["labels"][PARTITION] != f"{b:05d}"]
            labelled["labels"] = pd.concat([earlier, got], ignore_index=True)
            return sorted(ids)

        assert retrain(), "the first champion is trained from the seed"
        reviewed, promoted, concept_alarms = [], [], []
        for b, batch in enumerate(batches):
            batch.drop(columns=[TARGET]).to_parquet(
                settings.landing / f"{partition(b)}.parquet", index=False
            )
            routed, alarm = score(b, drift_response=False)
            frames = [routed]
            if alarm:  # drift_alert_sensor: the drift review run of this batch
                frames.append(score(b, drift_response=True)[0])
            answer(b, batch, frames)
            concept_alarm = collect()
            if concept_alarm and not alarm:  # concept_drift_sensor: the same response
                frames.append(score(b, drift_response=True)[0])
            reviewed.append(answer(b, batch, frames))
            concept_alarms.append(concept_alarm)
            promoted.append(retrain())
        return reviewed, promoted, concept_alarms


def test_the_benchmark_replays_the_pipelines_decisions(tmp_path):
    config = BenchmarkConfig(
        data=stream_csv(tmp_path),
        target="y",
        seed_rows=SEED_ROWS,
        batch_rows=BATCH_ROWS,
        budgets=(BUDGET,),
        strategies=("default",),
        repeats=1,
        settings=LoopSettings().with_overrides(overrides_from_run_config(RUN_CONFIG)),
        progress=False,
    )
    schema, frame = load_stream(config)
    seed_train, fixed, batches = split_stream(frame, config)

    bench = replay(
        "default",
        BUDGET,
        0,
        schema=schema,
        seed_train=seed_train,
        fixed_holdout=fixed,
        batches=batches,
        config=config,
        keep_ids=True,
    )
    reviewed, promoted, concept_alarms = run_pipeline(
        tmp_path / "home", schema, seed_train, fixed, batches
    )

    assert len(batches) == BATCHES
    # the stream drifts and the loop answers: the check fires and something is promoted
    assert any(r["data_drift_alarm"] for r in bench)
    assert any(promoted)
    assert [r["reviewed_ids"] for r in bench] == reviewed
    assert [r["promoted"] for r in bench] == promoted
    assert [r["concept_drift_alarm"] for r in bench] == concept_alarms
