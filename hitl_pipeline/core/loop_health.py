"""Health of the loop itself, from the annotations people made.

Each function returns None when there is nothing to measure (no annotations yet), which
the UI shows as a gap rather than as a misleading 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from hitl_pipeline.core.routing import REASON_AUDIT, has_reason
from hitl_pipeline.core.types import LABEL, PARTITION, PREDICTED_LABEL, TIER


def _finished(annotations: pd.DataFrame) -> pd.DataFrame:
    """Annotations that carry a label (not cancelled) next to a model prediction."""
    if annotations.empty:
        return annotations
    keep = annotations[LABEL].notna() & annotations[PREDICTED_LABEL].notna()
    if "was_cancelled" in annotations:
        keep &= ~annotations["was_cancelled"].astype(bool)
    return annotations[keep]


def correction_rate(annotations: pd.DataFrame) -> float | None:
    """Share of annotations whose label differs from the model's prediction.

    Args:
        annotations: One row per annotation (fields of ``core.types.Annotation``).

    Returns:
        The share in [0, 1] among non-cancelled annotations with both a label and a
        prediction, or None when there are none.
    """
    done = _finished(annotations)
    if done.empty:
        return None
    differs = done[LABEL].astype(str) != done[PREDICTED_LABEL].astype(str)
    return float(differs.mean())


def audit_pass_rate(annotations: pd.DataFrame) -> float | None:
    """Share of audit annotations that confirmed the model's prediction.

    The audit sample is uniform over auto-accepted items, so this estimates the
    accuracy of what nobody reviewed.

    Args:
        annotations: One row per annotation, with ``reasons`` (tuple of codes or a
            ";"-joined string).

    Returns:
        The share in [0, 1] among finished annotations of audited items, or None when
        there are none.
    """
    done = _finished(annotations)
    if done.empty or "reasons" not in done:
        return None
    audited = done[has_reason(done["reasons"], REASON_AUDIT)]
    if audited.empty:
        return None
    return float((audited[LABEL].astype(str) == audited[PREDICTED_LABEL].astype(str)).mean())


def label_counts(
    labels: pd.DataFrame | pd.Series,
    *,
    classes: Sequence[str] = (),
    column: str = LABEL,
) -> dict[str, int] | None:
    """How many labels of each class.

    Args:
        labels: A frame with a label column, or the label Series itself.
        classes: Classes to report even when absent (count 0), in this order; other
            labels follow in sorted order.
        column: The label column of a frame.

    Returns:
        Class -> count, or None when there are no labels.
    """
    series = labels if isinstance(labels, pd.Series) else labels[column]
    series = series.dropna().astype(str)
    if series.empty:
        return None
    counts = series.value_counts()
    ordered = [*classes, *sorted(set(counts.index) - set(classes))]
    return {name: int(counts.get(name, 0)) for name in ordered}


# --- confidence intervals and the audit alert -------------------------------------------
def wilson_interval(
    successes: int, trials: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval of a proportion (statsmodels), sound for small samples.

    Returns:
        ``(low, high)``; ``(nan, nan)`` with no trials.
    """
    from statsmodels.stats.proportion import proportion_confint

    if trials <= 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class AuditPolicy:
    """When the audit of auto-accepted items raises the concept-drift alert.

    Attributes:
        min_pass_rate: The floor: alert when the recent window's whole Wilson interval
            lies below it (the auto-accepted answers are wrong too often, whatever came
            before).
        recent_partitions: How many of the newest audited batches form the recent
            window; the batches before it, pooled, are the baseline.
        confidence: Of the Wilson intervals.
    """

    min_pass_rate: float = 0.8
    recent_partitions: int = 1
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_pass_rate <= 1.0:
            raise ValueError(f"min_pass_rate must be in [0, 1], got {self.min_pass_rate}")
        if self.recent_partitions < 1:
            raise ValueError(f"recent_partitions must be >= 1, got {self.recent_partitions}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class AuditVerdict:
    """The audit of auto-accepted items: pass rate, its interval, and whether to alert."""

    passed: int
    audited: int
    rate: float | None
    low: float | None
    high: float | None
    baseline_rate: float | None  # earlier partitions pooled
    alert: bool
    message: str
    partitions: tuple[str, ...] = ()  # the recent window, oldest first


def _audited(annotations: pd.DataFrame) -> pd.DataFrame:
    done = _finished(annotations)
    if done.empty or "reasons" not in done:
        return done.iloc[0:0]
    if TIER in done:  # an adjudicator's answer is not an audit of the model
        done = done[done[TIER].fillna("").astype(str) != "adjudication"]
    return done[has_reason(done["reasons"], REASON_AUDIT)]


_AUDIT_COLUMNS = ["partition", "audited", "passed", "rate", "low", "high"]


def _per_partition(outcomes: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """``partition`` + boolean ``passed`` per audited item -> the per-batch table."""
    rows = []
    groups = outcomes.groupby(PARTITION, sort=True) if len(outcomes) else []
    for partition, group in groups:
        passed = int(group["passed"].sum())
        low, high = wilson_interval(passed, len(group), confidence=confidence)
        rows.append(
            {
                "partition": str(partition),
                "audited": len(group),
                "passed": passed,
                "rate": passed / len(group),
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(rows, columns=_AUDIT_COLUMNS)


def audit_by_partition(annotations: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Audit pass rate per batch partition with its Wilson interval.

    Returns:
        Columns ``partition``, ``audited``, ``passed``, ``rate``, ``low``, ``high``,
        sorted by partition.
    """
    audited = _audited(annotations)
    outcomes = pd.DataFrame(
        {
            PARTITION: audited[PARTITION] if len(audited) else [],
            "passed": audited[LABEL].astype(str) == audited[PREDICTED_LABEL].astype(str)
            if len(audited)
            else [],
        }
    )
    return _per_partition(outcomes, confidence)


def audit_verdict(annotations: pd.DataFrame, policy: AuditPolicy = AuditPolicy()) -> AuditVerdict:
    """Whether the auto-accepted items got worse: concept drift shows here first.

    The recent window is the newest ``policy.recent_partitions`` audited batches. It
    alerts when the window's whole Wilson interval lies below ``policy.min_pass_rate``,
    or below the Wilson interval of the earlier batches pooled (the two no longer
    overlap): a significant fall, whatever the input drift check says.

    Args:
        annotations: One row per annotation (``label``, ``predicted_label``,
            ``partition``, ``reasons``; ``tier`` and ``was_cancelled`` when known):
            the ledger the ``audit_pass_rate_holds`` check reads.
        policy: The floor, the window and the intervals' confidence.

    Returns:
        The verdict with a message saying what was compared.
    """
    return _verdict(audit_by_partition(annotations, confidence=policy.confidence), policy)


def audit_outcomes_verdict(
    partitions: Sequence[object],
    passed: Sequence[bool],
    policy: AuditPolicy = AuditPolicy(),
) -> AuditVerdict:
    """``audit_verdict`` for callers that hold audit outcomes, not annotations (the
    benchmark): one entry per audited item, its batch and whether the person confirmed
    the model's answer.

    Args:
        partitions: The batch of each audited item; batches are ordered by sorting
            these values (ISO dates or batch numbers both sort in time order).
        passed: Whether each audited item's human label equals the model's prediction.
        policy: As for ``audit_verdict``.

    Returns:
        The same verdict ``audit_verdict`` gives on the equivalent annotations.
    """
    if len(partitions) != len(passed):
        raise ValueError(f"{len(partitions)} partitions but {len(passed)} outcomes")
    outcomes = pd.DataFrame({PARTITION: list(partitions), "passed": [bool(p) for p in passed]})
    return _verdict(_per_partition(outcomes, policy.confidence), policy)


def concept_drift_alarm(
    partitions: Sequence[object],
    passed: Sequence[bool],
    policy: AuditPolicy = AuditPolicy(),
) -> bool:
    """The concept-drift alarm after the latest batch: whether the
    ``audit_pass_rate_holds`` check would fail on these audit outcomes."""
    return audit_outcomes_verdict(partitions, passed, policy).alert


def _verdict(per: pd.DataFrame, policy: AuditPolicy) -> AuditVerdict:
    if per.empty:
        return AuditVerdict(0, 0, None, None, None, None, False, "no audited items yet")
    window = policy.recent_partitions
    recent, earlier = per.tail(window), per.iloc[: max(len(per) - window, 0)]
    passed, audited = int(recent["passed"].sum()), int(recent["audited"].sum())
    low, high = wilson_interval(passed, audited, confidence=policy.confidence)
    rate = passed / audited
    baseline = baseline_low = None
    if len(earlier):
        before, of = int(earlier["passed"].sum()), int(earlier["audited"].sum())
        baseline = before / of
        baseline_low = wilson_interval(before, of, confidence=policy.confidence)[0]
    names = ", ".join(recent["partition"])
    ci = f"{rate:.2f} [{low:.2f}, {high:.2f}] over {audited} audited items of {names}"
    if high < policy.min_pass_rate:
        alert, message = (
            True,
            (
                f"audit pass rate {ci} is below the floor {policy.min_pass_rate:.2f}: "
                "the auto-accepted predictions are wrong too often (concept drift "
                "if the inputs did not drift); review more and retrain"
            ),
        )
    elif baseline_low is not None and high < baseline_low:
        alert, message = (
            True,
            (
                f"audit pass rate fell: {ci}, earlier batches {baseline:.2f} (interval from "
                f"{baseline_low:.2f}): the model's auto-accepted answers got worse (concept "
                "drift if the inputs did not drift)"
            ),
        )
    else:
        alert, message = False, f"audit pass rate {ci}: no significant fall"
    return AuditVerdict(
        passed=passed,
        audited=audited,
        rate=rate,
        low=low,
        high=high,
        baseline_rate=baseline,
        alert=alert,
        message=message,
        partitions=tuple(recent["partition"]),
    )


# --- correction rate against the healthy band ------------------------------------------------
@dataclass(frozen=True)
class LoopHealthPolicy:
    """When loop health warns (checks of severity WARN on ``loop_metrics``).

    Attributes:
        correction_low: Below this share of corrected answers people mostly confirm the
            model: the review threshold is too conservative.
        correction_high: Above it the model is not yet competent enough to assist.
        min_labels: A batch with fewer labels is not judged against the band (three
            answers say nothing about a rate).
        audit_drop: Warn when the newest audited batch's pass rate is this much (absolute)
            below the earlier batches' pooled rate: an early warning, before the fall is
            significant enough for the ``audit_pass_rate_holds`` alarm.
        min_audited: A batch with fewer audited items is not judged for a fall.
    """

    correction_low: float = 0.05
    correction_high: float = 0.30
    min_labels: int = 20
    audit_drop: float = 0.05
    min_audited: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.correction_low < self.correction_high <= 1.0:
            raise ValueError(
                "need 0 <= correction_low < correction_high <= 1, got "
                f"{self.correction_low}, {self.correction_high}"
            )
        if self.min_labels < 1 or self.min_audited < 1:
            raise ValueError("min_labels and min_audited must be >= 1")
        if not 0.0 < self.audit_drop <= 1.0:
            raise ValueError(f"audit_drop must be in (0, 1], got {self.audit_drop}")

    @property
    def band(self) -> tuple[float, float]:
        return self.correction_low, self.correction_high


HEALTHY_CORRECTION_BAND = LoopHealthPolicy().band


def correction_rates(
    annotations: pd.DataFrame,
    *,
    by: str,
    band: tuple[float, float] = HEALTHY_CORRECTION_BAND,
) -> pd.DataFrame:
    """Correction rate per group (``tier`` or ``predicted_label``) against a healthy band.

    Below the band people mostly confirm the model: the review threshold is too
    conservative and their time is spent where the model is right. Above it the model
    is not yet competent enough to assist: its pre-annotations cost more than they save.

    Returns:
        Columns ``group``, ``annotations``, ``corrected``, ``rate``, ``verdict``
        ("below" | "healthy" | "above"), ``message``.
    """
    columns = ["group", "annotations", "corrected", "rate", "verdict", "message"]
    done = _finished(annotations)
    if done.empty or by not in done:
        return pd.DataFrame(columns=columns)
    low, high = band
    rows = []
    for group, part in done.groupby(done[by].fillna("").astype(str), sort=True):
        corrected = int((part[LABEL].astype(str) != part[PREDICTED_LABEL].astype(str)).sum())
        rate = corrected / len(part)
        if rate < low:
            verdict, message = (
                "below",
                (
                    f"{by}={group}: {rate:.0%} corrected (< {low:.0%}): people mostly confirm the "
                    "model; the review threshold is too conservative, send fewer such items"
                ),
            )
        elif rate > high:
            verdict, message = (
                "above",
                (
                    f"{by}={group}: {rate:.0%} corrected (> {high:.0%}): the model is not yet "
                    "competent enough to assist here; its pre-annotations cost more than they save"
                ),
            )
        else:
            verdict, message = "healthy", f"{by}={group}: {rate:.0%} corrected (healthy band)"
        rows.append([group, len(part), corrected, rate, verdict, message])
    return pd.DataFrame(rows, columns=columns)


# --- cost and time-to-loop-close --------------------------------------------------------------
def annotation_cost(
    annotations: pd.DataFrame,
    *,
    price_per_label: Mapping[str, float],
    default_price: float,
) -> float:
    """What the annotations cost: every submitted answer (skips too: time was spent) at
    its tier's price.

    Args:
        annotations: One row per annotation (each annotation id counted once).
        price_per_label: Tier -> price of one answer.
        default_price: Price for tiers not listed.
    """
    if annotations.empty:
        return 0.0
    unique = annotations.drop_duplicates("annotation_id", keep="last")
    tiers = (
        unique[TIER].fillna("").astype(str) if TIER in unique else pd.Series("", index=unique.index)
    )
    return float(tiers.map(lambda t: price_per_label.get(t, default_price)).sum())


def loop_close_seconds(
    labels_through: datetime | None, serving_since: datetime | None
) -> float | None:
    """Time-to-loop-close: the last annotation a champion was trained on to its promotion.

    Returns:
        Seconds, or None when either instant is unknown.
    """
    if labels_through is None or serving_since is None:
        return None
    return (serving_since - labels_through).total_seconds()


def cost_per_accuracy_point(
    cost: float, accuracy_before: float | None, accuracy_after: float | None
) -> float | None:
    """Annotation cost per accuracy point (percentage point) regained; None without a gain."""
    if accuracy_before is None or accuracy_after is None:
        return None
    points = 100.0 * (accuracy_after - accuracy_before)
    return cost / points if points > 0 else None


# --- per-cycle figures and the chart ----------------------------------------------------------
CYCLE_COLUMNS = [
    "partition",
    "annotations",
    "labels",
    "correction_rate",
    "audited",
    "audit_pass_rate",
    "audit_low",
    "audit_high",
    "cost",
]


def cycle_table(
    annotations: pd.DataFrame,
    *,
    price_per_label: Mapping[str, float],
    default_price: float,
) -> pd.DataFrame:
    """Per batch partition: answers, labels, correction rate, audit pass rate (with its
    Wilson interval: the served model's accuracy on what nobody reviewed) and cost.

    Returns:
        Columns ``CYCLE_COLUMNS``, sorted by partition.
    """
    if annotations.empty:
        return pd.DataFrame(columns=CYCLE_COLUMNS)
    unique = annotations.drop_duplicates("annotation_id", keep="last")
    audit = audit_by_partition(unique).set_index("partition")
    rows = []
    for partition, part in unique.groupby(unique[PARTITION].fillna("").astype(str), sort=True):
        done = _finished(part)
        corrected = correction_rate(part)
        a = audit.loc[partition] if partition in audit.index else None
        rows.append(
            {
                "partition": partition,
                "annotations": len(part),
                "labels": len(done),
                "correction_rate": float("nan") if corrected is None else corrected,
                "audited": 0 if a is None else int(a["audited"]),
                "audit_pass_rate": float("nan") if a is None else float(a["rate"]),
                "audit_low": float("nan") if a is None else float(a["low"]),
                "audit_high": float("nan") if a is None else float(a["high"]),
                "cost": annotation_cost(
                    part, price_per_label=price_per_label, default_price=default_price
                ),
            }
        )
    return pd.DataFrame(rows, columns=CYCLE_COLUMNS)


def accuracy_regained(cycles: pd.DataFrame) -> tuple[float | None, float | None, float]:
    """The audit pass rate at its lowest batch and at the latest one, and what the labels
    from the lowest batch on cost: the inputs of ``cost_per_accuracy_point``.

    Returns:
        ``(trough, latest, cost_since_trough)``; rates None without two audited batches.
    """
    audited = cycles[cycles["audited"] > 0]
    if len(audited) < 2:
        return None, None, 0.0
    trough_at = audited["audit_pass_rate"].idxmin()
    since = cycles.loc[cycles["partition"] >= audited.loc[trough_at, "partition"]]
    return (
        float(audited.loc[trough_at, "audit_pass_rate"]),
        float(audited["audit_pass_rate"].iloc[-1]),
        float(since["cost"].sum()),
    )


def render_chart(
    cycles: pd.DataFrame,
    agreement: Mapping[str, float],
    *,
    title: str,
    band: tuple[float, float] = HEALTHY_CORRECTION_BAND,
) -> bytes:
    """A PNG a person would rather look at: per batch the audit pass rate with its
    interval and the correction rate against the healthy band, labels and cumulative
    cost, and agreement per queue."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    x = list(range(len(cycles)))
    names = [str(p)[5:] if len(str(p)) == 10 else str(p) for p in cycles["partition"]]
    ax = axes[0]
    rate = cycles["audit_pass_rate"].to_numpy(dtype=float)
    ax.errorbar(
        x,
        rate,
        # clipped: at a rate of 1.0 the Wilson bound can sit a rounding error below it,
        # and matplotlib refuses a negative error bar
        yerr=[
            (rate - cycles["audit_low"].to_numpy(dtype=float)).clip(min=0),
            (cycles["audit_high"].to_numpy(dtype=float) - rate).clip(min=0),
        ],
        fmt="o-",
        capsize=4,
        label="audit pass rate (95% Wilson)",
    )
    ax.plot(x, cycles["correction_rate"].to_numpy(dtype=float), "s--", label="correction rate")
    low, high = band
    ax.axhspan(low, high, color="green", alpha=0.1, label="healthy correction band")
    ax.set_ylim(0, 1.05)
    ax.set_title("Quality per batch")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    ax.bar(x, cycles["labels"].to_numpy(dtype=float), color="tab:blue", label="labels")
    ax.set_ylabel("labels")
    twin = ax.twinx()
    twin.plot(x, cycles["cost"].cumsum().to_numpy(dtype=float), "k.-", label="cumulative cost")
    twin.set_ylabel("cumulative cost")
    ax.set_title("Labels spent and cost")
    ax = axes[2]
    tiers = [t for t, v in agreement.items() if v == v]  # NaN-free
    ax.bar(tiers, [agreement[t] for t in tiers], color="tab:purple")
    ax.axhline(0.667, color="red", linestyle=":", label="alpha 0.667 (guideline signal)")
    ax.set_ylim(min(0.0, *[agreement[t] for t in tiers]) if tiers else 0, 1)
    if not tiers:
        ax.text(0.5, 0.5, "no item reviewed twice yet", ha="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_title("Agreement per queue (Krippendorff's alpha)")
    ax.legend(fontsize=7)
    for a in axes[:2]:
        a.set_xticks(x, names, rotation=45, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    return out.getvalue()


# --- per-batch warnings -----------------------------------------------------------------------
@dataclass(frozen=True)
class BatchWarning:
    """A loop-health verdict on the newest batch that has enough evidence."""

    warn: bool
    partition: str | None  # the batch judged (None: no batch had enough evidence)
    value: float | None
    message: str


def has_numbers(cycles: pd.DataFrame) -> bool:
    """Whether any batch has a correction or audit figure yet (else there is nothing to
    draw)."""
    if cycles.empty:
        return False
    return bool(cycles[["correction_rate", "audit_pass_rate"]].notna().to_numpy().any())


def correction_band_warning(
    cycles: pd.DataFrame, policy: LoopHealthPolicy = LoopHealthPolicy()
) -> BatchWarning:
    """The newest batch with at least ``policy.min_labels`` labels, against the band.

    Args:
        cycles: ``cycle_table`` output (sorted by partition).
        policy: The band and the minimum number of labels.
    """
    judged = cycles[(cycles["labels"] >= policy.min_labels) & cycles["correction_rate"].notna()]
    low, high = policy.band
    if judged.empty:
        return BatchWarning(
            False,
            None,
            None,
            f"no batch with {policy.min_labels} or more labels yet: nothing to judge",
        )
    row = judged.iloc[-1]
    rate, partition = float(row["correction_rate"]), str(row["partition"])
    where = f"batch {partition}: {rate:.0%} of {int(row['labels'])} labels corrected"
    if rate < low:
        return BatchWarning(
            True,
            partition,
            rate,
            f"{where}, below the healthy band {low:.0%}-{high:.0%}: people mostly confirm "
            "the model; the review threshold is too conservative (send fewer items)",
        )
    if rate > high:
        return BatchWarning(
            True,
            partition,
            rate,
            f"{where}, above the healthy band {low:.0%}-{high:.0%}: the model is not yet "
            "competent enough to assist; its pre-annotations cost more than they save",
        )
    return BatchWarning(False, partition, rate, f"{where}, inside {low:.0%}-{high:.0%}")


def audit_fall_warning(
    cycles: pd.DataFrame, policy: LoopHealthPolicy = LoopHealthPolicy()
) -> BatchWarning:
    """The newest batch with at least ``policy.min_audited`` audited items against the
    earlier audited batches pooled: warns on a fall of ``policy.audit_drop`` or more.

    Args:
        cycles: ``cycle_table`` output (its audit columns are ``audit_by_partition``'s,
            the figures the ``audit_pass_rate_holds`` check judges).
        policy: The fall that warns and the minimum audit size.
    """
    audited = cycles[cycles["audited"] > 0]
    judged = audited[audited["audited"] >= policy.min_audited]
    if judged.empty:
        return BatchWarning(
            False,
            None,
            None,
            f"no batch with {policy.min_audited} or more audited items yet: nothing to judge",
        )
    last = judged.index[-1]
    row, earlier = audited.loc[last], audited.loc[audited.index < last]
    rate, partition = float(row["audit_pass_rate"]), str(row["partition"])
    where = f"batch {partition}: audit pass rate {rate:.2f} over {int(row['audited'])} items"
    if earlier.empty:
        return BatchWarning(False, partition, rate, f"{where}; no earlier audited batch")
    passed = (earlier["audit_pass_rate"] * earlier["audited"]).sum()
    before = float(passed / earlier["audited"].sum())
    drop = before - rate
    if drop >= policy.audit_drop:
        return BatchWarning(
            True,
            partition,
            rate,
            f"{where}, down {drop:.2f} from {before:.2f} in the earlier batches: the "
            "auto-accepted answers are getting worse (early sign of concept drift)",
        )
    return BatchWarning(False, partition, rate, f"{where}; earlier batches {before:.2f}")
