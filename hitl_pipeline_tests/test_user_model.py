"""A user's own model, end to end: trained, logged, gated, promoted and rolled back.

Real Dagster materializations of ``candidate_model`` -> ``passes_gate`` ->
``champion_model`` on a text schema, with real MLflow (SQLite) and DVC stores under
``tmp_path``; only ``training_dataset`` is replaced by an asset returning a version
committed here (the labelling stages are not under test). The model comes from
``hitl_pipeline_tests.fixtures.user_model:make_model``, a pipeline holding a transformer
class of the user's own, named in the run config the way a person would; and the same
factory named in ``params.yaml`` for ``dvc repro``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.datasets import canonical_dataset
from hitl_pipeline.core.loop import SELECTION, TRAINING, train_challenger
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.training import TrainingParams, evaluate_model
from hitl_pipeline.core.types import LABEL, LABEL_SOURCE, LABELLED_AT, BatchSchema, FeatureSpec
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s08_training import TAG_MODEL_FACTORY, TAG_MODEL_FACTORY_VERSION
from hitl_pipeline.resources.mlflow_registry import TAG_CODE_VERSION
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.faults.retrain import LENIENT_GATE, retrain
from hitl_pipeline_tests.fixtures.text_data import CLASSES, posts
from hitl_pipeline_tests.test_reproducibility import _project_copy, _run

FACTORY = "hitl_pipeline_tests.fixtures.user_model:make_model"
SCHEMA = BatchSchema(
    features=(
        FeatureSpec("text", "text"),
        FeatureSpec("account_age", "numeric"),
        FeatureSpec("source", "categorical"),
    ),
    classes=CLASSES,
)


def _config(*, lenient: bool) -> dict[str, Any]:
    ops: dict[str, Any] = {"candidate_model": {"config": {"model_factory": FACTORY}}}
    if lenient:
        ops["candidate_model_passes_gate"] = {"config": LENIENT_GATE}
    return {"ops": ops}


def _human(frame: pd.DataFrame, day: str) -> pd.DataFrame:
    return frame.assign(**{LABEL_SOURCE: "human", LABELLED_AT: pd.Timestamp(day, tz="UTC")})


@pytest.fixture
def home(tmp_path, monkeypatch) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resources on a fresh home with the text schema; a clean and a scrambled version."""
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env()
    settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
    save_schema(SCHEMA, settings.schema_path)
    frames = {
        "holdout": canonical_dataset(posts(300, seed=11, prefix="h"), SCHEMA),
        "human_holdout": canonical_dataset(
            _human(posts(200, seed=12, prefix="u"), "2026-01-05"), SCHEMA
        ),
    }
    train = posts(600, seed=10)
    scrambled = train.copy()
    scrambled[LABEL] = np.random.default_rng(0).permutation(scrambled[LABEL].to_numpy())
    store = build_resources(settings)["dataset_store"]
    versions = {
        name: store.commit(
            frames={"training": canonical_dataset(frame, SCHEMA), **frames}, message=name
        )
        for name, frame in (("clean", train), ("scrambled", scrambled))
    }
    return build_resources(settings), versions


def test_a_user_factory_model_is_trained_logged_gated_promoted_and_rolled_back(home):
    resources, versions = home
    registry = resources["registry"]

    first = retrain(resources, versions["clean"], _config(lenient=True))
    assert first.success, first.all_events
    v1 = first.output_for_node("candidate_model")
    assert registry.champion().version == v1.version

    # logged with its factory, the factory's code version and ours, and a signature
    version = registry._client().get_model_version(v1.name, v1.version)
    assert version.tags[TAG_MODEL_FACTORY] == FACTORY
    assert version.tags[TAG_MODEL_FACTORY_VERSION].startswith("sha256:")
    assert version.tags[TAG_CODE_VERSION]
    run = registry._client().get_run(v1.run_id)
    assert run.data.params["model_factory"] == FACTORY
    with registry._mlflow_globals():
        signature = mlflow.models.get_model_info(f"models:/{v1.name}/{v1.version}").signature
    inputs = {spec.name: spec.type.name for spec in signature.inputs.inputs}
    assert inputs == {"text": "string", "account_age": "double", "source": "string"}

    # a challenger from the same factory fitted on scrambled labels fails the real gate
    bad = retrain(resources, versions["scrambled"], _config(lenient=False))
    rejected = bad.output_for_node("candidate_model")
    gate = [e for e in bad.get_asset_check_evaluations() if e.check_name == "passes_gate"]
    assert [e.passed for e in gate] == [False]
    assert registry.champion().version == v1.version

    second = retrain(resources, versions["clean"], _config(lenient=True))
    v3 = second.output_for_node("candidate_model")
    assert second.success and registry.champion().version == v3.version != rejected.version

    restored = registry.rollback(reason="test: back to the first user model", actor="test")
    assert restored.version == v1.version == registry.champion().version

    # the champion loads and predicts in a fresh process, its own class and all
    env = {**os.environ, "HITL_HOME": os.environ["HITL_HOME"]}
    script = (
        "import json, sys\n"
        "from hitl_pipeline.defs.resources import build_resources\n"
        "from hitl_pipeline.settings import Settings\n"
        "from hitl_pipeline_tests.fixtures.text_data import posts\n"
        "registry = build_resources(Settings.from_env())['registry']\n"
        "model = registry.load_model(ref=registry.champion())\n"
        "rows = posts(50, seed=99)\n"
        "predicted = model.predict(rows[['text', 'account_age', 'source']])\n"
        "steps = type(model.named_steps['features'].transformers_[1][1]).__name__\n"
        "print(json.dumps({'accuracy': float((predicted == rows['label']).mean()),"
        " 'step': steps}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["step"] == "TextStats"
    assert loaded["accuracy"] > 0.9


def test_a_broken_factory_fails_the_retrain_with_its_reason(home):
    resources, versions = home
    config = _config(lenient=True)
    config["ops"]["candidate_model"]["config"]["model_factory"] = (
        "hitl_pipeline_tests.fixtures.user_model:make_without_proba"
    )

    result = retrain(resources, versions["clean"], config)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.cause.message
    assert "returned a Pipeline without predict_proba" in message
    assert resources["registry"].champion() is None


def test_dvc_repro_trains_the_user_factory_on_a_text_schema(tmp_path):
    params = TrainingParams(model_factory=FACTORY).to_dict()
    project = _project_copy(tmp_path / "project", params)
    data = project / "data"
    data.mkdir()
    train = canonical_dataset(posts(600, seed=10), SCHEMA)
    selection = canonical_dataset(_human(posts(100, seed=13, prefix="s"), "2026-01-05"), SCHEMA)
    holdouts = {
        "holdout": canonical_dataset(posts(300, seed=11, prefix="h"), SCHEMA),
        "human_holdout": canonical_dataset(
            _human(posts(200, seed=12, prefix="u"), "2026-01-05"), SCHEMA
        ),
    }
    for name, frame in {"training": train, "selection": selection, **holdouts}.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    save_schema(SCHEMA, data / "schema.json")

    _run(project, "dvc", "repro")

    reproduced = json.loads((project / "models" / "eval_metrics.json").read_text("utf-8"))
    # the same code in this process gives the same figures, to the bit
    model = train_challenger(
        {TRAINING: train, SELECTION: selection}, SCHEMA, TrainingParams(model_factory=FACTORY)
    ).model
    assert type(model.named_steps["features"].transformers_[1][1]).__name__ == "TextStats"
    for name, frame in holdouts.items():
        assert reproduced[name] == evaluate_model(model, frame, SCHEMA)
    assert reproduced["holdout"]["accuracy"] > 0.9
