"""The cost-aware threshold: known optima, capacity, re-calibration from labels."""

import numpy as np
import pytest

from hitl_pipeline.core.threshold import calibrate, choose_threshold


def test_without_a_binding_capacity_it_reviews_below_the_break_even():
    # calibrated = confidence; a wrong accept costs 10 reviews: review iff 1 - p > 0.1
    confidence = np.array([0.5, 0.7, 0.85, 0.89, 0.91, 0.95, 0.99])

    choice = choose_threshold(confidence, cost_wrong_accept=10, cost_review=1, capacity=100)

    assert choice.break_even == pytest.approx(0.9)
    assert choice.reviews == 4
    assert 0.89 < choice.threshold < 0.91
    expected = 4 * 1 + 10 * ((1 - 0.91) + (1 - 0.95) + (1 - 0.99))
    assert choice.expected_cost == pytest.approx(expected)


def test_a_binding_capacity_reviews_the_least_confident_it_can():
    confidence = np.array([0.5, 0.6, 0.7, 0.8, 0.95])

    choice = choose_threshold(confidence, cost_wrong_accept=10, cost_review=1, capacity=2)

    assert choice.reviews == 2
    assert 0.6 < choice.threshold < 0.7


def test_reviews_that_cost_more_than_the_errors_they_catch_are_not_made():
    choice = choose_threshold(np.array([0.6, 0.9]), cost_wrong_accept=1, cost_review=1, capacity=10)

    assert choice.reviews == 0 and choice.threshold == pytest.approx(0.6)


def test_empty_batch_gives_the_break_even():
    choice = choose_threshold(np.array([]), cost_wrong_accept=4, cost_review=1, capacity=5)

    assert choice.threshold == pytest.approx(0.75) and choice.reviews == 0


def test_an_overconfident_model_gets_a_higher_threshold_after_recalibration():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.9, 1.0, size=400)
    correct = rng.uniform(size=400) < 0.7  # it says 95%, it is right 70% of the time
    batch = rng.uniform(0.9, 1.0, size=200)

    trusting = choose_threshold(batch, cost_wrong_accept=10, cost_review=1, capacity=200)
    calibrated = choose_threshold(
        batch,
        cost_wrong_accept=10,
        cost_review=1,
        capacity=200,
        calibration=calibrate(confidence, correct),
    )

    assert trusting.reviews < 100  # it believes most are right
    assert calibrated.reviews == 200  # every item is worth a review at 30% errors


def test_audit_weights_make_the_calibration_unbiased():
    # reviewed items (low confidence) were all wrong; the audit of the confident ones
    # (weight 1 / audit rate) shows those are right: a weighted fit keeps them trusted
    confidence = np.array([0.55] * 20 + [0.95] * 3)
    correct = np.array([0] * 20 + [1] * 3)

    fitted = calibrate(confidence, correct, weights=np.array([1.0] * 20 + [33.0] * 3))

    assert fitted(np.array([0.95]))[0] > 0.95
    assert fitted(np.array([0.55]))[0] < 0.3


def test_invalid_costs_are_refused():
    with pytest.raises(ValueError):
        choose_threshold(np.array([0.5]), cost_wrong_accept=0, cost_review=1, capacity=1)


def test_refit_on_a_batch_scored_in_chunks_equals_refit_on_the_whole_batch():
    """``routing_threshold`` re-scores a large batch chunk by chunk and passes only its
    confidences: the threshold is the one the whole frame gives."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from hitl_pipeline.core.chunks import frame_chunks
    from hitl_pipeline.core.inference import batch_confidence
    from hitl_pipeline.core.loop import refit_threshold
    from hitl_pipeline.core.routing import RoutingPolicy
    from hitl_pipeline.core.types import BatchSchema, FeatureSpec

    schema = BatchSchema(features=(FeatureSpec("x", "numeric"),), classes=("a", "b"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    labels = np.where(x + rng.normal(scale=0.8, size=400) > 0, "b", "a")
    model = LogisticRegression().fit(pd.DataFrame({"x": x}), labels)
    held_out = pd.DataFrame({"item_id": [f"h{i}" for i in range(400)], "x": x, "label": labels})
    batch = pd.DataFrame({"item_id": [f"b{i}" for i in range(900)], "x": rng.normal(size=900)})
    policy = RoutingPolicy(review_capacity=60)

    whole = refit_threshold(model, held_out, batch, schema, policy)
    chunked = refit_threshold(
        model,
        held_out,
        batch.iloc[0:0],
        schema,
        policy,
        batch_confidence=batch_confidence(model, frame_chunks(batch, 128), schema),
    )

    assert whole is not None and chunked == whole
    assert 0 < whole.reviews <= 60
