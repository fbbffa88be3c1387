"""One loop step: route -> (labels) -> dataset -> train -> gate -> promote -> re-fit threshold.

This is the flywheel's decision logic, written once. The Dagster assets call these
functions with what the stores hold (``defs/s02`` ... ``defs/s09``); the benchmark calls
them while replaying a file (``hitl_pipeline.benchmark.replay``). Every setting either
caller uses is a field of ``LoopSettings``, whose parts are the dataclasses the
launchpad's config classes are generated from (``defs/config.py``), so a benchmark figure
is a figure of the pipeline with its defaults.

Which rows serve which purpose (the evidence that judges a model never also chose it):

- the fixed held-out set (``holdout``): a share of the seed, never trained on;
- ``human_holdout``: a salted-hash share of the human labels, never trained on and never
  used to choose between training variants: only the gate judges on it;
- ``selection``: a second salted-hash share of the other human labels; the training
  variants (human-label weight, training window) are fitted without it and compared on
  its recent rows, then the chosen variant is refitted with it;
- ``edge_cases``: items reviewers flagged; kept out of training entirely, so the gate's
  edge-case check asks whether a model generalises to them, not whether it remembers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.committee import committee_disagreement
from hitl_pipeline.core.datasets import canonical_dataset, merge_labelled, split_holdout
from hitl_pipeline.core.drift import DriftPolicy
from hitl_pipeline.core.gate import (
    EDGE_CASES,
    HOLDOUT,
    HUMAN_HOLDOUT,
    GatePolicy,
    decide,
    gate_evidence,
    most_recent,
)
from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.loop_health import AuditPolicy
from hitl_pipeline.core.ood import OodDetector, ood_scores
from hitl_pipeline.core.routing import RoutingPolicy, route_predictions
from hitl_pipeline.core.streaming import routing_policy
from hitl_pipeline.core.threshold import ThresholdChoice, calibrate, choose_threshold
from hitl_pipeline.core.training import TrainingParams, train_model
from hitl_pipeline.core.types import (
    CONFIDENCE,
    DISAGREEMENT,
    ITEM_ID,
    LABEL_SOURCE,
    OOD_SCORE,
    PREDICTED_LABEL,
    REASONS,
    ROUTE,
    ROUTE_REVIEW,
    BatchSchema,
    GateDecision,
    TrainingResult,
    coerce_setting,
)

TRAINING = "training"
SELECTION = "selection"


@dataclass(frozen=True)
class DatasetPolicy:
    """How human labels are split between training, variant choice and the gate.

    Attributes:
        human_holdout_fraction: Share of human labels kept for the gate alone (never
            trained on, never used to choose a training variant) once the gate has its
            rows. Every label held out is one the model does not learn from.
        start_holdout_fraction: The gate's share while its held-out set fills: labels
            of a batch are held out at this share until the earlier batches gave the
            gate ``start_holdout_rows`` rows, and at ``human_holdout_fraction`` from then
            on (``core.datasets.split_holdout``: a label can only leave the held-out set
            for training, never the reverse). 0: off, one share throughout. The gate
            judges a challenger only once it has ``GatePolicy.min_eval_rows`` held-out
            labels, and the loop learns nothing before. Replayed (3 repeats, mean
            accuracy of the default at 2 / 5 / 10% budgets): with 0.25 held out and a
            selection share of 0.2 throughout, rainfall 0.732 / 0.739 / 0.744 and the
            moderation stream 0.943 / 0.972 / 0.974; with 0.15 and 0.15 throughout,
            rainfall 0.743 / 0.741 / 0.749, but at 2% the moderation stream (8-16
            labels a batch) never gave the gate its 30 rows (0.937, never retrained);
            with 0.15 and 0.15 after a start share of 0.5, rainfall 0.736 / 0.743 /
            0.749 and moderation 0.965 / 0.971 / 0.974 (a start share of 0.35:
            0.735 / 0.741 / 0.749 and 0.954 / 0.972 / 0.975).
        start_holdout_rows: How many held-out labels end the start share; keep it at
            ``GatePolicy.min_eval_rows``, the rows the gate needs to judge at all.
        holdout_salt: Keys the hash that splits them: an item stays on its side forever.
        selection_fraction: Share of the remaining human labels on which the training
            variants are compared (they are fitted without these rows, and the chosen
            one is refitted with them); 0 turns the comparison off.
        exclude_edge_cases: Keep items reviewers flagged as edge cases out of training
            (they are the gate's edge-case set).
    """

    human_holdout_fraction: float = 0.15
    start_holdout_fraction: float = 0.5
    start_holdout_rows: int = 30
    holdout_salt: str = "hitl-holdout-v1"
    selection_fraction: float = 0.15
    exclude_edge_cases: bool = True

    def __post_init__(self) -> None:
        for name in ("human_holdout_fraction", "selection_fraction", "start_holdout_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if (
            self.start_holdout_fraction
            and self.start_holdout_fraction < self.human_holdout_fraction
        ):
            raise ValueError("start_holdout_fraction must be 0 or at least human_holdout_fraction")
        if self.start_holdout_rows < 0:
            raise ValueError("start_holdout_rows must be >= 0")


@dataclass(frozen=True)
class LoopSettings:
    """Every setting of one loop step, as the pipeline's run config holds them."""

    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    training: TrainingParams = field(default_factory=TrainingParams)
    gate: GatePolicy = field(default_factory=GatePolicy)
    dataset: DatasetPolicy = field(default_factory=DatasetPolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    audit: AuditPolicy = field(default_factory=AuditPolicy)

    def with_overrides(self, overrides: Mapping[str, Any]) -> LoopSettings:
        """A copy with ``section.field`` overrides (``{"gate.min_eval_rows": 20}``).

        Values given as strings are converted to the field's type.

        Raises:
            ValueError: On an unknown section or field.
        """
        sections: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            current = getattr(self, section, None)
            if current is None or not name or not hasattr(current, name):
                raise ValueError(
                    f"unknown setting {key!r} (use section.field, e.g. gate.tolerance)"
                )
            sections.setdefault(section, {})[name] = coerce_setting(getattr(current, name), value)
        return replace(
            self, **{s: replace(getattr(self, s), **values) for s, values in sections.items()}
        )


# --- scoring extras ------------------------------------------------------------------
def escalation_scores(
    scores: pd.DataFrame,
    batch: pd.DataFrame,
    schema: BatchSchema,
    *,
    champion: Any,
    previous: Any | None,
    ood: OodDetector | None,
) -> pd.DataFrame:
    """Add the figures routing escalates on to the champion's scores.

    ``disagreement`` between champion and previous champion (a committee of two that
    costs no training) and ``ood_score``, how isolated each row is from the champion's
    training data.
    """
    out = scores.copy()
    rows = batch.reset_index(drop=True)
    if previous is not None and len(out):
        out[DISAGREEMENT] = committee_disagreement([champion, previous], rows, schema)
    if ood is not None and len(out):
        out[OOD_SCORE] = ood_scores(ood, rows, schema)
    return out


def drift_reference(training: pd.DataFrame) -> pd.DataFrame:
    """The rows a batch is compared with for drift: the seed rows of the champion's data.

    The human rows of a training dataset are not a sample of production: routing picked
    them for being uncertain, disputed or unusual, and a reference mixed with them drifts
    with every label. Replayed on the rainfall stream (3 repeats), comparing batches
    with the champion's whole training data alarmed on 3 to 5 of the first 10 batches
    with the default routing at 5-10% budgets and on 6 to 7 with least-confidence
    labels, where randomly sampled labels left it at 1; the seed rows alone (which cover
    every season) alarm on 1 of them, and on the batches after the stream's real change.

    Args:
        training: A dataset version's training frame.

    Returns:
        Its seed rows (``label_source`` other than "human"); all rows when it has none.
    """
    if LABEL_SOURCE not in training:
        return training
    seed = training[training[LABEL_SOURCE].astype(str) != "human"]
    return seed if len(seed) else training


# --- routing -------------------------------------------------------------------------
def route_batch(
    scores: pd.DataFrame,
    policy: RoutingPolicy,
    schema: BatchSchema,
    *,
    threshold: float | None = None,
    drift: bool = False,
    drifted_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Route one scored batch: the regular run (``drift=False``) or the drift response.

    Args:
        scores: ``score_batch`` output with ``escalation_scores`` columns.
        policy: The routing settings.
        schema: The batch schema.
        threshold: The confidence threshold re-fitted for this champion
            (``refit_threshold``); None: the policy's own.
        drift: Route as the drift response (raised capacity, drifted-segment strata).
        drifted_columns: Columns the drift check flagged.

    Returns:
        ``route_predictions`` output.
    """
    return route_predictions(
        scores,
        routing_policy(policy, threshold),
        drift=drift,
        schema=schema,
        drifted_columns=tuple(drifted_columns),
    )


def reviewed_items(*routed: pd.DataFrame) -> pd.Series:
    """The items any of the routed frames sends to review, with their reasons.

    The regular run and the drift response of one batch push into the same Label Studio
    projects, where a task exists once per item (the first push's): the union is what
    people label, each item with the reasons of the first run that sent it.

    Returns:
        ``reasons`` indexed by item id, in first-seen order.
    """
    reviewed = pd.concat(
        [
            pd.Series(
                f.loc[f[ROUTE] == ROUTE_REVIEW, REASONS].to_numpy(),
                index=f.loc[f[ROUTE] == ROUTE_REVIEW, ITEM_ID].astype(str).to_numpy(),
            )
            for f in routed
        ]
    )
    return reviewed[~reviewed.index.duplicated(keep="first")]


# --- dataset -------------------------------------------------------------------------
def assemble_dataset(
    seed_train: pd.DataFrame,
    seed_holdout: pd.DataFrame,
    human_labels: pd.DataFrame,
    schema: BatchSchema,
    policy: DatasetPolicy,
    *,
    edge_case_ids: Sequence[str] = (),
) -> dict[str, pd.DataFrame]:
    """The frames of one dataset version, in canonical form.

    Args:
        seed_train: The seed's training rows.
        seed_holdout: The fixed held-out set.
        human_labels: Resolved human labels (``resolve_labels`` output or equivalent).
        schema: The declared schema.
        policy: The split settings.
        edge_case_ids: Items reviewers flagged as edge cases.

    Returns:
        ``training`` (seed + human rows the model fits on, the selection rows included),
        ``selection`` (the subset of ``training`` the variants are compared on),
        ``holdout``, ``human_holdout`` (the gate's) and ``edge_cases``.
    """
    flagged = {str(i) for i in edge_case_ids}
    human_holdout, rest = split_holdout(
        human_labels,
        fraction=policy.human_holdout_fraction,
        salt=policy.holdout_salt,
        start_fraction=policy.start_holdout_fraction,
        start_rows=policy.start_holdout_rows,
    )
    edge = human_labels[human_labels[ITEM_ID].astype(str).isin(flagged)]
    if policy.exclude_edge_cases and flagged:
        rest = rest[~rest[ITEM_ID].astype(str).isin(flagged)]
        human_holdout = human_holdout[~human_holdout[ITEM_ID].astype(str).isin(flagged)]
    selection, _ = split_holdout(
        rest, fraction=policy.selection_fraction, salt=f"{policy.holdout_salt}:selection"
    )
    return {
        TRAINING: merge_labelled(seed_train, rest, schema),
        SELECTION: canonical_dataset(selection, schema),
        HOLDOUT: canonical_dataset(seed_holdout, schema),
        HUMAN_HOLDOUT: canonical_dataset(human_holdout, schema),
        EDGE_CASES: canonical_dataset(edge, schema),
    }


# --- training ------------------------------------------------------------------------
def train_challenger(
    frames: Mapping[str, pd.DataFrame | None],
    schema: BatchSchema,
    params: TrainingParams,
) -> TrainingResult:
    """Fit the challenger; training variants are chosen on the selection rows only.

    The variants (``TrainingParams.variants``) are fitted on the training rows without
    the selection rows and compared on the selection rows' recent window
    (``params.select_days`` ...); the chosen one is refitted on every training row. The
    gate's rows (``human_holdout``) are never looked at.

    Returns:
        The ``train_model`` result, its metrics naming the chosen variant.
    """
    training = frames[TRAINING]
    if training is None:
        raise ValueError("the dataset version holds no training frame")
    selection = frames.get(SELECTION)
    if selection is not None and len(selection):
        window = most_recent(
            selection, params.select_rows, days=params.select_days, min_rows=params.select_min_rows
        )
        keep = ~training[ITEM_ID].astype(str).isin(set(selection[ITEM_ID].astype(str)))
        return train_model(training, schema, params, select_on=window, select_fit=training[keep])
    return train_model(training, schema, params)


# --- the gate ------------------------------------------------------------------------
def judge_challenger(
    frames: Mapping[str, pd.DataFrame | None],
    schema: BatchSchema,
    *,
    challenger: Any,
    champion: Any | None,
    policy: GatePolicy,
) -> GateDecision:
    """The gate's decision on the evaluation frames of a dataset version.

    The reasons end with what the evidence was: how many recent human rows and edge
    cases were judged, and that the rows which chose the training variant were not
    among them.
    """
    evaluation = {name: frames.get(name) for name in (HOLDOUT, HUMAN_HOLDOUT, EDGE_CASES)}
    evidence = gate_evidence(
        evaluation, schema, challenger=challenger, champion=champion, policy=policy
    )
    decision = decide(
        evidence=evidence,
        policy=policy,
        segments=policy.segments(schema),
        classes=schema.classes,  # a class added mid-stream is reported, not left out
    )
    judged = evidence.get(HUMAN_HOLDOUT)
    edge = evidence.get(EDGE_CASES)
    selection = frames.get(SELECTION)
    note = (
        f"evidence: {0 if judged is None else len(judged)} recent human held-out rows and "
        f"{0 if edge is None else len(edge)} edge cases, none trained on; the training "
        f"variant was chosen on {0 if selection is None else len(selection)} other "
        "human rows (selection split)"
    )
    return replace(decision, reasons=(*decision.reasons, note))


# --- the threshold after a promotion -------------------------------------------------
def refit_threshold(
    champion: Any,
    held_out: pd.DataFrame,
    batch: pd.DataFrame,
    schema: BatchSchema,
    policy: RoutingPolicy,
    *,
    audited_ids: set[str] | frozenset[str] = frozenset(),
    model_version: str = "",
    batch_confidence: np.ndarray | None = None,
) -> ThresholdChoice | None:
    """The cost-minimising confidence threshold for a new champion.

    Its confidence is calibrated on the human held-out rows (audited items weighted by
    the inverse of the audit rate, as the unbiased sample of the auto-accepted they are)
    and the threshold chosen on ``batch`` (the latest routed batch) re-scored by it, or
    on ``batch_confidence``, that batch's confidences under it when the caller scored
    them in chunks (``core.inference.batch_confidence``; ``batch`` is then unused).

    Returns:
        The choice, or None when no human held-out labels exist yet (the configured
        threshold stays in force).
    """
    labelled = held_out[held_out[schema.target].notna()] if len(held_out) else held_out
    if labelled.empty:
        return None
    scored = score_batch(champion, labelled, schema, model_version=model_version)
    correct = (
        scored[PREDICTED_LABEL].astype(str).to_numpy()
        == labelled[schema.target].astype(str).to_numpy()
    )
    audited = scored[ITEM_ID].astype(str).isin(audited_ids).to_numpy()
    weights = np.where(audited, 1.0 / max(policy.audit_rate, 1e-6), 1.0)
    calibration = calibrate(scored[CONFIDENCE].to_numpy(), correct, weights=weights)
    if batch_confidence is not None and len(batch_confidence):
        confidence = np.asarray(batch_confidence, dtype="float64")
    else:
        source = batch if len(batch) else labelled
        rescored = score_batch(champion, source, schema, model_version=model_version)
        confidence = rescored[CONFIDENCE].to_numpy()
    return choose_threshold(
        confidence,
        cost_wrong_accept=policy.cost_wrong_accept,
        cost_review=policy.cost_review,
        capacity=policy.review_capacity,
        calibration=calibration,
    )
