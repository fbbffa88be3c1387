"""``--jobs N``: replays in worker processes give the records of one after another.

Small (a logistic regression on a few hundred synthetic rows, no Evidently); most of
each test is the fork server importing the benchmark once.
"""

import dataclasses

import pandas as pd
import pytest

import hitl_pipeline.benchmark.parallel as parallel_module
from hitl_pipeline.benchmark.checkpoint import RUNS_FOLDER, ReplayStore, run_key
from hitl_pipeline.benchmark.config import BenchmarkConfig
from hitl_pipeline.benchmark.parallel import ReplayFailed
from hitl_pipeline.benchmark.replay import run_benchmark
from hitl_pipeline.cli import main
from hitl_pipeline_tests.benchmark.test_replay import drifting_csv, small_config

# none, default and random at one budget, then the oracle; each twice
RUNS = 8


@pytest.fixture
def config(tmp_path):
    return small_config(
        drifting_csv(tmp_path),
        tmp_path / "one",
        strategies=("none", "random", "default"),
        repeats=2,
    )


def test_two_jobs_give_the_same_frames_as_one_replay_after_another(config, tmp_path):
    one = run_benchmark(config)
    two = run_benchmark(dataclasses.replace(config, out=tmp_path / "two", jobs=2))

    pd.testing.assert_frame_equal(two.per_batch, one.per_batch)
    pd.testing.assert_frame_equal(two.summary, one.summary)
    # the random baseline labelled as many items per batch as its default did
    labels = two.per_batch.groupby(["strategy", "repeat"])["labels"].apply(list)
    for repeat in range(2):
        assert labels[("random", repeat)] == labels[("default", repeat)]
    kept = sorted(p.name for p in (tmp_path / "two" / RUNS_FOLDER).glob("*/*.json"))
    assert len(kept) == RUNS


def test_jobs_leave_the_key_alone_and_a_run_with_two_loads_what_one_kept(
    config, monkeypatch, capsys
):
    assert run_key(dataclasses.replace(config, jobs=2)) == run_key(config)
    one = run_benchmark(config)
    kept = {p: p.stat().st_mtime_ns for p in ReplayStore(config).folder.glob("*.json")}
    assert len(kept) == RUNS

    def no_pool(*args, **kwargs):
        raise AssertionError("every replay was kept: no worker process is needed")

    monkeypatch.setattr(parallel_module, "ProcessPoolExecutor", no_pool)
    two = run_benchmark(dataclasses.replace(config, jobs=2))

    assert f"resuming: {RUNS} of {RUNS} replays" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # none replayed, none rewritten
    pd.testing.assert_frame_equal(two.per_batch, one.per_batch)


def test_a_replay_failing_in_a_worker_is_named_and_the_finished_ones_stay_kept(config):
    config = dataclasses.replace(config, repeats=1, jobs=2)
    store = ReplayStore(config)
    # a folder where the random replay's file goes: its worker fails to keep it
    (store.folder / "random-0.1-0.json").mkdir(parents=True)

    with pytest.raises(ReplayFailed, match=r"the replay of random at budget 0\.1, repeat 0"):
        run_benchmark(config)
    # the random replay starts only once its default has finished, so both are kept
    assert store.load("none", 0.0, 0) is not None
    assert store.load("default", 0.1, 0) is not None


def test_jobs_below_one_are_refused_with_what_they_mean(tmp_path, capsys):
    data = drifting_csv(tmp_path)
    argv = ["benchmark", "--data", str(data), "--target", "y", "--out", str(tmp_path / "out")]

    assert main([*argv, "--jobs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--jobs must be at least 1 (replays run in N worker processes), got 0" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="at least 1"):
        BenchmarkConfig(data=data, target="y", jobs=-1)
