"""Out-of-distribution scores and committee disagreement on data whose answer is known."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hitl_pipeline.core.committee import committee_disagreement, disagreement, fit_committee
from hitl_pipeline.core.ood import fit_ood_detector, ood_scores
from hitl_pipeline.core.training import TrainingParams
from hitl_pipeline.core.types import BatchSchema, FeatureSpec
from hitl_pipeline_tests.fixtures.text_data import posts

SCHEMA = BatchSchema(
    features=(
        FeatureSpec("x", "numeric"),
        FeatureSpec("y", "numeric"),
        FeatureSpec("c", "categorical"),
    ),
    classes=("neg", "pos"),
)


def training_rows(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "item_id": [f"t{i:04d}" for i in range(n)],
            "x": x,
            "y": y,
            "c": rng.choice(["u", "v"], size=n),
            "label": np.where(x + y > 0, "pos", "neg"),
        }
    )


def test_far_away_rows_score_as_out_of_distribution():
    train = training_rows()
    detector = fit_ood_detector(train, SCHEMA)
    probe = pd.DataFrame({"x": [0.0, 8.0], "y": [0.0, -8.0], "c": ["u", "v"]})

    scores = ood_scores(detector, probe, SCHEMA)

    assert scores[0] < 0.5
    assert scores[1] == pytest.approx(1.0)


def test_fresh_rows_from_the_training_distribution_are_rarely_flagged():
    detector = fit_ood_detector(training_rows(seed=0), SCHEMA)

    scores = ood_scores(detector, training_rows(seed=1), SCHEMA)

    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert np.mean(scores >= 0.99) < 0.05


@pytest.mark.parametrize(
    ("probas", "expected"),
    [
        ([[[1.0, 0.0]], [[0.0, 1.0]]], [1.0]),
        ([[[0.6, 0.4]], [[0.6, 0.4]]], [0.0]),
        ([[[0.7, 0.3]], [[0.5, 0.5]]], [0.2]),
        # three members: pairs (0.2, 0.0, 0.2) -> mean 2/15
        ([[[0.7, 0.3]], [[0.5, 0.5]], [[0.7, 0.3]]], [0.4 / 3]),
        ([[[0.7, 0.3]]], [0.0]),
    ],
)
def test_disagreement_is_mean_pairwise_total_variation(probas, expected):
    got = disagreement([np.asarray(p) for p in probas])

    assert got == pytest.approx(expected)


def test_a_bootstrap_committee_disagrees_more_near_the_boundary():
    train = training_rows()
    committee = fit_committee(
        train, SCHEMA, TrainingParams(max_iter=30), members=3, seed=0, max_iter=30
    )
    probe = pd.DataFrame({"x": [3.0, 0.02], "y": [3.0, -0.02], "c": ["u", "u"]})

    values = committee_disagreement(committee, probe, SCHEMA)

    assert len(committee) == 3
    assert values[1] > values[0]


TEXT_SCHEMA = BatchSchema(
    features=(FeatureSpec("text", "text"), FeatureSpec("account_age", "numeric")),
    classes=("ok", "toxic", "spam"),
)


def test_posts_in_unseen_vocabulary_rank_as_out_of_distribution():
    detector = fit_ood_detector(posts(600, seed=1), TEXT_SCHEMA)
    familiar = ood_scores(detector, posts(200, seed=2), TEXT_SCHEMA)
    unseen = ood_scores(detector, posts(200, seed=3, drifted=True), TEXT_SCHEMA)
    gibberish = pd.DataFrame(
        {"text": ["zorblax quibbly frumious vorpal snicker"], "account_age": [300.0]}
    )

    # same tabular distribution, only the words changed: the ranking comes from the text
    assert roc_auc_score([0] * 200 + [1] * 200, np.r_[familiar, unseen]) > 0.75
    assert np.median(unseen) > np.median(familiar) + 0.25
    assert ood_scores(detector, gibberish, TEXT_SCHEMA)[0] > 0.95
