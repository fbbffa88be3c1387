"""Routing: capacity, ranking, audit sample, reasons on every row, determinism."""

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.routing import RoutingPolicy, Trigger, has_reason, route_predictions
from hitl_pipeline.core.types import BatchSchema, FeatureSpec


def scores(confidences: list[float], margins: list[float] | None = None) -> pd.DataFrame:
    n = len(confidences)
    return pd.DataFrame(
        {
            "item_id": [f"i{k:04d}" for k in range(n)],
            "confidence": confidences,
            "margin": margins if margins is not None else confidences,
        }
    )


def triggers_only(**kwargs):
    """The policy with capacity that triggers leave unused and the audit on top of it:
    what the trigger tests below look at (the defaults fill the capacity, see the
    fill_capacity and audit_in_capacity tests)."""
    return RoutingPolicy(**{"fill_capacity": False, "audit_in_capacity": False, **kwargs})


NO_AUDIT = triggers_only(audit_rate=0.0)


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
    policy = triggers_only(review_capacity=capacity, audit_rate=0.0)

    routed = route_predictions(scores(confidences), policy, drift=drift)

    assert routed["route"].tolist() == expected_routes
    assert routed["reasons"].tolist() == expected_reasons
    assert routed["tier"].eq("general").all()


@pytest.mark.parametrize(
    ("capacity", "multiplier", "drift", "expected"),
    [(100, 2.0, False, 100), (100, 2.0, True, 200), (3, 1.5, True, 5), (10, 0.0, True, 0)],
)
def test_capacity(capacity, multiplier, drift, expected):
    policy = triggers_only(review_capacity=capacity, drift_capacity_multiplier=multiplier)

    assert policy.capacity(drift=drift) == expected


def test_most_uncertain_items_fill_the_capacity():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 0.74, size=50)  # all below the threshold
    margin = rng.uniform(0.0, 0.5, size=50)
    frame = scores(list(confidence), list(margin))

    routed = route_predictions(frame, triggers_only(review_capacity=10, audit_rate=0.0))

    reviewed = routed[routed["route"] == "review"]
    assert set(reviewed.index) == set(np.argsort(margin)[:10])
    assert routed["priority"].to_numpy() == pytest.approx(1.0 - margin)


def test_ties_in_uncertainty_are_cut_by_item_id():
    frame = scores([0.5] * 4).iloc[::-1].reset_index(drop=True)  # ids in reverse order

    routed = route_predictions(frame, triggers_only(review_capacity=2, audit_rate=0.0))

    assert sorted(routed.loc[routed["route"] == "review", "item_id"]) == ["i0000", "i0001"]


@pytest.mark.parametrize(
    ("n_confident", "rate", "expected"), [(200, 0.03, 6), (10, 0.03, 0), (50, 0.1, 5)]
)
def test_audit_samples_the_share_of_auto_accepted(n_confident, rate, expected):
    frame = scores([0.95] * n_confident)

    routed = route_predictions(frame, triggers_only(audit_rate=rate))

    audited = routed[has_reason(routed["reasons"], "audit")]
    assert len(audited) == expected
    assert audited["route"].eq("review").all()
    assert audited["reasons"].eq("audit").all()


def test_audit_draws_from_over_capacity_items_too_and_is_deterministic():
    frame = scores([0.5] * 100 + [0.95] * 100)
    policy = triggers_only(review_capacity=10, audit_rate=0.1, seed=3)

    first = route_predictions(frame, policy)
    again = route_predictions(frame.sample(frac=1.0, random_state=1), policy)
    other_seed = route_predictions(frame, triggers_only(review_capacity=10, audit_rate=0.1, seed=4))

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

    routed = route_predictions(frame, triggers_only(review_capacity=20))

    assert routed["route"].isin(["review", "auto_accept"]).all()
    assert routed["reasons"].str.len().gt(0).all()
    assert len(routed) == 300


def test_extra_trigger_adds_its_reason_and_shares_the_capacity():
    flagged = Trigger("policy_category", lambda s, _p: s["item_id"].eq("i0001"))
    frame = scores([0.5, 0.95, 0.95])

    routed = route_predictions(
        frame,
        triggers_only(review_capacity=5, audit_rate=0.0),
        triggers=(
            Trigger("low_confidence", lambda s, p: s["confidence"] < p.confidence_threshold),
            flagged,
        ),
    )

    assert routed["reasons"].tolist() == ["low_confidence", "policy_category", "confident"]
    assert routed["route"].tolist() == ["review", "review", "auto_accept"]


def test_empty_scores():
    routed = route_predictions(scores([]), triggers_only())

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
    policy = triggers_only(
        review_capacity=5, drift_capacity_multiplier=2.0, audit_rate=0.0, drift_sample_share=1.0
    )
    calm = route_predictions(scores, policy, drift=False)
    drifted = route_predictions(scores, policy, drift=True)
    assert (calm["route"] == "review").sum() == 3  # only the uncertain ones
    assert (drifted["route"] == "review").sum() == 10  # capacity 5 x 2, filled
    sampled = drifted[drifted["reasons"] == "drift_sample"]
    assert len(sampled) == 7 and (sampled["confidence"] == 0.95).all()
    # deterministic: the same items again
    again = route_predictions(scores, policy, drift=True)
    assert again["reasons"].tolist() == drifted["reasons"].tolist()


# --- the further triggers, ranking and recorded explanation ---------------------------


def confident_scores(n: int, **columns) -> pd.DataFrame:
    """n confident items (no low-confidence trigger), with extra columns."""
    frame = scores([0.95] * n, [0.9] * n)
    for name, values in columns.items():
        frame[name] = values
    return frame


@pytest.mark.parametrize(
    ("column", "values", "policy_kwargs", "code", "expected_reviewed"),
    [
        ("disagreement", [0.0, 0.3, 0.25, 0.1], {}, "committee_disagreement", [1, 2]),
        ("disagreement", [0.0, 0.3, 0.25, 0.1], {"disagreement_threshold": 0.5}, "x", []),
        ("ood_score", [0.5, 0.995, 0.99, 0.2], {}, "out_of_distribution", [1, 2]),
        ("ood_score", [0.5, 0.995, 0.99, 0.2], {"ood_threshold": 1.0}, "x", []),
    ],
)
def test_score_triggers_escalate_and_say_why(
    column, values, policy_kwargs, code, expected_reviewed
):
    frame = confident_scores(4, **{column: values})
    policy = triggers_only(review_capacity=10, audit_rate=0.0, **policy_kwargs)

    routed = route_predictions(frame, policy)

    reviewed = routed.index[routed["route"] == "review"].tolist()
    assert reviewed == expected_reviewed
    for i in expected_reviewed:
        assert routed.loc[i, "reasons"] == code
    assert routed.loc[0, "reasons"] == "confident"


def test_triggers_without_their_column_never_fire():
    routed = route_predictions(confident_scores(3), triggers_only(audit_rate=0.0))

    assert routed["reasons"].eq("confident").all()


def test_policy_categories_always_go_to_a_person_even_beyond_capacity():
    frame = confident_scores(
        5,
        predicted_label=["fraud", "ok", "ok", "fraud", "ok"],
        amount=[10.0, 5000.0, 20.0, 30.0, 40.0],
    )
    frame.loc[4, ["confidence", "margin"]] = [0.4, 0.05]  # uncertain, not a policy item
    policy = triggers_only(
        review_capacity=1,
        audit_rate=0.0,
        review_classes=("fraud",),
        review_rules=("amount > 1000",),
    )

    routed = route_predictions(frame, policy)

    assert routed["reasons"].tolist() == [
        "policy_category",
        "policy_category",
        "confident",
        "policy_category",
        "low_confidence;over_capacity",  # the capacity went to the mandatory items
    ]
    assert routed["route"].tolist() == ["review", "review", "auto_accept", "review", "auto_accept"]


def test_a_rule_that_cannot_be_evaluated_is_an_error():
    with pytest.raises(ValueError, match="no_such_column"):
        route_predictions(confident_scores(2), triggers_only(review_rules=("no_such_column > 1",)))


def test_priority_adds_disagreement_and_ood_excess():
    frame = confident_scores(3, disagreement=[0.0, 0.4, 0.0], ood_score=[0.0, 0.0, 0.995])
    policy = triggers_only(disagreement_weight=1.0, ood_weight=0.5, ood_threshold=0.99)

    routed = route_predictions(frame, policy)

    assert routed["priority"].tolist() == pytest.approx([0.1, 0.5, 0.1 + 0.5 * 0.5])


def test_disagreement_counts_only_from_its_share_of_the_batch():
    # 50 rows: item 0 confident but disputed, item 1 uncertain and undisputed
    frame = scores([0.9, 0.5] + [0.95] * 48, [0.6, 0.1] + [0.9] * 48)
    frame["disagreement"] = [0.6] + [0.0] * 49
    policy = triggers_only(review_capacity=1, audit_rate=0.0, disagreement_min_share=0.03)

    small = route_predictions(frame, policy)  # 1 of 50 rows: 2%, below the share
    always = route_predictions(
        frame, triggers_only(review_capacity=1, audit_rate=0.0, disagreement_min_share=0.0)
    )
    doubled = route_predictions(frame, policy, drift=True)  # 2 of 50: 4%

    assert small["route"].tolist()[:2] == ["auto_accept", "review"]
    assert small["priority"].tolist()[:2] == pytest.approx([0.4, 0.9])
    assert has_reason(small["reasons"], "committee_disagreement").tolist()[:2] == [True, False]
    assert always["route"].tolist()[:2] == ["review", "auto_accept"]
    assert doubled["priority"].tolist()[:2] == pytest.approx([1.0, 0.9])
    with pytest.raises(ValueError, match="disagreement_min_share"):
        RoutingPolicy(disagreement_min_share=1.5)


SCHEMA = BatchSchema(
    features=(FeatureSpec("x", "numeric"), FeatureSpec("segment", "categorical")),
    classes=("a", "b", "c"),
)


def test_diverse_ranking_skips_near_duplicates_of_a_pick():
    # ten uncertain items, the five most uncertain nearly identical copies of each other
    frame = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(10)],
            "confidence": [0.40] * 5 + [0.45] * 5,
            "margin": [0.01, 0.011, 0.012, 0.013, 0.014, 0.05, 0.06, 0.07, 0.08, 0.09],
            "x": [0.0, 0.001, 0.002, 0.003, 0.004, 1.0, 2.0, 3.0, 4.0, 5.0],
            "segment": ["s"] * 10,
        }
    )
    policy = triggers_only(review_capacity=3, audit_rate=0.0, stratify=False)

    diverse = route_predictions(frame, policy, schema=SCHEMA)
    plain = route_predictions(frame, policy)  # no schema: by priority alone

    assert sorted(plain.index[plain["route"] == "review"]) == [0, 1, 2]
    picked = diverse.index[diverse["route"] == "review"].tolist()
    assert 0 in picked and len(set(picked) & {1, 2, 3, 4}) == 0  # one of the duplicates
    assert diverse.loc[0, "review_rank"] == 1  # the most uncertain is picked first
    assert diverse["review_rank"].notna().sum() == 3


def test_stratified_ranking_covers_every_predicted_class():
    n = 30
    frame = pd.DataFrame(
        {
            "item_id": [f"i{k:02d}" for k in range(n)],
            "confidence": [0.5] * n,
            # class "a" is far more uncertain than the others
            "margin": [0.01] * 20 + [0.3] * 5 + [0.4] * 5,
            "predicted_label": ["a"] * 20 + ["b"] * 5 + ["c"] * 5,
        }
    )
    policy = triggers_only(review_capacity=4, audit_rate=0.0)

    stratified = route_predictions(frame, policy)
    unstratified = route_predictions(
        frame, triggers_only(review_capacity=4, audit_rate=0.0, stratify=False)
    )

    assert set(stratified.loc[stratified["route"] == "review", "predicted_label"]) == {
        "a",
        "b",
        "c",
    }
    assert set(unstratified.loc[unstratified["route"] == "review", "predicted_label"]) == {"a"}


def test_under_drift_every_drifted_segment_gets_a_review():
    n = 40
    frame = pd.DataFrame(
        {
            "item_id": [f"i{k:02d}" for k in range(n)],
            "confidence": [0.5] * n,
            "margin": [0.01] * 36 + [0.4] * 4,  # the new segment looks certain
            "predicted_label": ["a"] * n,
            "x": np.linspace(0, 1, n),
            "segment": ["old"] * 36 + ["new"] * 4,
        }
    )
    policy = triggers_only(review_capacity=4, audit_rate=0.0, drift_capacity_multiplier=1.0)

    calm = route_predictions(frame, policy, schema=SCHEMA, drifted_columns=("segment",))
    drifted = route_predictions(
        frame, policy, drift=True, schema=SCHEMA, drifted_columns=("segment",)
    )

    assert set(calm.loc[calm["route"] == "review", "segment"]) == {"old"}
    assert set(drifted.loc[drifted["route"] == "review", "segment"]) == {"old", "new"}


def test_each_decision_records_what_explains_it():
    frame = confident_scores(4, disagreement=[0.5, 0.0, 0.0, 0.0])
    frame["model_version"] = "7"
    policy = triggers_only(confidence_threshold=0.8, review_capacity=2, audit_rate=0.0)

    routed = route_predictions(frame, policy)

    for column in (
        "item_id",
        "model_version",
        "confidence",
        "margin",
        "disagreement",
        "route",
        "reasons",
        "priority",
        "review_rank",
        "confidence_threshold",
        "tier",
    ):
        assert column in routed
    assert routed["confidence_threshold"].eq(0.8).all()
    assert routed.loc[0, "review_rank"] == 1 and routed["review_rank"].isna().sum() == 3


def test_fill_capacity_takes_the_next_most_uncertain_without_drift():
    confidences = [0.5] * 2 + [0.95] * 15 + [0.80, 0.82, 0.84]
    frame = scores(confidences)
    policy = RoutingPolicy(review_capacity=5, audit_rate=0.0, fill_capacity=True)

    routed = route_predictions(frame, policy)

    assert (routed["route"] == "review").sum() == 5
    filled = routed["reasons"] == "capacity_fill"
    assert set(routed.index[filled]) == {17, 18, 19}  # the three least confident left
    assert routed.loc[filled, "review_rank"].notna().all()


def test_fill_capacity_keeps_the_explore_share_random():
    frame = scores([0.5] * 2 + [0.95] * 30 + [0.80] * 8)
    policy = RoutingPolicy(
        review_capacity=10, audit_rate=0.0, fill_capacity=True, explore_share=0.3
    )

    routed = route_predictions(frame, policy)

    assert (routed["route"] == "review").sum() == 10
    assert (routed["reasons"] == "capacity_fill").sum() == 5
    assert (routed["reasons"] == "explore").sum() == 3


@pytest.mark.parametrize(
    ("share", "sampled"),
    [(1.0, 8), (0.5, 4), (0.0, 0), (RoutingPolicy().drift_sample_share, 0)],
    ids=["all-sampled", "half", "all-ranked", "default-ranks"],
)
def test_drift_sample_share_splits_the_spare_capacity_between_sample_and_ranking(share, sampled):
    # 2 uncertain items, then confident ones of falling confidence: the ranking fills
    # with the least confident of them
    frame = scores([0.5] * 2 + [0.99 - 0.005 * k for k in range(28)])
    policy = RoutingPolicy(
        review_capacity=10,
        audit_rate=0.0,
        fill_capacity=True,
        drift_capacity_multiplier=1.0,
        drift_sample_share=share,
    )

    routed = route_predictions(frame, policy, drift=True)

    assert (routed["route"] == "review").sum() == 10
    assert (routed["reasons"] == "drift_sample").sum() == sampled
    filled = routed[routed["reasons"] == "capacity_fill"]
    assert len(filled) == 8 - sampled
    # the fill is the ranking's next items: the least confident of the untriggered
    untriggered = routed.iloc[2:]
    assert set(filled["item_id"]) == set(
        untriggered.nsmallest(len(filled), "confidence")["item_id"]
    )


def test_explore_share_keeps_part_of_the_capacity_for_a_random_sample():
    frame = scores([0.5] * 30 + [0.95] * 30)  # more uncertain items than capacity
    policy = RoutingPolicy(review_capacity=10, audit_rate=0.0, explore_share=0.4)

    routed = route_predictions(frame, policy)

    ranked = routed["review_rank"].notna()
    explored = has_reason(routed["reasons"], "explore")
    assert ranked.sum() == 6 and explored.sum() == 4
    assert (routed["route"] == "review").sum() == 10
    assert not (ranked & explored).any()
