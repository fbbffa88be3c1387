"""When the sensors and the schedule start runs: one row per cursor scenario."""

from datetime import UTC, datetime

import pytest

from hitl_pipeline.core.triggers import (
    AnnotationAction,
    LandedBatch,
    annotation_action,
    batches_to_score,
    retrain_due,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("landed", "seen", "expected_todo", "expected_cursor"),
    [
        # first tick: everything is new
        ([("2026-06-01", "a")], {}, ["2026-06-01"], {"2026-06-01": "a"}),
        # nothing new
        ([("2026-06-01", "a")], {"2026-06-01": "a"}, [], {"2026-06-01": "a"}),
        # a corrected file replaces the bad one: scored again
        ([("2026-06-01", "b")], {"2026-06-01": "a"}, ["2026-06-01"], {"2026-06-01": "b"}),
        # one old, one new
        (
            [("2026-06-01", "a"), ("2026-06-08", "c")],
            {"2026-06-01": "a"},
            ["2026-06-08"],
            {"2026-06-01": "a", "2026-06-08": "c"},
        ),
        # a file removed from the landing folder is not forgotten (no re-run if it returns)
        ([], {"2026-06-01": "a"}, [], {"2026-06-01": "a"}),
    ],
)
def test_batches_to_score(landed, seen, expected_todo, expected_cursor):
    todo, cursor = batches_to_score([LandedBatch(p, f) for p, f in landed], seen)
    assert [b.partition_key for b in todo] == expected_todo
    assert cursor == expected_cursor


@pytest.mark.parametrize(
    ("latest", "last_seen", "pending", "drift", "expected"),
    [
        (None, None, 0, False, AnnotationAction.NOTHING),  # nobody annotated anything yet
        (T0, T0, 0, True, AnnotationAction.NOTHING),  # nothing since the last tick
        (T1, T0, 5, False, AnnotationAction.COLLECT),  # new labels, queue still open
        (T1, None, 0, False, AnnotationAction.COLLECT),  # queue done, but no drift: weekly
        (T1, T0, 3, True, AnnotationAction.COLLECT),  # drift, but people are not done yet
        (T1, T0, 0, True, AnnotationAction.EARLY_RETRAIN),  # drift and the queue is done
    ],
)
def test_annotation_action(latest, last_seen, pending, drift, expected):
    action = annotation_action(
        latest_completed_at=latest,
        last_seen=last_seen,
        pending_tasks=pending,
        drift_outstanding=drift,
    )
    assert action is expected


@pytest.mark.parametrize(
    ("has_champion", "latest", "trained", "due"),
    [
        (False, None, None, True),  # bootstrap
        (True, None, T0, False),  # no labels at all
        (True, T1, T0, True),  # labels since the last training
        (True, T0, T1, False),  # trained after the last label
        (True, T0, None, True),  # labels, never trained in this instance
    ],
)
def test_retrain_due(has_champion, latest, trained, due):
    why = retrain_due(
        has_champion=has_champion, latest_annotation_at=latest, last_training_at=trained
    )
    assert (why is not None) is due
