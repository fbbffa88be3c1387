"""``dvc repro`` on a candidate's restored dataset version reproduces what MLflow logged.

Real git, DVC, MLflow (SQLite) and the ``hitl-pipeline`` console script, in
``tmp_path``. The ``candidate_model`` asset is materialised through Dagster on the older
of two dataset versions (only ``training_dataset`` is replaced, by an asset returning a
version committed here with the real ``DvcDatasetStore``), so its figures are the ones
its MLflow run holds. Then the reproduction a person would follow: the model version's
lineage (parameters and md5-verified frames) restored from a fresh ``git clone`` of the
dataset repository (no DVC cache: the bytes come from the remote) into a copy of the
project layout, and ``dvc repro`` as a subprocess. ``models/eval_metrics.json`` must
equal, to the last bit, the run's ``heldout.<frame>.*`` metrics, ``train_metrics.json``
the run's training metrics, and a second ``dvc repro`` must do nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from hitl_pipeline.core.datasets import canonical_dataset, merge_labelled
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.training import TrainingParams
from hitl_pipeline.core.types import LABEL_SOURCE, LABELLED_AT, DatasetVersion
from hitl_pipeline.defs.s08_training import candidate_model
from hitl_pipeline.demo.stream import DEMO_SCHEMA, EVENT_TIME, DriftingStream
from hitl_pipeline.lineage import restore_rows, trace
from hitl_pipeline.resources.dvc_store import DvcDatasetStore

# MLflow allows few characters in a metric key: the resource's own renaming
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource, _metric_key
from hitl_pipeline.resources.production import ProductionSource

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's console scripts: dvc, hitl-pipeline
STREAM = DriftingStream(seed_train_rows=800, seed_holdout_rows=300)
# few rounds keep it fast; not the defaults, so the logged parameters must really be used
RUN_CONFIG = {
    "ops": {"candidate_model": {"config": {"max_iter": 30, "learning_rate": 0.2, "seed": 3}}}
}


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["DVC_NO_ANALYTICS"] = "1"
    result = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8"
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _human(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        **{LABEL_SOURCE: "human", LABELLED_AT: frame[EVENT_TIME] + timedelta(days=1)}
    )


def _dvc_stages() -> dict:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _project_copy(root: Path, params: dict) -> Path:
    """The parts of the project layout ``dvc repro`` needs, in a repository of its own."""
    root.mkdir()
    shutil.copyfile(PROJECT / "dvc.yaml", root / "dvc.yaml")
    for stage in _dvc_stages().values():  # code dependencies, e.g. hitl_pipeline/core/...
        for dep in stage["deps"]:
            if dep.startswith("hitl_pipeline/"):
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(PROJECT / dep, root / dep)
    text = yaml.safe_dump({"train": params}, sort_keys=False)
    (root / "params.yaml").write_text(text, encoding="utf-8")
    _run(root, "git", "init", "-q")
    _run(root, "dvc", "init", "-q")
    return root


def _same(a: float, b: float) -> bool:
    """Bit-equal floats (NaN, e.g. a figure with no rows to measure, equals NaN)."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def _dataset_asset(version: DatasetVersion) -> dg.AssetsDefinition:
    @dg.asset(name="training_dataset", group_name="s07_dataset")
    def training_dataset() -> DatasetVersion:
        return version

    return training_dataset


def test_committed_params_yaml_mirrors_the_training_parameters() -> None:
    committed = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    assert set(committed["train"]) == set(TrainingParams().to_dict())


def test_dvc_repro_of_a_candidates_dataset_version_reproduces_its_mlflow_metrics(
    tmp_path: Path,
) -> None:
    store = DvcDatasetStore(repo_path=str(tmp_path / "datasets"), remote_url=str(tmp_path / "r"))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowRegistryResource(tracking_uri=tracking_uri)
    save_schema(DEMO_SCHEMA, tmp_path / "schema.json")
    production = ProductionSource(
        landing_dir=str(tmp_path / "landing"),
        quarantine_dir=str(tmp_path / "quarantine"),
        schema_path=str(tmp_path / "schema.json"),
    )

    train, holdout = STREAM.seed_sets()
    labels = _human(pd.concat([STREAM.batch(2), STREAM.batch(3)], ignore_index=True))
    # human labels: a gate-only share, a variant-selection share, the rest trained on
    gate_rows, selection = labels.iloc[::4], labels.iloc[1::4]
    more = labels.drop(labels.index[::4]).drop(labels.index[1::4])
    frames = {
        "holdout": canonical_dataset(holdout, DEMO_SCHEMA),
        "human_holdout": canonical_dataset(gate_rows, DEMO_SCHEMA),
        "selection": canonical_dataset(selection, DEMO_SCHEMA),
    }
    old = store.commit(
        frames={"training": merge_labelled(train, more.iloc[:150], DEMO_SCHEMA), **frames},
        message="seed + first human labels",
    )
    new = store.commit(
        frames={"training": merge_labelled(train, more, DEMO_SCHEMA), **frames},
        message="seed + all human labels",
    )
    assert old.md5 != new.md5

    # the candidate, as the pipeline trains and logs it, on the *older* version
    # an entered instance: Dagster's definitions loader reads the state storage of the
    # instance in context, which must be a live one whatever earlier tests left behind
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [_dataset_asset(old), candidate_model],
            resources={"dataset_store": store, "registry": registry, "production": production},
            run_config=RUN_CONFIG,
            instance=instance,
        )
    assert result.success
    candidate = result.output_for_node("candidate_model")
    logged = MlflowClient(tracking_uri=tracking_uri).get_run(candidate.run_id).data.metrics

    # reproduce it from what the model version records: parameters and md5-checked rows
    lineage = trace(registry, version=candidate.version)
    assert lineage.dataset_version == old.version_id
    assert lineage.params["max_iter"] == 30 and lineage.params["seed"] == 3
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", store.repo_path, str(clone))
    assert not (clone / ".dvc" / "cache").exists()
    cloned = DvcDatasetStore(repo_path=str(clone), remote_url=store.remote_url)
    project = _project_copy(tmp_path / "project", dict(lineage.params))
    restore_rows(cloned, lineage, project / "data")
    save_schema(DEMO_SCHEMA, project / "data" / "schema.json")
    needed = {d for s in _dvc_stages().values() for d in s["deps"] if d.startswith("data/")}
    assert {d for d in needed if not (project / d).exists()} == set()

    first = _run(project, "dvc", "repro")
    assert "Running stage 'train'" in first.stdout and "Running stage 'evaluate'" in first.stdout
    models = project / "models"
    reproduced = json.loads((models / "eval_metrics.json").read_text(encoding="utf-8"))

    # every held-out frame the run logged is reproduced, figure by figure, to the bit
    logged_frames = {k.split(".")[1] for k in logged if k.startswith("heldout.")}
    assert set(reproduced) == logged_frames == {"holdout", "human_holdout"}
    for frame, figures in reproduced.items():
        keys = {_metric_key(f"heldout.{frame}.{k}"): k for k in figures}
        assert set(keys) == {k for k in logged if k.startswith(f"heldout.{frame}.")}, frame
        differ = {
            k: (figures[name], logged[k])
            for k, name in keys.items()
            if not _same(figures[name], logged[k])
        }
        assert differ == {}, f"{frame}: dvc repro vs MLflow {differ}"
    assert reproduced["human_holdout"]["n_rows"] == len(frames["human_holdout"])
    assert logged["heldout.human_holdout.n_rows"] == len(frames["human_holdout"])

    # so are the training metrics (the chosen variant's figures among them)
    trained = json.loads((models / "train_metrics.json").read_text(encoding="utf-8"))
    assert trained, "the train stage wrote no metrics"
    keys = {_metric_key(k): k for k in trained}
    assert set(keys) - set(logged) == set()
    differ = {
        k: (trained[name], logged[k])
        for k, name in keys.items()
        if not _same(trained[name], logged[k])
    }
    assert differ == {}, f"train metrics: dvc repro vs MLflow {differ}"

    before = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    second = _run(project, "dvc", "repro")
    assert "Running stage" not in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == before
    assert "up to date" in _run(project, "dvc", "status").stdout
