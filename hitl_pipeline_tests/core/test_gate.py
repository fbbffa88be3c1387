"""The promotion gate: one row per situation, with the figures in the reasons."""

import pytest

from hitl_pipeline.core.gate import GatePolicy, decide


@pytest.mark.parametrize(
    ("challenger", "champion", "policy", "promote", "reason_start"),
    [
        ({"accuracy": 0.5, "n_rows": 10}, None, GatePolicy(), True, "no champion yet"),
        (
            {"accuracy": 0.9, "n_rows": 29},
            {"accuracy": 0.5},
            GatePolicy(),
            False,
            "not enough evidence",
        ),
        (
            {"accuracy": 0.80, "n_rows": 30},
            {"accuracy": 0.80},
            GatePolicy(),
            True,
            "challenger accuracy 0.8000 >=",
        ),
        (
            {"accuracy": 0.79, "n_rows": 100},
            {"accuracy": 0.80},
            GatePolicy(),
            False,
            "challenger accuracy 0.7900 <",
        ),
        (
            {"accuracy": 0.79, "n_rows": 100},
            {"accuracy": 0.80},
            GatePolicy(tolerance=0.02),
            True,
            "challenger accuracy 0.7900 >= champion accuracy 0.8000 - tolerance 0.0200",
        ),
        (
            {"accuracy": 0.77, "n_rows": 100},
            {"accuracy": 0.80},
            GatePolicy(tolerance=0.02),
            False,
            "challenger accuracy 0.7700 < champion accuracy 0.8000 - tolerance 0.0200",
        ),
        (
            {"accuracy": float("nan"), "n_rows": 100},
            {"accuracy": 0.8},
            GatePolicy(),
            False,
            "challenger accuracy nan",
        ),
        (
            {"accuracy": 0.9, "n_rows": 5},
            {"accuracy": 0.5},
            GatePolicy(min_eval_rows=5),
            True,
            "challenger",
        ),
    ],
)
def test_decision(challenger, champion, policy, promote, reason_start):
    decision = decide(challenger_metrics=challenger, champion_metrics=champion, policy=policy)

    assert decision.promote is promote
    assert decision.reasons[0].startswith(reason_start)
    assert decision.evaluated_rows == challenger["n_rows"]
    assert decision.challenger_metrics == challenger


def test_extra_checks_must_all_pass():
    def calibration(challenger, champion, policy):
        return challenger["ece"] <= 0.1, f"calibration error {challenger['ece']:.2f}"

    decision = decide(
        challenger_metrics={"accuracy": 0.9, "n_rows": 100, "ece": 0.3},
        champion_metrics={"accuracy": 0.8},
        policy=GatePolicy(),
        checks=(lambda a, b, p: (True, "accuracy ok"), calibration),
    )

    assert decision.promote is False
    assert decision.reasons == ("accuracy ok", "calibration error 0.30")


@pytest.mark.parametrize("kwargs", [{"tolerance": -0.1}, {"min_eval_rows": 0}])
def test_invalid_policy(kwargs):
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)


@pytest.mark.parametrize(
    ("challenger_fixed", "champion_fixed", "promote"),
    [
        (0.85, 0.86, True),  # within the fixed-holdout tolerance (0.03)
        (0.80, 0.86, False),  # forgot the old regime
        (None, None, True),  # no fixed holdout evaluated: the recent rows decide alone
    ],
)
def test_fixed_holdout_check(challenger_fixed, champion_fixed, promote):
    challenger = {"accuracy": 0.80, "n_rows": 100}
    champion = {"accuracy": 0.70, "n_rows": 100}
    if challenger_fixed is not None:
        challenger["fixed_accuracy"] = challenger_fixed
        champion["fixed_accuracy"] = champion_fixed
    decision = decide(challenger_metrics=challenger, champion_metrics=champion, policy=GatePolicy())
    assert decision.promote is promote
    assert len(decision.reasons) == 2
