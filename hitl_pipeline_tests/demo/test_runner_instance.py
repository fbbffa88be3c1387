"""The loop's ``dagster.yaml``: run monitoring on, in new homes and in older ones.

Each case loads the written file as a real Dagster instance, so the keys are checked
against Dagster's own instance schema.
"""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from hitl_pipeline.demo.runner import (
    RUN_MONITORING,
    ensure_pool_limit,
    ensure_run_monitoring,
    use_home,
)
from hitl_pipeline.settings import Settings

OLDER_HOME = """\
# written by hand: keep
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 2"""  # no final newline


def _instance_settings(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings.from_env({"HITL_HOME": str(tmp_path / "home")})
    # use_home sets these two; monkeypatch puts back what was there before
    monkeypatch.setenv("HITL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    return settings


def test_a_new_home_gets_run_monitoring(settings: Settings) -> None:
    use_home(settings)

    with _instance_settings(settings.dagster_home) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 300
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
        # no "join the community" dialog over the UI on a newcomer's first visit
        assert not instance.nux_enabled


def test_an_older_home_gains_it_and_keeps_what_the_user_wrote(settings: Settings) -> None:
    config = settings.dagster_home / "dagster.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(OLDER_HOME, encoding="utf-8")

    use_home(settings)

    text = config.read_text(encoding="utf-8")
    assert text.startswith("# written by hand: keep\n")
    loaded = yaml.safe_load(text)
    assert loaded["concurrency"] == {
        "runs": {"max_concurrent_runs": 2},
        "pools": {"default_limit": 1},
    }
    assert loaded["run_monitoring"] == RUN_MONITORING
    with _instance_settings(settings.dagster_home) as instance:
        assert instance.run_monitoring_enabled
    assert not ensure_run_monitoring(config)  # once only
    assert config.read_text(encoding="utf-8") == text


def test_run_monitoring_the_user_configured_is_kept(tmp_path: Path) -> None:
    config = tmp_path / "dagster.yaml"
    own = "run_monitoring:\n  enabled: false\n"
    config.write_text(own, encoding="utf-8")

    assert not ensure_run_monitoring(config)
    assert config.read_text(encoding="utf-8") == own


def test_shared_state_steps_get_a_pool_limit_in_new_and_older_homes(
    settings: Settings, tmp_path: Path
) -> None:
    use_home(settings)
    with _instance_settings(settings.dagster_home) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

    own = tmp_path / "own.yaml"
    own.write_text("concurrency:\n    pools:\n        default_limit: 3\n", encoding="utf-8")
    assert not ensure_pool_limit(own)  # a limit the user chose is kept

    older = tmp_path / "older.yaml"
    older.write_text(OLDER_HOME, encoding="utf-8")
    assert ensure_pool_limit(older)
    assert yaml.safe_load(older.read_text(encoding="utf-8"))["concurrency"]["pools"] == {
        "default_limit": 1
    }
    assert not ensure_pool_limit(older)  # once only
