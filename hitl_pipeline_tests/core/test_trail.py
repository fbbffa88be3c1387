"""An item's audit trail assembled from the loop's records."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from hitl_pipeline.core.trail import (
    DatasetMembership,
    ModelUse,
    QueuedTask,
    item_trail,
    unpulled_lines,
)

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
DECISIONS = pd.DataFrame(
    {
        "item_id": ["i1", "i2"],
        "route": ["review", "auto_accept"],
        "reasons": ["low_confidence;audit", "confident"],
        "model_version": ["3", "3"],
        "predicted_label": ["a", "b"],
        "confidence": [0.41, 0.97],
        "tier": ["general", "general"],
        "table": ["2026-03-02", "2026-03-02"],
    }
)


def vote(annotation_id, who, label, tier, minute, *, flags=(), edited=False):
    at = T0 + timedelta(minutes=minute)
    return {
        "item_id": "i1",
        "annotation_id": annotation_id,
        "annotator": who,
        "label": label,
        "tier": tier,
        "completed_at": at,
        "updated_at": at + timedelta(minutes=30 if edited else 0),
        "was_cancelled": label is None,
        "predicted_label": "a",
        "model_version": "3",
        "partition": "2026-03-02",
        "features": {"x": 1.0},
        "reasons": ("low_confidence",),
        "flags": flags,
    }


def test_trail_of_an_adjudicated_item_from_routing_to_model() -> None:
    ledger = pd.DataFrame(
        [
            vote(1, "ada", "a", "general", 1),
            vote(2, "bob", "b", "general", 2, flags=("edge case",), edited=True),
            vote(3, "eve", "b", "adjudication", 9),
        ]
    )
    lines = item_trail(
        "i1",
        decisions=DECISIONS,
        ledger=ledger,
        datasets=[
            DatasetMembership("dataset-v0002", {"training": "b", "edge_cases": "b"}),
        ],
        models=[ModelUse("4", "dataset-v0002", ("champion",)), ModelUse("3", "dataset-v0001")],
    )
    text = "\n".join(lines)
    assert "routing [2026-03-02]: review because low_confidence;audit" in text
    assert "model v3 predicted a at confidence 0.41" in text
    assert "by ada" in text and "confirmed a" in text
    assert "by bob" in text and "corrected to b, flagged edge case (edited later)" in text
    assert "review [adjudication] #3 by eve" in text
    assert "final label: b (adjudicated, 3 vote(s) by ada;bob;eve)" in text
    assert "dataset dataset-v0002: edge_cases=b, training=b" in text
    assert "model v4 [champion]: trained on and gated (held out / edge case) on dataset-v0002" in (
        text
    )
    assert "by ada at 2026-03-02T09:01:00+00:00: confirmed a\n" in text  # not edited
    assert "v3" not in text.split("final label")[1]  # v3 never trained on it


def test_trail_of_an_auto_accepted_item_and_an_unknown_one() -> None:
    empty = pd.DataFrame(columns=["item_id"])
    auto = item_trail("i2", decisions=DECISIONS, ledger=empty, datasets=[], models=[])
    assert any("auto_accept because confident" in line for line in auto)
    assert any("no annotation" in line for line in auto)
    unknown = item_trail("zz", decisions=DECISIONS, ledger=empty, datasets=[], models=[])
    assert any("never scored" in line for line in unknown)


NOT_PULLED = (
    "  review [general] task #15: 2 annotation(s) in Label Studio not pulled yet: run "
    "collect_labels_job (the annotation sensor starts it on its next tick while the daemon runs)"
)
WAITING = "  review [adjudication] task #40: waiting for a reviewer in Label Studio"


@pytest.mark.parametrize(
    ("queued", "pulled", "expected"),
    [
        ([], {}, []),  # never pushed
        ([QueuedTask("general", 15, 2)], {}, [NOT_PULLED]),
        ([QueuedTask("general", 15, 3)], {"general": 1}, [NOT_PULLED]),  # a second answer
        ([QueuedTask("general", 15, 2)], {"general": 2}, []),  # everything pulled
        ([QueuedTask("adjudication", 40, 0)], {"general": 2}, [WAITING]),
        (
            [QueuedTask("general", 15, 2), QueuedTask("adjudication", 40, 0)],
            {},
            [WAITING, NOT_PULLED],  # by queue name
        ),
    ],
)
def test_unpulled_lines(queued, pulled, expected) -> None:
    assert unpulled_lines(queued, pulled, collect_job="collect_labels_job") == expected


def test_answers_in_label_studio_are_not_reported_as_no_annotation() -> None:
    empty = pd.DataFrame(columns=["item_id"])
    lines = item_trail(
        "i1",
        decisions=DECISIONS,
        ledger=empty,
        datasets=[],
        models=[],
        queued=[QueuedTask("general", 15, 2)],
    )
    assert NOT_PULLED in lines
    assert not any(line.startswith("  review: no annotation") for line in lines)


def test_an_item_waiting_for_review_says_so_and_has_no_annotation() -> None:
    empty = pd.DataFrame(columns=["item_id"])
    lines = item_trail(
        "i1",
        decisions=DECISIONS,
        ledger=empty,
        datasets=[],
        models=[],
        queued=[QueuedTask("adjudication", 40, 0)],
    )
    assert lines[2:4] == ["  review: no annotation", WAITING]


def test_label_studio_down_is_said_not_guessed() -> None:
    empty = pd.DataFrame(columns=["item_id"])
    lines = item_trail(
        "i1",
        decisions=DECISIONS,
        ledger=empty,
        datasets=[],
        models=[],
        queue_error="Label Studio not reachable at http://127.0.0.1:9",
    )
    assert lines[2] == (
        "  review: no annotation pulled; Label Studio not reachable at http://127.0.0.1:9: "
        "whether it holds answers not pulled yet is unknown"
    )
