"""Splitting a run's wall time: plain timestamps in, parts out; no Dagster involved."""

import pytest

from hitl_pipeline.core.run_timing import RunTimes, breakdown, covered, per_job, render


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([], 0.0),
        ([(0, 2)], 2.0),
        ([(0, 2), (3, 4)], 3.0),  # disjoint: added
        ([(0, 4), (1, 2)], 4.0),  # nested: counted once
        ([(0, 3), (2, 5)], 5.0),  # overlapping parallel steps
        ([(2, 5), (0, 3)], 5.0),  # order does not matter
    ],
)
def test_covered_counts_overlap_once(intervals, expected):
    assert covered(intervals) == pytest.approx(expected)


def run(**overrides):
    values = dict(
        run_id="r",
        job="score_batch_job",
        created=100.0,
        launched=110.0,  # 10 s in the queue
        started=116.0,  # 6 s to start the worker
        ended=146.0,
        steps=((117.0, 127.0), (130.0, 140.0)),  # 20 s inside steps
    )
    return RunTimes(**{**values, **overrides})


@pytest.mark.parametrize(
    ("overrides", "parts"),
    [
        # total, queued, startup, steps, orchestration
        ({}, (46, 10, 6, 20, 10)),
        # run executed in the calling process: no launch, no queue
        ({"launched": None, "started": None}, (46, 0, 0, 20, 26)),
        # two steps in parallel (multiprocess executor) count once
        ({"steps": ((117.0, 137.0), (120.0, 140.0))}, (46, 10, 6, 23, 7)),
        # a step outside the run's own span (clock skew) is clipped to it
        ({"steps": ((90.0, 120.0),)}, (46, 10, 6, 4, 26)),
    ],
)
def test_breakdown_parts_add_up(overrides, parts):
    split = breakdown(run(**overrides))
    got = (split.total, split.queued, split.startup, split.steps, split.orchestration)
    assert got == pytest.approx(parts)
    assert split.queued + split.startup + split.steps + split.orchestration == pytest.approx(
        split.total
    )
    assert split.overhead == pytest.approx(split.startup + split.orchestration)


def test_per_job_takes_medians_and_the_overhead_share():
    runs = [
        breakdown(run(run_id="a")),
        breakdown(run(run_id="b", ended=166.0)),  # 30 s more orchestration
        breakdown(run(run_id="c", ended=156.0)),
        breakdown(run(run_id="d", job="retrain_job")),
    ]
    score, retrain = per_job(runs)
    assert (score.job, score.runs, retrain.job, retrain.runs) == (
        "score_batch_job",
        3,
        "retrain_job",
        1,
    )
    assert score.orchestration == pytest.approx(20.0)  # median of 10, 30, 20
    assert retrain.overhead_share == pytest.approx(16 / 36)  # (6 + 10) / (6 + 20 + 10)
    table = render([score, retrain])
    assert "score_batch_job" in table and "44%" in table
