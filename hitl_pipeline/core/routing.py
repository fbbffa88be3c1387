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
are auto-accepted with ``over_capacity`` recorded. Capacity left over goes, with
``fill_capacity``, to the next items of the ranking (``capacity_fill``), except a
reserved ``explore_share`` of the capacity, which goes to a random sample (``explore``),
and, under drift, ``drift_sample_share`` of it (0 by default), which goes to a random
sample of the untriggered items (``drift_sample``): that is where confidently wrong
predictions of a changed segment hide. On top of that, a
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

from hitl_pipeline.core.chunks import bottom_k
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
        disagreement_min_share: The disagreement weight counts only when the capacity
            (raised under drift) is at least this share of the batch's rows; below it,
            disputed items are still triggered but ranked by their uncertainty alone.
            0: always counts. With a couple of percent of a batch to label, a slot given
            to an item the champion is sure of but its predecessor disputed is taken
            from the most uncertain ones. Replayed at a 2% budget (3 repeats, none and
            default): 0.03 raised rainfall from 0.738 to 0.744 (least confidence 0.743)
            and employment-ma from 0.815 to 0.816, with fewer batches below never
            retraining (1.0 to 0.7 and 2.0 to 0.7 a run), and left the other streams
            within 0.1 point (credit-card-mc 0.3, inside its spread); 5 and 10% budgets
            are unchanged (``docs/benchmark-results.md``).
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
        drift_sample_share: Under drift, share of the capacity left after the triggered
            items that goes to the random ``drift_sample``; the rest, with
            ``fill_capacity``, to the next items of the ranking (``capacity_fill``). 1:
            all of it random. Replayed on every registered stream, 0 (all of it ranked)
            was ahead or inside the repeats' spread (``docs/benchmark-results.md``), so
            it is the default; the audit still samples the auto-accepted items at random.
        explore_share: Share of the capacity kept for that random sample even when
            triggered items could fill it (a hedge against confidently wrong segments,
            and representative labels for the gate's held-out set).
        cost_wrong_accept: Cost of auto-accepting a wrong prediction (for the
            cost-aware threshold, ``core.threshold``).
        cost_review: Cost of one human review (same unit).
        max_candidates: Most triggered items the capacity is ranked from (and most
            others the capacity fill is ranked from): a batch larger than this keeps
            only its most urgent ones for the ranking (``BatchRouter``), so routing ten
            million rows holds tens of thousands; a batch up to this size is routed
            exactly as a whole.
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
    disagreement_min_share: float = 0.03
    ood_weight: float = 0.5
    diversity: bool = True
    stratify: bool = True
    drift_weight: float = 3.0
    fill_capacity: bool = True
    drift_sample_share: float = 0.0
    explore_share: float = 0.0
    cost_wrong_accept: float = 10.0
    cost_review: float = 1.0
    max_candidates: int = 20_000

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
        if not 0.0 <= self.drift_sample_share <= 1.0:
            raise ValueError("drift_sample_share must be in [0, 1]")
        if not 0.0 <= self.disagreement_min_share <= 1.0:
            raise ValueError("disagreement_min_share must be in [0, 1]")
        if self.disagreement_weight < 0 or self.ood_weight < 0 or self.drift_weight < 0:
            raise ValueError("weights must be >= 0")
        if self.cost_wrong_accept <= 0 or self.cost_review < 0:
            raise ValueError("need cost_wrong_accept > 0 and cost_review >= 0")
        if self.max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")

    def capacity(self, *, drift: bool) -> int:
        """Review capacity of one batch, raised while drift is detected."""
        if not drift:
            return self.review_capacity
        return math.floor(self.review_capacity * self.drift_capacity_multiplier + 0.5)

    def disagreement_weight_for(self, *, drift: bool, rows: int | None) -> float:
        """``disagreement_weight``, or 0 when the capacity is below
        ``disagreement_min_share`` of a batch of ``rows`` (unknown ``rows``: the weight)."""
        if not self.disagreement_min_share or not rows:
            return self.disagreement_weight
        share = self.capacity(drift=drift) / rows
        return self.disagreement_weight if share >= self.disagreement_min_share - 1e-9 else 0.0


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


def review_priority(
    scores: pd.DataFrame, policy: RoutingPolicy, *, drift: bool = False, rows: int | None = None
) -> np.ndarray:
    """Urgency of reviewing each item: higher first.

    ``1 - margin``, plus the disagreement weight (``disagreement_weight_for`` the capacity
    and the batch's ``rows``) times ``disagreement`` and ``ood_weight`` times how far the
    ``ood_score`` is beyond ``ood_threshold`` (scaled to [0, 1]) when those columns are
    present.
    """
    priority = 1.0 - scores[MARGIN].astype("float64").to_numpy()
    weight = policy.disagreement_weight_for(drift=drift, rows=rows)
    if DISAGREEMENT in scores and weight:
        priority += weight * scores[DISAGREEMENT].fillna(0.0).to_numpy()
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
            # a text column has no segments: every post would be a stratum of its own
            if column in scores and column not in schema.text_features:
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
            text=[c for c in schema.text_features if c in out],
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

    The one-frame form of ``BatchRouter`` (which routes a batch that arrives in chunks
    with the same decisions).

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
    router = BatchRouter(policy, drift=drift, triggers=triggers, total_rows=len(scores))
    router.add(scores)
    plan = router.plan(schema=schema, drifted_columns=drifted_columns)
    return plan.apply(scores, first_row=0)


# candidate bookkeeping columns (dropped before a frame leaves the router)
_ROW, _PRIO = "_hitl_row", "_hitl_priority"
_WANTED, _MANDATORY = "_hitl_wanted", "_hitl_mandatory"
_IN_POOL, _IN_REST = "_hitl_pool", "_hitl_rest"
_IN_EXPLORE, _IN_AUDIT = "_hitl_explore", "_hitl_audit"
_DRIFT_DRAW, _AUDIT_DRAW = "_hitl_drift_draw", "_hitl_audit_draw"
_BOOKKEEPING = [
    _ROW, _PRIO, _WANTED, _MANDATORY, _IN_POOL, _IN_REST, _IN_EXPLORE, _IN_AUDIT, _DRIFT_DRAW,
    _AUDIT_DRAW,
]  # fmt: skip


def _best(priority: np.ndarray, ids: np.ndarray, k: int, mask: np.ndarray) -> np.ndarray:
    """Mask of the ``k`` highest priorities among ``mask`` (ties: smaller id first)."""
    out = np.zeros(len(priority), dtype=bool)
    out[bottom_k(-priority, ids, k, mask)] = True
    return out


def _smallest(draw: np.ndarray, ids: np.ndarray, k: int, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(len(draw), dtype=bool)
    out[bottom_k(draw, ids, k, mask)] = True
    return out


class BatchRouter:
    """Routes a batch that arrives in chunks, keeping only the candidates it needs.

    Pass 1, ``add`` each scored chunk: the triggers and priority are computed per row
    and only these rows are kept: every mandatory item; the ``max_candidates`` most
    urgent triggered items (the pool the capacity is ranked from) and the
    ``max_candidates`` most urgent of all the others (the pool ``capacity_fill`` ranks
    from); the ``capacity`` rows with the smallest drift/explore draw and the
    ``capacity`` + audit rows with the smallest audit draw (the random samples draw the
    smallest keyed hashes of the ids, so these hold every row a sample can take). Then
    ``plan`` makes the decisions on the kept rows exactly as on a whole batch, and pass
    2, ``RoutingPlan.apply`` on each chunk again, writes every row's route and reasons.

    A batch with at most ``max_candidates`` rows keeps every row and is routed exactly
    as ``route_predictions`` routes it whole. A larger one ranks its picks among its
    ``max_candidates`` most urgent candidates (the diversity scale, embedding and
    segments are computed on those), and the random samples are exact.
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        *,
        drift: bool = False,
        triggers: Sequence[Trigger] = DEFAULT_TRIGGERS,
        total_rows: int | None = None,
    ) -> None:
        self.policy = policy
        self.drift = drift
        self.triggers = tuple(triggers)
        self.total_rows = total_rows
        self.rows = 0
        self.mandatory_rows = 0
        self._kept: pd.DataFrame | None = None

    def _audit_keep(self) -> int | None:
        capacity = self.policy.capacity(drift=self.drift)
        if self.policy.audit_in_capacity:
            return capacity
        if self.total_rows is None:
            return None  # the audit grows with the batch: without its size keep them all
        return capacity + math.floor(self.policy.audit_rate * self.total_rows + 0.5)

    def add(self, scores: pd.DataFrame) -> None:
        """Take in the next chunk of scores (``score_batch`` + escalation columns)."""
        out = scores.reset_index(drop=True)
        n = len(out)
        if n == 0:
            if self._kept is None:
                self._kept = out.assign(**{c: pd.Series(dtype=object) for c in _BOOKKEEPING})
            return
        policy = self.policy
        ids = out[ITEM_ID].astype(str)
        fired = {t.code: t.wants_review(out, policy).to_numpy(dtype=bool) for t in self.triggers}
        wanted = np.zeros(n, dtype=bool)
        mandatory = np.zeros(n, dtype=bool)
        for trigger in self.triggers:
            wanted |= fired[trigger.code]
            if trigger.mandatory:
                mandatory |= fired[trigger.code]
        chunk = out.assign(
            **{
                _ROW: np.arange(self.rows, self.rows + n),
                _PRIO: review_priority(out, policy, drift=self.drift, rows=self.total_rows),
                _WANTED: wanted,
                _MANDATORY: mandatory,
                _DRIFT_DRAW: stable_uniform(ids, f"drift:{policy.seed}"),
                _AUDIT_DRAW: stable_uniform(ids, f"audit:{policy.seed}"),
            }
        )
        self.rows += n
        self.mandatory_rows += int(mandatory.sum())
        kept = chunk if self._kept is None else pd.concat([self._kept, chunk], ignore_index=True)
        self._kept = self._trim(kept)

    def _trim(self, kept: pd.DataFrame) -> pd.DataFrame:
        limit = self.policy.max_candidates
        capacity = self.policy.capacity(drift=self.drift)
        audit_keep = self._audit_keep()
        ids = kept[ITEM_ID].astype(str).to_numpy()
        mandatory = kept[_MANDATORY].to_numpy(dtype=bool)
        free = ~mandatory
        priority = kept[_PRIO].to_numpy(dtype="float64")
        in_pool = _best(priority, ids, limit, free & kept[_WANTED].to_numpy(dtype=bool))
        in_rest = _best(priority, ids, limit, free)
        in_explore = _smallest(kept[_DRIFT_DRAW].to_numpy(), ids, capacity, free)
        in_audit = (
            free
            if audit_keep is None
            else _smallest(kept[_AUDIT_DRAW].to_numpy(), ids, audit_keep, free)
        )
        keep = mandatory | in_pool | in_rest | in_explore | in_audit
        kept = kept.assign(
            **{_IN_POOL: in_pool, _IN_REST: in_rest, _IN_EXPLORE: in_explore, _IN_AUDIT: in_audit}
        )
        return kept if keep.all() else kept.loc[keep].reset_index(drop=True)

    @property
    def candidates(self) -> int:
        """Rows kept so far."""
        return 0 if self._kept is None else len(self._kept)

    def plan(
        self, *, schema: BatchSchema | None = None, drifted_columns: Sequence[str] = ()
    ) -> RoutingPlan:
        """The decisions for the whole batch, made on the kept rows.

        Args:
            schema: The batch schema (diversity embedding, drifted-segment strata).
            drifted_columns: Feature columns the drift check flagged.
        """
        policy, drift = self.policy, self.drift
        if self._kept is None:
            raise ValueError("no scores were added to the router")
        out = self._kept.sort_values(_ROW, kind="stable").reset_index(drop=True)
        n_total = self.rows
        id_array = out[ITEM_ID].astype(str).to_numpy()
        priority = out[_PRIO].to_numpy(dtype="float64")
        mandatory = out[_MANDATORY].to_numpy(dtype=bool)

        capacity = policy.capacity(drift=drift)
        n_audit: int | None = None
        if policy.audit_in_capacity:
            n_audit = min(
                math.floor(policy.audit_rate * max(n_total - capacity, 0) + 0.5),
                math.floor(policy.max_audit_share * capacity),
            )
            capacity -= n_audit
        review = mandatory.copy()
        rank = np.full(len(out), np.nan)
        pool = np.flatnonzero(out[_IN_POOL].to_numpy(dtype=bool))
        reserved = math.floor(policy.explore_share * capacity)
        slots = max(capacity - reserved - self.mandatory_rows, 0)
        if len(pool) and slots:
            picks = _rank(
                out, id_array, pool, priority, slots, policy, schema, drifted_columns, drift
            )
            review[pool[picks]] = True
            rank[pool[picks]] = np.arange(1, len(picks) + 1)

        # capacity the triggered items leave: with fill_capacity, the next most
        # informative items by the same ranking, keeping the explore share random and,
        # under drift, drift_sample_share of it (confidently wrong items of a changed
        # segment hide among the confident)
        spare = capacity - int(review.sum())
        keep_random = reserved
        if drift:
            keep_random = max(reserved, math.ceil(policy.drift_sample_share * max(spare, 0)))
        filled = np.zeros(len(out), dtype=bool)
        if policy.fill_capacity and spare > keep_random:
            rest = np.flatnonzero(~review & out[_IN_REST].to_numpy(dtype=bool))
            picks = _rank(
                out,
                id_array,
                rest,
                priority,
                spare - keep_random,
                policy,
                schema,
                drifted_columns,
                drift,
            )
            filled[rest[picks]] = True
            rank[rest[picks]] = np.nanmax(rank, initial=0) + np.arange(1, len(picks) + 1)
            review |= filled
        explore = np.zeros(len(out), dtype=bool)
        spare = capacity - int(review.sum())
        if (drift or policy.fill_capacity or reserved) and spare > 0:
            draw = out[_DRIFT_DRAW].to_numpy(dtype="float64")
            candidates = np.flatnonzero(~review & out[_IN_EXPLORE].to_numpy(dtype=bool))
            order_c = np.lexsort((id_array[candidates], draw[candidates]))
            explore[candidates[order_c][:spare]] = True
            review |= explore

        auto_rows = n_total - int(review.sum())
        audit = np.zeros(len(out), dtype=bool)
        if n_audit is None:
            n_audit = math.floor(policy.audit_rate * float(auto_rows) + 0.5)
        n_audit = min(n_audit, auto_rows)
        if n_audit:
            draw = out[_AUDIT_DRAW].to_numpy(dtype="float64")
            candidates = np.flatnonzero(~review & out[_IN_AUDIT].to_numpy(dtype=bool))
            chosen = candidates[np.lexsort((id_array[candidates], draw[candidates]))][:n_audit]
            audit[chosen] = True

        rows = out[_ROW].to_numpy(dtype="int64")
        ranked = ~np.isnan(rank)
        return RoutingPlan(
            policy=policy,
            drift=drift,
            triggers=self.triggers,
            rows=n_total,
            candidates=len(out),
            review_rows=rows[review],
            filled_rows=rows[filled],
            explore_rows=rows[explore],
            audit_rows=rows[audit],
            ranked_rows=rows[ranked],
            ranks=rank[ranked],
            batch_rows=self.total_rows,
        )


@dataclass(frozen=True)
class RoutingPlan:
    """The routing decisions of one batch, by row position (0 = the batch's first row).

    Attributes:
        rows: Rows in the batch.
        candidates: Rows the router kept to decide on.
        review_rows: Rows a person reviews (mandatory, ranked, filled, sampled), audit
            apart.
        filled_rows, explore_rows, audit_rows: Rows taken by ``capacity_fill``, by the
            drift/explore sample and by the audit.
        ranked_rows, ranks: Rows given a ``review_rank``, and the ranks.
        batch_rows: The batch size the router ranked with (``BatchRouter.total_rows``),
            so the priority written is the one ranked on.
    """

    policy: RoutingPolicy
    drift: bool
    triggers: tuple[Trigger, ...]
    rows: int
    candidates: int
    review_rows: np.ndarray
    filled_rows: np.ndarray
    explore_rows: np.ndarray
    audit_rows: np.ndarray
    ranked_rows: np.ndarray
    ranks: np.ndarray
    batch_rows: int | None = None

    @property
    def to_review(self) -> int:
        """Items routed to people (the audit included)."""
        return len(self.review_rows) + len(self.audit_rows)

    def apply(self, scores: pd.DataFrame, *, first_row: int) -> pd.DataFrame:
        """Route, reasons, priority, rank, threshold and tier of a chunk of the batch.

        Args:
            scores: The chunk's scores, as given to ``BatchRouter.add``.
            first_row: Position of its first row in the batch.

        Returns:
            See ``route_predictions``.
        """
        policy = self.policy
        out = scores.reset_index(drop=True).copy()
        n = len(out)
        positions = np.arange(first_row, first_row + n)
        fired = {t.code: t.wants_review(out, policy).to_numpy(dtype=bool) for t in self.triggers}
        wanted = np.zeros(n, dtype=bool)
        for mask in fired.values():
            wanted |= mask
        review = np.isin(positions, self.review_rows)
        filled = np.isin(positions, self.filled_rows)
        explore = np.isin(positions, self.explore_rows)
        audit = np.isin(positions, self.audit_rows)
        rank = np.full(n, np.nan)
        inside = (self.ranked_rows >= first_row) & (self.ranked_rows < first_row + n)
        rank[self.ranked_rows[inside] - first_row] = self.ranks[inside]

        explore_code = REASON_DRIFT_SAMPLE if self.drift else REASON_EXPLORE
        # the last reason of each row, by precedence; its index in `tails`
        tails = ["", REASON_FILL, explore_code, REASON_AUDIT, REASON_OVER_CAPACITY]
        tails.append(REASON_CONFIDENT)
        tail = np.select(
            [filled, explore, audit, ~review & wanted, ~review],
            [1, 2, 3, 4, 5],
            default=0,
        )
        # few distinct (fired codes, tail) combinations: build each string once
        codes = list(fired)
        key = tail.astype("int64")
        for bit, code in enumerate(codes):
            key = key + (fired[code].astype("int64") << (bit + 3))
        unique, inverse = np.unique(key, return_inverse=True)
        texts = []
        for value in unique:
            parts = [c for bit, c in enumerate(codes) if (int(value) >> (bit + 3)) & 1]
            if value & 7:
                parts.append(tails[int(value) & 7])
            texts.append(";".join(parts))
        reasons = np.asarray(texts, dtype=object)[inverse] if n else np.zeros(0, dtype=object)

        out[ROUTE] = np.where(review | audit, ROUTE_REVIEW, ROUTE_AUTO)
        out[REASONS] = list(reasons)
        rows = self.batch_rows
        out[PRIORITY] = review_priority(out, policy, drift=self.drift, rows=rows) if n else []
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
