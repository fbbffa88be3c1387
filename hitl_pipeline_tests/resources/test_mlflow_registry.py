"""MlflowRegistryResource against a real MLflow store: SQLite plus a local artifact folder.

One store per module (its first set-up takes seconds); the tests that change aliases use
their own registered model name, so they do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hitl_pipeline.core.types import DatasetVersion, GateDecision, ModelRef
from hitl_pipeline.resources import mlflow_registry
from hitl_pipeline.resources.mlflow_registry import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    TAG_CODE_VERSION,
    TAG_DATASET_MD5,
    TAG_DATASET_VERSION,
    MlflowRegistryResource,
)

X = pd.DataFrame(
    {"x1": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], "x2": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5]}
)
Y = ["neg", "neg", "neg", "pos", "neg", "pos", "pos", "pos"]


def _model(c: float) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c)).fit(X, Y)


def _some(ref: ModelRef | None) -> ModelRef:
    assert ref is not None
    return ref


def _dataset(n: int) -> DatasetVersion:
    md5 = f"{n:032x}"
    return DatasetVersion(
        version_id=f"dataset-v{n:04d}",
        git_rev=f"{n:040x}",
        md5=md5,
        rows=len(X),
        path="data/training.parquet",
        files={"data/training.parquet": md5},
    )


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def _registry(store_dir: Path, model_name: str) -> MlflowRegistryResource:
    return MlflowRegistryResource(
        tracking_uri=f"sqlite:///{store_dir / 'mlflow.db'}",
        artifact_location=str(store_dir / "artifacts"),
        model_name=model_name,
    )


def _client(store_dir: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def two_candidates(
    store_dir: Path,
) -> tuple[MlflowRegistryResource, list[ModelRef], list[Any]]:
    registry = _registry(store_dir, "clf-logged")
    models = [_model(1.0), _model(0.05)]
    refs = [
        registry.log_candidate(
            model=model,
            params={"C": c, "features": ["x1", "x2"]},
            metrics={"accuracy": 0.75 + i / 10, "f1 per slice@a": 0.5},
            tags={"trigger": "test"},
            dataset=_dataset(i + 1),
            input_example=X.head(3),
        )
        for i, (model, c) in enumerate(zip(models, (1.0, 0.05), strict=True))
    ]
    return registry, refs, models


def test_log_candidate_records_run_model_and_version(
    two_candidates: tuple[MlflowRegistryResource, list[ModelRef], list[Any]], store_dir: Path
) -> None:
    registry, refs, _ = two_candidates
    assert [r.version for r in refs] == ["1", "2"]
    ref = refs[1]
    assert ref.name == "clf-logged" and ref.uri == "models:/clf-logged/2"
    assert ref.tags[TAG_DATASET_VERSION] == "dataset-v0002"
    assert ref.tags[TAG_DATASET_MD5] == _dataset(2).md5
    assert ref.tags["trigger"] == "test"
    assert ref.tags[TAG_CODE_VERSION]  # git commit of the checkout, or the package version

    run = _client(store_dir).get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.05"
    assert json.loads(run.data.params["features"]) == ["x1", "x2"]
    assert run.data.metrics["accuracy"] == pytest.approx(0.85)
    assert run.data.metrics["f1 per slice_a"] == 0.5  # '@' is not allowed in metric keys
    assert run.data.tags[TAG_DATASET_VERSION] == "dataset-v0002"
    assert run.data.tags[TAG_CODE_VERSION] == ref.tags[TAG_CODE_VERSION]

    # The artifacts sit in the configured folder, with explicit pinned requirements.
    model_dirs = list((store_dir / "artifacts").rglob("MLmodel"))
    assert len(model_dirs) == 2
    requirements = (model_dirs[0].parent / "requirements.txt").read_text(encoding="utf-8")
    assert f"scikit-learn=={__import__('sklearn').__version__}" in requirements
    assert "cloudpickle" in (model_dirs[0]).read_text(encoding="utf-8")

    assert registry.list_versions() == [registry.get_version(version="1"), refs[1]]
    with pytest.raises(KeyError):
        registry.get_version(version="99")


def test_load_model_returns_the_logged_model(
    two_candidates: tuple[MlflowRegistryResource, list[ModelRef], list[Any]],
) -> None:
    registry, refs, models = two_candidates
    mlflow_registry._MODEL_CACHE.clear()
    for ref, model in zip(refs, models, strict=True):
        loaded = registry.load_model(ref=ref)
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
        assert list(loaded.classes_) == ["neg", "pos"]
    assert not np.allclose(
        registry.load_model(ref=refs[0]).predict_proba(X),
        registry.load_model(ref=refs[1]).predict_proba(X),
    )
    # Cached per version: the second load is the same object.
    assert registry.load_model(ref=refs[0]) is registry.load_model(ref=refs[0])


def test_gate_decision_is_visible_in_the_run(
    two_candidates: tuple[MlflowRegistryResource, list[ModelRef], list[Any]],
    store_dir: Path,
    tmp_path: Path,
) -> None:
    registry, refs, _ = two_candidates
    decision = GateDecision(
        promote=False,
        reasons=("macro_f1 0.70 < champion 0.74 - 0.01", "slice 'b' regressed"),
        challenger_metrics={"macro_f1": 0.70, "ece": 0.05},
        champion_metrics={"macro_f1": 0.74},
        evaluated_rows=120,
    )
    registry.log_gate_decision(ref=refs[1], decision=decision)

    client = _client(store_dir)
    run = client.get_run(refs[1].run_id)
    assert run.data.tags["gate.promote"] == "false"
    assert "slice 'b' regressed" in run.data.tags["gate.reasons"]
    assert run.data.metrics["gate.promote"] == 0.0
    assert run.data.metrics["gate.evaluated_rows"] == 120
    assert run.data.metrics["gate.challenger.macro_f1"] == pytest.approx(0.70)
    assert run.data.metrics["gate.champion.macro_f1"] == pytest.approx(0.74)
    path = client.download_artifacts(refs[1].run_id, "gate/decision.json", str(tmp_path))
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    assert saved["promote"] is False and saved["evaluated_rows"] == 120
    assert saved["reasons"] == list(decision.reasons)
    assert registry.get_version(version="2").tags["gate.promote"] == "false"


def test_promote_and_rollback_keep_the_champion_chain(store_dir: Path) -> None:
    registry = _registry(store_dir, "clf-aliases")
    models = [_model(c) for c in (1.0, 0.3, 0.05)]
    v1, v2, v3 = (
        registry.log_candidate(
            model=m, params={"C": i}, metrics={}, tags={}, dataset=_dataset(i + 1)
        )
        for i, m in enumerate(models)
    )
    assert registry.champion() is None
    with pytest.raises(LookupError):
        registry.rollback(reason="nothing to go back to", actor="alice")

    assert registry.promote(ref=v1, reason="first model") is None
    assert _some(registry.champion()).version == "1"
    assert registry.promote(ref=v1, reason="re-run") is None  # already champion: no-op

    previous = registry.promote(ref=v2, reason="gate passed: +3% macro F1", actor="gate")
    assert previous is not None and previous.version == "1"
    assert previous.aliases == (PREVIOUS_CHAMPION,)
    assert previous.tags["champion.end_reason"] == "gate passed: +3% macro F1"
    champion = _some(registry.champion())
    assert champion.version == "2" and champion.aliases == (CHAMPION,)
    assert champion.tags["champion.by"] == "gate"
    assert champion.tags["champion.replaced_version"] == "1"
    # The previous champion stays loadable, by alias too.
    np.testing.assert_allclose(
        registry.load_model(ref=_some(registry.previous_champion())).predict_proba(X),
        models[0].predict_proba(X),
    )

    registry.promote(ref=v3, reason="weekly retrain")
    # Without --to: back to the previous champion; previous-champion walks back one more.
    restored = registry.rollback(reason="v3 misroutes policy items", actor="alice")
    assert restored.version == "2" and CHAMPION in restored.aliases
    assert _some(registry.previous_champion()).version == "1"
    v3_now = registry.get_version(version="3")
    assert v3_now.aliases == ()
    assert v3_now.tags["champion.ended_by"] == "alice"
    assert v3_now.tags["champion.ended_via"] == "rollback to version 2"
    assert restored.tags["champion.via"] == "rollback"
    assert restored.tags["champion.reason"] == "v3 misroutes policy items"
    assert "champion.until" not in restored.tags  # its earlier reign's end is cleared

    # With --to: any version, here the newest again.
    assert registry.rollback(to_version="3", reason="false alarm", actor="bob").version == "3"
    assert _some(registry.champion()).version == "3"
    assert _some(registry.previous_champion()).version == "2"  # what v3 replaced when promoted
    with pytest.raises(ValueError):
        registry.rollback(to_version="3", reason="again", actor="bob")
    with pytest.raises(KeyError):
        registry.rollback(to_version="42", reason="typo", actor="bob")

    history = registry.champion_history()
    assert [(e.action, e.version, e.from_version, e.actor) for e in history] == [
        ("promote", "1", None, "hitl-pipeline"),
        ("promote", "2", "1", "gate"),
        ("promote", "3", "2", "hitl-pipeline"),
        ("rollback", "2", "3", "alice"),
        ("rollback", "3", "2", "bob"),
    ]
    assert all(e.at.endswith("+00:00") for e in history)
    assert {r.version: r.aliases for r in registry.list_versions()} == {
        "1": (),
        "2": (PREVIOUS_CHAMPION,),
        "3": (CHAMPION,),
    }


def test_a_failed_log_marks_the_run_failed_and_registers_nothing(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = _registry(store_dir, "clf-failing")

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise TypeError("cannot pickle this model")

    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:////nonexistent/elsewhere.db"
    try:
        with pytest.raises(Exception, match="pickl"):  # MLflow wraps the TypeError
            registry.log_candidate(
                model=Unpicklable(), params={}, metrics={}, tags={}, dataset=_dataset(9)
            )
        # MLflow's process-global state is put back as it was, environment included.
        assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nonexistent/elsewhere.db"
        assert mlflow.get_tracking_uri() == "sqlite:////nonexistent/elsewhere.db"
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    client = _client(store_dir)
    experiment = client.get_experiment_by_name("hitl-pipeline")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`dataset.version_id` = 'dataset-v0009'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert registry.list_versions() == []
    assert registry.champion() is None


_RACE_SCRIPT = """
import sys, time
from pathlib import Path
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
uri, barrier = sys.argv[1], Path(sys.argv[2])
(barrier.parent / f"ready-{sys.argv[3]}").touch()
while not barrier.exists():  # start the set-up together, once both are imported
    time.sleep(0.01)
registry = MlflowRegistryResource(tracking_uri=uri)
assert registry.champion() is None and registry.list_versions() == []
"""


def test_concurrent_first_use_of_a_fresh_database(tmp_path: Path) -> None:
    """Two processes set up the same empty SQLite file at the same moment; both succeed.

    Without the set-up lock this fails (seen: "No such index" from MLflow's migrations).
    """
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"  # the folder does not exist yet
    barrier = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE_SCRIPT, uri, str(barrier), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    barrier.touch()
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e.name for e in client.search_experiments()]
    assert sorted(experiments) == ["Default", "hitl-pipeline"]
    experiment = client.get_experiment_by_name("hitl-pipeline")
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "db" / "mlartifacts").as_uri()


# --- links, sources, dataset inputs, reports ------------------------------------------------
@pytest.mark.parametrize(
    ("built", "expected"),
    [
        # the run page and an artifact opened in its artifact view (hash routes of the UI)
        (
            lambda: mlflow_registry.run_url("http://127.0.0.1:5000", "1", "abc"),
            "http://127.0.0.1:5000/#/experiments/1/runs/abc",
        ),
        (
            lambda: mlflow_registry.artifact_url(
                "http://h:5000/", "2", "r1", "drift/2026-01-05.html"
            ),
            "http://h:5000/#/experiments/2/runs/r1/artifacts/drift/2026-01-05.html",
        ),
        # a base given with the hash still makes one hash, and names are encoded
        (
            lambda: mlflow_registry.model_version_url("http://h:5000/#/", "hitl clf", "3"),
            "http://h:5000/#/models/hitl%20clf/versions/3",
        ),
        # the experiment opens in the "Model training" view, not the GenAI one
        (
            lambda: mlflow_registry.experiment_url("https://mlflow.example/", "7"),
            "https://mlflow.example/#/experiments/7/runs?workflowType=machine_learning",
        ),
        (
            lambda: mlflow_registry.dagster_run_url("http://127.0.0.1:3000/", "run-1"),
            "http://127.0.0.1:3000/runs/run-1",
        ),
    ],
)
def test_ui_urls(built: Any, expected: str) -> None:
    assert built() == expected


def test_the_candidate_run_links_its_dataset_and_its_dagster_run(store_dir: Path) -> None:
    registry = _registry(store_dir, "clf-linked").model_copy(
        update={"ui_url": "http://mlflow.test", "dagster_ui_url": "http://dagster.test"}
    )
    dataset = replace(
        _dataset(7),
        files={"data/training.parquet": "a" * 32, "data/holdout.parquet": "b" * 32},
    )
    ref = registry.log_candidate(
        model=_model(1.0),
        params={"C": 1.0},
        metrics={"accuracy": 0.8},
        tags={mlflow_registry.TAG_DAGSTER_RUN_ID: "dagster-run-7"},
        dataset=dataset,
        input_example=X.head(3),
    )
    client = _client(store_dir)
    run = client.get_run(ref.run_id)
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.source.name"] == "http://dagster.test/runs/dagster-run-7"
    assert tags[mlflow_registry.TAG_DAGSTER_RUN_URL] == "http://dagster.test/runs/dagster-run-7"
    assert "mlflow.source.name" not in ref.tags  # the source is the run's, not the version's

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"dataset-v0007", "dataset-v0007/holdout"}
    training = inputs["dataset-v0007"]
    assert training.dataset.digest == dataset.md5
    assert {t.key: t.value for t in training.tags}["mlflow.data.context"] == "training"
    source = json.loads(training.dataset.source)
    assert source == {
        "git_rev": dataset.git_rev,
        "path": dataset.path,
        "version_id": "dataset-v0007",
    }
    assert json.loads(training.dataset.profile) == {"num_rows": len(X)}
    assert "x1" in training.dataset.schema
    holdout = inputs["dataset-v0007/holdout"]
    assert holdout.dataset.digest == "b" * 32
    assert {t.key: t.value for t in holdout.tags}["mlflow.data.context"] == "evaluation"

    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert registry.run_link(ref) == (
        f"http://mlflow.test/#/experiments/{run.info.experiment_id}/runs/{ref.run_id}"
    )
    assert (
        registry.version_link(ref)
        == f"http://mlflow.test/#/models/clf-linked/versions/{ref.version}"
    )
    assert registry.experiment_link() == (
        f"http://mlflow.test/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning"
    )


def test_an_experiment_made_before_is_marked_as_model_training(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    old = client.create_experiment("older", artifact_location=(tmp_path / "a").as_uri())
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags

    registry = MlflowRegistryResource(tracking_uri=uri, experiment_name="older")
    registry.check()

    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_report_is_kept_as_an_artifact_of_a_finished_monitoring_run(store_dir: Path) -> None:
    registry = _registry(store_dir, "clf-reports").model_copy(
        update={"ui_url": "http://mlflow.test/"}
    )
    report = registry.log_report(
        kind="drift",
        name="2026-01-05",
        files={"2026-01-05.html": "<html>drift</html>"},
        dagster_run_id="dagster-run-9",
        metrics={"drift_share": 0.25},
    )
    client = _client(store_dir)
    run = client.get_run(report.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "drift-2026-01-05"
    assert run.data.metrics["drift_share"] == 0.25
    assert run.data.tags[mlflow_registry.TAG_DAGSTER_RUN_ID] == "dagster-run-9"
    experiment = client.get_experiment(report.experiment_id)
    assert experiment.name == "hitl-pipeline-monitoring"
    assert report.path == "drift/2026-01-05.html"
    stored = Path(client.download_artifacts(report.run_id, report.path, str(store_dir / "dl")))
    assert stored.read_text(encoding="utf-8") == "<html>drift</html>"
    assert report.url == (
        f"http://mlflow.test/#/experiments/{report.experiment_id}/runs/{report.run_id}"
        "/artifacts/drift/2026-01-05.html"
    )


def test_a_report_run_left_running_by_a_dead_dagster_run_is_failed(tmp_path: Path) -> None:
    registry = MlflowRegistryResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    registry.check()
    client = _client(tmp_path)
    monitoring = registry._experiment_id(registry.monitoring_experiment_name)
    run = client.create_run(monitoring, tags={mlflow_registry.TAG_DAGSTER_RUN_ID: "dead-run"})

    fixes = registry.fail_orphaned_runs(run_ended=lambda run_id: "failed")

    assert [f.object for f in fixes] == [f"run {run.info.run_id} ({run.info.run_name})"]
    assert client.get_run(run.info.run_id).info.status == "FAILED"
