"""``hitl-pipeline status``: gathered facts turned into lines and JSON (pure, no store)."""

from datetime import UTC, datetime, timedelta

import pytest

from hitl_pipeline.core.status import (
    ChampionFacts,
    DriftFacts,
    GateFacts,
    LedgerFacts,
    StatusFacts,
    Unavailable,
    ago,
    champion_line,
    drift_line,
    gate_line,
    pending_labels_line,
    queue_line,
    retrain_line,
    shorten,
    status_json,
    status_lines,
    unpulled,
    when,
)
from hitl_pipeline.core.types import QueueStatus

NOW = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
MONDAY = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
EMPTY_LEDGER = LedgerFacts(annotations=0, answered_tasks={}, latest_completed_at=None)


def minutes(n: float) -> datetime:
    return NOW - timedelta(minutes=n)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=45), "45 s"),
        (timedelta(minutes=12, seconds=59), "12 min"),
        (timedelta(hours=3), "3 h"),
        (timedelta(hours=3, minutes=5), "3 h 5 min"),
        (timedelta(days=2), "2 d"),
        (timedelta(days=4, hours=23, minutes=30), "4 d 23 h"),  # minutes dropped past a day
        (timedelta(minutes=-90), "1 h 30 min"),  # the sign is said by when()
    ],
)
def test_ago(delta, text):
    assert ago(delta) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (minutes(12), "2026-12-02 06:18 UTC (12 min ago)"),
        (MONDAY, "2026-12-07 06:00 UTC (in 4 d 23 h)"),
        ("2026-12-02T06:18:52+00:00", "2026-12-02 06:18 UTC (11 min ago)"),  # a registry tag
        (None, "unknown"),
    ],
)
def test_when(moment, text):
    assert when(moment, NOW) == text


@pytest.mark.parametrize(
    ("queue", "text"),
    [
        ({}, "no review project in Label Studio yet"),
        (
            {"general": QueueStatus(300, 300, None), "adjudication": QueueStatus(7, 1, None)},
            "6 of 307 tasks waiting for a reviewer (adjudication 6/7, general 0/300)",
        ),
    ],
)
def test_queue_line(queue, text):
    assert queue_line(queue) == text


@pytest.mark.parametrize(
    ("finished", "answered", "expected"),
    [
        ({"general": 10}, {"general": 10}, {}),  # all pulled
        ({"general": 10}, {"general": 7}, {"general": 3}),
        ({"general": 10, "expert": 2}, {}, {"general": 10, "expert": 2}),  # nothing pulled yet
        ({"general": 5}, {"general": 6}, {}),  # a task deleted after its pull: never negative
    ],
)
def test_unpulled_compares_answered_tasks_per_queue(finished, answered, expected):
    queue = {tier: QueueStatus(20, n, None) for tier, n in finished.items()}
    ledger = LedgerFacts(annotations=99, answered_tasks=answered, latest_completed_at=None)
    assert unpulled(queue, ledger) == expected


@pytest.mark.parametrize(
    ("finished", "newest", "answered", "last", "text"),
    [
        (
            3,
            minutes(3),
            1,
            minutes(11),
            "2 answered task(s) in Label Studio not pulled yet (general 2; newest answer "
            "2026-12-02 06:27 UTC (3 min ago)): run collect_labels_job (the annotation sensor "
            "starts it while the daemon runs); ledger holds 5 annotation(s), newest 2026-12-02 "
            "06:19 UTC (11 min ago)",
        ),
        (
            # same number of tasks, but an answer newer than anything in the ledger (edited)
            3,
            minutes(3),
            3,
            minutes(11),
            "answers changed since the last pull (newest 2026-12-02 06:27 UTC (3 min ago)); "
            "ledger holds 5 annotation(s), newest 2026-12-02 06:19 UTC (11 min ago)",
        ),
        (
            3,
            minutes(11),
            3,
            minutes(11),
            "none; ledger holds 5 annotation(s), newest 2026-12-02 06:19 UTC (11 min ago)",
        ),
        (0, None, 0, None, "none; ledger holds 5 annotation(s)"),
    ],
)
def test_pending_labels_line(finished, newest, answered, last, text):
    queue = {"general": QueueStatus(10, finished, newest)}
    ledger = LedgerFacts(
        annotations=5, answered_tasks={"general": answered}, latest_completed_at=last
    )
    assert pending_labels_line(queue, ledger, NOW) == text


@pytest.mark.parametrize(
    ("gate", "text"),
    [
        (
            GateFacts("3", True, "better on recent rows", "none", "1", is_champion=True),
            "v3 against v1: promoted; better on recent rows",
        ),
        (
            # passed, but a later promotion or a rollback moved the alias on
            GateFacts("3", True, "better", "none", "1", is_champion=False),
            "v3 against v1: passed (not champion now); better",
        ),
        (
            GateFacts("4", False, "worse on slice x", "slice[x]", "3", is_champion=False),
            "v4 against v3: refused, failed slice[x]; worse on slice x",
        ),
        (
            GateFacts("1", True, "", "none", None, is_champion=True),
            "v1 against no champion: promoted; no reasons recorded",
        ),
    ],
)
def test_gate_line(gate, text):
    assert gate_line(gate) == text


def test_long_gate_reasons_are_cut_at_a_word():
    reasons = "; ".join(f"check {i} passed with room to spare" for i in range(30))
    text = gate_line(GateFacts("2", True, reasons, "none", "1", is_champion=True))
    assert text.endswith(" ...") and len(text) < 260
    assert shorten("short", 10) == "short"
    assert shorten("one two three four", 9) == "one two ..."


@pytest.mark.parametrize(
    ("drift", "text"),
    [
        (
            DriftFacts("2026-01-19", minutes(12), True, 0.5, 0.5, ("spend", "channel")),
            "2026-01-19: DRIFT, 50% of columns drifted (alert at 50%): spend, channel; "
            "checked 2026-12-02 06:18 UTC (12 min ago)",
        ),
        (
            DriftFacts("2026-01-12", minutes(60), False, 0.25, 0.5),
            "2026-01-12: no drift, 25% of columns drifted (alert at 50%); "
            "checked 2026-12-02 05:30 UTC (1 h ago)",
        ),
        (
            DriftFacts(None, minutes(60), False),  # a check without figures
            "batch ?: no drift; checked 2026-12-02 05:30 UTC (1 h ago)",
        ),
    ],
)
def test_drift_line(drift, text):
    assert drift_line(drift, NOW) == text


@pytest.mark.parametrize(
    ("champion", "text"),
    [
        (
            ChampionFacts(
                "3",
                since="2026-12-02T06:18:00+00:00",
                via="promote",
                by="hitl-pipeline",
                dataset_version="dataset-v0003",
                accuracy={"holdout": 0.84, "human_holdout": 0.6984},
            ),
            "v3; accuracy 84.0% on holdout, 69.8% on human_holdout; trained on dataset-v0003; "
            "champion since 2026-12-02 06:18 UTC (12 min ago), promoted by the gate",
        ),
        (
            ChampionFacts(
                "1",
                since="2026-12-02T06:00:00+00:00",
                via="rollback",
                by="ana",
                reason="v3 mislabels churn",
            ),
            "v1; accuracy not recorded; champion since 2026-12-02 06:00 UTC (30 min ago), "
            "rolled back by ana: v3 mislabels churn",
        ),
        (
            # a former champion: the previous one, or the one a rollback replaced
            ChampionFacts(
                "1",
                since="2026-12-02T05:00:00+00:00",
                until="2026-12-02T06:00:00+00:00",
                ended_via="promote of version 2",
                accuracy={"holdout": 0.85, "human_holdout": float("nan")},
            ),
            "v1; accuracy 85.0% on holdout, n/a on human_holdout; champion since 2026-12-02 "
            "05:00 UTC (1 h 30 min ago), promoted by the gate; until 2026-12-02 06:00 UTC "
            "(30 min ago), ended by promote of version 2",
        ),
    ],
)
def test_champion_line(champion, text):
    assert champion_line(champion, NOW) == text


@pytest.mark.parametrize(
    ("has_champion", "answer", "trained", "verdict"),
    [
        (False, None, None, "would retrain: no champion yet: train the first model from the "),
        (True, minutes(3), minutes(60), "would retrain: human labels arrived since the last"),
        (True, minutes(90), minutes(60), "would skip: no new human labels since the last"),
        (True, None, minutes(60), "would skip: no new human labels since the last"),
    ],
)
def test_retrain_line_says_when_and_whether(has_champion, answer, trained, verdict):
    text = retrain_line(
        MONDAY,
        NOW,
        has_champion=has_champion,
        latest_answer_at=answer,
        last_training_at=trained,
    )
    assert text.startswith("2026-12-07 06:00 UTC (in 4 d 23 h); ")
    assert verdict in text
    assert ("last training 2026-12-02 05:30 UTC" in text) == (trained is not None)


def facts(**changes) -> StatusFacts:
    base = {
        "home": "/loop",
        "now": NOW,
        "champion": None,
        "gate": None,
        "drift": None,
        "queue": {},
        "ledger": EMPTY_LEDGER,
        "health": None,
        "last_training_at": None,
        "next_retrain_at": MONDAY,
        "runs": (),
    }
    return StatusFacts(**{**base, **changes})


def test_an_empty_home_reads_as_a_loop_not_started():
    assert status_lines(facts()) == [
        "hitl-pipeline status of /loop at 2026-12-02 06:30 UTC",
        "champion:       none yet: the first retrain trains one from the seed data",
        "last drift:     no batch checked yet",
        "queue:          no review project in Label Studio yet",
        "labels pending: none; ledger holds 0 annotation(s)",
        "last gate:      no candidate judged yet",
        "loop health:    no loop_metrics yet",
        "next retrain:   2026-12-07 06:00 UTC (in 4 d 23 h); would retrain: no champion yet: "
        "train the first model from the seed data",
        "last runs:      none yet",
    ]


def test_a_dead_store_costs_its_own_lines_only():
    down = Unavailable("Label Studio not reachable at http://127.0.0.1:9")
    lines = status_lines(
        facts(
            queue=down,
            champion=ChampionFacts("2", accuracy={"holdout": 0.8}),
            drift=Unavailable("Dagster instance: could not be read: OSError: disk"),
        )
    )
    assert lines[1] == "champion:       v2; accuracy 80.0% on holdout; promoted by the gate"
    assert lines[2] == "last drift:     Dagster instance: could not be read: OSError: disk"
    assert lines[3] == "queue:          Label Studio not reachable at http://127.0.0.1:9"
    assert lines[4] == (
        "labels pending: unknown while Label Studio cannot be asked; ledger holds 0 annotation(s)"
    )
    # with Label Studio down, the verdict rests on the ledger (empty here)
    assert lines[7] == (
        "next retrain:   2026-12-07 06:00 UTC (in 4 d 23 h); would skip: no new human labels "
        "since the last training"
    )


def test_json_for_scripts():
    out = status_json(
        facts(
            queue={"general": QueueStatus(10, 4, minutes(1))},
            ledger=LedgerFacts(3, {"general": 3}, minutes(5)),
            champion=ChampionFacts("2", accuracy={"holdout": float("nan")}),
            drift=Unavailable("down"),
        )
    )
    assert out["queue"]["general"] == {
        "total_tasks": 10,
        "finished_tasks": 4,
        "pending_tasks": 6,
        "latest_completed_at": "2026-12-02T06:29:00+00:00",
    }
    assert out["unpulled"] == {"general": 1}
    assert out["champion"]["accuracy"] == {"holdout": None}  # NaN is not JSON
    assert out["drift"] == {"unavailable": "down"}
    assert out["next_retrain_at"] == "2026-12-07T06:00:00+00:00"
    assert status_json(facts(queue=Unavailable("down")))["unpulled"] is None
