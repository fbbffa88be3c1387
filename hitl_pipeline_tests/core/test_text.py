"""Text columns as numbers: the word surprisal and the unseen-word share that routing
ranks a post's unfamiliarity by, on documents whose answer is worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.text import TextRepresentation, mean_surprisal, oov_share

# four reference documents: "the" in all of them, "match" in two, "cat" and "dog" in one
FREQUENCY = {"the": 4, "match": 2, "cat": 1, "dog": 1}
ROWS = 4


@pytest.mark.parametrize(
    ("words", "leave_one_out", "expected"),
    [
        # a word every reference document uses costs log(5/5) = 0
        (["the"], False, 0.0),
        # repeated words count once: the mean is over distinct words
        (["the", "the", "match"], False, (0.0 + math.log(5 / 3)) / 2),
        # an unseen word costs the most a word can: log((n + 1) / 1)
        (["zorblax"], False, math.log(5)),
        (["the", "zorblax"], False, math.log(5) / 2),
        # no words: nothing unfamiliar
        ([], False, 0.0),
        # leave-one-out, a reference row itself: "cat" is used by that row only, so it
        # costs what an unseen word costs among the other three rows, log(4 / 1)
        (["the", "cat"], True, (math.log(4 / 4) + math.log(4 / 1)) / 2),
    ],
    ids=["common", "repeated", "unseen", "half-unseen", "empty", "leave-one-out"],
)
def test_mean_surprisal(words, leave_one_out, expected):
    got = mean_surprisal([words], FREQUENCY, ROWS, leave_one_out=leave_one_out)

    assert got[0] == pytest.approx(expected)


def test_mean_surprisal_rejects_a_pseudo_count_that_is_not_positive():
    with pytest.raises(ValueError, match="smoothing must be > 0"):
        mean_surprisal([["the"]], FREQUENCY, ROWS, smoothing=0.0)


def test_the_surprisal_grades_what_the_unseen_share_cannot():
    reference = pd.DataFrame(
        {"text": ["the match was great"] * 30 + ["the cat sat"] * 10 + ["a rare word"] * 2}
    )
    fitted = TextRepresentation(["text"], n_components=2).fit(reference)
    probe = pd.DataFrame({"text": ["the match was great", "a rare word", "the match was yeet"]})

    surprisal = fitted.surprisal(probe)[:, 0]
    shares = fitted.oov(probe)[:, 0]

    # both rows use known words only, so their unseen share ties at 0, but words two
    # reference rows of 42 use are less familiar than words 30 of them use; one unseen
    # word among common ones sits between
    assert shares[0] == shares[1] == 0.0
    assert surprisal[0] < surprisal[2] < surprisal[1]
    assert shares[2] == pytest.approx(0.25)
    # the reference rows' own surprisals are leave-one-out: a row's counts exclude it
    assert fitted.reference_surprisal_.shape == (42, 1)
    assert fitted.reference_surprisal_[0, 0] > surprisal[0]
    np.testing.assert_allclose(oov_share(["the zorblax"], {"the"}), [0.5])
