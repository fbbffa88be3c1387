"""Routing: capacity, ranking, audit sample, reasons on every row, determinism."""

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.routing import RoutingPolicy, Trigger, has_reason, route_predictions


def scores(confidences: list[float], margins: list[float] | None = None) -> pd.DataFrame:
    n = len(confidences)
    return pd.DataFrame(
        {
            "item_id": [f"i{k:04d}" for k in range(n)],
            "confidence": confidences,
            "margin": margins if margins is not None else confidences,
        }
    )


NO_AUDIT = RoutingPolicy(audit_rate=0.0)


@pytest.mark.parametrize(
    ("confidences", "capacity", "drift", "expected_routes", "expected_reasons"),
    [
        # nothing uncertain: all auto-accepted as confident
        ([0.9, 0.8], 5, False, ["auto_accept"] * 2, ["confident"] * 2),
        # below the threshold and within capacity
        ([0.5, 0.9], 5, False, ["review", "auto_accept"], ["low_confidence", "confident"]),
        # threshold is strict: exactly 0.75 is confident
        ([0.75], 5, False, ["auto_accept"], ["confident"]),
        # capacity 1: the most uncertain (lowest margin) wins, the other is over capacity
        (
            [0.6, 0.4],
            1,
            False,
            ["auto_accept", "review"],
            ["low_confidence;over_capacity", "low_confidence"],
        ),
        # drift doubles the capacity
        ([0.6, 0.4], 1, True, ["review", "review"], ["low_confidence", "low_confidence"]),
        # zero capacity: nothing reviewed, every row still explained
        ([0.1], 0, False, ["auto_accept"], ["low_confidence;over_capacity"]),
    ],
)
def test_routes_and_reasons(confidences, capacity, drift, expected_routes, expected_reasons):
    policy = RoutingPolicy(review_capacity=capacity, audit_rate=0.0)

    routed = route_predictions(scores(confidences), policy, drift=drift)

    assert routed["route"].tolist() == expected_routes
    assert routed["reasons"].tolist() == expected_reasons
    assert routed["tier"].eq("general").all()


@pytest.mark.parametrize(
    ("capacity", "multiplier", "drift", "expected"),
    [(100, 2.0, False, 100), (100, 2.0, True, 200), (3, 1.5, True, 5), (10, 0.0, True, 0)],
)
def test_capacity(capacity, multiplier, drift, expected):
    policy = RoutingPolicy(review_capacity=capacity, drift_capacity_multiplier=multiplier)

    assert policy.capacity(drift=drift) == expected


def test_most_uncertain_items_fill_the_capacity():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 0.74, size=50)  # all below the threshold
    margin = rng.uniform(0.0, 0.5, size=50)
    frame = scores(list(confidence), list(margin))

    routed = route_predictions(frame, RoutingPolicy(review_capacity=10, audit_rate=0.0))

    reviewed = routed[routed["route"] == "review"]
    assert set(reviewed.index) == set(np.argsort(margin)[:10])
    assert routed["priority"].to_numpy() == pytest.approx(1.0 - margin)


def test_ties_in_uncertainty_are_cut_by_item_id():
    frame = scores([0.5] * 4).iloc[::-1].reset_index(drop=True)  # ids in reverse order

    routed = route_predictions(frame, RoutingPolicy(review_capacity=2, audit_rate=0.0))

    assert sorted(routed.loc[routed["route"] == "review", "item_id"]) == ["i0000", "i0001"]


@pytest.mark.parametrize(
    ("n_confident", "rate", "expected"), [(200, 0.03, 6), (10, 0.03, 0), (50, 0.1, 5)]
)
def test_audit_samples_the_share_of_auto_accepted(n_confident, rate, expected):
    frame = scores([0.95] * n_confident)

    routed = route_predictions(frame, RoutingPolicy(audit_rate=rate))

    audited = routed[has_reason(routed["reasons"], "audit")]
    assert len(audited) == expected
    assert audited["route"].eq("review").all()
    assert audited["reasons"].eq("audit").all()


def test_audit_draws_from_over_capacity_items_too_and_is_deterministic():
    frame = scores([0.5] * 100 + [0.95] * 100)
    policy = RoutingPolicy(review_capacity=10, audit_rate=0.1, seed=3)

    first = route_predictions(frame, policy)
    again = route_predictions(frame.sample(frac=1.0, random_state=1), policy)
    other_seed = route_predictions(frame, RoutingPolicy(review_capacity=10, audit_rate=0.1, seed=4))

    def audited(routed: pd.DataFrame) -> set[str]:
        return set(routed.loc[has_reason(routed["reasons"], "audit"), "item_id"])

    assert len(audited(first)) == 19  # 10% of the 190 auto-accepted
    assert audited(first) == audited(again)  # row order does not matter
    assert audited(first) != audited(other_seed)
    # an audited over-capacity item keeps its trigger and says it was audited
    reasons = set(first.loc[has_reason(first["reasons"], "audit"), "reasons"])
    assert reasons <= {"audit", "low_confidence;audit"}


def test_every_row_gets_a_decision_and_a_reason():
    rng = np.random.default_rng(1)
    frame = scores(list(rng.uniform(0.3, 1.0, size=300)))

    routed = route_predictions(frame, RoutingPolicy(review_capacity=20))

    assert routed["route"].isin(["review", "auto_accept"]).all()
    assert routed["reasons"].str.len().gt(0).all()
    assert len(routed) == 300


def test_extra_trigger_adds_its_reason_and_shares_the_capacity():
    flagged = Trigger("policy_category", lambda s, _p: s["item_id"].eq("i0001"))
    frame = scores([0.5, 0.95, 0.95])

    routed = route_predictions(
        frame,
        RoutingPolicy(review_capacity=5, audit_rate=0.0),
        triggers=(
            Trigger("low_confidence", lambda s, p: s["confidence"] < p.confidence_threshold),
            flagged,
        ),
    )

    assert routed["reasons"].tolist() == ["low_confidence", "policy_category", "confident"]
    assert routed["route"].tolist() == ["review", "review", "auto_accept"]


def test_empty_scores():
    routed = route_predictions(scores([]), RoutingPolicy())

    assert routed.empty
    assert {"route", "reasons", "priority", "tier"} <= set(routed.columns)


@pytest.mark.parametrize(
    "kwargs",
    [{"confidence_threshold": 1.5}, {"review_capacity": -1}, {"audit_rate": 2.0}],
)
def test_invalid_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        RoutingPolicy(**kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("low_confidence;audit", True),
        ("audit", True),
        ("auditor", False),
        (("audit",), True),
        (None, False),
    ],
)
def test_has_reason(value, expected):
    assert has_reason(pd.Series([value]), "audit").tolist() == [expected]


def test_drift_fills_spare_capacity_with_a_random_sample_of_confident_items():
    scores = pd.DataFrame(
        {
            "item_id": [f"i{k:02d}" for k in range(20)],
            "confidence": [0.5] * 3 + [0.95] * 17,
            "margin": [0.1] * 3 + [0.9] * 17,
        }
    )
    policy = RoutingPolicy(review_capacity=5, drift_capacity_multiplier=2.0, audit_rate=0.0)
    calm = route_predictions(scores, policy, drift=False)
    drifted = route_predictions(scores, policy, drift=True)
    assert (calm["route"] == "review").sum() == 3  # only the uncertain ones
    assert (drifted["route"] == "review").sum() == 10  # capacity 5 x 2, filled
    sampled = drifted[drifted["reasons"] == "drift_sample"]
    assert len(sampled) == 7 and (sampled["confidence"] == 0.95).all()
    # deterministic: the same items again
    again = route_predictions(scores, policy, drift=True)
    assert again["reasons"].tolist() == drifted["reasons"].tolist()
