"""A cost-aware confidence threshold, re-fitted from the labels that come back.

Sending an item to a person costs ``cost_review``; auto-accepting a wrong prediction
costs ``cost_wrong_accept``. With a calibrated probability ``p`` that a prediction is
right, reviewing it saves ``(1 - p) * cost_wrong_accept - cost_review``, so without a
capacity the best rule is "review below ``p = 1 - cost_review / cost_wrong_accept``".
A capacity caps the number of reviews: ``choose_threshold`` minimises the expected cost
of a batch over every cut of the confidence ranking within the capacity.

Calibration comes from labelled outcomes. Reviewed items were chosen *because* they
were uncertain, so they say nothing about the auto-accepted region; the random audit
sample of the auto-accepted does, without bias. ``calibrate`` takes a weight per labelled
item (the inverse of its chance to be labelled: 1 for triggered items, 1 / audit rate for
audited ones) and shrinks towards the model's own confidence where labels are few.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression

Calibration = Callable[[np.ndarray], np.ndarray]


def identity_calibration(confidence: np.ndarray) -> np.ndarray:
    """Trust the model's confidence as the probability of being right."""
    return np.clip(np.asarray(confidence, dtype="float64"), 0.0, 1.0)


def calibrate(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    prior_strength: float = 20.0,
) -> Calibration:
    """Map confidence to the probability of being right, from labelled outcomes.

    An isotonic (monotone) fit of correctness on confidence, blended with the identity
    by weight of evidence: ``(w * iso + prior_strength * conf) / (w + prior_strength)``
    where ``w`` is the total weight of labelled items.

    Args:
        confidence: The model's top-class probability of each labelled item.
        correct: Whether its prediction matched the human label.
        weights: Inverse inclusion probabilities (None: all 1).
        prior_strength: Pseudo-weight of the model's own confidence.

    Returns:
        A function from confidences to calibrated probabilities of being right.
    """
    confidence = np.asarray(confidence, dtype="float64")
    correct = np.asarray(correct, dtype="float64")
    w = np.ones(len(confidence)) if weights is None else np.asarray(weights, dtype="float64")
    if len(confidence) == 0 or float(w.sum()) <= 0:
        return identity_calibration
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(confidence, correct, sample_weight=w)
    evidence = float(w.sum())

    def calibrated(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype="float64")
        fitted = iso.predict(values)
        return (evidence * fitted + prior_strength * np.clip(values, 0, 1)) / (
            evidence + prior_strength
        )

    return calibrated


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it is expected to cost on the batch it was fitted on.

    Attributes:
        threshold: Review items whose confidence is strictly below this.
        reviews: Items below the threshold (within the capacity).
        expected_cost: ``cost_review * reviews + cost_wrong_accept * expected wrong
            auto-accepts``.
        expected_wrong_accepts: Expected wrong predictions among the auto-accepted.
        break_even: The calibrated probability of being right below which a review
            pays for itself (``1 - cost_review / cost_wrong_accept``).
    """

    threshold: float
    reviews: int
    expected_cost: float
    expected_wrong_accepts: float
    break_even: float


def choose_threshold(
    confidence: np.ndarray,
    *,
    cost_wrong_accept: float,
    cost_review: float,
    capacity: int,
    calibration: Calibration = identity_calibration,
) -> ThresholdChoice:
    """The confidence threshold minimising the batch's expected cost.

    Items are reviewed in order of increasing confidence; reviewing the first ``k``
    costs ``cost_review * k + cost_wrong_accept * sum(1 - p)`` over the rest. The best
    ``k`` within ``[0, min(capacity, n)]`` is taken (the smallest on ties) and the
    threshold put halfway between the last reviewed and the first accepted confidence.

    Args:
        confidence: Top-class probabilities of a representative batch.
        cost_wrong_accept: Cost of auto-accepting a wrong prediction (> 0).
        cost_review: Cost of one human review (>= 0).
        capacity: Most reviews a batch can get.
        calibration: Confidence -> probability of being right (``calibrate``).

    Returns:
        The choice. On an empty batch the threshold is the break-even probability.
    """
    if cost_wrong_accept <= 0 or cost_review < 0 or capacity < 0:
        raise ValueError("need cost_wrong_accept > 0, cost_review >= 0, capacity >= 0")
    break_even = max(0.0, 1.0 - cost_review / cost_wrong_accept)
    conf = np.sort(np.asarray(confidence, dtype="float64"))
    n = len(conf)
    if n == 0:
        return ThresholdChoice(break_even, 0, 0.0, 0.0, break_even)
    wrong = 1.0 - np.asarray(calibration(conf), dtype="float64")
    # expected wrong auto-accepts when the first k are reviewed: sum(wrong[k:])
    tail = np.concatenate([np.cumsum(wrong[::-1])[::-1], [0.0]])
    ks = np.arange(min(capacity, n) + 1)
    cost = cost_review * ks + cost_wrong_accept * tail[ks]
    k = int(ks[np.argmin(cost)])
    if k == 0:
        threshold = float(conf[0])  # nothing strictly below the lowest confidence
    elif k == n:
        threshold = float(np.nextafter(conf[-1], np.inf))
    else:
        threshold = float((conf[k - 1] + conf[k]) / 2.0)
        if conf[k - 1] == conf[k]:  # a tie at the cut: keep the tied items out
            threshold = float(conf[k])
    return ThresholdChoice(
        threshold=min(threshold, 1.0),
        reviews=int(np.sum(conf < threshold)),
        expected_cost=float(cost[k]),
        expected_wrong_accepts=float(tail[k]),
        break_even=break_even,
    )
