"""Decide, for every scored item, whether a person reviews it, and record why.

The decision is built from *triggers*: each trigger looks at the scores and names the
items it wants reviewed (today only ``low_confidence``; committee disagreement,
out-of-distribution and policy categories are further triggers of the same shape).
Items wanted by any trigger are ranked by uncertainty and the review capacity takes the
top of the ranking; the rest are auto-accepted with ``over_capacity`` recorded. On top of
that, a small uniform audit sample of the auto-accepted items goes to review, so the
accuracy of what nobody looked at can be measured without bias.

Every choice is deterministic for a policy seed and the item ids (ranking ties are
broken by id, the audit sample by a keyed hash of the id), so re-running a partition
routes the same items and never spends the review budget twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hitl_pipeline.core.datasets import stable_uniform
from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    MARGIN,
    PRIORITY,
    REASONS,
    ROUTE,
    ROUTE_AUTO,
    ROUTE_REVIEW,
    TIER,
)

REASON_LOW_CONFIDENCE = "low_confidence"
REASON_AUDIT = "audit"
REASON_CONFIDENT = "confident"
# Under drift the model's confidence is suspect: capacity that uncertain items leave
# unused goes to a random sample of the confident ones, which is where confidently wrong
# predictions of a changed segment are found.
REASON_DRIFT_SAMPLE = "drift_sample"
REASON_OVER_CAPACITY = "over_capacity"
DEFAULT_TIER = "general"


@dataclass(frozen=True)
class RoutingPolicy:
    """Tunables of the routing decision.

    Attributes:
        confidence_threshold: Below this top-class probability an item is uncertain.
        review_capacity: Items per batch people can review (audit items come on top:
            they measure the loop rather than feed the model).
        audit_rate: Share of the auto-accepted items sampled for audit (rounded to the
            nearest whole item).
        drift_capacity_multiplier: Capacity factor while drift is detected, when the
            model is most wrong and labels are worth most.
        seed: Keys the audit sample; change it to draw a different sample.
    """

    confidence_threshold: float = 0.75
    review_capacity: int = 100
    audit_rate: float = 0.03
    drift_capacity_multiplier: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError("confidence_threshold must be in [0, 1]")
        if self.review_capacity < 0:
            raise ValueError("review_capacity must be >= 0")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError("audit_rate must be in [0, 1]")
        if self.drift_capacity_multiplier < 0:
            raise ValueError("drift_capacity_multiplier must be >= 0")

    def capacity(self, *, drift: bool) -> int:
        """Review capacity of one batch, raised while drift is detected."""
        if not drift:
            return self.review_capacity
        return math.floor(self.review_capacity * self.drift_capacity_multiplier + 0.5)


@dataclass(frozen=True)
class Trigger:
    """A named reason to send an item to review.

    Attributes:
        code: The reason code recorded in ``reasons``.
        wants_review: Given the scores and the policy, a boolean mask (aligned with the
            scores) of the items this trigger wants reviewed.
    """

    code: str
    wants_review: Callable[[pd.DataFrame, RoutingPolicy], pd.Series]


def low_confidence(scores: pd.DataFrame, policy: RoutingPolicy) -> pd.Series:
    """Items whose top-class probability is below the policy's threshold."""
    return scores[CONFIDENCE] < policy.confidence_threshold


DEFAULT_TRIGGERS: tuple[Trigger, ...] = (Trigger(REASON_LOW_CONFIDENCE, low_confidence),)


def route_predictions(
    scores: pd.DataFrame,
    policy: RoutingPolicy,
    *,
    drift: bool = False,
    triggers: Sequence[Trigger] = DEFAULT_TRIGGERS,
) -> pd.DataFrame:
    """Add a routing decision and its reasons to every scored item.

    Args:
        scores: Output of ``core.inference.score_batch`` (needs ``item_id``,
            ``confidence`` and ``margin``).
        policy: The routing tunables.
        drift: Whether drift is currently detected: raises the capacity, and fills what
            the triggered items leave of it with a random sample of the others
            ("drift_sample").
        triggers: Reasons to review, in the order their codes are recorded.

    Returns:
        A copy of ``scores`` (same row order, index reset) with ``route``
        ("review" / "auto_accept"), ``reasons`` (";"-joined codes: the triggers that
        fired, then "over_capacity" for a triggered item left out by the capacity or
        "confident" when no trigger fired; "audit" when sampled for audit, which then
        replaces "over_capacity"/"confident"), ``priority`` (``1 - margin``: higher is
        more uncertain, to be reviewed first) and ``tier``.
    """
    out = scores.reset_index(drop=True).copy()
    n = len(out)
    ids = out[ITEM_ID].astype(str)
    priority = (1.0 - out[MARGIN].astype("float64")).to_numpy()

    fired = {t.code: t.wants_review(out, policy).to_numpy(dtype=bool) for t in triggers}
    wanted = np.zeros(n, dtype=bool)
    for mask in fired.values():
        wanted |= mask

    # most uncertain first; ties by item id so the cut is reproducible
    order = np.lexsort((ids.to_numpy(), -priority))
    ranked_wanted = order[wanted[order]]
    review = np.zeros(n, dtype=bool)
    capacity = policy.capacity(drift=drift)
    review[ranked_wanted[:capacity]] = True

    explore = np.zeros(n, dtype=bool)
    spare = capacity - int(review.sum())
    if drift and spare > 0:
        draw = stable_uniform(ids, f"drift:{policy.seed}")
        candidates = np.flatnonzero(~wanted)
        order_c = np.lexsort((ids.to_numpy()[candidates], draw[candidates]))
        explore[candidates[order_c][:spare]] = True
        review |= explore

    auto = ~review
    audit = np.zeros(n, dtype=bool)
    n_audit = math.floor(policy.audit_rate * float(auto.sum()) + 0.5)
    if n_audit:
        draw = stable_uniform(ids, f"audit:{policy.seed}")
        candidates = np.flatnonzero(auto)
        chosen = candidates[np.lexsort((ids.to_numpy()[candidates], draw[candidates]))][:n_audit]
        audit[chosen] = True

    reasons: list[str] = []
    for i in range(n):
        codes = [code for code, mask in fired.items() if mask[i]]
        if explore[i]:
            codes.append(REASON_DRIFT_SAMPLE)
        elif audit[i]:
            codes.append(REASON_AUDIT)
        elif not review[i]:
            codes.append(REASON_OVER_CAPACITY if wanted[i] else REASON_CONFIDENT)
        reasons.append(";".join(codes))

    out[ROUTE] = np.where(review | audit, ROUTE_REVIEW, ROUTE_AUTO)
    out[REASONS] = reasons
    out[PRIORITY] = priority
    out[TIER] = DEFAULT_TIER
    return out


def has_reason(reasons: pd.Series, code: str) -> pd.Series:
    """Whether each ";"-joined reasons string (or tuple of codes) contains ``code``.

    Args:
        reasons: A ``reasons`` column.
        code: A reason code.

    Returns:
        A boolean Series aligned with ``reasons``.
    """

    def contains(value: object) -> bool:
        if isinstance(value, str):
            return code in value.split(";")
        if isinstance(value, list | tuple | set | frozenset | np.ndarray):
            return code in list(value)
        return False

    return reasons.map(contains).astype(bool)
