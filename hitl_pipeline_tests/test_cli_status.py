"""``hitl-pipeline status`` and ``rollback --show`` as a person runs them: in their own
process (in-process, DVC would bind its log handler to pytest's captured output), on a home
in tmp_path, with Label Studio pointed at a port where nothing listens.

Real stores: the home's MLflow SQLite registry with champions trained, gated and promoted
through the real assets, its Dagster instance, its DVC repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.demo.runner import use_home
from hitl_pipeline.resources.label_studio_server import free_port
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.faults.retrain import prepare_home, retrain, run_config

COMMAND = str(Path(sys.executable).with_name("hitl-pipeline"))


def _env(home: Path, dead_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HITL_") and k not in ("DAGSTER_HOME",)
    }
    return {**env, "HITL_HOME": str(home), "HITL_LABEL_STUDIO_URL": dead_url}


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def _lines(out: str) -> dict[str, str]:
    """``label: text`` lines by label (the title line has none)."""
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {label.strip(): text.strip() for label, text in pairs}


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home whose registry holds v1 (first champion) and v2 (promoted over it)."""
    home = tmp_path_factory.mktemp("loop")
    settings = Settings.from_env({"HITL_HOME": str(home)})
    with pytest.MonkeyPatch.context() as patch:
        for key in ("HITL_HOME", "DAGSTER_HOME", "HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
            patch.delenv(key, raising=False)
        patch.setenv("HITL_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # undone after use_home
        versions = prepare_home(settings)
        resources = build_resources(settings)
        use_home(settings)
        with dg.DagsterInstance.get() as instance:
            for seed in (0, 1):
                result = retrain(resources, versions["clean"], run_config(seed), instance)
                assert result.success
        assert resources["registry"].champion().version == "2"
    yield home


def test_status_of_an_empty_home_creates_nothing(tmp_path: Path, dead_url: str) -> None:
    home = tmp_path / "never-used"
    code, out = _run(_env(home, dead_url), "status")
    assert code == 0, out
    lines = _lines(out)
    assert lines["champion"] == "none yet: the first retrain trains one from the seed data"
    assert lines["last drift"] == "no batch checked yet"
    assert lines["queue"] == f"Label Studio not reachable at {dead_url}"
    assert lines["labels pending"] == (
        "unknown while Label Studio cannot be asked; ledger holds 0 annotation(s)"
    )
    assert lines["last gate"] == "no candidate judged yet"
    assert lines["next retrain"].endswith(
        "would retrain: no champion yet: train the first model from the seed data"
    )
    assert " 06:00 UTC (in " in lines["next retrain"]  # Mondays 06:00 UTC
    assert lines["last runs"] == "none yet"
    assert not home.exists()  # no MLflow schema, no Dagster instance, no folder


def test_status_with_a_champion(champion_home: Path, dead_url: str) -> None:
    code, out = _run(_env(champion_home, dead_url), "status")
    assert code == 0, out
    lines = _lines(out)
    champion = lines["champion"]
    assert champion.startswith("v2; accuracy ")
    assert "% on holdout, " in champion and "% on human_holdout" in champion
    assert "trained on dataset-v0001; champion since " in champion
    assert champion.endswith("promoted by the gate")
    assert lines["last gate"].startswith("v2 against v1: promoted; ")
    assert lines["queue"] == f"Label Studio not reachable at {dead_url}"
    assert "last training " in lines["next retrain"]
    assert lines["next retrain"].endswith("would skip: no new human labels since the last training")

    code, raw = _run(_env(champion_home, dead_url), "status", "--json")
    assert code == 0, raw
    facts = json.loads(raw)
    assert facts["champion"]["version"] == "2"
    assert set(facts["champion"]["accuracy"]) == {"holdout", "human_holdout"}
    assert facts["gate"]["compared_with"] == "1" and facts["gate"]["promote"] is True
    assert facts["queue"] == {"unavailable": f"Label Studio not reachable at {dead_url}"}
    assert facts["last_training_at"] is not None


def test_rollback_shows_both_champions_then_rolls_back(champion_home: Path, dead_url: str):
    env = _env(champion_home, dead_url)
    code, shown = _run(env, "rollback", "--show")
    assert code == 0, shown
    lines = _lines(shown)
    assert lines["champion"].startswith("v2; accuracy ")
    assert lines["previous champion"].startswith("v1; accuracy ")
    assert 'to put v1 back: hitl-pipeline rollback --reason "why, for the record"' in shown

    code, bare = _run(env, "rollback")  # no reason: the same page, and nothing moved
    assert code == 2
    assert _lines(bare)["champion"].startswith("v2; ") and "to put v1 back" in bare

    code, done = _run(env, "rollback", "--reason", "v2 mislabels churn", "--actor", "ana")
    assert code == 0, done
    lines = _lines(done)
    assert done.startswith("champion: v2 -> v1 (ana: v2 mislabels churn)")
    assert lines["now champion"].startswith("v1; accuracy ")
    assert lines["now champion"].endswith("rolled back by ana: v2 mislabels churn")
    assert lines["was champion"].startswith("v2; accuracy ")

    code, out = _run(env, "status")
    assert code == 0, out
    assert _lines(out)["champion"].endswith("rolled back by ana: v2 mislabels churn")
    # the newest gate decision is still v2's, which passed but no longer serves
    assert _lines(out)["last gate"].startswith("v2 against v1: passed (not champion now); ")


def test_status_names_match_the_definitions() -> None:
    """``status`` spells the asset, check and job names out to stay light: pin them."""
    from hitl_pipeline import status
    from hitl_pipeline.defs import automation
    from hitl_pipeline.defs.s03_monitoring import NO_DRIFT_CHECK, drift_report
    from hitl_pipeline.defs.s08_training import candidate_model
    from hitl_pipeline.defs.s10_loop_health import loop_metrics

    assert status.DRIFT_CHECK == NO_DRIFT_CHECK
    assert drift_report.key.to_user_string() == status.DRIFT_ASSET
    assert candidate_model.key.to_user_string() == status.CANDIDATE_ASSET
    assert loop_metrics.key.to_user_string() == status.HEALTH_ASSET
    assert status.TRIGGER_TAG == automation.TRIGGER_TAG
    jobs = (
        automation.score_batch_job,
        automation.drift_review_job,
        automation.collect_labels_job,
        automation.retrain_job,
    )
    assert set(status.JOBS) == {job.name for job in jobs}
    assert automation.weekly_retrain_schedule.cron_schedule == "0 6 * * 1"
