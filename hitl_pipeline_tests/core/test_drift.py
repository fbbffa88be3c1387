"""Drift with Evidently: detected when the data moved, quiet when it did not.

Runs the real Evidently (no fake): the point is that our reading of its current API
stays right.
"""

import math
import re

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.drift import HOMOGENEITY_DISPLAY_NAME, DriftPolicy, compute_drift
from hitl_pipeline.core.types import BatchSchema, FeatureSpec
from hitl_pipeline_tests.fixtures.text_data import posts

SCHEMA = BatchSchema(
    features=(
        FeatureSpec("a", "numeric"),
        FeatureSpec("b", "numeric"),
        FeatureSpec("c", "numeric", nullable=True),
        FeatureSpec("colour", "categorical", categories=("red", "green", "blue", "pink")),
    ),
    classes=("x", "y"),
)


def features(n: int, seed: int, *, shift: float = 0.0, colours=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "item_id": [f"{seed}-{k}" for k in range(n)],
            "a": rng.normal(shift, 1.0, size=n),
            "b": rng.normal(10.0 + 3 * shift, 2.0, size=n),
            "c": rng.exponential(1.0 + shift, size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n, p=colours),
        }
    )


def scores(n: int, seed: int, *, confident: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    confidence = rng.beta(8, 2, size=n) if confident else rng.beta(2, 2, size=n)
    labels = rng.choice(["x", "y"], size=n, p=(0.7, 0.3) if confident else (0.3, 0.7))
    return pd.DataFrame({"predicted_label": labels, "confidence": confidence})


@pytest.mark.parametrize(
    ("reference_rows", "current_rows"),
    [(3000, 400), (600, 300)],  # Evidently's large-sample and small-sample methods
    ids=["distance-methods", "p-value-methods"],
)
def test_shifted_batch_drifts_and_same_distribution_does_not(reference_rows, current_rows):
    reference = features(reference_rows, seed=1)
    same = features(current_rows, seed=2)
    shifted = features(current_rows, seed=3, shift=1.0, colours=(0.1, 0.3, 0.6))

    quiet, _ = compute_drift(reference, same, SCHEMA)
    alarm, _ = compute_drift(reference, shifted, SCHEMA)

    assert quiet.dataset_drift is False
    assert quiet.drifted_columns == ()
    assert alarm.dataset_drift is True
    assert alarm.drifted_columns == ("a", "b", "c", "colour")
    assert alarm.drift_share == 1.0
    assert (alarm.reference_rows, alarm.current_rows) == (reference_rows, current_rows)
    assert set(alarm.column_scores) == {"a", "b", "c", "colour"}


@pytest.mark.parametrize(
    ("reference_rows", "current_rows", "numeric_method", "categorical_method"),
    [
        # effect sizes whatever the reference size...
        (500, 200, "Wasserstein distance (normed)", "Jensen-Shannon distance"),
        (2000, 200, "Wasserstein distance (normed)", "Jensen-Shannon distance"),
        # ...p-value tests when the batch is too small to measure a distance on
        (2000, 60, "K-S p_value", HOMOGENEITY_DISPLAY_NAME),
    ],
)
def test_the_policy_picks_effect_sizes_unless_the_batch_is_small(
    reference_rows, current_rows, numeric_method, categorical_method
):
    summary, _ = compute_drift(features(reference_rows, 1), features(current_rows, 2), SCHEMA)

    assert summary.column_methods["a"] == numeric_method
    assert summary.column_methods["colour"] == categorical_method


def test_evidently_defaults_follow_the_reference_size():
    policy = DriftPolicy.evidently_defaults()

    small, _ = compute_drift(features(500, 1), features(200, 2), SCHEMA, policy=policy)
    large, _ = compute_drift(features(2000, 1), features(200, 2), SCHEMA, policy=policy)

    assert small.column_methods["a"] == "K-S p_value"
    assert small.column_methods["colour"] == HOMOGENEITY_DISPLAY_NAME
    assert large.column_methods["a"] == "Wasserstein distance (normed)"
    assert large.column_methods["colour"] == "Jensen-Shannon distance"


def test_a_small_but_certain_shift_alarms_p_values_but_not_the_policy():
    """Many rows make a p-value test flag any shift; the effect size does not grow."""
    reference = features(3000, 1)
    current = features(3000, 2, shift=0.08)  # a twelfth of a standard deviation
    current["colour"] = features(3000, 2, colours=(0.45, 0.3, 0.25))["colour"]

    p_values, _ = compute_drift(
        reference, current, SCHEMA, policy=DriftPolicy(num_method="ks", cat_method="chisquare")
    )
    effect, _ = compute_drift(reference, current, SCHEMA)

    assert p_values.dataset_drift is True
    assert effect.dataset_drift is False
    assert effect.drifted_columns == ()


@pytest.mark.parametrize(
    ("threshold", "drifted"),
    [(0.2, False), (0.05, True)],  # the column moved by about a tenth of a deviation
)
def test_numeric_threshold_is_the_effect_size(threshold, drifted):
    current = features(2000, 2)
    current["a"] = current["a"] + 0.1

    summary, _ = compute_drift(
        features(2000, 1), current, SCHEMA, policy=DriftPolicy(num_threshold=threshold)
    )

    assert 0.05 < summary.column_scores["a"] < 0.2
    assert ("a" in summary.drifted_columns) is drifted


@pytest.mark.parametrize(
    "changes",
    [
        {"drift_share": 0.0},
        {"drift_share": 1.5},
        {"num_threshold": -0.1},
        {"distance_min_rows": -1},
    ],
)
def test_policy_refuses_impossible_values(changes):
    with pytest.raises(ValueError):
        DriftPolicy(**changes)


@pytest.mark.parametrize("reference_rows", [500, 2000])
def test_one_unseen_category_alone_does_not_flag_the_column(reference_rows):
    current = features(300, 2)
    current.loc[0, "colour"] = "pink"  # never seen in the reference

    summary, _ = compute_drift(features(reference_rows, 1), current, SCHEMA)

    assert "colour" not in summary.drifted_columns


def test_a_new_category_taking_over_flags_the_column():
    current = features(300, 2)
    current.loc[:120, "colour"] = "pink"

    summary, _ = compute_drift(features(500, 1), current, SCHEMA)

    assert "colour" in summary.drifted_columns


@pytest.mark.parametrize(("share", "expected"), [(0.25, True), (0.5, False)])
def test_dataset_verdict_uses_the_drift_share(share, expected):
    current = features(300, 2)
    current["a"] = current["a"] + 2.0  # one of four features drifts

    summary, _ = compute_drift(
        features(500, 1), current, SCHEMA, policy=DriftPolicy(drift_share=share)
    )

    assert summary.drifted_columns == ("a",)
    assert summary.dataset_drift is expected
    assert summary.drift_share_threshold == share


def test_prediction_and_confidence_drift():
    reference, current = features(800, 1), features(300, 2)

    steady, _ = compute_drift(
        reference, current, SCHEMA, reference_scores=scores(800, 1), current_scores=scores(300, 2)
    )
    moved, _ = compute_drift(
        reference,
        current,
        SCHEMA,
        reference_scores=scores(800, 1),
        current_scores=scores(300, 2, confident=False),
    )

    assert (steady.prediction_drift, steady.confidence_drift) == (False, False)
    assert (moved.prediction_drift, moved.confidence_drift) == (True, True)
    # score columns are reported but do not count towards the feature share
    assert {"predicted_label", "confidence"} <= set(moved.column_scores)
    assert moved.drifted_columns == ()


def test_without_scores_there_is_no_prediction_drift():
    summary, _ = compute_drift(features(500, 1), features(100, 2), SCHEMA)

    assert (summary.prediction_drift, summary.confidence_drift) == (False, False)
    assert "predicted_label" not in summary.column_scores


@pytest.mark.parametrize(
    ("reference_empty", "current_empty", "drifted"),
    [(False, True, True), (True, False, True), (True, True, False)],
)
def test_a_column_empty_on_one_side(reference_empty, current_empty, drifted):
    reference, current = features(500, 1), features(100, 2)
    if reference_empty:
        reference["c"] = np.nan
    if current_empty:
        current["c"] = np.nan

    summary, _ = compute_drift(reference, current, SCHEMA)

    assert ("c" in summary.drifted_columns) is drifted
    assert math.isnan(summary.column_scores["c"])


def test_tiny_batch_is_handled():
    summary, html = compute_drift(features(500, 1), features(5, 2), SCHEMA)

    assert summary.current_rows == 5
    assert summary.dataset_drift is False
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()


def test_html_report_is_self_contained():
    _, html = compute_drift(features(500, 1), features(200, 3, shift=1.0), SCHEMA)

    assert "<html" in html.lower()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # scripts inlined, no CDN


@pytest.mark.parametrize(("reference_rows", "current_rows"), [(0, 10), (10, 0)])
def test_empty_frames_are_refused(reference_rows, current_rows):
    with pytest.raises(ValueError, match="rows on both sides"):
        compute_drift(features(reference_rows, 1), features(current_rows, 2), SCHEMA)


# --- text columns --------------------------------------------------------------------
TEXT_SCHEMA = BatchSchema(
    features=(FeatureSpec("text", "text"), FeatureSpec("account_age", "numeric")),
    classes=("ok", "toxic", "spam"),
)


@pytest.fixture(scope="module")
def text_reference() -> pd.DataFrame:
    return posts(1500, seed=1)


def test_a_vocabulary_shift_drifts_the_text_column_and_a_resample_does_not(text_reference):
    same, _ = compute_drift(text_reference, posts(300, seed=2), TEXT_SCHEMA)
    shifted, html = compute_drift(text_reference, posts(300, seed=3, drifted=True), TEXT_SCHEMA)

    assert same.drifted_columns == ()
    assert same.column_scores["text"] < 0.6  # the domain classifier's AUC: chance
    assert shifted.drifted_columns == ("text",)  # account_age did not move
    assert shifted.drift_share == 0.5 and shifted.dataset_drift
    assert not same.dataset_drift
    assert shifted.column_scores["text"] > 0.9
    assert shifted.column_methods["text"] == "Absolute text content drift"
    # the descriptors are in the same summary and report
    assert shifted.column_scores["text: unseen words"] > same.column_scores["text: unseen words"]
    assert "text: length" in shifted.column_methods
    assert "text: unseen words" in html


def test_longer_posts_drift_through_the_length_descriptor(text_reference):
    current = posts(300, seed=4)
    # the same words, each post said three times: content alike, length not
    current["text"] = (current["text"] + " ") * 3

    summary, _ = compute_drift(text_reference, current, TEXT_SCHEMA)

    assert summary.column_scores["text: length"] > 0.2
    assert "text" in summary.drifted_columns


def test_a_drifted_text_column_alone_raises_the_alarm_unless_the_policy_says_not(
    text_reference,
):
    current = posts(300, seed=3, drifted=True)
    schema = BatchSchema(
        features=(*TEXT_SCHEMA.features, FeatureSpec("source", "categorical")),
        classes=TEXT_SCHEMA.classes,
    )

    alarm, _ = compute_drift(text_reference, current, schema)
    share_only, _ = compute_drift(
        text_reference, current, schema, policy=DriftPolicy(text_alarms=False)
    )

    assert alarm.drifted_columns == share_only.drifted_columns == ("text",)
    assert alarm.drift_share == pytest.approx(1 / 3)
    assert alarm.dataset_drift and not share_only.dataset_drift
