"""End to end: weekly cycles of the whole flywheel through real Dagster runs.

Real everything: a Label Studio server (the session fixture), MLflow on SQLite, a DVC
repository with a local remote, Evidently, and a Dagster instance on disk. The sensors
and the schedule are evaluated as the daemon would, and the runs they request execute.
"""

import hashlib
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from label_studio_sdk import LabelStudio

from hitl_pipeline.cli import main as cli
from hitl_pipeline.core.types import ITEM_ID, LABEL_SOURCE
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.demo.runner import DemoOptions, HeadlessLoop, load_definitions
from hitl_pipeline.resources.mlflow_registry import TAG_DATASET_VERSION
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.fixtures.demo_loop import run_reviewed_demo

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]

CYCLES = 3
DRIFT_AT = 2


@pytest.fixture(scope="module")
def loop(tmp_path_factory, label_studio):
    """Run the demo loop once for the module; tests inspect what it left behind."""
    home = tmp_path_factory.mktemp("hitl-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HITL_HOME", str(home))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.setenv("HITL_LABEL_STUDIO_URL", label_studio.url)
        env.setenv("HITL_LABEL_STUDIO_API_KEY", label_studio.token)
        settings = Settings.from_env()
        options = DemoOptions(cycles=CYCLES, rows_per_batch=400, drift_at_batch=DRIFT_AT)
        summary = run_reviewed_demo(settings, options)
        yield settings, summary


@pytest.fixture(scope="module")
def dagster(loop) -> tuple[dg.Definitions, dg.DagsterInstance]:
    """The loop's definitions and the Dagster instance they were loaded against (kept
    alive for the module)."""
    instance = dg.DagsterInstance.get()
    return load_definitions(instance), instance


def test_every_cycle_scored_and_the_sensors_runs_executed(loop):
    _, summary = loop
    cycles = summary["cycles"]
    assert len(cycles) == CYCLES
    assert all(c["score_run_ok"] and c["rows_scored"] > 0 for c in cycles)
    triggers = {(r["job"], r["trigger"]) for c in cycles for r in c["runs"]}
    assert ("score_batch_job", "new_batch") in triggers  # landing sensor
    assert ("drift_review_job", "drift_alert") in triggers  # drift sensor
    assert any(
        t in triggers
        for t in [("collect_labels_job", "annotations"), ("retrain_job", "drift_early_retrain")]
    )
    drifted = [c for c in cycles if c["cycle"] >= DRIFT_AT]
    assert all(c["drift_detected"] for c in drifted)
    assert not cycles[0]["drift_detected"]
    for cycle in cycles:
        assert cycle["tasks_pushed"] > 0
        assert cycle["annotations_submitted"] >= cycle["tasks_pushed"]
        assert sum(cycle["routed_by_reason"].values()) >= cycle["rows_scored"]


def test_registry_champion_trained_on_human_labels(loop):
    settings, summary = loop
    resources = build_resources(settings)
    registry, store = resources["registry"], resources["dataset_store"]
    assert len(registry.list_versions()) >= 2
    champion = registry.champion()
    assert champion is not None and champion.version != summary["baseline_model_version"]
    data = store.load(version_id=champion.tags["hitl.dataset_version"])
    assert (data["label_source"] == "human").sum() > 0


def test_dataset_versions_restore_byte_identically(loop, tmp_path):
    settings, _ = loop
    store = build_resources(settings)["dataset_store"]
    versions = store.list_versions()
    assert len(versions) >= 2
    first = versions[0]
    restored = store.restore(version_id=first.version_id, dest=tmp_path / "v1.parquet")
    assert hashlib.md5(restored.read_bytes()).hexdigest() == first.md5
    assert first.md5 != versions[-1].md5


def test_label_studio_holds_tasks_with_predictions_and_annotations(loop, label_studio):
    settings, summary = loop
    ls = build_resources(settings)["label_studio"]
    by_tier = ls.queue_status_by_tier()
    pushed = sum(c["tasks_pushed"] for c in summary["cycles"])
    routed = [status for tier, status in by_tier.items() if tier != "adjudication"]
    assert sum(s.total_tasks for s in routed) == pushed
    assert sum(s.finished_tasks for s in routed) == pushed
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    queues = [
        p
        for p in client.projects.list()
        if p.title.startswith(ls.project_title) and "adjudication" not in p.title
    ]
    predictions = [pred for p in queues for pred in client.predictions.list(project=p.id)]
    assert len(predictions) == pushed
    assert all(p.model_version and p.score is not None for p in predictions)
    annotations = ls.pull_annotations()
    assert {a.model_version for a in annotations} <= {str(v) for v in summary["registry_versions"]}


def _dataset_frames(store, version_id: str) -> dict[str, pd.DataFrame]:
    """Every frame of a dataset version (training, held-out, selection, edge cases...)."""
    (version,) = [v for v in store.list_versions() if v.version_id == version_id]
    return {
        Path(path).stem: store.load(version_id=version_id, name=Path(path).stem)
        for path in version.files
    }


def test_retrained_champion_beats_the_never_retrained_model_on_a_batch_it_never_saw(loop, dagster):
    settings, summary = loop
    _, instance = dagster
    resources = build_resources(settings)
    registry, store = resources["registry"], resources["dataset_store"]
    last = summary["cycles"][-1]
    # the model that scored the last batch, as the scoring run recorded it (the first
    # scoring of that partition: a later test re-scores it after a rollback)
    scored = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("predictions"), asset_partitions=[last["partition"]]
        ),
        limit=10,
    ).records
    serving = str(scored[-1].asset_materialization.metadata["model_version"].value)
    assert serving != summary["baseline_model_version"], "no retrained model scored it"
    # it was trained (and gated) before any label of this batch existed: no row of the
    # batch is in any frame of its dataset version
    batch_ids = set(
        pd.read_parquet(settings.landing / f"{last['partition']}.parquet")[ITEM_ID].astype(str)
    )
    dataset = registry.get_version(version=serving).tags[TAG_DATASET_VERSION]
    seen = {
        name: batch_ids & set(frame[ITEM_ID].astype(str))
        for name, frame in _dataset_frames(store, dataset).items()
    }
    assert all(not overlap for overlap in seen.values()), seen
    # on that batch's ground truth, it beats the first model
    accuracy = last["accuracy"]
    assert accuracy["champion_at_scoring"] > accuracy["never_retrained"]


def test_time_to_loop_close_is_last_label_to_serving(loop, dagster):
    """Loop health's time-to-loop-close, checked against Label Studio's own timestamps."""
    settings, summary = loop
    _, instance = dagster
    resources = build_resources(settings)
    registry, store = resources["registry"], resources["dataset_store"]
    event = instance.get_latest_materialization_event(dg.AssetKey("loop_metrics"))
    reported = event.asset_materialization.metadata["time_to_loop_close_s"].value
    promoted = [e for e in registry.champion_history() if e.action == "promote"]
    assert promoted, "no promotion in the demo: nothing closed the loop"
    latest = promoted[-1]
    # the human labels that champion learnt from (or was gated on), and when people
    # submitted them in Label Studio
    frames = _dataset_frames(
        store, registry.get_version(version=latest.version).tags[TAG_DATASET_VERSION]
    )
    human_ids = {
        item
        for frame in frames.values()
        if LABEL_SOURCE in frame
        for item in frame.loc[frame[LABEL_SOURCE] == "human", ITEM_ID].astype(str)
    }
    annotations = resources["label_studio"].pull_annotations()
    # a second reviewer's or an adjudicator's answer on one of these items can come
    # after the promotion (a later cycle): only answers the champion could have had count
    serving_since = datetime.fromisoformat(latest.at)
    completed = [
        a.completed_at
        for a in annotations
        if a.item_id in human_ids and a.completed_at <= serving_since
    ]
    assert completed
    expected = (serving_since - max(completed)).total_seconds()
    assert reported == pytest.approx(expected, abs=1.0)
    assert 0 < reported < summary["wall_seconds"]


def test_rerun_of_a_push_creates_no_duplicates(loop, dagster):
    settings, summary = loop
    drifted = next(c for c in summary["cycles"] if c["cycle"] == DRIFT_AT)
    request = dg.RunRequest(job_name="drift_review_job", partition_key=drifted["partition"])
    # the first re-run routes with today's threshold (re-fitted after later promotions),
    # so it may select items the original run did not; those get one task each
    first = HeadlessLoop(settings, *dagster).execute(request)
    again = HeadlessLoop(settings, *dagster).execute(request)
    assert first.success and again.success
    push = again.outputs["labeling_tasks"]
    assert push.created == 0 and push.already_present > 0
    by_tier = build_resources(settings)["label_studio"].queue_status_by_tier()
    routed = sum(s.total_tasks for tier, s in by_tier.items() if tier != "adjudication")
    pushed = sum(c["tasks_pushed"] for c in summary["cycles"])
    assert routed == pushed + first.outputs["labeling_tasks"].created


def test_rollback_moves_champion_back_and_inference_uses_it(loop, dagster, capsys):
    settings, summary = loop
    registry = build_resources(settings)["registry"]
    before = registry.champion()
    assert cli(["rollback", "--reason", "e2e test", "--actor", "pytest"]) == 0
    after = registry.champion()
    assert after is not None and after.version != before.version
    assert f"-> v{after.version}" in capsys.readouterr().out
    record = HeadlessLoop(settings, *dagster).execute(
        dg.RunRequest(job_name="score_batch_job", partition_key=summary["cycles"][-1]["partition"])
    )
    scores = record.outputs["predictions"]
    assert set(scores["model_version"]) == {after.version}
    # the replaced champion stays loadable
    previous = registry.load_model(ref=registry.get_version(version=before.version))
    assert previous.predict_proba(scores[list(previous.feature_names_in_)]).shape[0] == len(scores)
