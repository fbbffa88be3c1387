"""The loop at a glance (``hitl-pipeline status``): facts gathered from the stores, turned
into the lines a person reads and the JSON a script reads.

Pure: ``hitl_pipeline.status`` gathers the facts; a store it could not read is an
:class:`Unavailable` with the store's own message, so one dead service costs one line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hitl_pipeline.core.triggers import retrain_due
from hitl_pipeline.core.types import QueueStatus

COLLECT_JOB = "collect_labels_job"


@dataclass(frozen=True)
class Unavailable:
    """A store that did not answer, and what it said."""

    message: str


@dataclass(frozen=True)
class ChampionFacts:
    """A model version that serves (or served) as champion."""

    version: str
    since: str | None = None  # ISO 8601, when it last became champion
    via: str | None = None  # "promote" | "rollback"
    by: str | None = None
    reason: str | None = None  # why it became champion (a rollback's reason)
    dataset_version: str | None = None
    gate_reasons: str | None = None
    until: str | None = None  # ISO 8601, when it stopped serving (a former champion)
    ended_via: str | None = None  # e.g. "promote of version 3", "rollback to version 1"
    accuracy: Mapping[str, float] = dataclasses.field(default_factory=dict)  # set -> accuracy


@dataclass(frozen=True)
class GateFacts:
    """The newest gate decision in the registry."""

    version: str
    promote: bool
    reasons: str
    failed_checks: str
    compared_with: str | None  # the champion version the gate judged against; None: none
    is_champion: bool


@dataclass(frozen=True)
class DriftFacts:
    """The newest evaluation of the drift check (``no_dataset_drift``)."""

    partition: str | None
    at: datetime
    drifted: bool
    drift_share: float | None = None
    threshold: float | None = None
    drifted_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class LedgerFacts:
    """What the label ledger holds (every pulled annotation, quarantined ones included)."""

    annotations: int
    answered_tasks: Mapping[str, int]  # tier -> tasks with a submitted (not skipped) answer
    latest_completed_at: datetime | None


@dataclass(frozen=True)
class HealthFacts:
    """The newest ``loop_metrics`` figures."""

    at: datetime
    accuracy_latest_batch: float | None = None
    audit_alert: bool = False
    audit_message: str = ""


@dataclass(frozen=True)
class RunFacts:
    """The newest run of one job."""

    job: str
    status: str
    at: datetime
    trigger: str | None = None


@dataclass(frozen=True)
class StatusFacts:
    """Everything ``status`` reports; ``None`` means the store is there but holds nothing yet."""

    home: str
    now: datetime
    champion: ChampionFacts | Unavailable | None
    gate: GateFacts | Unavailable | None
    drift: DriftFacts | Unavailable | None
    queue: Mapping[str, QueueStatus] | Unavailable
    ledger: LedgerFacts
    health: HealthFacts | Unavailable | None
    last_training_at: datetime | Unavailable | None
    next_retrain_at: datetime
    runs: Sequence[RunFacts] | Unavailable = ()


# --- small formatters -------------------------------------------------------------------
def ago(delta: timedelta) -> str:
    """A duration the way people say it: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes} min"
    if hours < 24:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"


def when(moment: datetime | str | None, now: datetime) -> str:
    """``2026-12-02 06:18 UTC (12 min ago)``, or ``(in 4 d 23 h)`` for a future moment."""
    if moment is None:
        return "unknown"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    delta = now - moment
    relative = f"{ago(delta)} ago" if delta >= timedelta(0) else f"in {ago(delta)}"
    return f"{moment:%Y-%m-%d %H:%M} UTC ({relative})"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"


# --- one line per concern ----------------------------------------------------------------
def champion_line(champion: ChampionFacts, now: datetime) -> str:
    """Version, accuracy on each held-out set, since when and how it became champion."""
    accuracy = ", ".join(f"{_pct(v)} on {k}" for k, v in sorted(champion.accuracy.items()))
    how = champion.via or "promote"
    if how == "rollback":
        how = f"rolled back by {champion.by or '?'}: {champion.reason or 'no reason given'}"
    else:
        how = (
            "promoted by the gate"
            if (champion.by or "hitl-pipeline") == "hitl-pipeline"
            else (f"promoted by {champion.by}")
        )
    parts = [
        f"v{champion.version}",
        f"accuracy {accuracy}" if accuracy else "accuracy not recorded",
        f"trained on {champion.dataset_version}" if champion.dataset_version else "",
        f"champion since {when(champion.since, now)}, {how}" if champion.since else how,
        f"until {when(champion.until, now)}, ended by {champion.ended_via or 'a replacement'}"
        if champion.until
        else "",
    ]
    return "; ".join(p for p in parts if p)


def shorten(text: str, width: int = 200) -> str:
    """``text`` cut at a word boundary to about ``width`` characters, marked when cut."""
    if len(text) <= width:
        return text
    return text[:width].rsplit(" ", 1)[0].rstrip(";,") + " ..."


def gate_line(gate: GateFacts) -> str:
    """The newest gate decision, what it compared and why (the reasons cut short: the
    whole decision is in the registry, ``hitl-pipeline lineage --version V``)."""
    against = f"v{gate.compared_with}" if gate.compared_with else "no champion"
    if gate.promote:
        verdict = "promoted" if gate.is_champion else "passed (not champion now)"
    else:
        verdict = f"refused, failed {gate.failed_checks or 'see reasons'}"
    reasons = shorten(gate.reasons) if gate.reasons else "no reasons recorded"
    return f"v{gate.version} against {against}: {verdict}; {reasons}"


def drift_line(drift: DriftFacts, now: datetime) -> str:
    """The newest drift verdict: batch, share of drifted columns against the threshold."""
    share = "" if drift.drift_share is None else f"{drift.drift_share:.0%} of columns drifted"
    if drift.threshold is not None and share:
        share += f" (alert at {drift.threshold:.0%})"
    columns = f": {', '.join(drift.drifted_columns)}" if drift.drifted_columns else ""
    verdict = "DRIFT" if drift.drifted else "no drift"
    batch = drift.partition or "batch ?"
    detail = f", {share}{columns}" if share else columns
    return f"{batch}: {verdict}{detail}; checked {when(drift.at, now)}"


def queue_line(queue: Mapping[str, QueueStatus]) -> str:
    """Tasks waiting for a person, in total and per review tier."""
    if not queue:
        return "no review project in Label Studio yet"
    pending = sum(s.pending_tasks for s in queue.values())
    total = sum(s.total_tasks for s in queue.values())
    tiers = ", ".join(
        f"{tier} {s.pending_tasks}/{s.total_tasks}" for tier, s in sorted(queue.items())
    )
    return f"{pending} of {total} tasks waiting for a reviewer ({tiers})"


def unpulled(queue: Mapping[str, QueueStatus], ledger: LedgerFacts) -> dict[str, int]:
    """Tier -> tasks answered in Label Studio that the ledger has no answer for yet.

    A task deleted in Label Studio after its pull would make the ledger hold more than
    Label Studio: never a negative count.
    """
    out = {}
    for tier, status in queue.items():
        waiting = status.finished_tasks - ledger.answered_tasks.get(tier, 0)
        if waiting > 0:
            out[tier] = waiting
    return out


def pending_labels_line(
    queue: Mapping[str, QueueStatus], ledger: LedgerFacts, now: datetime
) -> str:
    """Answers people gave in Label Studio that the loop has not pulled into its ledger."""
    waiting = unpulled(queue, ledger)
    newest = max(
        (s.latest_completed_at for s in queue.values() if s.latest_completed_at), default=None
    )
    last = ledger.latest_completed_at
    pulled = f"ledger holds {ledger.annotations} annotation(s)" + (
        f", newest {when(last, now)}" if last else ""
    )
    if waiting:
        tiers = ", ".join(f"{tier} {n}" for tier, n in sorted(waiting.items()))
        return (
            f"{sum(waiting.values())} answered task(s) in Label Studio not pulled yet ({tiers}; "
            f"newest answer {when(newest, now)}): run {COLLECT_JOB} (the annotation sensor "
            "starts it while the daemon runs); "
            f"{pulled}"
        )
    if newest is not None and (last is None or newest > last):
        return f"answers changed since the last pull (newest {when(newest, now)}); {pulled}"
    return f"none; {pulled}"


def retrain_line(
    next_at: datetime,
    now: datetime,
    *,
    has_champion: bool,
    latest_answer_at: datetime | None,
    last_training_at: datetime | None,
) -> str:
    """When the weekly schedule ticks next and whether, as things stand, it would retrain."""
    why = retrain_due(
        has_champion=has_champion,
        latest_annotation_at=latest_answer_at,
        last_training_at=last_training_at,
    )
    trained = f"last training {when(last_training_at, now)}" if last_training_at else ""
    verdict = (
        f"would retrain: {why}"
        if why
        else ("would skip: no new human labels since the last training")
    )
    return "; ".join(p for p in (when(next_at, now), trained, verdict) if p)


def health_line(health: HealthFacts, now: datetime) -> str:
    """Accuracy the reviewers measured on the newest batch, and the audit's verdict."""
    audit = (
        f"AUDIT ALERT: {health.audit_message}"
        if health.audit_alert
        else (health.audit_message or "audit: no alert")
    )
    return (
        f"accuracy on the newest reviewed batch {_pct(health.accuracy_latest_batch)}; "
        f"{audit}; loop_metrics of {when(health.at, now)}"
    )


def runs_line(runs: Sequence[RunFacts], now: datetime) -> str:
    """The newest run of each job, with its state and what started it."""
    if not runs:
        return "none yet"
    return "; ".join(
        f"{r.job} {r.status} {when(r.at, now)}" + (f" [{r.trigger}]" if r.trigger else "")
        for r in runs
    )


# --- the whole page ----------------------------------------------------------------------
def status_lines(facts: StatusFacts) -> list[str]:
    """The lines of ``hitl-pipeline status``, one concern each; a dead store costs one line.

    Args:
        facts: What the stores said (see ``hitl_pipeline.status.gather``).

    Returns:
        A title line, then ``label: text`` lines in the order the loop runs.
    """
    now = facts.now

    def line(label: str, value: Any, render: Any, empty: str) -> str:
        if isinstance(value, Unavailable):
            text = value.message
        elif value is None:
            text = empty
        else:
            text = render(value)
        return f"{label + ':':<16}{text}"

    champion = facts.champion
    queue = facts.queue
    has_champion = isinstance(champion, ChampionFacts)
    latest_answer = (
        None
        if isinstance(queue, Unavailable)
        else max(
            (s.latest_completed_at for s in queue.values() if s.latest_completed_at), default=None
        )
    )
    if latest_answer is None:
        latest_answer = facts.ledger.latest_completed_at
    trained = facts.last_training_at
    lines = [
        f"hitl-pipeline status of {facts.home} at {now:%Y-%m-%d %H:%M} UTC",
        line(
            "champion",
            champion,
            lambda c: champion_line(c, now),
            "none yet: the first retrain trains one from the seed data",
        ),
        line("last drift", facts.drift, lambda d: drift_line(d, now), "no batch checked yet"),
        line("queue", queue, queue_line, ""),
        f"{'labels pending:':<16}"
        + (
            f"unknown while Label Studio cannot be asked; ledger holds "
            f"{facts.ledger.annotations} annotation(s)"
            if isinstance(queue, Unavailable)
            else pending_labels_line(queue, facts.ledger, now)
        ),
        line("last gate", facts.gate, gate_line, "no candidate judged yet"),
        line("loop health", facts.health, lambda h: health_line(h, now), "no loop_metrics yet"),
        line(
            "next retrain",
            trained,
            lambda t: retrain_line(
                facts.next_retrain_at,
                now,
                has_champion=has_champion,
                latest_answer_at=latest_answer,
                last_training_at=t,
            ),
            retrain_line(
                facts.next_retrain_at,
                now,
                has_champion=has_champion,
                latest_answer_at=latest_answer,
                last_training_at=None,
            ),
        ),
        line("last runs", facts.runs, lambda r: runs_line(r, now), ""),
    ]
    return lines


def status_json(facts: StatusFacts) -> dict[str, Any]:
    """The same facts for scripts: datetimes in ISO 8601, a dead store as
    ``{"unavailable": message}``, and the derived ``unpulled`` counts."""

    def plain(value: Any) -> Any:
        if isinstance(value, Unavailable):
            return {"unavailable": value.message}
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, float) and math.isnan(value):
            return None
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, QueueStatus):
                out["pending_tasks"] = value.pending_tasks
            return out
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    out = plain(facts)
    out["unpulled"] = (
        None if isinstance(facts.queue, Unavailable) else unpulled(facts.queue, facts.ledger)
    )
    return out
