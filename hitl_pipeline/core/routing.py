"""Decide, for every scored item, whether a person reviews it, and record why.

The decision is built from *triggers*: each trigger looks at the scores and names the
items it wants reviewed, and its code is recorded in ``reasons``:

- ``low_confidence``: top-class probability below the (possibly cost-fitted) threshold;
- ``committee_disagreement``: committee members (champion vs previous champion in the
  pipeline, a bootstrap committee in the benchmark) disagree (``disagreement`` column);
- ``policy_category``: a predicted class or a rule over the features that always goes
  to a person, whatever the capacity (declared in the policy);
- ``out_of_distribution``: the input is more isolated than nearly all training rows
  (``ood_score`` column), where a model can be confidently wrong.

A trigger whose column is absent or that is not configured never fires. Mandatory
triggers (policy categories) are reviewed first; the other wanted items are ranked by
``core.selection.select_diverse`` (uncertainty x diversity, stratified by predicted class
and, under drift, by drifted segment) and the review capacity takes the picks; the rest
are auto-accepted with ``over_capacity`` recorded. Under drift capacity left over goes
to a random sample of the untriggered items (``drift_sample``): that is where
confidently wrong predictions of a changed segment hide; without drift, with
``fill_capacity``, to the next items of the ranking (``capacity_fill``), and a reserved
``explore_share`` of the capacity to a random sample (``explore``). On top of that, a
small uniform audit sample of the auto-accepted items goes to review, so the accuracy
of what nobody looked at can be measured without bias (and the cost-aware threshold
re-calibrated, see ``core.threshold``).

Every choice is deterministic for a policy seed and the item ids (ranking ties are
broken by id, the samples by a keyed hash of the id), so re-running a partition
routes the same items and never spends the review budget twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hitl_pipeline.core.datasets import stable_uniform
from hitl_pipeline.core.selection import feature_embedding, segment_labels, select_diverse
from hitl_pipeline.core.types import (
    CONFIDENCE,
    DISAGREEMENT,
    ITEM_ID,
    MARGIN,
    OOD_SCORE,
    PREDICTED_LABEL,
    PRIORITY,
    REASONS,
    REVIEW_RANK,
    ROUTE,
    ROUTE_AUTO,
    ROUTE_REVIEW,
    THRESHOLD,
    TIER,
    BatchSchema,
)

REASON_LOW_CONFIDENCE = "low_confidence"
REASON_DISAGREEMENT = "committee_disagreement"
REASON_POLICY = "policy_category"
REASON_OOD = "out_of_distribution"
REASON_AUDIT = "audit"
REASON_CONFIDENT = "confident"
# Under drift the model's confidence is suspect: capacity that uncertain items leave
# unused goes to a random sample of the confident ones, which is where confidently wrong
# predictions of a changed segment are found.
REASON_DRIFT_SAMPLE = "drift_sample"
REASON_EXPLORE = "explore"  # the same without drift, when the policy fills its capacity
REASON_OVER_CAPACITY = "over_capacity"
# With ``fill_capacity``: capacity the triggers leave goes to the next most informative
# items by the same ranking (a label near the boundary teaches the model most).
REASON_FILL = "capacity_fill"
DEFAULT_TIER = "general"
# An adjudication task's own reason (its reviewers disagreed): set by the feedback stage.
REASON_REVIEWERS_DISAGREED = "disagreement"

# What a reviewer reads for each code (Label Studio's ``reasons_text`` column).
REASON_TEXTS = {
    REASON_LOW_CONFIDENCE: "low confidence",
    REASON_DISAGREEMENT: "models disagree",
    REASON_POLICY: "policy category",
    REASON_OOD: "unusual input",
    REASON_AUDIT: "random audit",
    REASON_CONFIDENT: "confident",
    REASON_DRIFT_SAMPLE: "drift sample",
    REASON_EXPLORE: "random sample",
    REASON_OVER_CAPACITY: "over capacity",
    REASON_FILL: "spare capacity, informative",
    REASON_REVIEWERS_DISAGREED: "reviewers disagreed",
}


def reasons_text(codes: Sequence[str]) -> str:
    """Reason codes as a reviewer reads them: ``("low_confidence", "audit")`` gives
    ``"low confidence; random audit"``; an unknown code is shown with spaces."""
    texts = [REASON_TEXTS.get(c, c.replace("_", " ")) for c in codes if c]
    return "; ".join(dict.fromkeys(texts))


@dataclass(frozen=True)
class RoutingPolicy:
    """Tunables of the routing decision.

    Attributes:
        confidence_threshold: Below this top-class probability an item is uncertain.
        review_capacity: Items per batch people can review: the label budget of a
            batch. With ``audit_in_capacity`` the audit sample is taken out of it;
            otherwise it comes on top. Policy categories are reviewed whatever it is.
        audit_rate: Share of the auto-accepted items sampled for audit (rounded to the
            nearest whole item).
        audit_in_capacity: The audit sample is part of ``review_capacity`` (one budget
            for everything people label), at most ``max_audit_share`` of it.
        max_audit_share: Most of the capacity the audit may take: it measures the loop
            (and re-fits the threshold) rather than teach the model, and at a budget of
            2% of a batch the full audit rate would take every label.
        drift_capacity_multiplier: Capacity factor while drift is detected, when the
            model is most wrong and labels are worth most.
        seed: Keys the audit sample; change it to draw a different sample.
        disagreement_threshold: Committee disagreement (mean pairwise total-variation
            distance, in [0, 1]) from which an item is escalated.
        ood_threshold: ``ood_score`` (percentile among training rows) from which an
            item is out of distribution; 0.99 flags about 1% of in-distribution rows.
        review_classes: Predicted classes that always go to a person.
        review_rules: Rules over the features that always send an item to a person,
            as ``pandas.DataFrame.eval`` expressions (e.g. ``"monthly_spend > 1500"``).
        disagreement_weight: Weight of ``disagreement`` in the priority.
        ood_weight: Weight of how far beyond ``ood_threshold`` an item is, in the priority.
        diversity: Rank picks by uncertainty x diversity rather than uncertainty alone.
        stratify: Guarantee a pick per predicted class and, under drift, per drifted
            segment.
        drift_weight: Weight of drifted columns in the diversity distance under drift.
        fill_capacity: Spend capacity left after the triggered items even without
            drift: on the next items of the same ranking ("capacity_fill"), except the
            ``explore_share``, which stays a random sample. Replayed on drifting
            streams, a ranked fill learnt more per label than a random one, so it is
            on by default: the budget is spent.
        explore_share: Share of the capacity kept for that random sample even when
            triggered items could fill it (a hedge against confidently wrong segments,
            and representative labels for the gate's held-out set).
        cost_wrong_accept: Cost of auto-accepting a wrong prediction (for the
            cost-aware threshold, ``core.threshold``).
        cost_review: Cost of one human review (same unit).
    """

    confidence_threshold: float = 0.75
    review_capacity: int = 100
    audit_rate: float = 0.03
    audit_in_capacity: bool = True
    max_audit_share: float = 0.1
    drift_capacity_multiplier: float = 2.0
    seed: int = 0
    disagreement_threshold: float = 0.25
    ood_threshold: float = 0.99
    review_classes: tuple[str, ...] = ()
    review_rules: tuple[str, ...] = ()
    disagreement_weight: float = 1.0
    ood_weight: float = 0.5
    diversity: bool = True
    stratify: bool = True
    drift_weight: float = 3.0
    fill_capacity: bool = True
    explore_share: float = 0.0
    cost_wrong_accept: float = 10.0
    cost_review: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError("confidence_threshold must be in [0, 1]")
        if self.review_capacity < 0:
            raise ValueError("review_capacity must be >= 0")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError("audit_rate must be in [0, 1]")
        if self.drift_capacity_multiplier < 0:
            raise ValueError("drift_capacity_multiplier must be >= 0")
        if not 0.0 <= self.disagreement_threshold <= 1.0:
            raise ValueError("disagreement_threshold must be in [0, 1]")
        if not 0.0 <= self.ood_threshold <= 1.0:
            raise ValueError("ood_threshold must be in [0, 1]")
        if not 0.0 <= self.max_audit_share <= 1.0:
            raise ValueError("max_audit_share must be in [0, 1]")
        if not 0.0 <= self.explore_share <= 1.0:
            raise ValueError("explore_share must be in [0, 1]")
        if self.disagreement_weight < 0 or self.ood_weight < 0 or self.drift_weight < 0:
            raise ValueError("weights must be >= 0")
        if self.cost_wrong_accept <= 0 or self.cost_review < 0:
            raise ValueError("need cost_wrong_accept > 0 and cost_review >= 0")

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
        mandatory: Its items are reviewed whatever the capacity (and use it up first).
    """

    code: str
    wants_review: Callable[[pd.DataFrame, RoutingPolicy], pd.Series]
    mandatory: bool = False


def _never(scores: pd.DataFrame) -> pd.Series:
    return pd.Series(False, index=scores.index)


def low_confidence(scores: pd.DataFrame, policy: RoutingPolicy) -> pd.Series:
    """Items whose top-class probability is below the policy's threshold."""
    return scores[CONFIDENCE] < policy.confidence_threshold


def committee_disagreement(scores: pd.DataFrame, policy: RoutingPolicy) -> pd.Series:
    """Items on which the committee disagrees at least ``disagreement_threshold``."""
    if DISAGREEMENT not in scores:
        return _never(scores)
    return scores[DISAGREEMENT].fillna(0.0) >= policy.disagreement_threshold


def out_of_distribution(scores: pd.DataFrame, policy: RoutingPolicy) -> pd.Series:
    """Items at least as isolated from the training data as ``ood_threshold``."""
    if OOD_SCORE not in scores:
        return _never(scores)
    return scores[OOD_SCORE].fillna(0.0) >= policy.ood_threshold


def policy_category(scores: pd.DataFrame, policy: RoutingPolicy) -> pd.Series:
    """Items predicted as a ``review_classes`` class or matching a ``review_rules`` rule.

    Raises:
        ValueError: When a rule cannot be evaluated on the scores' columns.
    """
    mask = _never(scores)
    if policy.review_classes and PREDICTED_LABEL in scores:
        mask |= scores[PREDICTED_LABEL].astype(str).isin(policy.review_classes)
    for rule in policy.review_rules:
        try:
            hit = scores.eval(rule)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ValueError(f"review rule {rule!r} cannot be evaluated: {exc}") from exc
        mask |= pd.Series(hit, index=scores.index).fillna(False).astype(bool)
    return mask


DEFAULT_TRIGGERS: tuple[Trigger, ...] = (
    Trigger(REASON_LOW_CONFIDENCE, low_confidence),
    Trigger(REASON_DISAGREEMENT, committee_disagreement),
    Trigger(REASON_POLICY, policy_category, mandatory=True),
    Trigger(REASON_OOD, out_of_distribution),
)


def review_priority(scores: pd.DataFrame, policy: RoutingPolicy) -> np.ndarray:
    """Urgency of reviewing each item: higher first.

    ``1 - margin``, plus ``disagreement_weight * disagreement`` and ``ood_weight`` times
    how far the ``ood_score`` is beyond ``ood_threshold`` (scaled to [0, 1]) when those
    columns are present.
    """
    priority = 1.0 - scores[MARGIN].astype("float64").to_numpy()
    if DISAGREEMENT in scores:
        priority += policy.disagreement_weight * scores[DISAGREEMENT].fillna(0.0).to_numpy()
    if OOD_SCORE in scores and policy.ood_threshold < 1.0:
        excess = (scores[OOD_SCORE].fillna(0.0).to_numpy() - policy.ood_threshold) / (
            1.0 - policy.ood_threshold
        )
        priority += policy.ood_weight * np.clip(excess, 0.0, 1.0)
    return priority


def _strata(
    scores: pd.DataFrame,
    schema: BatchSchema | None,
    drifted_columns: Sequence[str],
    drift: bool,
) -> list[np.ndarray]:
    strata: list[np.ndarray] = []
    if PREDICTED_LABEL in scores:
        strata.append(scores[PREDICTED_LABEL].astype(str).to_numpy())
    if drift and schema is not None:
        numeric = set(schema.numeric_features)
        for column in drifted_columns:
            if column in scores:
                strata.append(segment_labels(scores, column, numeric=column in numeric))
    return strata


def _rank(
    out: pd.DataFrame,
    ids: np.ndarray,
    pool: np.ndarray,
    priority: np.ndarray,
    slots: int,
    policy: RoutingPolicy,
    schema: BatchSchema | None,
    drifted_columns: Sequence[str],
    drift: bool,
) -> np.ndarray:
    """Positions in ``pool`` of its ``slots`` best picks (``select_diverse``)."""
    embedding = None
    if policy.diversity and schema is not None:
        weights = {c: policy.drift_weight for c in drifted_columns} if drift else {}
        embedding = feature_embedding(
            out.iloc[pool],
            numeric=[c for c in schema.numeric_features if c in out],
            categorical=[c for c in schema.categorical_features if c in out],
            column_weights=weights,
        )
    strata = _strata(out.iloc[pool], schema, drifted_columns, drift) if policy.stratify else []
    return select_diverse(
        priority[pool],
        slots,
        embedding=embedding,
        strata=strata,
        tie_break=ids[pool],
    )


def route_predictions(
    scores: pd.DataFrame,
    policy: RoutingPolicy,
    *,
    drift: bool = False,
    triggers: Sequence[Trigger] = DEFAULT_TRIGGERS,
    schema: BatchSchema | None = None,
    drifted_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Add a routing decision and its reasons to every scored item.

    Args:
        scores: Output of ``core.inference.score_batch`` (needs ``item_id``,
            ``confidence`` and ``margin``; ``predicted_label``, ``disagreement`` and
            ``ood_score`` are used when present).
        policy: The routing tunables.
        drift: Whether drift is currently detected: raises the capacity, stratifies by
            drifted segment, weights the drifted columns in the diversity distance, and
            fills what the triggered items leave of the capacity with a random sample of
            the others ("drift_sample").
        triggers: Reasons to review, in the order their codes are recorded.
        schema: The batch schema; enables the diversity embedding (without it the
            ranking is by priority alone) and drifted-segment strata.
        drifted_columns: Feature columns the drift check flagged.

    Returns:
        A copy of ``scores`` (same row order, index reset) with ``route``
        ("review" / "auto_accept"), ``reasons`` (";"-joined codes: the triggers that
        fired, then "over_capacity" for a triggered item left out by the capacity or
        "confident" when no trigger fired; "drift_sample"/"explore" for a sampled
        untriggered item; "audit" when sampled for audit, which then replaces
        "over_capacity"/"confident"), ``priority`` (``review_priority``: higher is
        reviewed first), ``review_rank`` (pick order among the ranked items, 1 first;
        null otherwise), ``confidence_threshold`` (the threshold used) and ``tier``.
    """
    out = scores.reset_index(drop=True).copy()
    n = len(out)
    ids = out[ITEM_ID].astype(str)
    id_array = ids.to_numpy()
    priority = review_priority(out, policy) if n else np.zeros(0)

    fired = {t.code: t.wants_review(out, policy).to_numpy(dtype=bool) for t in triggers}
    wanted = np.zeros(n, dtype=bool)
    mandatory = np.zeros(n, dtype=bool)
    for trigger in triggers:
        wanted |= fired[trigger.code]
        if trigger.mandatory:
            mandatory |= fired[trigger.code]

    capacity = policy.capacity(drift=drift)
    n_audit: int | None = None
    if policy.audit_in_capacity:
        n_audit = min(
            math.floor(policy.audit_rate * max(n - capacity, 0) + 0.5),
            math.floor(policy.max_audit_share * capacity),
        )
        capacity -= n_audit
    review = mandatory.copy()
    rank = np.full(n, np.nan)
    pool = np.flatnonzero(wanted & ~mandatory)
    reserved = math.floor(policy.explore_share * capacity)
    slots = max(capacity - reserved - int(mandatory.sum()), 0)
    if len(pool) and slots:
        picks = _rank(out, id_array, pool, priority, slots, policy, schema, drifted_columns, drift)
        review[pool[picks]] = True
        rank[pool[picks]] = np.arange(1, len(picks) + 1)

    # capacity the triggered items leave: under drift a random sample (confidently
    # wrong items of a changed segment hide among the confident); otherwise, with
    # fill_capacity, the next most informative items by the same ranking, keeping the
    # explore share random
    spare = capacity - int(review.sum())
    filled = np.zeros(n, dtype=bool)
    if policy.fill_capacity and not drift and spare > reserved:
        rest = np.flatnonzero(~review)
        picks = _rank(out, id_array, rest, priority, spare - reserved, policy, schema, (), False)
        filled[rest[picks]] = True
        rank[rest[picks]] = np.nanmax(rank, initial=0) + np.arange(1, len(picks) + 1)
        review |= filled
    explore = np.zeros(n, dtype=bool)
    spare = capacity - int(review.sum())
    if (drift or policy.fill_capacity or reserved) and spare > 0:
        draw = stable_uniform(ids, f"drift:{policy.seed}")
        candidates = np.flatnonzero(~review)
        order_c = np.lexsort((id_array[candidates], draw[candidates]))
        explore[candidates[order_c][:spare]] = True
        review |= explore
    explore_code = REASON_DRIFT_SAMPLE if drift else REASON_EXPLORE

    auto = ~review
    audit = np.zeros(n, dtype=bool)
    if n_audit is None:
        n_audit = math.floor(policy.audit_rate * float(auto.sum()) + 0.5)
    n_audit = min(n_audit, int(auto.sum()))
    if n_audit:
        draw = stable_uniform(ids, f"audit:{policy.seed}")
        candidates = np.flatnonzero(auto)
        chosen = candidates[np.lexsort((id_array[candidates], draw[candidates]))][:n_audit]
        audit[chosen] = True

    reasons: list[str] = []
    for i in range(n):
        codes = [code for code, mask in fired.items() if mask[i]]
        if filled[i]:
            codes.append(REASON_FILL)
        elif explore[i]:
            codes.append(explore_code)
        elif audit[i]:
            codes.append(REASON_AUDIT)
        elif not review[i]:
            codes.append(REASON_OVER_CAPACITY if wanted[i] else REASON_CONFIDENT)
        reasons.append(";".join(codes))

    out[ROUTE] = np.where(review | audit, ROUTE_REVIEW, ROUTE_AUTO)
    out[REASONS] = reasons
    out[PRIORITY] = priority
    out[REVIEW_RANK] = rank
    out[THRESHOLD] = policy.confidence_threshold
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
