"""Review tiers: which queue of people an item goes to.

Three queues, each a Label Studio project of its own: ``general`` reviewers for the
bulk (low confidence, audit, drift samples), domain ``expert`` s for items a declared
policy says need one (a class, a feature rule, or a routing reason: by default
``policy_category`` and ``out_of_distribution``), and ``adjudication`` for items whose
annotators disagreed. The first two are assigned
here from the routed frame; the pipeline alone moves an item to adjudication (see
``core.agreement.disputed_items``).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hitl_pipeline.core.routing import REASON_OOD, REASON_POLICY
from hitl_pipeline.core.types import OOD_SCORE, PREDICTED_LABEL, REASONS, ROUTE, ROUTE_REVIEW

TIER_GENERAL = "general"
TIER_EXPERT = "expert"
TIER_ADJUDICATION = "adjudication"
TIERS = (TIER_GENERAL, TIER_EXPERT, TIER_ADJUDICATION)

REASON_POLICY_CATEGORY = REASON_POLICY
# An input unlike any training row: the model's guess says least there, and a general
# reviewer has no precedent either. It is also the one expert reason that fires without
# a declared policy (the routing stage's policy classes and rules are empty by default),
# so this is what fills the expert queue out of the box: in the demo, the few odd rows
# of each batch and, after the product launch, many of the new app customers.
EXPERT_REASONS = (REASON_POLICY_CATEGORY, REASON_OOD)

_OPERATORS: Mapping[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda s, v: s.isin(list(v)),  # type: ignore[call-overload, arg-type]
}


@dataclass(frozen=True)
class FeatureRule:
    """One declarative condition on a column of the routed frame, e.g. ``amount > 5000``.

    Attributes:
        column: A feature (or any column of the routed frame).
        op: One of ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``.
        value: The right-hand side (a list for ``in``).
    """

    column: str
    op: str
    value: object

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}; use one of {sorted(_OPERATORS)}")

    @classmethod
    def parse(cls, text: str) -> FeatureRule:
        """A rule written as ``"column op value"``, the value as JSON when it parses
        (``"amount > 5000"``, ``'plan in ["gold", "platinum"]'``), else as text."""
        parts = text.strip().split(None, 2)
        if len(parts) != 3:
            raise ValueError(f"tier rule {text!r}: write it as 'column op value'")
        column, op, raw = parts
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        return cls(column=column, op=op, value=value)

    def matches(self, frame: pd.DataFrame) -> pd.Series:
        if self.column not in frame:
            raise ValueError(f"tier rule on {self.column!r}: no such column in the routed frame")
        return _OPERATORS[self.op](frame[self.column], self.value).fillna(False).astype(bool)


@dataclass(frozen=True)
class TierPolicy:
    """Which reviewed items need a domain expert; everything else goes to general reviewers.

    Attributes:
        expert_classes: Items the model predicted as one of these go to experts.
        expert_reasons: Routing reasons that need an expert (by default the routing
            stage's ``policy_category`` and ``out_of_distribution``).
        expert_rules: Feature rules; an item matching any of them goes to experts.
        max_unfamiliar_share: At most this share of a batch's reviewed items goes to
            experts for being out of distribution alone (the most unfamiliar first, by
            ``ood_score``); the others go to general reviewers. Declared classes, rules
            and other expert reasons are never capped. When a whole batch moves (new
            slang in every other post), unfamiliar items are the norm rather than cases
            for an expert: on the moderation stream's drifted batches 72 of 80 reviewed
            posts went to experts without a cap. None: no cap.
    """

    expert_classes: tuple[str, ...] = ()
    expert_reasons: tuple[str, ...] = EXPERT_REASONS
    expert_rules: tuple[FeatureRule, ...] = field(default_factory=tuple)
    max_unfamiliar_share: float | None = 0.25

    def __post_init__(self) -> None:
        share = self.max_unfamiliar_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"max_unfamiliar_share must be within [0, 1], got {share}")


def assign_tiers(routed: pd.DataFrame, policy: TierPolicy) -> pd.Series:
    """The review tier of every row of a routed frame.

    Args:
        routed: Rows with ``predicted_label``, ``reasons`` (";"-joined) and the features.
        policy: The declared expert policy.

    Returns:
        ``"expert"`` or ``"general"`` per row, aligned with ``routed`` (auto-accepted rows
        get a tier too; only reviewed ones are pushed).
    """
    expert = pd.Series(False, index=routed.index)
    if policy.expert_classes:
        expert |= routed[PREDICTED_LABEL].astype(str).isin(policy.expert_classes)
    reasons = routed[REASONS].astype(str).str.split(";")
    wanted = set(policy.expert_reasons)
    capped = wanted & {REASON_OOD} if policy.max_unfamiliar_share is not None else set()
    if wanted - capped:
        expert |= reasons.map(lambda r: bool((wanted - capped) & set(r))).astype(bool)
    for rule in policy.expert_rules:
        expert |= rule.matches(routed)
    if capped:
        expert |= _most_unfamiliar(routed, reasons, ~expert, policy.max_unfamiliar_share or 0.0)
    return expert.map({True: TIER_EXPERT, False: TIER_GENERAL})


def _most_unfamiliar(
    routed: pd.DataFrame, reasons: pd.Series, candidates: pd.Series, share: float
) -> pd.Series:
    """The out-of-distribution items among ``candidates`` that the cap lets through to
    experts: at most ``share`` of the reviewed items, highest ``ood_score`` first (the
    frame's order on ties or without scores)."""
    reviewed = routed[ROUTE] == ROUTE_REVIEW if ROUTE in routed else candidates | True
    unfamiliar = candidates & reviewed & reasons.map(lambda r: REASON_OOD in r).astype(bool)
    room = math.floor(share * int(reviewed.sum()))
    chosen = pd.Series(False, index=routed.index)
    if room <= 0 or not unfamiliar.any():
        return chosen
    order = routed.loc[unfamiliar]
    if OOD_SCORE in order:
        order = order.sort_values(OOD_SCORE, ascending=False, kind="stable")
    chosen.loc[order.index[:room]] = True
    return chosen
