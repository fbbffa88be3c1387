"""When to start which run: the decisions behind the sensors and the schedule.

Pure functions of what the sensors observe, so each cursor scenario is a table row in
the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

# The weekly retrain: Mondays 06:00 UTC (``weekly_retrain_schedule``; ``status`` shows its
# next tick without loading the definitions).
RETRAIN_CRON = "0 6 * * 1"
RETRAIN_TIMEZONE = "UTC"


@dataclass(frozen=True)
class LandedBatch:
    partition_key: str
    fingerprint: str


def batches_to_score(
    landed: Sequence[LandedBatch], seen: Mapping[str, str]
) -> tuple[list[LandedBatch], dict[str, str]]:
    """Batches that are new or whose file changed since the last tick, and the new cursor.

    Args:
        landed: every batch file now in the landing folder.
        seen: partition → fingerprint of what was already handed to a run.

    Returns:
        The batches to score, and the updated partition → fingerprint map.
    """
    todo = [b for b in landed if seen.get(b.partition_key) != b.fingerprint]
    cursor = dict(seen)
    cursor.update({b.partition_key: b.fingerprint for b in todo})
    return todo, cursor


class AnnotationAction(Enum):
    NOTHING = "nothing"
    COLLECT = "collect"  # pull the new labels into the ledger
    EARLY_RETRAIN = "early_retrain"  # drift is outstanding and the review queue is done


def annotation_action(
    *,
    latest_completed_at: datetime | None,
    last_seen: datetime | None,
    pending_tasks: int,
    drift_outstanding: bool,
) -> AnnotationAction:
    """What finished annotations call for.

    A drift alert that no retrain has answered yet turns "queue finished" into an early
    retrain; otherwise new labels are collected and the weekly schedule retrains.
    """
    if latest_completed_at is None or (last_seen is not None and latest_completed_at <= last_seen):
        return AnnotationAction.NOTHING
    if drift_outstanding and pending_tasks == 0:
        return AnnotationAction.EARLY_RETRAIN
    return AnnotationAction.COLLECT


def retrain_due(
    *,
    has_champion: bool,
    latest_annotation_at: datetime | None,
    last_training_at: datetime | None,
) -> str | None:
    """Why the weekly retrain should run, or ``None`` when there is nothing new to learn."""
    if not has_champion:
        return "no champion yet: train the first model from the seed data"
    if latest_annotation_at is None:
        return None
    if last_training_at is None or latest_annotation_at > last_training_at:
        return "human labels arrived since the last training"
    return None
