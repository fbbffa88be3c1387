"""Whether a challenger model may replace the champion.

The decision is a function of metrics only (computed elsewhere on the same held-out
rows for both models), built from a list of checks; per-slice, edge-case and
calibration checks are further entries in ``checks`` without changing the callers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hitl_pipeline.core.types import GateDecision

NO_CHAMPION = "no champion yet"
NOT_ENOUGH_EVIDENCE = "not enough evidence"


@dataclass(frozen=True)
class GatePolicy:
    """Tunables of the promotion gate.

    Attributes:
        tolerance: How much lower the challenger's accuracy may be than the champion's
            and still be promoted (0: it must be at least as good).
        min_eval_rows: Fewer held-out rows than this is no basis for a decision.
    """

    tolerance: float = 0.0
    min_eval_rows: int = 30
    # On the fixed held-out set of the original regime a small loss is accepted: after a
    # drift the recent human-labelled rows are the better judge, but a challenger must
    # not forget the old regime wholesale.
    fixed_holdout_tolerance: float = 0.03

    def __post_init__(self) -> None:
        if self.tolerance < 0 or self.fixed_holdout_tolerance < 0:
            raise ValueError("tolerances must be >= 0")
        if self.min_eval_rows < 1:
            raise ValueError("min_eval_rows must be >= 1")


# A check returns (passed, reason); every reason is kept, passed or not.
GateCheck = Callable[[Mapping[str, float], Mapping[str, float], GatePolicy], tuple[bool, str]]


def accuracy_check(
    challenger: Mapping[str, float], champion: Mapping[str, float], policy: GatePolicy
) -> tuple[bool, str]:
    """Challenger accuracy must reach champion accuracy minus the tolerance.

    Args:
        challenger: The challenger's metrics (needs ``accuracy``).
        champion: The champion's metrics on the same rows (needs ``accuracy``).
        policy: Supplies the tolerance.

    Returns:
        ``(passed, reason)`` with the figures in the reason.
    """
    ours, theirs = float(challenger["accuracy"]), float(champion["accuracy"])
    floor = theirs - policy.tolerance
    passed = not math.isnan(ours) and ours >= floor
    relation = ">=" if passed else "<"
    return passed, (
        f"challenger accuracy {ours:.4f} {relation} champion accuracy {theirs:.4f} "
        f"- tolerance {policy.tolerance:.4f}"
    )


FIXED_PREFIX = "fixed_"  # metrics on the fixed held-out set carry this prefix


def fixed_holdout_check(
    challenger: Mapping[str, float], champion: Mapping[str, float], policy: GatePolicy
) -> tuple[bool, str]:
    """On the fixed held-out set, the challenger may lose at most the fixed tolerance.

    Passes (saying so) when the metrics carry no fixed-holdout figures.
    """
    key = f"{FIXED_PREFIX}accuracy"
    if key not in challenger or key not in champion:
        return True, "no fixed held-out set evaluated"
    ours, theirs = float(challenger[key]), float(champion[key])
    floor = theirs - policy.fixed_holdout_tolerance
    passed = not math.isnan(ours) and ours >= floor
    relation = ">=" if passed else "<"
    return passed, (
        f"fixed holdout: challenger accuracy {ours:.4f} {relation} champion accuracy "
        f"{theirs:.4f} - tolerance {policy.fixed_holdout_tolerance:.4f}"
    )


DEFAULT_CHECKS: tuple[GateCheck, ...] = (accuracy_check, fixed_holdout_check)


def decide(
    *,
    challenger_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    policy: GatePolicy,
    checks: Sequence[GateCheck] = DEFAULT_CHECKS,
) -> GateDecision:
    """Promote or keep the champion, with the reasons.

    Args:
        challenger_metrics: ``core.training.evaluate_model`` output for the challenger
            (needs ``n_rows``; ``accuracy`` unless it is the first model or there are
            too few rows).
        champion_metrics: The champion's metrics on the same rows; None when there is
            no champion yet.
        policy: The gate's tunables.
        checks: Conditions the challenger must all pass against the champion.

    Returns:
        The decision. Without a champion the challenger is promoted ("no champion
        yet"); with fewer than ``min_eval_rows`` evaluated rows it is rejected ("not
        enough evidence"); otherwise it is promoted iff every check passes.
    """
    rows = int(challenger_metrics.get("n_rows", 0))
    challenger = dict(challenger_metrics)
    champion = dict(champion_metrics or {})
    if champion_metrics is None:
        reason = f"{NO_CHAMPION}: promoting the first model (evaluated on {rows} rows)"
        return GateDecision(True, (reason,), challenger, champion, rows)
    if rows < policy.min_eval_rows:
        reason = (
            f"{NOT_ENOUGH_EVIDENCE}: {rows} held-out rows, fewer than the "
            f"{policy.min_eval_rows} required"
        )
        return GateDecision(False, (reason,), challenger, champion, rows)
    results = [check(challenger, champion, policy) for check in checks]
    promote = all(passed for passed, _ in results)
    return GateDecision(promote, tuple(reason for _, reason in results), challenger, champion, rows)
