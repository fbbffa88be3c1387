"""What the demo's terminal says about the loop: one line per event a person watches for.

Pure: the demo turns Dagster's event log into :class:`LoopEvent` facts (asset key or
check or job name, partition, plain metadata values) and these functions turn each fact
into a line, or into nothing when the event is not worth a line. Metadata keys are the
ones the assets write; a missing key leaves its part of the line out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hitl_pipeline.core.routing import REASON_CONFIDENT, REASON_OVER_CAPACITY
from hitl_pipeline.core.types import QueueStatus

EventKind = Literal["materialization", "check", "run_started", "run_failed"]

# reasons a routed row carries that did not send it to people
_NOT_REVIEW = frozenset({REASON_CONFIDENT, REASON_OVER_CAPACITY})
_REASONS_SHOWN = 4  # the rest are summed as "n more"


@dataclass(frozen=True)
class LoopEvent:
    """One event of the loop, as the demo read it from the Dagster instance.

    Attributes:
        kind: a materialization, a check evaluation, a run that started or failed.
        name: the asset key, the check name or the job name.
        partition: the batch (daily partition) it concerns, if any.
        metadata: the event's metadata as plain values (numbers, strings, dicts).
        passed: a check's verdict.
        description: a check's description, or why a run failed.
        trigger: a run's ``hitl/trigger`` tag.
        run_id: the Dagster run.
        warning: a check whose failure is a warning (severity WARN), not an error.
    """

    kind: EventKind
    name: str
    partition: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    description: str = ""
    trigger: str = ""
    run_id: str = ""
    warning: bool = False


def narrate(event: LoopEvent) -> str | None:
    """The terminal line for ``event``, or None when it is not one a person watches for."""
    describe = _DESCRIBERS.get((event.kind, event.name)) or _DESCRIBERS.get((event.kind, "*"))
    if describe is None:
        return None
    text = describe(event)
    if text is None:
        return None
    return f"[{event.partition}] {text}" if event.partition else text


def queue_line(status: QueueStatus) -> str:
    """Queue depth in Label Studio: tasks still waiting for an answer, of all tasks."""
    return (
        f"Label Studio queue: {status.pending_tasks} task(s) waiting, "
        f"{status.finished_tasks} of {status.total_tasks} answered"
    )


# --- one describer per event -----------------------------------------------------------
def _batch(e: LoopEvent) -> str:
    m = e.metadata
    text = f"batch landed: {_int(m.get('rows'), '?')} valid rows"
    if _int(m.get("quarantined_rows"), 0):
        text += f", {_int(m['quarantined_rows'])} quarantined"
    return text


def _predictions(e: LoopEvent) -> str:
    m = e.metadata
    text = f"rows scored: {_int(m.get('rows'), '?')}"
    if m.get("model_version") is not None:
        text += f" by champion v{m['model_version']}"
    if _is_number(m.get("mean_confidence")):
        text += f", mean confidence {float(m['mean_confidence']):.2f}"
    if _is_number(m.get("share_ood_99")) and float(m["share_ood_99"]) > 0:
        text += f", {float(m['share_ood_99']):.0%} out of distribution"
    return text


def _drift_check(e: LoopEvent) -> str:
    m = e.metadata
    figures = []
    if _is_number(m.get("drift_share")):
        figures.append(f"{float(m['drift_share']):.0%} of columns drifted")
    if _is_number(m.get("threshold")):
        figures.append(f"alert at {float(m['threshold']):.0%}")
    text = m.get("text_drifted")
    if not e.passed and isinstance(text, list | tuple) and text:
        # a drifted text column alarms by itself, whatever the share of columns
        figures.append(f"text drifted: {', '.join(str(c) for c in text)}")
    detail = f" ({', '.join(figures)})" if figures else ""
    if e.passed:
        return f"drift verdict: no drift{detail}"
    columns = m.get("drifted_columns")
    listed = (
        f": {', '.join(str(c) for c in columns[:5])}" + (" ..." if len(columns) > 5 else "")
        if isinstance(columns, list | tuple) and columns
        else ""
    )
    return f"drift verdict: DRIFT{detail}{listed}; the drift sensor boosts this batch's review"


def _review_queue(e: LoopEvent) -> str:
    m = e.metadata
    rows, to_review = _int(m.get("rows"), None), _int(m.get("to_review"), None)
    raw = m.get("reasons")
    reasons: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    # an item can carry several reasons, and flagged items beyond the capacity wait
    flagged = {k: int(v) for k, v in reasons.items() if k not in _NOT_REVIEW and int(v)}
    if to_review is None:
        text = "items routed"
    elif rows is None:
        text = f"items routed: {to_review} to review"
    else:
        text = f"items routed: {to_review} of {rows} to review, {rows - to_review} auto-accepted"
    if flagged:
        ranked = sorted(flagged.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = [f"{n} {_words(reason)}" for reason, n in ranked[:_REASONS_SHOWN]]
        rest = sum(n for _, n in ranked[_REASONS_SHOWN:])
        text += "; reasons: " + ", ".join(shown) + (f", {rest} more" if rest else "")
    over = _int(reasons.get(REASON_OVER_CAPACITY), 0)
    if over:
        text += f"; {over} over capacity"
    if m.get("drift_response") is True:
        text += " [drift response: larger review capacity]"
    return text


def _labeling_tasks(e: LoopEvent) -> str:
    m = e.metadata
    text = f"tasks pushed to Label Studio: {_int(m.get('tasks_created'), '?')} new"
    if _int(m.get("tasks_already_present"), 0):
        text += f", {_int(m['tasks_already_present'])} already there"
    tiers = m.get("tasks_by_tier")
    if isinstance(tiers, Mapping) and tiers:
        ranked = sorted(tiers.items(), key=lambda kv: (-int(kv[1]), kv[0]))
        text += " (by tier: " + ", ".join(f"{t} {int(n)}" for t, n in ranked) + ")"
    return text


def _human_labels(e: LoopEvent) -> str:
    m = e.metadata
    pulled = _int(m.get("annotations_pulled_now"), None)
    text = "annotations pulled: " + (
        "?" if pulled is None else "none new" if pulled == 0 else f"{pulled} new or edited"
    )
    parts = []
    if m.get("annotations_admitted") is not None:
        parts.append(f"{_int(m['annotations_admitted'])} admitted")
    if _int(m.get("annotations_quarantined"), 0):
        quarantined = f"{_int(m['annotations_quarantined'])} quarantined"
        by_reason = m.get("quarantined_by_reason")
        if isinstance(by_reason, Mapping):
            counts = ", ".join(
                f"{_words(r)} {int(n)}" for r, n in sorted(by_reason.items()) if int(n)
            )
            quarantined += f" ({counts})" if counts else ""
        parts.append(quarantined)
    if parts:
        text += "; ledger: " + ", ".join(parts)
    if m.get("labelled_items") is not None:
        text += f"; {_int(m['labelled_items'])} items labelled"
    return text


def _training_dataset(e: LoopEvent) -> str:
    m = e.metadata
    text = f"dataset versioned with DVC: {m.get('dataset_version', '?')}"
    if m.get("training_rows") is not None:
        text += f", {_int(m['training_rows'])} training rows"
        if m.get("human_training_rows") is not None:
            text += f" ({_int(m['human_training_rows'])} from people)"
    if m.get("human_holdout_rows") is not None:
        text += f", {_int(m['human_holdout_rows'])} human held-out"
    return text


def _candidate(e: LoopEvent) -> str:
    m = e.metadata
    text = f"candidate v{m.get('model_version', '?')} trained"
    if m.get("training_rows") is not None:
        text += f" on {_int(m['training_rows'])} rows"
    scores = [
        f"{k.removesuffix('_accuracy').replace('_', ' ')} {float(v):.3f}"
        for k, v in sorted(m.items())
        if k.endswith("_accuracy") and _is_number(v) and v == v  # NaN: no rows in that set
    ]
    if scores:
        text += "; accuracy " + ", ".join(scores)
    return text


def _gate(e: LoopEvent) -> str:
    m = e.metadata
    challenger = m.get("challenger_version")
    champion = m.get("champion_version")
    reason = e.description.split("; ")[0].strip() if e.description else ""
    if e.passed:
        text = "gate decision: PROMOTE" + (f" v{challenger}" if challenger else "")
        if champion not in (None, "", "none"):
            text += f" over v{champion}"
    else:
        text = "gate decision: KEEP" + (
            f" champion v{champion}" if champion not in (None, "", "none") else " the champion"
        )
        if challenger:
            text += f", v{challenger} rejected"
    return text + (f": {reason}" if reason else "")


def _champion(e: LoopEvent) -> str:
    m = e.metadata
    version, previous = m.get("champion_version"), m.get("previous_champion")
    text = f"champion version: v{version if version is not None else '?'}"
    if previous in (None, "", "none"):
        return text + " (the first)"
    if str(previous) == str(version):
        return text + " (unchanged)"
    return text + f" (was v{previous})"


def _threshold(e: LoopEvent) -> str | None:
    value = e.metadata.get("threshold")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None  # "not fitted: ..." until people labelled held-out rows
    return f"routing threshold re-fitted for the new champion: {float(value):.3f}"


def _failed_check(e: LoopEvent) -> str | None:
    """Other checks (audit, loop health) speak only when they fail."""
    if e.passed is not False:
        return None
    verdict = f"warning {e.name}" if e.warning else f"check {e.name} FAILED"
    return verdict + (f": {e.description}" if e.description else "")


def _run_started(e: LoopEvent) -> str | None:
    trigger = f" (trigger: {_words(e.trigger)})" if e.trigger else ""
    if e.name == "retrain_job":
        return f"retrain started{trigger}, run {e.run_id[:8]}"
    if e.name == "drift_review_job":
        return f"drift response started{trigger}: re-routing the batch with more review capacity"
    return None


def _run_failed(e: LoopEvent) -> str | None:
    if e.metadata.get("gate_rejected"):
        return None  # the gate's own line said why the run stopped
    reason = e.description.strip().splitlines()[0] if e.description.strip() else ""
    trigger = f", {_words(e.trigger)}" if e.trigger else ""
    return (
        f"run {e.run_id[:8]} ({e.name}{trigger}) FAILED"
        + (f": {reason}" if reason else "")
        + "; see the Dagster UI"
    )


_DESCRIBERS: dict[tuple[str, str], Callable[[LoopEvent], str | None]] = {
    ("materialization", "production_batch"): _batch,
    ("materialization", "predictions"): _predictions,
    ("materialization", "review_queue"): _review_queue,
    ("materialization", "labeling_tasks"): _labeling_tasks,
    ("materialization", "human_labels"): _human_labels,
    ("materialization", "training_dataset"): _training_dataset,
    ("materialization", "candidate_model"): _candidate,
    ("materialization", "champion_model"): _champion,
    ("materialization", "routing_threshold"): _threshold,
    ("check", "no_dataset_drift"): _drift_check,
    ("check", "passes_gate"): _gate,
    ("check", "*"): _failed_check,
    ("run_started", "*"): _run_started,
    ("run_failed", "*"): _run_failed,
}


# --- helpers ---------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any, default: Any = 0) -> Any:
    if _is_number(value):
        return round(float(value))
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return default


def _words(key: str) -> str:
    return str(key).replace("_", " ")
