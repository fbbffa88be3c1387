"""Out-of-distribution scores and committee disagreement on data whose answer is known."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hitl_pipeline.core.committee import committee_disagreement, disagreement, fit_committee
from hitl_pipeline.core.ood import fit_ood_detector, ood_scores
from hitl_pipeline.core.routing import RoutingPolicy
from hitl_pipeline.core.training import TrainingParams
from hitl_pipeline.core.types import BatchSchema, FeatureSpec
from hitl_pipeline.demo.stream import MODERATION_SCHEMA, ModerationStream
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


def _moderation_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seed posts of the moderation demo stream, and a fresh batch from before its drift."""
    stream = ModerationStream(seed=3, drift_at_batch=5)
    train, _holdout = stream.seed_sets()
    return train, pd.concat([stream.batch(i) for i in range(3)], ignore_index=True)


def _one_unseen_word(rows: pd.DataFrame) -> pd.DataFrame:
    # a different made-up slang word in each post, among its ordinary words
    slang = [f"sl{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}ng" for i in range(len(rows))]
    return rows.assign(text=[f"{t} {w}" for t, w in zip(rows["text"], slang, strict=True)])


def _all_unseen_words(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(text=[f"zorb{i} quibbly{i} frum{i}" for i in range(len(rows))])


@pytest.mark.parametrize(
    ("make_probe", "flagged_min", "flagged_max"),
    [
        # fresh posts like the training ones: about 1% above 0.99 (ood_threshold), as
        # on a schema without text; the max of two percentiles would flag about 2%
        (lambda fresh: fresh, 0.0, 0.025),
        # one slang word in every post of a batch: each is a little less familiar, and
        # the trigger still tells them apart instead of flagging the whole batch
        (_one_unseen_word, 0.02, 0.5),
        # posts made of unseen words only: beyond every training row
        (_all_unseen_words, 1.0, 1.0),
    ],
    ids=["in-distribution", "one-slang-word-per-post", "all-unseen-words"],
)
def test_text_ood_scores_rank_unfamiliarity(make_probe, flagged_min, flagged_max):
    train, fresh = _moderation_rows()
    detector = fit_ood_detector(train, MODERATION_SCHEMA)

    scores = ood_scores(detector, make_probe(fresh), MODERATION_SCHEMA)

    flagged = float(np.mean(scores >= RoutingPolicy().ood_threshold))
    assert flagged_min <= flagged <= flagged_max


def test_one_unseen_word_raises_every_posts_text_score():
    train, fresh = _moderation_rows()
    detector = fit_ood_detector(train, MODERATION_SCHEMA)

    before = ood_scores(detector, fresh, MODERATION_SCHEMA)
    after = ood_scores(detector, _one_unseen_word(fresh), MODERATION_SCHEMA)

    # the forest reads the same known words either way; the surprisal goes up
    assert np.all(after >= before)
    assert np.median(after) > np.median(before) + 0.2
