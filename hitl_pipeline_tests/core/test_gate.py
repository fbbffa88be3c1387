"""The promotion gate: each check as small tables whose answer is known by construction.

Frames are built from counts of the four kinds of rows of a paired comparison (both
models right, only the challenger, only the champion, neither), so the true difference
of accuracies is known exactly and the checks can be held to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.gate import (
    CHALLENGER_CONF,
    CHALLENGER_PRED,
    CHAMPION_CONF,
    CHAMPION_PRED,
    FAIL,
    NO_EVIDENCE,
    PASS,
    GatePolicy,
    calibration_check,
    decide,
    edge_case_check,
    expected_calibration_error,
    failed_checks,
    most_recent,
    overall_check,
    paired_bootstrap,
    paired_predictions,
    slice_checks,
)
from hitl_pipeline.core.types import LABEL, LABELLED_AT, BatchSchema, FeatureSpec


def paired(
    both: int = 0,
    challenger_only: int = 0,
    champion_only: int = 0,
    neither: int = 0,
    *,
    label: str = "a",
    confidence: float = 0.8,
    **columns: str,
) -> pd.DataFrame:
    """Rows of one true class with the given paired outcome counts."""
    kinds = [(True, True)] * both + [(True, False)] * challenger_only
    kinds += [(False, True)] * champion_only + [(False, False)] * neither
    wrong = "zz"
    return pd.DataFrame(
        {
            LABEL: [label] * len(kinds),
            CHALLENGER_PRED: [label if c else wrong for c, _ in kinds],
            CHAMPION_PRED: [label if h else wrong for _, h in kinds],
            CHALLENGER_CONF: [confidence] * len(kinds),
            CHAMPION_CONF: [confidence] * len(kinds),
            **{k: [v] * len(kinds) for k, v in columns.items()},
        }
    )


def cat(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


POLICY = GatePolicy()
SAME = paired(both=200, neither=40)  # two models that agree everywhere: difference 0


# --- statistics -----------------------------------------------------------------------
def test_paired_bootstrap_brackets_the_known_difference_and_is_seeded():
    ours = np.array([True] * 90 + [True] * 10)
    theirs = np.array([True] * 90 + [False] * 10)
    p = paired_bootstrap(ours, theirs, confidence=0.9, n_bootstrap=2000, seed=0)
    assert (p.n, p.challenger, p.champion) == (100, 1.0, 0.9)
    assert p.diff == pytest.approx(0.10)
    assert 0.0 < p.low < p.diff < p.high  # only improvements: the whole interval is > 0
    again = paired_bootstrap(ours, theirs, confidence=0.9, n_bootstrap=2000, seed=0)
    assert again == p
    wider = paired_bootstrap(ours, theirs, confidence=0.99, n_bootstrap=2000, seed=0)
    assert wider.low < p.low and wider.high > p.high


def test_paired_bootstrap_of_identical_models_is_exactly_zero():
    same = np.array([True, False] * 50)
    p = paired_bootstrap(same, same, confidence=0.9, n_bootstrap=500, seed=3)
    assert (p.diff, p.low, p.high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("confidence", "correct", "expected"),
    [
        ([0.9] * 10, [True] * 10, 0.1),  # under-confident by 0.1
        ([0.9] * 10, [True] * 9 + [False], 0.0),  # perfectly calibrated
        ([0.6] * 4 + [0.95] * 4, [True] * 4 + [False] * 4, (0.4 * 4 + 0.95 * 4) / 8),
        ([], [], float("nan")),
    ],
)
def test_expected_calibration_error(confidence, correct, expected):
    got = expected_calibration_error(np.array(confidence), np.array(correct), bins=10)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected)


# --- overall ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("eval_set", "frame", "status"),
    [
        # the recent set: a material, significant drop fails
        ("human_holdout", SAME, PASS),
        ("human_holdout", paired(both=30, champion_only=10), FAIL),  # -0.25
        ("human_holdout", paired(both=60, challenger_only=4, champion_only=6), PASS),  # noise
        ("human_holdout", paired(both=20, challenger_only=9), NO_EVIDENCE),  # 29 < 30 rows
        # the fixed set: only a material, significant regression fails
        ("holdout", paired(both=540, champion_only=30, neither=30), FAIL),  # -0.05, CI < 0
        ("holdout", paired(both=580, champion_only=12, neither=8), PASS),  # -0.02 < tol
        # -0.05 on 40 rows is within noise (the interval includes 0): not a regression
        ("holdout", paired(both=30, challenger_only=2, champion_only=4, neither=4), PASS),
    ],
)
def test_overall_check(eval_set, frame, status):
    check = overall_check(eval_set, frame, POLICY)
    assert check.status == status
    assert check.name == f"overall[{eval_set}]"
    if status != NO_EVIDENCE:
        diff = check.figures["diff"]
        assert check.figures["ci_low"] <= diff <= check.figures["ci_high"]
        assert f"difference {diff:+.4f}" in check.reason


def test_with_a_burden_of_proof_the_challenger_must_show_non_inferiority():
    prove = GatePolicy(prove_on=("human_holdout",))
    noisy = paired(both=60, challenger_only=4, champion_only=6)  # -0.03 on 70 rows
    sure = cat(*[paired(both=60, challenger_only=5, champion_only=5)] * 10)  # 0 on 700

    check = overall_check("human_holdout", noisy, prove)
    assert check.status == FAIL and "lower bound < -tolerance 0.0300" in check.reason
    assert overall_check("human_holdout", sure, prove).status == PASS
    assert overall_check("human_holdout", noisy, POLICY).status == PASS  # the default


def test_a_raw_loss_that_a_bigger_sample_proves_is_rejected_and_a_small_one_is_not():
    # the same -0.05 point estimate, judged by its interval rather than its value
    small = paired(both=30, challenger_only=2, champion_only=4, neither=4)
    large = cat(*[small] * 20)
    assert overall_check("holdout", small, POLICY).status == PASS
    assert overall_check("holdout", large, POLICY).status == FAIL


# --- slices ----------------------------------------------------------------------------
def test_a_class_the_challenger_lost_fails_its_recall_slice():
    frame = cat(paired(both=200, label="a"), paired(champion_only=40, label="c"))
    checks = {c.name: c for c in slice_checks("holdout", frame, POLICY, segments=())}
    assert checks["slice[holdout:class=a]"].status == PASS
    lost = checks["slice[holdout:class=c]"]
    assert lost.status == FAIL
    assert lost.figures["challenger"] == 0.0 and lost.figures["champion"] == 1.0
    assert "recall 0.0000 vs champion 1.0000 on 40 rows" in lost.reason


def test_small_slices_are_skipped_not_guessed():
    frame = cat(paired(both=200, label="a"), paired(champion_only=10, label="c"))
    checks = {c.name: c for c in slice_checks("holdout", frame, POLICY, segments=())}
    assert checks["slice[holdout:class=c]"].status == NO_EVIDENCE
    assert "not enough evidence (10 rows, need 30)" in checks["slice[holdout:class=c]"].reason


@pytest.mark.parametrize(
    ("eval_set", "status"),
    # -0.08 on a segment: beyond the recent set's 0.05, within the fixed set's 0.10
    [("human_holdout", FAIL), ("holdout", PASS)],
)
def test_segment_slices_use_the_sets_tolerance(eval_set, status):
    frame = cat(
        paired(both=300, channel="web"),
        paired(both=230, champion_only=20, channel="app"),
        paired(neither=0, channel="store"),
    )
    checks = {c.name: c for c in slice_checks(eval_set, frame, POLICY, segments=("channel",))}
    assert checks[f"slice[{eval_set}:channel=app]"].status == status
    assert checks[f"slice[{eval_set}:channel=web]"].status == PASS
    assert f"slice[{eval_set}:channel=store]" not in checks  # no rows: no slice


@pytest.mark.parametrize(("correct", "status"), [(False, FAIL), (True, PASS)])
def test_many_slices_do_not_manufacture_a_regression(correct, status):
    # -0.07 on one of 11 slices: "significant" at 90% when looked at alone, not once the
    # interval is widened for the 11 looks
    healthy = [paired(both=90, neither=10, channel=f"c{i}") for i in range(9)]
    frame = cat(
        *healthy, paired(both=80, challenger_only=1, champion_only=8, neither=11, channel="app")
    )
    policy = GatePolicy(correct_for_slices=correct)
    checks = {c.name: c for c in slice_checks("human_holdout", frame, policy, ("channel",))}
    app = checks["slice[human_holdout:channel=app]"]
    assert app.figures["diff"] == pytest.approx(-0.07)
    assert app.status == status
    level = 1 - 0.10 / 11 if correct else 0.90  # 9 + app channels + class a: 11 looks
    assert f"({level:.1%} CI" in app.reason


# --- edge cases --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "status", "reason_part"),
    [
        (None, PASS, "no edge-case set yet"),
        (paired().iloc[0:0], PASS, "no edge-case set yet"),
        (paired(both=5), NO_EVIDENCE, "not enough evidence (5 edge cases < 10)"),
        (paired(both=14, neither=6), PASS, "passes 0.7000 of 20"),  # >= the 0.6 rate
        (paired(both=10, champion_only=6, neither=4), FAIL, "below the rate 0.6000"),
        (paired(both=10, challenger_only=2, neither=8), PASS, "champion 0.5000"),  # >= champion
    ],
)
def test_edge_case_check(frame, status, reason_part):
    check = edge_case_check(frame, POLICY)
    assert check.status == status
    assert reason_part in check.reason


# --- calibration -------------------------------------------------------------------------
def _overconfident(n: int, champion_confidence: float) -> pd.DataFrame:
    frame = paired(both=int(n * 0.7), neither=n - int(n * 0.7), confidence=0.99)
    return frame.assign(**{CHAMPION_CONF: champion_confidence})


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (_overconfident(200, champion_confidence=0.7), FAIL),  # ECE 0.29 > 0.10
        (_overconfident(200, champion_confidence=0.99), PASS),  # no worse than the champion
        (paired(both=140, neither=60, confidence=0.7), PASS),  # calibrated
        (_overconfident(50, champion_confidence=0.7), NO_EVIDENCE),  # 50 < 100 rows
    ],
)
def test_calibration_check(frame, status):
    check = calibration_check("holdout", frame, POLICY)
    assert check.status == status
    if status != NO_EVIDENCE:
        assert check.figures["challenger"] == pytest.approx(
            expected_calibration_error(
                frame[CHALLENGER_CONF].to_numpy(),
                (frame[CHALLENGER_PRED] == frame[LABEL]).to_numpy(),
            )
        )


# --- the decision ----------------------------------------------------------------------
def test_first_model_is_promoted_without_comparison():
    first = paired(both=50).drop(columns=[CHAMPION_PRED, CHAMPION_CONF])
    decision = decide(evidence={"holdout": first, "human_holdout": first}, policy=POLICY)
    assert decision.promote is True
    assert decision.reasons[0].startswith("no champion yet")
    assert decision.challenger_metrics["holdout.accuracy"] == 1.0
    assert decision.checks == ()


def test_equal_models_with_enough_evidence_are_promoted():
    decision = decide(evidence={"holdout": SAME, "human_holdout": SAME}, policy=POLICY)
    assert decision.promote is True, decision.reasons
    assert failed_checks(decision) == []
    assert decision.evaluated_rows == 2 * len(SAME)
    assert decision.reasons[-1].startswith(f"{len(decision.checks)} of {len(decision.checks)}")
    assert {c.name for c in decision.checks} >= {
        "overall[human_holdout]",
        "overall[holdout]",
        "edge_cases",
        "calibration[holdout]",
    }


def test_too_few_recent_rows_keep_the_champion():
    decision = decide(evidence={"holdout": SAME, "human_holdout": paired(both=29)}, policy=POLICY)
    assert decision.promote is False
    assert failed_checks(decision) == ["overall[human_holdout]"]
    assert any("not enough evidence: 29 rows" in r for r in decision.reasons)


def test_a_missing_human_holdout_is_no_evidence_not_a_pass():
    decision = decide(evidence={"holdout": SAME}, policy=POLICY)
    assert decision.promote is False
    assert "overall[human_holdout]" in failed_checks(decision)


def test_reasons_name_every_failing_check_with_figures_and_skips_are_listed():
    # -30/1030 overall: within the fixed set's tolerance, but class c is lost entirely
    holdout = cat(paired(both=1000, label="a"), paired(champion_only=30, label="c"))
    recent = cat(paired(both=100, label="a"), paired(both=5, label="c"))
    edge = paired(both=5, champion_only=10, neither=5)
    decision = decide(
        evidence={"holdout": holdout, "human_holdout": recent, "edge_cases": edge},
        policy=POLICY,
    )
    assert decision.promote is False
    assert set(failed_checks(decision)) == {"slice[holdout:class=c]", "edge_cases"}
    failed = [r for r in decision.reasons if r.startswith("FAILED")]
    assert len(failed) == 2
    lost = "slice[holdout:class=c]: recall 0.0000 vs champion 1.0000 on 30 rows"
    assert any(lost in r for r in failed)
    assert any("edge_cases: challenger passes 0.2500 of 20" in r for r in failed)
    assert "skipped: slice[human_holdout:class=c]" in decision.reasons[-1]
    assert decision.champion_metrics["holdout.recall__c"] == 1.0
    assert decision.challenger_metrics["holdout.recall__c"] == 0.0


def test_decision_is_deterministic_for_a_seed():
    frames = {
        "holdout": paired(both=500, challenger_only=20, champion_only=35, neither=45),
        "human_holdout": paired(both=80, challenger_only=8, champion_only=6, neither=6),
    }
    first = decide(evidence=frames, policy=POLICY)
    assert decide(evidence=frames, policy=POLICY) == first


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tolerance": -0.1},
        {"min_eval_rows": 0},
        {"confidence": 1.0},
        {"edge_case_pass_rate": 1.5},
        {"n_bootstrap": 10},
        {"fixed_slice_tolerance": -1},
    ],
)
def test_invalid_policy(kwargs):
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)


# --- inputs of the decision --------------------------------------------------------------
def test_most_recent_keeps_the_latest_labels():
    times = pd.to_datetime(["2026-01-03", None, "2026-01-01", "2026-01-02", "2026-01-03"], utc=True)
    frame = pd.DataFrame({"item_id": ["e", "n", "a", "b", "d"], LABELLED_AT: times})
    assert list(most_recent(frame, 3)["item_id"]) == ["b", "d", "e"]
    assert len(most_recent(frame, 10)) == 5


class _Constant:
    """A stand-in classifier that always predicts ``label`` with probability ``p``."""

    classes_ = np.array(["a", "b"])

    def __init__(self, label: str, p: float) -> None:
        self.label, self.p = label, p

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        row = [self.p, 1 - self.p] if self.label == "a" else [1 - self.p, self.p]
        return np.tile(row, (len(x), 1))


def test_paired_predictions_aligns_both_models_on_labelled_rows():
    schema = BatchSchema(
        features=(FeatureSpec("x", "numeric"), FeatureSpec("seg", "categorical")),
        classes=("a", "b"),
    )
    frame = pd.DataFrame(
        {"item_id": ["1", "2", "3"], "x": [0.0, 1.0, 2.0], "seg": ["u", "v", "u"]}
    ).assign(label=["a", None, "b"])
    out = paired_predictions(
        frame,
        schema,
        challenger=_Constant("a", 0.9),
        champion=_Constant("b", 0.6),
        segments=("seg", "absent"),
    )
    assert list(out.columns) == [
        LABEL,
        "seg",
        CHALLENGER_PRED,
        CHALLENGER_CONF,
        CHAMPION_PRED,
        CHAMPION_CONF,
    ]
    assert list(out[LABEL]) == ["a", "b"] and list(out["seg"]) == ["u", "u"]
    assert list(out[CHALLENGER_PRED]) == ["a", "a"]
    assert list(out[CHAMPION_PRED]) == ["b", "b"]
    assert out[CHAMPION_CONF].tolist() == pytest.approx([0.6, 0.6])


# --- adapting to drift: the time window, the point rule, recent over fixed ---------------
def test_most_recent_keeps_only_the_time_window_but_never_fewer_than_the_minimum():
    days = pd.to_datetime(["2026-01-01"] * 5 + ["2026-01-20"] * 3, utc=True)
    frame = pd.DataFrame({"item_id": [f"i{k}" for k in range(8)], LABELLED_AT: days})

    assert list(most_recent(frame, 100, days=7)["item_id"]) == ["i5", "i6", "i7"]
    assert len(most_recent(frame, 100, days=7, min_rows=4)) == 4  # extended back
    assert len(most_recent(frame, 100, days=30)) == 8
    assert len(most_recent(frame, 2, days=30)) == 2  # the row cap still holds
    assert len(most_recent(frame, 100, days=None)) == 8


def test_a_recent_point_drop_fails_only_with_the_point_rule():
    # -0.05 on 60 rows: too noisy to be a significant regression
    frame = paired(both=50, challenger_only=1, champion_only=4, neither=5)
    lenient = GatePolicy(prove_on=())
    strict = GatePolicy(prove_on=(), max_recent_drop=0.0)

    assert overall_check("human_holdout", frame, lenient).status == PASS
    check = overall_check("human_holdout", frame, strict)
    assert check.status == FAIL
    assert "trails the champion by more than 0.0000" in check.reason
    ahead = paired(both=50, challenger_only=3, champion_only=2, neither=5)
    assert overall_check("human_holdout", ahead, strict).status == PASS
    # the rule is for the recent rows only: the fixed set keeps the regression rule
    assert overall_check("holdout", frame, strict).status == PASS


def test_a_fixed_point_drop_fails_with_its_rule_and_is_outweighed_by_a_recent_lead():
    # -0.02 on 400 rows of the fixed set: not a significant regression
    fixed = paired(both=360, challenger_only=6, champion_only=14, neither=20)
    ahead = paired(both=80, challenger_only=12, champion_only=3, neither=5)
    level = paired(both=80, challenger_only=4, champion_only=4, neither=12)
    lenient = GatePolicy(max_ece=1.0)
    strict = GatePolicy(max_ece=1.0, max_fixed_drop=0.01)

    assert overall_check("holdout", fixed, lenient).status == PASS
    check = overall_check("holdout", fixed, strict)
    assert check.status == FAIL and check.figures["regressed"] == 0
    assert "trails the champion by more than 0.0100 on the fixed held-out set" in check.reason
    # the rule is for the fixed set only: the recent rows keep the regression rule
    assert overall_check("human_holdout", fixed, strict).status == PASS

    kept = decide(evidence={"holdout": fixed, "human_holdout": level}, policy=strict)
    assert kept.promote is False and failed_checks(kept) == ["overall[holdout]"]
    assert decide(evidence={"holdout": fixed, "human_holdout": level}, policy=lenient).promote
    moved = decide(evidence={"holdout": fixed, "human_holdout": ahead}, policy=strict)
    assert moved.promote is True, moved.reasons


def test_trailing_on_the_fixed_set_is_not_the_regression_that_keeps_calibration_standing():
    fixed = paired(both=360, challenger_only=6, champion_only=14, neither=20)
    ahead = paired(both=80, challenger_only=12, champion_only=3, neither=5)
    # a miscalibrated challenger on the fixed set: confident on every row
    fixed = fixed.assign(challenger_confidence=0.999, champion_confidence=0.9)
    policy = GatePolicy(max_ece=0.05, ece_tolerance=0.0, max_fixed_drop=0.01)

    moved = decide(evidence={"holdout": fixed, "human_holdout": ahead}, policy=policy)
    calibration = next(c for c in moved.checks if c.name == "calibration[holdout]")
    assert "outweighed by recent evidence" in calibration.reason
    assert moved.promote is True, moved.reasons


def test_recent_gains_outweigh_a_fixed_holdout_regression_only_when_asked_and_ahead():
    fixed = paired(both=540, champion_only=30, neither=30)  # -0.05, CI < 0: a regression
    ahead = paired(both=80, challenger_only=12, champion_only=3, neither=5)
    behind = paired(both=80, challenger_only=3, champion_only=5, neither=12)
    # calibration is not the subject here: a loose bound keeps it out of the way
    plain = GatePolicy(max_ece=1.0, recent_outweighs_fixed=False)
    outweigh = GatePolicy(max_ece=1.0)  # the default: recent_outweighs_fixed

    kept = decide(evidence={"holdout": fixed, "human_holdout": ahead}, policy=plain)
    assert kept.promote is False and failed_checks(kept) == ["overall[holdout]"]

    moved = decide(evidence={"holdout": fixed, "human_holdout": ahead}, policy=outweigh)
    assert moved.promote is True, moved.reasons
    check = next(c for c in moved.checks if c.name == "overall[holdout]")
    assert "outweighed by recent evidence" in check.reason and check.figures["outweighed"] == 1

    stale = decide(evidence={"holdout": fixed, "human_holdout": behind}, policy=outweigh)
    assert stale.promote is False and "overall[holdout]" in failed_checks(stale)


def test_with_significance_asked_only_a_recent_gain_beyond_noise_outweighs():
    # employment-ma, 10% labels: a challenger 9 points worse on the fixed set (interval
    # below zero) was let through for +0.03 on 122 recent rows (interval -0.07 to +0.13)
    fixed = paired(both=540, champion_only=30, neither=30)  # -0.05, CI < 0: a regression
    clear = paired(both=80, challenger_only=12, champion_only=3, neither=5)  # +0.09
    slight = paired(both=80, challenger_only=6, champion_only=4, neither=10)  # +0.02
    proven = GatePolicy(max_ece=1.0, outweigh_needs_significance=True)

    recent = overall_check("human_holdout", slight, proven)
    assert recent.status == PASS and recent.figures["diff"] > 0 > recent.figures["ci_low"]
    noise = decide(evidence={"holdout": fixed, "human_holdout": slight}, policy=proven)
    assert noise.promote is False and failed_checks(noise) == ["overall[holdout]"]
    # without the setting the point estimate alone outweighs
    loose = decide(
        evidence={"holdout": fixed, "human_holdout": slight}, policy=GatePolicy(max_ece=1.0)
    )
    assert loose.promote is True

    assert overall_check("human_holdout", clear, proven).figures["ci_low"] > 0
    moved = decide(evidence={"holdout": fixed, "human_holdout": clear}, policy=proven)
    assert moved.promote is True, moved.reasons


def test_recent_gains_outweigh_an_old_regime_calibration_failure_only_when_ahead():
    # on the old regime's rows the challenger (new concept) is confidently wrong on a
    # third: ECE 0.29 against the champion's 0.0; its accuracy there is no regression
    fixed = _overconfident(300, champion_confidence=0.7)
    ahead = paired(both=80, challenger_only=12, champion_only=3, neither=5)
    behind = paired(both=80, challenger_only=3, champion_only=5, neither=12)

    kept = decide(
        evidence={"holdout": fixed, "human_holdout": ahead},
        policy=GatePolicy(recent_outweighs_fixed=False),
    )
    assert kept.promote is False and failed_checks(kept) == ["calibration[holdout]"]

    moved = decide(evidence={"holdout": fixed, "human_holdout": ahead}, policy=POLICY)
    assert moved.promote is True, moved.reasons
    check = next(c for c in moved.checks if c.name == "calibration[holdout]")
    assert "outweighed by recent evidence" in check.reason and check.figures["outweighed"] == 1

    stale = decide(evidence={"holdout": fixed, "human_holdout": behind}, policy=POLICY)
    assert "calibration[holdout]" in failed_checks(stale)

    # lost accuracy and calibration on the random sample: one guard stands
    broken = _overconfident(300, champion_confidence=0.7).assign(
        **{CHALLENGER_PRED: ["zz"] * 150 + ["a"] * 150}
    )
    lost = decide(evidence={"holdout": broken, "human_holdout": ahead}, policy=POLICY)
    assert lost.promote is False and failed_checks(lost) == ["calibration[holdout]"]
    check = next(c for c in lost.checks if c.name == "overall[holdout]")
    assert check.figures["outweighed"] == 1.0


def test_a_class_recall_trade_on_the_uncertain_human_rows_is_judged_on_the_fixed_set():
    # on the routed (borderline) rows the challenger gives up recall of "a" for more of
    # "b", and is ahead overall there: +10 of 160 rows
    human = cat(
        paired(both=40, champion_only=20, label="a"),
        paired(both=70, challenger_only=30, label="b"),
    )
    fixed_holds = cat(paired(both=150, neither=20, label="a"), paired(both=150, label="b"))
    fixed_lost = cat(
        paired(both=90, champion_only=60, neither=20, label="a"), paired(both=150, label="b")
    )
    plain = GatePolicy(max_ece=1.0)
    representative = GatePolicy(max_ece=1.0, representative_class_check=True)

    kept = decide(evidence={"holdout": fixed_holds, "human_holdout": human}, policy=plain)
    assert kept.promote is False
    assert failed_checks(kept) == ["slice[human_holdout:class=a]"]

    moved = decide(evidence={"holdout": fixed_holds, "human_holdout": human}, policy=representative)
    assert moved.promote is True, moved.reasons
    check = next(c for c in moved.checks if c.name == "slice[human_holdout:class=a]")
    assert "judged on the representative fixed held-out set instead" in check.reason
    assert check.figures["outweighed"] == 1.0

    # the class's recall fell on the random sample too: the human rows' verdict stands
    lost = decide(evidence={"holdout": fixed_lost, "human_holdout": human}, policy=representative)
    assert lost.promote is False
    assert "slice[human_holdout:class=a]" in failed_checks(lost)

    # behind overall on the human rows: no trade is accepted
    behind = cat(human, paired(champion_only=25, label="b"))
    evidence = {"holdout": fixed_holds, "human_holdout": behind}
    stale = decide(evidence=evidence, policy=representative)
    assert stale.promote is False
    assert "slice[human_holdout:class=a]" in failed_checks(stale)


# --- a class added mid-stream ----------------------------------------------------------
def _new_class_rows(n: int) -> pd.DataFrame:
    """Rows of the new class "scam": the challenger learnt it, the champion never says it."""
    return paired(challenger_only=n, label="scam")


@pytest.mark.parametrize(
    ("new_rows", "status", "reason_part"),
    [
        # not in the evidence at all: still reported, never silently left out
        (0, NO_EVIDENCE, "not enough evidence (0 rows, need 30); the champion never predicted"),
        (12, NO_EVIDENCE, "not enough evidence (12 rows, need 30); the champion never predicted"),
        # once it has rows it is judged: the champion's recall there is 0
        (40, PASS, "recall 1.0000 vs champion 0.0000 on 40 rows"),
    ],
)
def test_a_new_class_is_not_enough_evidence_until_it_has_rows_then_judged(
    new_rows, status, reason_part
):
    recent = cat(paired(both=200, label="a"), _new_class_rows(new_rows))
    decision = decide(
        evidence={"holdout": SAME, "human_holdout": recent},
        # the stand-in confidences are constant: calibration is not what is tested here
        policy=GatePolicy(min_calibration_rows=10_000),
        classes=("a", "scam"),
    )
    checks = {c.name: c for c in decision.checks}
    scam = checks["slice[human_holdout:class=scam]"]
    assert (scam.status, scam.figures["n"]) == (status, new_rows)
    assert reason_part in scam.reason
    # the fixed held-out set predates the class: no evidence there, and it never blocks
    assert checks["slice[holdout:class=scam]"].status == NO_EVIDENCE
    assert decision.promote is True, decision.reasons
    if status == NO_EVIDENCE:
        assert "slice[human_holdout:class=scam]" in decision.reasons[-1]


def test_without_the_schemas_classes_an_absent_class_has_no_slice():
    checks = slice_checks("holdout", SAME, POLICY, segments=())
    assert [c.name for c in checks] == ["slice[holdout:class=a]"]
