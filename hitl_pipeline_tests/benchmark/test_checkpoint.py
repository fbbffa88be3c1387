"""An interrupted benchmark resumes: finished replays are loaded, the rest replayed.

Fast (a small logistic regression on a few hundred synthetic rows, no Evidently).
"""

import dataclasses
import math

import pandas as pd
import pytest

import hitl_pipeline.benchmark.replay as replay_module
from hitl_pipeline.benchmark.checkpoint import RUNS_FOLDER, ReplayStore, run_key
from hitl_pipeline.cli import main
from hitl_pipeline_tests.benchmark.test_replay import drifting_csv, small_config

# none, then default, least confidence and random at one budget, then the oracle
RUNS = 5
REPLAY = replay_module.replay


@pytest.fixture
def config(tmp_path):
    return small_config(drifting_csv(tmp_path), tmp_path / "out")


class Crash(Exception):
    """Stands for whatever stops a run half-way (a crash, a killed process)."""


class Replays:
    """Counts the replays that run, and stops the benchmark at the ``stop_at``-th."""

    def __init__(self, monkeypatch, stop_at=None):
        self.ran: list[str] = []
        self.stop_at = stop_at

        def counted(strategy, *args, **kwargs):
            if self.stop_at is not None and len(self.ran) + 1 == self.stop_at:
                raise Crash
            self.ran.append(strategy)
            return REPLAY(strategy, *args, **kwargs)

        monkeypatch.setattr(replay_module, "replay", counted)


def test_a_run_stopped_half_way_resumes_with_the_finished_replays_and_the_same_result(
    config, tmp_path, monkeypatch, capsys
):
    uninterrupted = replay_module.run_benchmark(dataclasses.replace(config, out=tmp_path / "one"))

    first = Replays(monkeypatch, stop_at=3)
    with pytest.raises(Crash):
        replay_module.run_benchmark(config)
    assert first.ran == ["none", "default"]
    kept = sorted(p.name for p in (config.out / RUNS_FOLDER).glob("*/*.json"))
    assert kept == ["default-0.1-0.json", "none-0-0.json"]

    second = Replays(monkeypatch)
    resumed = replay_module.run_benchmark(config)
    assert sorted(second.ran) == ["least_confidence", "oracle", "random"]
    assert "resuming: 2 of 5 replays" in capsys.readouterr().err
    # the loaded replays give exactly what replaying them gave
    pd.testing.assert_frame_equal(resumed.per_batch, uninterrupted.per_batch)
    pd.testing.assert_frame_equal(resumed.summary, uninterrupted.summary)

    third = Replays(monkeypatch)
    replay_module.run_benchmark(config)
    assert third.ran == []  # everything finished: nothing is replayed again


def test_fresh_or_another_setting_replays_everything(config, monkeypatch):
    replay_module.run_benchmark(config)

    fresh = Replays(monkeypatch)
    replay_module.run_benchmark(dataclasses.replace(config, fresh=True))
    assert len(fresh.ran) == RUNS

    changed = dataclasses.replace(
        config,
        settings=config.settings.with_overrides({"routing.confidence_threshold": 0.6}),
    )
    other = Replays(monkeypatch)
    replay_module.run_benchmark(changed)
    assert len(other.ran) == RUNS
    assert run_key(changed) != run_key(config)


def test_the_key_follows_the_data_and_settings_not_the_runs_asked_for(config, tmp_path):
    asked = dataclasses.replace(
        config,
        strategies=("default",),
        budgets=(0.1, 0.3),
        repeats=3,
        out=tmp_path / "elsewhere",
        progress=True,
        fresh=True,
    )
    assert run_key(asked) == run_key(config)
    before = run_key(config)
    text = config.data.read_text(encoding="utf-8")
    config.data.write_text(text.replace("up", "down", 1), encoding="utf-8")
    assert run_key(config) != before


def test_a_replay_file_cut_short_is_replayed_again(config):
    store = ReplayStore(config)
    store.folder.mkdir(parents=True)
    (store.folder / "none-0-0.json").write_text('[{"strategy": "none", "acc', encoding="utf-8")
    assert store.load("none", 0.0, 0) is None
    store.save("none", 0.0, 0, [{"strategy": "none", "accuracy": float("nan")}])
    loaded = store.load("none", 0.0, 0)
    assert loaded is not None
    assert loaded[0]["strategy"] == "none" and math.isnan(loaded[0]["accuracy"])
    assert not list(store.folder.glob("*.part"))  # written whole, then renamed


def test_ctrl_c_on_the_command_line_says_where_the_replays_are_and_how_to_resume(
    config, monkeypatch, capsys
):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(replay_module, "run_from_args", interrupted)
    argv = ["benchmark", "--data", str(config.data), "--target", "y", "--out", str(config.out)]

    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"finished replays are kept in {config.out / RUNS_FOLDER}" in err
    assert "the same command resumes" in err
