"""Loop health figures: known tables, and None when there is nothing to measure."""

import pandas as pd
import pytest

from hitl_pipeline.core.loop_health import (
    LoopHealthPolicy,
    audit_fall_warning,
    audit_pass_rate,
    correction_band_warning,
    correction_rate,
    has_numbers,
    label_counts,
)


def annotations(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["label", "predicted_label", "was_cancelled", "reasons"])


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], None),
        ([("a", "a", False, ())], 0.0),
        ([("a", "b", False, ()), ("a", "a", False, ())], 0.5),
        # cancelled and unlabelled annotations are not measured
        ([("a", "b", False, ()), (None, "a", True, ()), ("b", "a", True, ())], 1.0),
        ([(None, "a", True, ())], None),
        # no prediction to compare with
        ([("a", None, False, ())], None),
    ],
)
def test_correction_rate(rows, expected):
    assert correction_rate(annotations(rows)) == expected


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("a", "a", False, ("low_confidence",))], None),  # no audit at all
        ([("a", "a", False, ("audit",)), ("a", "b", False, ("low_confidence",))], 1.0),
        ([("a", "a", False, ("audit",)), ("b", "a", False, ("low_confidence", "audit"))], 0.5),
        ([("a", "a", False, "audit"), ("b", "a", False, "confident;audit")], 0.5),  # string form
        ([("a", "b", True, ("audit",))], None),  # cancelled audit
    ],
)
def test_audit_pass_rate(rows, expected):
    assert audit_pass_rate(annotations(rows)) == expected


def test_label_counts():
    frame = pd.DataFrame({"label": ["b", "a", "b", None, "zeta"]})

    assert label_counts(frame, classes=("a", "b", "c")) == {"a": 1, "b": 2, "c": 0, "zeta": 1}
    assert label_counts(frame["label"]) == {"a": 1, "b": 2, "zeta": 1}
    assert label_counts(pd.Series([None], dtype=object)) is None


# --- Wilson interval, audit alert, correction band, cost ---------------------------------------
from hitl_pipeline.core.loop_health import (  # noqa: E402
    AuditPolicy,
    accuracy_regained,
    annotation_cost,
    audit_outcomes_verdict,
    audit_verdict,
    concept_drift_alarm,
    correction_rates,
    cost_per_accuracy_point,
    cycle_table,
    render_chart,
    wilson_interval,
)


def test_wilson_interval_matches_the_hand_worked_figure():
    # 16 of 20, z = 1.96: centre (0.8 + z²/40) / (1 + z²/20) = 0.75166,
    # half-width z·sqrt(0.8·0.2/20 + z²/1600) / (1 + z²/20) = 0.16768
    low, high = wilson_interval(16, 20)
    assert (low, high) == pytest.approx((0.58398, 0.91934), abs=1e-4)
    assert wilson_interval(0, 0) != wilson_interval(0, 0)  # NaN: nothing to estimate
    low, high = wilson_interval(20, 20)
    assert high == pytest.approx(1.0) and low < 1.0  # never a zero-width interval


def audits(per_partition: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """partition -> (passed, audited) as audit annotations, plus a non-audit row each."""
    rows, next_id = [], 0
    for partition, (passed, audited) in per_partition.items():
        for i in range(audited):
            label = "a" if i < passed else "b"
            rows.append(("a", label, partition, ("audit",), "general", next_id))
            next_id += 1
        rows.append(("a", "b", partition, ("low_confidence",), "general", next_id))
        next_id += 1
    return pd.DataFrame(
        [
            {
                "predicted_label": p,
                "label": lab,
                "partition": part,
                "reasons": r,
                "tier": t,
                "annotation_id": i,
                "was_cancelled": False,
            }
            for p, lab, part, r, t, i in rows
        ]
    )


@pytest.mark.parametrize(
    ("per_partition", "alert", "words"),
    [
        ({}, False, "no audited"),
        ({"d1": (19, 20), "d2": (18, 20)}, False, "no significant fall"),
        # a fall after a long good history: the intervals no longer overlap, while the
        # recent rate alone (0.85, [0.64, 0.95]) does not break the 0.8 floor
        ({"d1": (200, 200), "d2": (17, 20)}, True, "fell"),
        ({"d1": (39, 40), "d2": (16, 20)}, False, "no significant fall"),
        # below the floor from the start
        ({"d1": (5, 20)}, True, "floor"),
        # a small, noisy window does not alert on a dip the interval cannot exclude
        ({"d1": (39, 40), "d2": (3, 4)}, False, "no significant fall"),
    ],
)
def test_audit_verdict(per_partition, alert, words):
    verdict = audit_verdict(audits(per_partition))
    assert verdict.alert is alert
    assert words in verdict.message


AUDIT_TABLE = [
    {},
    {"d1": (19, 20), "d2": (18, 20)},
    {"d1": (200, 200), "d2": (17, 20)},
    {"d1": (39, 40), "d2": (16, 20)},
    {"d1": (5, 20)},
    {"d1": (39, 40), "d2": (3, 4)},
]


@pytest.mark.parametrize("per_partition", AUDIT_TABLE)
def test_outcomes_give_the_same_verdict_as_annotations(per_partition):
    partitions = [p for p, (_, n) in per_partition.items() for _ in range(n)]
    passed = [i < k for k, n in per_partition.values() for i in range(n)]

    from_outcomes = audit_outcomes_verdict(partitions, passed)

    assert from_outcomes == audit_verdict(audits(per_partition))
    assert concept_drift_alarm(partitions, passed) is from_outcomes.alert


def test_batch_numbers_sort_as_numbers():
    # batch 10 is the newest: a lexical sort would take batch 9 as the recent window
    partitions = [9] * 40 + [10] * 20
    passed = [True] * 40 + [False] * 20

    verdict = audit_outcomes_verdict(partitions, passed)

    assert verdict.partitions == ("10",)
    assert verdict.alert is True


@pytest.mark.parametrize(
    ("recent_partitions", "alert", "window"),
    [
        (1, True, ("d3",)),  # the newest batch alone fell
        (2, False, ("d2", "d3")),  # pooled with a good batch, the fall is not significant
    ],
)
def test_the_policy_sets_the_window(recent_partitions, alert, window):
    frame = audits({"d1": (30, 30), "d2": (20, 20), "d3": (15, 20)})

    verdict = audit_verdict(frame, AuditPolicy(recent_partitions=recent_partitions))

    assert (verdict.alert, verdict.partitions) == (alert, window)


def test_outcomes_must_pair_up():
    with pytest.raises(ValueError, match="2 partitions but 1 outcomes"):
        audit_outcomes_verdict(["d1", "d1"], [True])


def test_adjudication_answers_are_not_audits():
    frame = audits({"d1": (20, 20)})
    frame.loc[0, "tier"] = "adjudication"
    frame.loc[0, "label"] = "b"
    assert audit_verdict(frame).audited == 19


@pytest.mark.parametrize(
    ("corrected", "of", "verdict"),
    [
        (0, 50, "below"),
        (2, 50, "below"),
        (3, 50, "healthy"),
        (15, 50, "healthy"),
        (16, 50, "above"),
    ],
)
def test_correction_band(corrected, of, verdict):
    frame = pd.DataFrame(
        {
            "predicted_label": ["a"] * of,
            "label": ["b"] * corrected + ["a"] * (of - corrected),
            "tier": ["expert"] * of,
            "was_cancelled": [False] * of,
        }
    )
    (row,) = correction_rates(frame, by="tier").to_dict("records")
    assert (row["group"], row["verdict"]) == ("expert", verdict)
    assert row["rate"] == pytest.approx(corrected / of)
    if verdict == "below":
        assert "too conservative" in row["message"]
    if verdict == "above":
        assert "not yet competent" in row["message"]


def test_cost_counts_each_answer_once_at_its_tier_price():
    frame = pd.DataFrame(
        {
            "annotation_id": [1, 1, 2, 3, 4],  # annotation 1 pulled twice
            "tier": ["general", "general", "expert", "adjudication", "other"],
        }
    )
    prices = {"general": 0.1, "expert": 1.0, "adjudication": 0.5}
    assert annotation_cost(frame, price_per_label=prices, default_price=0.2) == pytest.approx(1.8)


def test_cycle_table_accuracy_regained_and_cost_per_point():
    frame = audits({"2026-01-05": (19, 20), "2026-01-12": (10, 20), "2026-01-19": (18, 20)})
    cycles = cycle_table(frame, price_per_label={"general": 1.0}, default_price=1.0)
    assert cycles["partition"].tolist() == ["2026-01-05", "2026-01-12", "2026-01-19"]
    assert cycles["audit_pass_rate"].tolist() == pytest.approx([0.95, 0.5, 0.9])
    assert cycles["cost"].tolist() == [21.0, 21.0, 21.0]
    trough, latest, cost = accuracy_regained(cycles)
    assert (trough, latest, cost) == (0.5, 0.9, 42.0)
    assert cost_per_accuracy_point(cost, trough, latest) == pytest.approx(42.0 / 40.0)
    assert cost_per_accuracy_point(10.0, 0.9, 0.8) is None  # no gain: no price per point
    png = render_chart(cycles, {"general": 0.7, "expert": float("nan")}, title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# --- the per-batch warnings -------------------------------------------------------------------
def cycles(rows: list[tuple]) -> pd.DataFrame:
    """(partition, labels, correction_rate, audited, audit_pass_rate) per batch."""
    frame = pd.DataFrame(
        rows, columns=["partition", "labels", "correction_rate", "audited", "audit_pass_rate"]
    )
    return frame.assign(annotations=frame["labels"], cost=0.0)


NAN = float("nan")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], False),
        # a batch whose answers were all skipped has no figure yet
        ([("b1", 0, NAN, 0, NAN)], False),
        ([("b1", 3, 0.0, 0, NAN)], True),
        ([("b1", 0, NAN, 4, 1.0)], True),
    ],
)
def test_has_numbers(rows, expected):
    assert has_numbers(cycles(rows)) is expected


@pytest.mark.parametrize(
    ("rows", "warn", "batch", "words"),
    [
        ([], False, None, "nothing to judge"),
        # too few labels to judge: 50% of 4 answers says little
        ([("b1", 4, 0.5, 0, NAN)], False, None, "nothing to judge"),
        ([("b1", 40, 0.10, 0, NAN)], False, "b1", "inside"),
        ([("b1", 40, 0.45, 0, NAN)], True, "b1", "above the healthy band"),
        ([("b1", 40, 0.01, 0, NAN)], True, "b1", "below the healthy band"),
        # the newest batch with enough labels decides, not an earlier out-of-band one
        ([("b1", 40, 0.60, 0, NAN), ("b2", 30, 0.20, 0, NAN)], False, "b2", "inside"),
        # a small newest batch is skipped for the last judgeable one
        ([("b1", 40, 0.60, 0, NAN), ("b2", 5, 0.20, 0, NAN)], True, "b1", "above"),
    ],
)
def test_correction_band_warning(rows, warn, batch, words):
    verdict = correction_band_warning(cycles(rows))

    assert (verdict.warn, verdict.partition) == (warn, batch)
    assert words in verdict.message


def test_the_band_is_the_policys():
    figures = cycles([("b1", 40, 0.45, 0, NAN)])

    assert correction_band_warning(figures, LoopHealthPolicy(correction_high=0.5)).warn is False
    assert correction_band_warning(figures, LoopHealthPolicy(min_labels=50)).partition is None


@pytest.mark.parametrize(
    ("rows", "warn", "batch", "words"),
    [
        ([], False, None, "nothing to judge"),
        ([("b1", 40, 0.1, 20, 0.9)], False, "b1", "no earlier audited batch"),
        # 0.95 pooled over 40 items before, 0.80 now: a fall of 0.15
        (
            [("b1", 40, 0.1, 20, 0.95), ("b2", 40, 0.1, 20, 0.95), ("b3", 40, 0.1, 20, 0.8)],
            True,
            "b3",
            "down 0.15 from 0.95",
        ),
        # a small fall is within the noise the policy tolerates
        ([("b1", 40, 0.1, 20, 0.92), ("b2", 40, 0.1, 20, 0.90)], False, "b2", "earlier"),
        # a rise never warns
        ([("b1", 40, 0.1, 20, 0.70), ("b2", 40, 0.1, 20, 0.90)], False, "b2", "earlier"),
        # pooled by size: 30 items at 1.0 and 10 at 0.6 make 0.9 before, so 0.88 is no fall
        (
            [("b1", 40, 0.1, 30, 1.0), ("b2", 40, 0.1, 10, 0.6), ("b3", 40, 0.1, 20, 0.88)],
            False,
            "b3",
            "0.90",
        ),
        # a newest batch with too few audited items is not judged; the one before it is
        (
            [("b1", 40, 0.1, 20, 0.95), ("b2", 40, 0.1, 20, 0.70), ("b3", 40, 0.1, 2, 1.0)],
            True,
            "b2",
            "down 0.25",
        ),
    ],
)
def test_audit_fall_warning(rows, warn, batch, words):
    verdict = audit_fall_warning(cycles(rows))

    assert (verdict.warn, verdict.partition) == (warn, batch)
    assert words in verdict.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"correction_low": 0.4, "correction_high": 0.3},
        {"correction_high": 1.5},
        {"min_labels": 0},
        {"audit_drop": 0.0},
    ],
)
def test_an_impossible_loop_health_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        LoopHealthPolicy(**kwargs)
