"""Time-to-loop-close: the last label a champion learnt from, to the moment it serves."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hitl_pipeline.core.loop_health import loop_close_seconds

T = datetime(2026, 6, 8, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("labels_through", "serving_since", "expected"),
    [
        # nothing to measure: no human label yet, or never promoted
        (None, T, None),
        (T, None, None),
        (None, None, None),
        # minutes, to the second
        (T, T + timedelta(minutes=5, seconds=30), 330.0),
        # sub-second precision is kept
        (T, T + timedelta(milliseconds=250), 0.25),
        # a weekly schedule: the labels of Tuesday serve from Monday 06:00
        (T - timedelta(days=6), T.replace(hour=6), 6 * 86400 - 4 * 3600.0),
        # instants in different time zones are compared as instants (12:00+02:00 is 10:00Z)
        (T, datetime(2026, 6, 8, 12, 0, tzinfo=timezone(timedelta(hours=2))), 0.0),
        (datetime(2026, 6, 8, 9, 0, tzinfo=timezone(timedelta(hours=-1))), T, 0.0),
    ],
)
def test_loop_close_seconds(labels_through, serving_since, expected):
    assert loop_close_seconds(labels_through, serving_since) == expected
