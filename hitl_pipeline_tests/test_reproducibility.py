"""``dvc repro`` on a restored dataset version reproduces the candidate's metrics exactly.

Real git, DVC and the ``hitl-pipeline`` console script, in ``tmp_path``: a dataset
repository with two versions and a local remote; a fresh ``git clone`` of it (no DVC
cache: the bytes come from the remote) restores the *older* version into a copy of the
project layout (``dvc.yaml``, ``params.yaml``, the training code it depends on); then
``dvc repro`` runs the ``train`` and ``evaluate`` stages as a subprocess. Its metrics
must equal, to the last bit, what the ``candidate_model`` asset's code path computes
in-process on the same version, and a second ``dvc repro`` must do nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hitl_pipeline.core.datasets import canonical_dataset, merge_labelled
from hitl_pipeline.core.gate import GatePolicy, recent_window
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.training import TrainingParams, evaluate_frames, train_model
from hitl_pipeline.core.types import LABEL_SOURCE, LABELLED_AT
from hitl_pipeline.demo.stream import DEMO_SCHEMA, EVENT_TIME, DriftingStream
from hitl_pipeline.resources.dvc_store import DvcDatasetStore

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's console scripts: dvc, hitl-pipeline
STREAM = DriftingStream(seed_train_rows=800, seed_holdout_rows=300)
EVAL_FRAMES = ("holdout", "human_holdout")


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


@pytest.fixture
def params() -> TrainingParams:
    # few rounds keep it fast; not the defaults, so params.yaml must really be read
    return TrainingParams(max_iter=30, learning_rate=0.2, seed=3)


def _project_copy(root: Path, params: TrainingParams) -> Path:
    """The parts of the project layout ``dvc repro`` needs, in a repository of its own."""
    root.mkdir()
    shutil.copyfile(PROJECT / "dvc.yaml", root / "dvc.yaml")
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for stage in stages.values():  # code dependencies, e.g. hitl_pipeline/core/training.py
        for dep in stage["deps"]:
            if dep.startswith("hitl_pipeline/"):
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(PROJECT / dep, root / dep)
    committed = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    assert set(committed["train"]) == set(params.to_dict())  # params.yaml mirrors the dataclass
    text = yaml.safe_dump({"train": params.to_dict()}, sort_keys=False)
    (root / "params.yaml").write_text(text, encoding="utf-8")
    _run(root, "git", "init", "-q")
    _run(root, "dvc", "init", "-q")
    return root


def test_dvc_repro_of_an_old_version_restored_from_a_fresh_clone_reproduces_metrics(
    tmp_path: Path, params: TrainingParams
) -> None:
    store = DvcDatasetStore(repo_path=str(tmp_path / "datasets"), remote_url=str(tmp_path / "r"))
    train, holdout = STREAM.seed_sets()
    labels = _human(pd.concat([STREAM.batch(2), STREAM.batch(3)]))
    recent, more = labels.iloc[::4], labels.drop(labels.index[::4])
    frames = {
        "holdout": canonical_dataset(holdout, DEMO_SCHEMA),
        "human_holdout": canonical_dataset(recent, DEMO_SCHEMA),
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

    # what the candidate_model asset computes for the old version, in-process (the human
    # weight chosen on the gate's window of the human held-out rows)
    window = recent_window(
        store.load(version_id=old.version_id, name="human_holdout"), GatePolicy()
    )
    result = train_model(
        store.load(version_id=old.version_id), DEMO_SCHEMA, params, select_on=window
    )
    assert "human_weight_used" in result.metrics  # the comparison did run
    expected = evaluate_frames(
        result.model,
        {name: store.load(version_id=old.version_id, name=name) for name in EVAL_FRAMES},
        DEMO_SCHEMA,
    )

    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", store.repo_path, str(clone))
    assert not (clone / ".dvc" / "cache").exists()
    cloned = DvcDatasetStore(repo_path=str(clone), remote_url=store.remote_url)
    project = _project_copy(tmp_path / "project", params)
    (project / "data").mkdir()
    for name in ("training", *EVAL_FRAMES):
        cloned.restore(version_id=old.version_id, dest=project / "data", name=name)
    save_schema(DEMO_SCHEMA, project / "data" / "schema.json")

    first = _run(project, "dvc", "repro")
    assert "Running stage 'train'" in first.stdout and "Running stage 'evaluate'" in first.stdout
    models = project / "models"
    reproduced = json.loads((models / "eval_metrics.json").read_text(encoding="utf-8"))
    assert reproduced == expected  # exact: same seed, same data, same code
    assert json.loads((models / "train_metrics.json").read_text(encoding="utf-8")) == dict(
        result.metrics
    )
    assert reproduced["human_holdout"]["n_rows"] == len(frames["human_holdout"])

    before = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    second = _run(project, "dvc", "repro")
    assert "Running stage" not in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == before
    assert "up to date" in _run(project, "dvc", "status").stdout
