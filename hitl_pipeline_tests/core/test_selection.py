"""Active-learning ranking: coverage first, then uncertainty x diversity."""

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.selection import feature_embedding, segment_labels, select_diverse


def test_without_embedding_or_strata_it_is_top_priority_with_id_ties():
    priority = np.array([0.1, 0.9, 0.5, 0.9])

    picks = select_diverse(priority, 3, tie_break=np.array(["d", "c", "b", "a"]))

    assert picks.tolist() == [3, 1, 2]  # 0.9 tie: "a" before "c"


@pytest.mark.parametrize("capacity", [0, -1])
def test_no_capacity_picks_nothing(capacity):
    assert select_diverse(np.ones(3), capacity).size == 0


def test_capacity_above_the_pool_takes_everything_by_priority():
    assert select_diverse(np.array([0.2, 0.8]), 5).tolist() == [1, 0]


def test_duplicates_are_worth_nothing_once_one_is_picked():
    # two clusters: three copies at 0 (most uncertain), one item at 10
    embedding = np.array([[0.0], [0.0], [0.0], [10.0]])
    priority = np.array([1.0, 0.99, 0.98, 0.5])

    picks = select_diverse(priority, 2, embedding=embedding)

    assert picks.tolist() == [0, 3]


def test_coverage_takes_the_most_urgent_of_each_stratum_within_its_share():
    priority = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    strata = [np.array(["a", "a", "a", "b", "c"])]

    two = select_diverse(priority, 4, strata=strata, coverage_share=0.5)  # 2 coverage picks
    six = select_diverse(priority, 4, strata=strata, coverage_share=1.0)

    assert two.tolist()[:2] == [0, 3] and set(two) == {0, 3, 1, 2}
    assert set(six.tolist()[:3]) == {0, 3, 4}


def test_embedding_scales_numerics_robustly_and_one_hots_categories():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, np.nan], "c": ["u", "v", "u", "u", "v"]})

    emb = feature_embedding(frame, numeric=["x"], categorical=["c"], column_weights={"c": 2.0})

    assert emb.shape == (5, 3)
    assert emb[4, 0] == 0.0  # missing sits at the median
    # two different levels of a weight-2 categorical are 2 apart
    assert np.linalg.norm(emb[0, 1:] - emb[1, 1:]) == pytest.approx(2.0)


def test_segments_are_categories_or_quartiles():
    frame = pd.DataFrame({"x": np.arange(8.0), "c": list("aabbccdd")})

    assert segment_labels(frame, "c", numeric=False).tolist() == list("aabbccdd")
    assert segment_labels(frame, "x", numeric=True).tolist() == [
        "q0",
        "q0",
        "q1",
        "q1",
        "q2",
        "q2",
        "q3",
        "q3",
    ]


def test_text_embedding_puts_posts_on_one_topic_together():
    topics = {
        "cats": "cat kitten purr meow whiskers litter",
        "tax": "tax refund deadline invoice receipt audit",
        "goal": "goal striker penalty keeper match referee",
    }
    rng = np.random.default_rng(0)
    rows = [
        (topic, " ".join(rng.choice(words.split(), size=6)))
        for topic, words in topics.items()
        for _ in range(20)
    ]
    frame = pd.DataFrame(rows, columns=["topic", "text"])

    emb = feature_embedding(frame, numeric=[], categorical=[], text=["text"], text_components=3)

    assert emb.shape == (60, 3)
    distances = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = frame["topic"].to_numpy()[distances.argmin(axis=1)]
    assert (nearest == frame["topic"].to_numpy()).all()
    same_topic = distances[0, 1:20].max()
    assert distances[0, 20:].min() > 3 * same_topic
