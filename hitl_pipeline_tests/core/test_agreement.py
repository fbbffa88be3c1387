"""Agreement figures checked against a hand-worked example, disputes and annotator quality.

The hand-worked example: two annotators A and B label ten items with classes x and y.

    item   1 2 3 4 5 6 7 8 9 10
    A      x x x x x x y y y y
    B      x x x x y y y y y x

Cohen's kappa: observed agreement po = 7/10; A says x 6 times, B 5 times, so chance
agreement pe = 0.6·0.5 + 0.4·0.5 = 0.5 and kappa = (0.7 - 0.5) / 0.5 = 0.4.

Fleiss' kappa (n = 2 raters per item): P_i = 1 on the 7 agreeing items, 0 otherwise, so
P = 0.7; p_x = 11/20, p_y = 9/20, Pe = 0.3025 + 0.2025 = 0.505;
kappa = (0.7 - 0.505) / 0.495 = 13/33.

Krippendorff's alpha (nominal): coincidences o_xx = 8, o_yy = 6, o_xy = o_yx = 3, n = 20,
n_x = 11, n_y = 9; alpha = 1 - (n - 1)·(o_xy + o_yx) / (2·n_x·n_y) = 1 - 19·6/198 = 14/33.

Specific agreement: x: 2·4 / (2·4 + 3) = 8/11; y: 2·3 / (2·3 + 3) = 2/3.
"""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from hitl_pipeline.core.agreement import (
    agreement_by_label,
    agreement_by_queue,
    annotator_quality,
    disputed_items,
    fleiss_kappa,
    krippendorff_alpha,
    latest_votes,
    pairwise_kappa,
    summary_metrics,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A = ["x", "x", "x", "x", "x", "x", "y", "y", "y", "y"]
B = ["x", "x", "x", "x", "y", "y", "y", "y", "y", "x"]


def ledger(rows: list[tuple[str, str, str | None, str]], *, cancelled: set[int] = frozenset()):
    """rows: (item, annotator, label, tier); annotation ids follow row order."""
    return pd.DataFrame(
        [
            {
                "item_id": item,
                "annotator": who,
                "label": label,
                "tier": tier,
                "annotation_id": i,
                "completed_at": T0 + timedelta(minutes=i),
                "updated_at": T0 + timedelta(minutes=i),
                "was_cancelled": i in cancelled,
            }
            for i, (item, who, label, tier) in enumerate(rows)
        ]
    )


def hand_example(tier: str = "general") -> pd.DataFrame:
    rows = [(f"i{k}", "A", a, tier) for k, a in enumerate(A)]
    rows += [(f"i{k}", "B", b, tier) for k, b in enumerate(B)]
    return ledger(rows)


def test_hand_worked_example_cohen_fleiss_krippendorff_and_per_label() -> None:
    votes = latest_votes(hand_example())
    pairs = pairwise_kappa(votes)
    assert pairs[["annotator_a", "annotator_b", "shared_items"]].values.tolist() == [["A", "B", 10]]
    assert pairs["observed"].iloc[0] == pytest.approx(0.7)
    assert pairs["kappa"].iloc[0] == pytest.approx(0.4)
    counts = pd.crosstab(votes["item_id"], votes["label"])
    assert fleiss_kappa(counts) == pytest.approx(13 / 33)
    assert krippendorff_alpha(counts) == pytest.approx(14 / 33)
    assert agreement_by_label(votes) == pytest.approx({"x": 8 / 11, "y": 2 / 3})
    (queue,) = agreement_by_queue(votes)
    assert (queue.tier, queue.overlap_items) == ("general", 10)
    assert queue.alpha == pytest.approx(14 / 33) and queue.observed == pytest.approx(0.7)


def test_low_agreement_is_a_guideline_signal_and_high_agreement_is_not() -> None:
    low = agreement_by_queue(latest_votes(hand_example()))[0]
    assert low.signal is not None and "guideline" in low.signal and "general" in low.signal
    perfect = [(f"i{k}", who, a, "expert") for k, a in enumerate(A) for who in ("A", "B")]
    high = agreement_by_queue(latest_votes(ledger(perfect)))[0]
    assert high.alpha == pytest.approx(1.0) and high.signal is None
    figures = summary_metrics(latest_votes(hand_example()), pd.DataFrame())
    assert "general" in str(figures["guideline_signal"])


@pytest.mark.parametrize(
    ("rows", "cancelled", "expected"),
    [
        # agreement, a single vote, and a skip are not disputes
        ([("i1", "A", "x", "general"), ("i1", "B", "x", "general")], set(), []),
        ([("i1", "A", "x", "general")], set(), []),
        ([("i1", "A", "x", "general"), ("i1", "B", None, "general")], {1}, []),
        ([("i1", "A", "x", "general"), ("i1", "B", "y", "general")], set(), ["i1"]),
        # decided once an adjudicator answered
        (
            [
                ("i1", "A", "x", "general"),
                ("i1", "B", "y", "general"),
                ("i1", "C", "y", "adjudication"),
            ],
            set(),
            [],
        ),
        # an annotator who changed their mind has one (latest) vote
        (
            [("i1", "A", "y", "general"), ("i1", "B", "x", "general"), ("i1", "A", "x", "general")],
            set(),
            [],
        ),
    ],
)
def test_disputed_items(rows, cancelled, expected) -> None:
    assert disputed_items(latest_votes(ledger(rows, cancelled=cancelled))) == expected


def test_labels_outside_the_schema_are_not_votes() -> None:
    rows = [("i1", "A", "x", "general"), ("i1", "B", "zebra", "general")]
    assert disputed_items(latest_votes(ledger(rows), classes=("x", "y"))) == []


def test_adjudication_votes_are_not_ratings() -> None:
    rows = [
        ("i1", "A", "x", "general"),
        ("i1", "B", "x", "general"),
        ("i1", "C", "y", "adjudication"),
    ]
    votes = latest_votes(ledger(rows))
    assert [q.tier for q in agreement_by_queue(votes)] == ["general"]
    assert agreement_by_label(votes) == {"x": 1.0}


def test_annotator_quality_against_final_labels_and_peers() -> None:
    votes = latest_votes(hand_example())
    final = pd.DataFrame({"item_id": [f"i{k}" for k in range(10)], "label": A})  # A was right
    quality = annotator_quality(votes, final).set_index("annotator")
    assert quality.loc["A", "matches_final"] == 1.0
    assert quality.loc["B", "matches_final"] == pytest.approx(0.7)
    assert quality.loc["A", "peer_agreement"] == pytest.approx(0.7)
    assert quality.loc["B", "peer_items"] == 10
    # a lone vote judges nobody: no overlap, no quality figure
    lone = latest_votes(ledger([("i1", "A", "x", "general"), ("i2", "A", "y", "general")]))
    alone = annotator_quality(lone, pd.DataFrame({"item_id": ["i1", "i2"], "label": ["x", "y"]}))
    assert alone["judged_items"].tolist() == [0] and alone["matches_final"].isna().all()


def test_no_overlap_means_no_figures() -> None:
    votes = latest_votes(ledger([("i1", "A", "x", "general"), ("i2", "B", "y", "general")]))
    assert agreement_by_queue(votes)[0].alpha is None
    assert pairwise_kappa(votes)["shared_items"].tolist() == [0]
    assert agreement_by_label(votes) == {}
