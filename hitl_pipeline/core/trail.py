"""The audit trail of one item: every decision the loop took about it, in order.

Pure assembly from frames the pipeline keeps (routing decisions, the annotation ledger,
dataset versions, model versions); ``hitl_pipeline.trail`` gathers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from hitl_pipeline.core.datasets import resolve_labels
from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    LABEL,
    MODEL_VERSION,
    PREDICTED_LABEL,
    REASONS,
    ROUTE,
    TIER,
)


@dataclass(frozen=True)
class DatasetMembership:
    """Which frames of one dataset version hold the item, with the label they hold."""

    version_id: str
    frames: Mapping[str, str]  # frame name -> label in it


@dataclass(frozen=True)
class ModelUse:
    """A registered model version and the dataset version it was trained on."""

    version: str
    dataset_version: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueuedTask:
    """The item's task in one review queue of Label Studio, as Label Studio holds it now."""

    tier: str
    task_id: int
    annotations: int  # submitted and skipped answers


def unpulled_lines(
    queued: Sequence[QueuedTask], pulled: Mapping[str, int], *, collect_job: str
) -> list[str]:
    """What Label Studio holds about the item beyond the ledger, one line per queue.

    Args:
        queued: The item's tasks in Label Studio.
        pulled: Queue -> the item's annotations in the ledger (quarantined ones included).
        collect_job: The job that pulls them.

    Returns:
        A line per queue whose task has answers not pulled yet, or that still waits for
        one; nothing for a queue whose answers are all in the ledger.
    """
    lines = []
    for task in sorted(queued, key=lambda t: (t.tier, t.task_id)):
        have = pulled.get(task.tier, 0)
        if task.annotations > have:
            lines.append(
                f"  review [{task.tier}] task #{task.task_id}: {task.annotations - have} "
                f"annotation(s) in Label Studio not pulled yet: run {collect_job} (the "
                "annotation sensor starts it on its next tick while the daemon runs)"
            )
        elif task.annotations == 0:
            lines.append(
                f"  review [{task.tier}] task #{task.task_id}: waiting for a reviewer in "
                "Label Studio"
            )
    return lines


def item_trail(
    item_id: str,
    *,
    decisions: pd.DataFrame,
    ledger: pd.DataFrame,
    datasets: Sequence[DatasetMembership],
    models: Sequence[ModelUse],
    queued: Sequence[QueuedTask] = (),
    pulled: Mapping[str, int] | None = None,
    queue_error: str | None = None,
    collect_job: str = "collect_labels_job",
) -> list[str]:
    """Lines a person reads top to bottom: routing, reviews, decision, data, models.

    Args:
        item_id: The item.
        decisions: Routing decisions (``review_queue`` rows, with a ``table`` column
            naming the batch).
        ledger: Every pulled annotation.
        datasets: The dataset versions that hold the item.
        models: Every registered model version.
        queued: The item's tasks in Label Studio now (empty: never pushed, or not asked).
        pulled: Queue -> the item's annotations in the ledger, quarantined ones
            included (default: counted from ``ledger``).
        queue_error: Why Label Studio could not be asked, when it could not.
        collect_job: The job that pulls annotations into the ledger.

    Returns:
        The trail; a first line saying so when the loop never saw the item.
    """
    item = canonical_text(item_id)
    lines: list[str] = [f"item {item}"]
    routed = (
        decisions[decisions[ITEM_ID].map(canonical_text) == item] if len(decisions) else decisions
    )
    if routed.empty:
        lines.append("  routing: never scored in a kept batch")
    for _, row in routed.iterrows():
        lines.append(
            f"  routing [{row.get('table', '?')}]: {row[ROUTE]} because {row[REASONS]} "
            f"(model v{row[MODEL_VERSION]} predicted {row[PREDICTED_LABEL]} at confidence "
            f"{float(row[CONFIDENCE]):.2f}; tier {row.get(TIER, '-')})"
        )
    mine = ledger[ledger[ITEM_ID].map(canonical_text) == item] if len(ledger) else ledger
    mine = mine.sort_values(["completed_at", "annotation_id"]) if len(mine) else mine
    if pulled is None:
        pulled = mine.groupby(TIER).size().to_dict() if len(mine) and TIER in mine else {}
    waiting = unpulled_lines(queued, pulled, collect_job=collect_job)
    unpulled = any(t.annotations > pulled.get(t.tier, 0) for t in queued)
    if queue_error:
        unknown = f"{queue_error}: whether it holds answers not pulled yet is unknown"
        lines.append(f"  review: {'no annotation pulled; ' if mine.empty else ''}{unknown}")
    elif mine.empty and not unpulled:
        lines.append("  review: no annotation")
    for _, a in mine.iterrows():
        if bool(a["was_cancelled"]):
            result = "skipped"
        else:
            verdict = "confirmed" if str(a[LABEL]) == str(a[PREDICTED_LABEL]) else "corrected to"
            result = f"{verdict} {a[LABEL]}"
        flags = f", flagged {', '.join(a['flags'])}" if len(a.get("flags", ()) or ()) else ""
        # Label Studio stamps updated_at a few milliseconds after creation
        late = pd.Timestamp(a["updated_at"]) - pd.Timestamp(a["completed_at"])
        edited = " (edited later)" if late > pd.Timedelta(seconds=1) else ""
        lines.append(
            f"  review [{a.get(TIER, '') or 'general'}] #{a['annotation_id']} by {a['annotator']} "
            f"at {pd.Timestamp(a['completed_at']).isoformat()}: {result}{flags}{edited}"
        )
    lines += waiting
    if len(mine):
        resolved = resolve_labels(mine)
        if len(resolved):
            r = resolved.iloc[0]
            lines.append(
                f"  final label: {r[LABEL]} ({r['decided_by']}, {r['n_annotations']} vote(s) by "
                f"{r['annotators']})"
            )
        else:
            lines.append("  final label: none (every answer skipped or unusable)")
    for member in datasets:
        held = ", ".join(f"{name}={label}" for name, label in sorted(member.frames.items()))
        lines.append(f"  dataset {member.version_id}: {held}")
    trained = {m.version_id for m in datasets if "training" in m.frames}
    judged = {m.version_id for m in datasets if set(m.frames) & {"human_holdout", "edge_cases"}}
    for model in models:
        uses = []
        if model.dataset_version in trained:
            uses.append("trained on")
        if model.dataset_version in judged:
            uses.append("gated (held out / edge case) on")
        if uses:
            aliases = f" [{', '.join(model.aliases)}]" if model.aliases else ""
            lines.append(
                f"  model v{model.version}{aliases}: {' and '.join(uses)} {model.dataset_version}"
            )
    if not datasets:
        lines.append("  datasets: in no dataset version yet")
    return lines
