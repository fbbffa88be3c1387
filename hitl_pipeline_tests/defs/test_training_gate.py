"""Training, gate and deployment through the real Dagster assets, with real MLflow and DVC.

Everything lives in ``tmp_path``: a DVC dataset repository with a local remote, MLflow on
SQLite. Only ``training_dataset`` is replaced, by an asset returning a dataset version
committed here with the real ``DvcDatasetStore`` (the labelling stages are not under test).
Then, on the same registry: a rollback through the CLI, and the champion's lineage back to
its exact training rows.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.cli import main as cli
from hitl_pipeline.core.datasets import canonical_dataset
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import LABEL, LABEL_SOURCE, LABELLED_AT, DatasetVersion
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s08_training import candidate_model, passes_gate
from hitl_pipeline.defs.s09_deployment import champion_model
from hitl_pipeline.demo.stream import CLASSES, DEMO_SCHEMA, EVENT_TIME, DriftingStream
from hitl_pipeline.lineage import format_lineage, restore_rows, trace
from hitl_pipeline.resources.mlflow_registry import TAG_FILE_MD5_PREFIX
from hitl_pipeline.settings import Settings

STREAM = DriftingStream(seed_train_rows=1200, seed_holdout_rows=600)
# few boosting rounds keep the runs fast
RUN_CONFIG = {"ops": {"candidate_model": {"config": {"max_iter": 40, "learning_rate": 0.2}}}}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    """A loop home with a schema, resources bound to it, and the evaluation frames."""
    home = tmp_path_factory.mktemp("hitl-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HITL_HOME", str(home))
        for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
            env.delenv(var, raising=False)
        settings = Settings.from_env()
        settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
        save_schema(DEMO_SCHEMA, settings.schema_path)
        train, holdout = STREAM.seed_sets()
        recent = pd.concat([STREAM.batch(0), STREAM.batch(1)])
        recent = recent.assign(
            **{LABEL_SOURCE: "human", LABELLED_AT: recent[EVENT_TIME] + timedelta(days=1)}
        )
        frames = {
            "holdout": canonical_dataset(holdout, DEMO_SCHEMA),
            "human_holdout": canonical_dataset(recent, DEMO_SCHEMA),
            "edge_cases": canonical_dataset(STREAM.batch(5).head(20), DEMO_SCHEMA),
        }
        yield settings, build_resources(settings), train, frames


def _dataset_asset(version: DatasetVersion) -> dg.AssetsDefinition:
    @dg.asset(name="training_dataset", group_name="s07_dataset")
    def training_dataset() -> DatasetVersion:
        return version

    return training_dataset


def _retrain(resources: dict, version: DatasetVersion) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [_dataset_asset(version), candidate_model, passes_gate, champion_model],
        resources={k: resources[k] for k in ("production", "registry", "dataset_store")},
        run_config=RUN_CONFIG,
        raise_on_error=False,
    )


def _gate_evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "passes_gate"
    return evaluation


def test_flipped_labels_are_gated_out_and_the_champion_keeps_serving(loop, tmp_path):
    _, resources, train, frames = loop
    store, registry = resources["dataset_store"], resources["registry"]

    clean = store.commit(
        frames={"training": canonical_dataset(train, DEMO_SCHEMA), **frames}, message="clean"
    )
    first = _retrain(resources, clean)
    assert first.success
    assert _gate_evaluation(first).passed
    champion = registry.champion()
    assert champion is not None and champion.tags["dataset.version_id"] == clean.version_id

    rng = np.random.default_rng(5)
    flipped = train.copy()
    chosen = rng.random(len(flipped)) < 0.45
    shift = rng.integers(1, len(CLASSES), size=chosen.sum())
    index = flipped.loc[chosen, LABEL].map(CLASSES.index).to_numpy()
    flipped.loc[chosen, LABEL] = np.asarray(CLASSES)[(index + shift) % len(CLASSES)]
    sabotaged = store.commit(
        frames={"training": canonical_dataset(flipped, DEMO_SCHEMA), **frames},
        message="45% of the labels flipped",
    )
    second = _retrain(resources, sabotaged)

    evaluation = _gate_evaluation(second)
    assert evaluation.passed is False
    metadata = evaluation.metadata
    failed = metadata["failed_checks"].value
    assert "overall[human_holdout]" in failed
    assert "FAILED overall[human_holdout]" in evaluation.description
    assert metadata["overall[human_holdout].diff"].value < 0
    assert "| overall[holdout] |" in metadata["checks"].value
    # blocking: champion_model never ran, the alias did not move
    assert not second.asset_materializations_for_node("champion_model")
    assert registry.champion().version == champion.version
    candidate = second.output_for_node("candidate_model")
    rejected = registry.get_version(version=candidate.version)
    assert rejected.tags["gate.promote"] == "false"
    assert "overall[human_holdout]" in rejected.tags["gate.failed_checks"]

    # --- lineage: from the champion back to the exact rows it was trained on -------
    lineage = trace(registry)
    assert lineage.model_version == champion.version
    assert lineage.dataset_version == clean.version_id
    assert dict(lineage.frame_md5s) == {Path(p).stem: m for p, m in clean.files.items()}
    assert lineage.params["max_iter"] == 40
    assert lineage.routing["policy_defaults"]["review_capacity"] > 0
    assert lineage.code_version
    restored = restore_rows(store, lineage, tmp_path / "rows", frames=["training", "edge_cases"])
    training_bytes = restored["training"].read_bytes()
    assert hashlib.md5(training_bytes).hexdigest() == clean.md5
    pd.testing.assert_frame_equal(
        pd.read_parquet(restored["training"]), store.load(version_id=clean.version_id)
    )
    assert clean.version_id in format_lineage(lineage)
    assert any(k.startswith(TAG_FILE_MD5_PREFIX) for k in champion.tags)

    # --- rollback through the CLI: who and why recorded, the replaced one loadable --
    override = registry.promote(ref=rejected, reason="operator override", actor="ops")
    assert override is not None and override.version == champion.version
    code = cli(["rollback", "--reason", "flipped labels got through", "--actor", "tester"])
    # (no capsys: DVC binds its log handler to the stream of the test that first uses it)
    assert code == 0
    back = registry.champion()
    assert back.version == champion.version
    assert back.tags["champion.via"] == "rollback"
    assert back.tags["champion.by"] == "tester"
    assert back.tags["champion.reason"] == "flipped labels got through"
    ended = registry.get_version(version=rejected.version)
    assert ended.tags["champion.ended_by"] == "tester"
    assert ended.tags["champion.end_reason"] == "flipped labels got through"
    assert registry.champion_history()[-1].actor == "tester"
    features = frames["holdout"][DEMO_SCHEMA.feature_names]
    assert registry.load_model(ref=ended).predict_proba(features).shape == (len(features), 4)
