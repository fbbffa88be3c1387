"""Whether a challenger model may replace the champion.

The decision is a pure function of per-row predictions of both models on the same
labelled rows (``paired_predictions`` builds them), one frame per evaluation set:

- ``holdout``: the fixed held-out set of the original regime;
- ``human_holdout``: the most recent human labels kept out of training;
- ``edge_cases``: items reviewers flagged as edge cases (may be absent).

Checks, each with its own minimum sample size below which it reports
``not enough evidence`` instead of guessing:

1. ``overall``: accuracy on each of the two held-out sets, judged by a seeded paired
   bootstrap interval of the accuracy difference on the same rows, never by the raw
   difference. Each fails on a *regression*: a drop that is material (point estimate
   below ``-tolerance``) and not noise (the interval's upper bound below zero). The recent
   human rows are those of the last ``recent_days`` (at least ``min_eval_rows``, at most
   ``recent_rows``): after a concept drift older labels are partly wrong. On the fixed
   held-out set of the old regime, which a concept drift partly makes obsolete, a
   regression is outweighed when the challenger is ahead on the recent rows
   (``recent_outweighs_fixed``). A stricter burden of proof is available: with a set in
   ``prove_on`` the challenger must *show* non-inferiority there (the interval's lower
   bound must clear ``-tolerance``). It is not the default because with the few labels a
   loop gets it almost never can: replayed on drifting streams with 2-10% of labels it
   let 2 of 18 retrained models through and the loop kept a stale model for the rest.
   Missing evidence for these two checks blocks a promotion; for the rest it does not.
2. ``slice``: per true class (recall) and per value of each segment column (accuracy),
   on each held-out set. Slices are many and small, so they too fail only on a
   regression (material and not noise), with ``slice_tolerance`` (wider on the fixed
   set); a burden of proof there would let sampling noise block nearly every
   promotion. Their intervals are Bonferroni-widened for the number of slices judged,
   so that many looks do not manufacture a regression. Too-small slices are skipped as
   "not enough evidence".
3. ``edge_cases``: the challenger's accuracy on the edge-case set reaches the configured
   rate, or at least the champion's own (a bar the serving model does not clear itself
   must not freeze the loop). Absent or too small: reported, and passed.
4. ``calibration``: the expected calibration error (ECE) of the challenger stays within
   ``max_ece``, or within ``ece_tolerance`` of the champion's; routing trusts confidence.
   On the fixed held-out set it is outweighed like a regression there (a model of the
   new concept is confidently wrong on the old labels it changed), unless the accuracy
   there regressed too.

Why a paired bootstrap rather than McNemar's test: the gate needs an *interval in
accuracy points* to compare with a tolerance (McNemar only tests "no difference", not
"no worse than a margin"), and the same code then serves every slice metric (recall is
accuracy on a class's rows). For a mean of per-row differences in {-1, 0, 1},
resampling rows is exactly a multinomial draw of the three counts, so the bootstrap is
exact, fast and deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.types import (
    ITEM_ID,
    LABEL,
    LABELLED_AT,
    BatchSchema,
    GateCheckResult,
    GateDecision,
)

NO_CHAMPION = "no champion yet"
NOT_ENOUGH_EVIDENCE = "not enough evidence"

PASS = "pass"
FAIL = "fail"
NO_EVIDENCE = "not enough evidence"

# evaluation sets (DVC frame names)
HOLDOUT = "holdout"
HUMAN_HOLDOUT = "human_holdout"
EDGE_CASES = "edge_cases"

# columns of a paired-predictions frame
CHALLENGER_PRED = "challenger_pred"
CHAMPION_PRED = "champion_pred"
CHALLENGER_CONF = "challenger_confidence"
CHAMPION_CONF = "champion_confidence"


@dataclass(frozen=True)
class GatePolicy:
    """Tunables of the promotion gate.

    Attributes:
        tolerance: Largest accepted accuracy drop on the recent human held-out rows (a
            larger drop fails when its interval excludes zero); with the set in
            ``prove_on``, the non-inferiority margin instead (the lower bound of the
            paired interval must be >= -tolerance: with about 8% of rows on which two
            retrained models disagree, an equally good challenger proves 0.03 from about
            250 rows on).
        fixed_holdout_tolerance: Largest accepted accuracy drop on the fixed held-out set
            (a larger drop fails when its interval excludes zero).
        min_eval_rows: Fewer rows than this in a held-out set: no overall judgement
            there ("not enough evidence"), and no promotion.
        recent_rows: At most this many of the most recent rows of the human held-out
            set (by ``labelled_at``) judge the challenger: the data it is going to serve.
        recent_days: ...and only those labelled within this many days of the newest
            label (extended back to the ``min_eval_rows`` most recent rows when the
            window holds fewer); None for no time window. After a concept drift the
            older labels are partly wrong: a 300-row window at a few labels a day spans
            months of them, and on a replayed drifting stream (SEA, 5% labels) stale
            labels alone failed the class slices of every challenger for ten batches.
        prove_on: Sets on which the challenger must prove non-inferiority; on the
            others a material, significant drop fails (see the module docstring for why
            none is the default).
        slice_tolerance: A slice regresses when its metric drops by more than this and
            the interval excludes zero...
        fixed_slice_tolerance: ...or by more than this on the fixed held-out set, whose
            old-regime slices a concept drift legitimately changes.
        min_slice_rows: Slices with fewer rows are skipped ("not enough evidence").
        segment_columns: Columns whose values are slices; None means the schema's
            categorical features.
        edge_case_pass_rate: Accuracy the challenger must reach on the edge-case set
            (unless it at least matches the champion there).
        min_edge_cases: Fewer edge cases than this: the check is skipped.
        max_ece: Bound on the challenger's expected calibration error...
        ece_tolerance: ...unless it is within this of the champion's ECE.
        ece_bins: Equal-width confidence bins of the ECE.
        min_calibration_rows: ECE on fewer rows is mostly binning noise: skipped (with
            10 bins of 10 rows each bin's gap has a standard error near 0.15, far more
            than ``ece_tolerance``).
        confidence: Two-sided level of the bootstrap intervals (0.90: each bound is a
            one-sided 95% bound).
        correct_for_slices: Widen each slice's interval for the number of slices judged
            on the set (Bonferroni): with 15 slices at 90% each, about one decision in
            two would otherwise find a spurious "significant" drop somewhere.
        n_bootstrap: Bootstrap resamples (enough for the tails the correction reaches).
        seed: Seeds every bootstrap, so the same rows give the same decision.
        max_recent_drop: On the recent human rows (unless they are in ``prove_on``),
            the challenger's point estimate may trail the champion's by at most this
            (None: only a significant, material regression fails). A small held-out
            set cannot prove a one-point regression, so without this rule every
            slightly worse challenger passed on a replayed stream; with it one trailing
            on the data it will serve is kept out even when the interval is wide.
        max_fixed_drop: The same on the fixed held-out set: the challenger's point
            estimate there may trail the champion's by at most this (None: only a
            significant, material regression fails). It is the one random sample of the
            data, where the recent human rows are the items routing found borderline for
            the champion, on which a challenger trained next to them is ahead by
            construction. Like every fixed-set failure it is outweighed by a lead on the
            recent rows (``recent_outweighs_fixed``); it does not count as the accuracy
            regression that keeps a fixed-set calibration failure standing.
        recent_outweighs_fixed: When the challenger passes on the recent human rows and
            is ahead there (point estimate above zero), a regression on the fixed
            held-out set of the old regime (overall, a slice or its calibration) does
            not block: a concept drift makes the old labels partly wrong, and the recent
            labels are the data the model will serve. The outweighed checks say so in
            their reasons. A model that has learnt the new concept is confidently wrong
            on old rows whose label it changed, so a calibration failure there is
            outweighed too when its accuracy there held: replayed on the rainfall stream
            (repeat 0), the full-label oracle's challengers of the three batches after
            the stream's change were ahead on the recent human rows by 0.053-0.070 (90%
            intervals above zero) and blocked by ``calibration[holdout]`` alone (ECE
            0.19-0.25 against the old champion's 0.05). When the accuracy fell too, the
            calibration check stands: outweighing both let least-confidence sampling
            (whose human rows are all borderline) promote a model 45 points worse on the
            fixed rows (0.375 against 0.820) for being 23 points ahead on 65 borderline
            rows.
        outweigh_needs_significance: With ``recent_outweighs_fixed``, outweigh only when
            the challenger is ahead on the recent human rows beyond noise (the lower bound
            of its interval there above zero), not merely by its point estimate.
        representative_class_check: A class-recall regression on the recent human rows
            does not block when the challenger passes and is ahead overall on those rows
            and the same class's recall on the fixed held-out set (a random sample, not
            picked by any model) did not regress. Routing sends mostly the items a model
            is unsure of to people, so the human held-out rows are borderline ones, where
            a better model trades some recall of one class for more of another: replayed
            on the rainfall stream (10% labels), most blocked challengers failed
            ``slice[human_holdout:class=0]`` while their accuracy on the same rows was up
            (e.g. +0.044 on 204 rows). A class the challenger lost also fails on the fixed
            held-out set, which this rule requires to hold. Off by default: on that
            replay (10%, repeat 0) it promoted 12 challengers instead of 9 and scored
            0.749 against 0.752, and a gate that promoted every challenger scored 0.749
            with a batch 11 points below never retraining: there the class slices keep
            out worse models more often than they block better ones.
    """

    tolerance: float = 0.03
    fixed_holdout_tolerance: float = 0.03
    min_eval_rows: int = 30
    recent_rows: int = 300
    recent_days: float | None = 7.0
    prove_on: tuple[str, ...] = ()
    slice_tolerance: float = 0.05
    fixed_slice_tolerance: float = 0.10
    min_slice_rows: int = 30
    segment_columns: tuple[str, ...] | None = None
    edge_case_pass_rate: float = 0.6
    min_edge_cases: int = 10
    max_ece: float = 0.10
    ece_tolerance: float = 0.02
    ece_bins: int = 10
    min_calibration_rows: int = 200
    confidence: float = 0.90
    correct_for_slices: bool = True
    n_bootstrap: int = 5000
    seed: int = 0
    max_recent_drop: float | None = None
    max_fixed_drop: float | None = None
    recent_outweighs_fixed: bool = True
    outweigh_needs_significance: bool = False
    representative_class_check: bool = False

    def __post_init__(self) -> None:
        for name in (
            "tolerance",
            "fixed_holdout_tolerance",
            "slice_tolerance",
            "fixed_slice_tolerance",
            "max_ece",
            "ece_tolerance",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in (
            "min_eval_rows",
            "recent_rows",
            "min_slice_rows",
            "min_edge_cases",
            "ece_bins",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.recent_days is not None and self.recent_days <= 0:
            raise ValueError("recent_days must be > 0 (or None)")
        if self.min_calibration_rows < 1 or self.n_bootstrap < 100:
            raise ValueError("min_calibration_rows must be >= 1 and n_bootstrap >= 100")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError("confidence must be in [0.5, 1)")
        if not 0.0 <= self.edge_case_pass_rate <= 1.0:
            raise ValueError("edge_case_pass_rate must be in [0, 1]")

    def segments(self, schema: BatchSchema) -> tuple[str, ...]:
        """The segment columns for ``schema``."""
        if self.segment_columns is None:
            return tuple(schema.categorical_features)
        return tuple(self.segment_columns)

    def overall_tolerance(self, eval_set: str) -> float:
        """The overall accuracy margin on one held-out set."""
        return self.fixed_holdout_tolerance if eval_set == HOLDOUT else self.tolerance

    def slice_tolerance_for(self, eval_set: str) -> float:
        """The slice margin on one held-out set."""
        return self.fixed_slice_tolerance if eval_set == HOLDOUT else self.slice_tolerance


def most_recent(
    frame: pd.DataFrame, n_rows: int, *, days: float | None = None, min_rows: int = 0
) -> pd.DataFrame:
    """The most recently labelled rows (by ``labelled_at``, then item id).

    Args:
        frame: Labelled rows, ideally with ``labelled_at``.
        n_rows: At most this many rows.
        days: Only rows labelled within this many days of the newest label...
        min_rows: ...unless that leaves fewer than this: then the ``min_rows`` most
            recent rows.

    Returns:
        The rows, oldest first. Rows without ``labelled_at`` count as oldest; a frame
        without the column is kept whole (up to ``n_rows`` rows in its own order).
    """
    if LABELLED_AT not in frame:
        return frame.head(n_rows).reset_index(drop=True)
    keys = [LABELLED_AT, *([ITEM_ID] if ITEM_ID in frame else [])]
    ordered = frame.sort_values(keys, na_position="first", kind="mergesort")
    keep = min(n_rows, len(ordered))
    if days is not None and len(ordered):
        stamps = pd.to_datetime(ordered[LABELLED_AT], utc=True)
        within = int((stamps >= stamps.max() - pd.Timedelta(days=days)).sum())
        keep = min(keep, max(within, min_rows))
    return ordered.tail(keep).reset_index(drop=True)


def recent_window(frame: pd.DataFrame, policy: GatePolicy) -> pd.DataFrame:
    """The human held-out rows the gate judges on (``most_recent`` with the policy's window)."""
    return most_recent(
        frame, policy.recent_rows, days=policy.recent_days, min_rows=policy.min_eval_rows
    )


# --- per-row predictions ---------------------------------------------------------------
def paired_predictions(
    frame: pd.DataFrame,
    schema: BatchSchema,
    *,
    challenger: Any,
    champion: Any | None,
    segments: Sequence[str] = (),
) -> pd.DataFrame:
    """Both models' predictions and confidences on the same labelled rows.

    Args:
        frame: Labelled rows (rows without a label are dropped).
        schema: The declared schema (features and target).
        challenger: A fitted classifier with ``predict_proba`` and ``classes_``.
        champion: The serving model, or None (then no champion columns).
        segments: Columns kept as slices (those absent from ``frame`` are ignored).

    Returns:
        ``label``, the segment columns, ``challenger_pred``, ``challenger_confidence``
        and, with a champion, ``champion_pred`` and ``champion_confidence``.
    """
    labelled = frame[frame[schema.target].notna()].reset_index(drop=True)
    out = pd.DataFrame({LABEL: labelled[schema.target].astype(str).to_numpy()})
    for column in segments:
        if column in labelled:
            out[column] = labelled[column].astype(object).to_numpy()
    models = [(challenger, CHALLENGER_PRED, CHALLENGER_CONF)]
    if champion is not None:
        models.append((champion, CHAMPION_PRED, CHAMPION_CONF))
    for model, pred, conf in models:
        if labelled.empty:
            out[pred], out[conf] = pd.Series(dtype=object), pd.Series(dtype="float64")
            continue
        proba = np.asarray(model.predict_proba(labelled[schema.feature_names]), dtype="float64")
        classes = np.asarray(model.classes_).astype(str)
        out[pred] = classes[proba.argmax(axis=1)]
        out[conf] = proba.max(axis=1)
    return out


def gate_evidence(
    frames: Mapping[str, pd.DataFrame | None],
    schema: BatchSchema,
    *,
    challenger: Any,
    champion: Any | None,
    policy: GatePolicy,
) -> dict[str, pd.DataFrame | None]:
    """Paired predictions on every evaluation set, as ``decide`` takes them.

    The human held-out set is cut to its most recent rows first (``policy.recent_rows``
    within ``policy.recent_days``, see ``most_recent``).

    Args:
        frames: Labelled frames by set name (None: the version holds no such frame).
        schema: The declared schema.
        challenger: The challenger model.
        champion: The serving model, or None.
        policy: Supplies the recency window and the segment columns.

    Returns:
        ``paired_predictions`` output per set (None stays None).
    """
    out: dict[str, pd.DataFrame | None] = {}
    for name, frame in frames.items():
        if frame is None:
            out[name] = None
            continue
        rows = recent_window(frame, policy) if name == HUMAN_HOLDOUT else frame
        out[name] = paired_predictions(
            rows,
            schema,
            challenger=challenger,
            champion=champion,
            segments=policy.segments(schema),
        )
    return out


# --- statistics --------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedDifference:
    """Challenger minus champion of a per-row correctness mean, with its interval."""

    n: int
    challenger: float
    champion: float
    diff: float
    low: float
    high: float


def paired_bootstrap(
    challenger_correct: np.ndarray,
    champion_correct: np.ndarray,
    *,
    confidence: float,
    n_bootstrap: int,
    seed: int,
) -> PairedDifference:
    """Paired bootstrap interval of the difference of two accuracies on the same rows.

    Resampling rows and averaging ``d = challenger_correct - champion_correct`` is the
    same as drawing the counts of d = -1, 0, +1 from a multinomial with the observed
    shares, which is what is done here (exact and vectorised).

    Args:
        challenger_correct: Booleans, one per row.
        champion_correct: Booleans on the same rows.
        confidence: Two-sided level of the percentile interval.
        n_bootstrap: Resamples.
        seed: Seeds the draw.

    Returns:
        Both accuracies, the difference and its interval (NaN without rows).
    """
    a = np.asarray(challenger_correct, dtype=bool)
    b = np.asarray(champion_correct, dtype=bool)
    n = len(a)
    if n == 0:
        nan = float("nan")
        return PairedDifference(0, nan, nan, nan, nan, nan)
    d = a.astype(int) - b.astype(int)
    counts = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()])
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_bootstrap)
    means = (draws[:, 2] - draws[:, 0]) / n
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedDifference(
        n=n,
        challenger=float(a.mean()),
        champion=float(b.mean()),
        diff=float(d.mean()),
        low=float(low),
        high=float(high),
    )


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, bins: int = 10
) -> float:
    """ECE: row-weighted mean |accuracy - mean confidence| over equal-width bins.

    Args:
        confidence: Top-class probabilities in [0, 1].
        correct: Whether each top-class prediction was right.
        bins: Number of equal-width bins over [0, 1].

    Returns:
        The ECE, NaN without rows.
    """
    conf = np.asarray(confidence, dtype="float64")
    hit = np.asarray(correct, dtype="float64")
    if len(conf) == 0:
        return float("nan")
    # right-closed bins, confidence 0 in the first: (0, 1/b], ..., ((b-1)/b, 1]
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(index):
        mask = index == b
        total += mask.sum() * abs(hit[mask].mean() - conf[mask].mean())
    return float(total / len(conf))


# --- checks --------------------------------------------------------------------------------
def _correct(frame: pd.DataFrame, pred: str) -> np.ndarray:
    return (frame[pred].astype(str) == frame[LABEL].astype(str)).to_numpy()


def _bootstrap(
    frame: pd.DataFrame, policy: GatePolicy, confidence: float | None = None
) -> PairedDifference:
    return paired_bootstrap(
        _correct(frame, CHALLENGER_PRED),
        _correct(frame, CHAMPION_PRED),
        confidence=policy.confidence if confidence is None else confidence,
        n_bootstrap=policy.n_bootstrap,
        seed=policy.seed,
    )


def _figures(p: PairedDifference) -> dict[str, float]:
    return {
        "n": float(p.n),
        "challenger": p.challenger,
        "champion": p.champion,
        "diff": p.diff,
        "ci_low": p.low,
        "ci_high": p.high,
    }


def _regressed(p: PairedDifference, tolerance: float) -> bool:
    """A drop that is material (beyond the tolerance) and not noise (CI excludes zero)."""
    return p.diff < -tolerance and p.high < 0


def overall_check(eval_set: str, frame: pd.DataFrame, policy: GatePolicy) -> GateCheckResult:
    """Overall accuracy on one held-out set: no regression, or proven non-inferiority
    where the set is in ``policy.prove_on`` (see the module docstring)."""
    name = f"overall[{eval_set}]"
    n = len(frame)
    if n < policy.min_eval_rows:
        return GateCheckResult(
            name,
            NO_EVIDENCE,
            f"{name}: {NOT_ENOUGH_EVIDENCE}: {n} rows, fewer than the {policy.min_eval_rows} "
            "required",
            {"n": float(n)},
        )
    p = _bootstrap(frame, policy)
    tol = policy.overall_tolerance(eval_set)
    figures = {**_figures(p), "tol": tol}
    head = (
        f"{name}: challenger accuracy {p.challenger:.4f} vs champion {p.champion:.4f} on "
        f"{n} rows, difference {p.diff:+.4f} ({policy.confidence:.0%} CI {p.low:+.4f} to "
        f"{p.high:+.4f})"
    )
    if eval_set in policy.prove_on:
        passed = p.low >= -tol
        reason = f"{head}; lower bound {'>=' if passed else '<'} -tolerance {tol:.4f}"
    else:
        regressed = _regressed(p, tol)
        passed = not regressed
        reason = f"{head}; {'a' if regressed else 'no'} regression beyond tolerance {tol:.4f}"
        drop = policy.max_recent_drop if eval_set == HUMAN_HOLDOUT else policy.max_fixed_drop
        if passed and drop is not None and p.diff < -drop:
            passed = False
            where = "recent rows" if eval_set == HUMAN_HOLDOUT else "fixed held-out set"
            reason = f"{head}; trails the champion by more than {drop:.4f} on the {where}"
        figures["regressed"] = float(regressed)
    return GateCheckResult(name, PASS if passed else FAIL, reason, figures)


def slice_checks(
    eval_set: str,
    frame: pd.DataFrame,
    policy: GatePolicy,
    segments: Sequence[str],
    classes: Sequence[str] = (),
) -> list[GateCheckResult]:
    """Per true class (recall) and per segment value (accuracy) on one held-out set.

    Args:
        eval_set: The held-out set's name.
        frame: Its paired predictions.
        policy: The gate's tunables.
        segments: Segment columns to slice by.
        classes: The schema's classes: each gets its slice even without a row here (a
            class added mid-stream, which the evidence does not hold yet, is reported as
            "not enough evidence (0 rows, need m)", never silently left out); classes
            found in ``frame`` are sliced too.

    Returns:
        One result per slice: classes first (sorted), then segment values.
    """
    labels = frame[LABEL].astype(str)
    slices: list[tuple[str, pd.Series]] = [
        (f"class={c}", labels == c) for c in sorted({*map(str, classes), *labels.unique()})
    ]
    for column in segments:
        if column in frame:
            values = frame[column].astype(object).where(frame[column].notna(), "<missing>")
            slices += [(f"{column}={v}", values == v) for v in sorted(values.unique(), key=str)]
    sizes = [int(mask.sum()) for _, mask in slices]
    # Bonferroni over the slices judged on this set: each one is a look for a regression
    looks = sum(n >= policy.min_slice_rows for n in sizes) if policy.correct_for_slices else 1
    level = 1.0 - (1.0 - policy.confidence) / max(looks, 1)
    results = []
    for label, mask in slices:
        name = f"slice[{eval_set}:{label}]"
        rows = frame[mask.to_numpy()]
        metric = "recall" if label.startswith("class=") else "accuracy"
        if len(rows) < policy.min_slice_rows:
            reason = (
                f"{name}: {NOT_ENOUGH_EVIDENCE} ({len(rows)} rows, need {policy.min_slice_rows})"
            )
            if label.startswith("class=") and _never_predicted(frame, label.removeprefix("class=")):
                reason += "; the champion never predicted this class here"
            results.append(GateCheckResult(name, NO_EVIDENCE, reason, {"n": float(len(rows))}))
            continue
        p = _bootstrap(rows, policy, confidence=level)
        tol = policy.slice_tolerance_for(eval_set)
        regressed = _regressed(p, tol)
        reason = (
            f"{name}: {metric} {p.challenger:.4f} vs champion {p.champion:.4f} on {p.n} rows, "
            f"difference {p.diff:+.4f} ({level:.1%} CI {p.low:+.4f} to {p.high:+.4f})"
            + (f"; regressed beyond tolerance {tol:.4f}" if regressed else "")
        )
        figures = {**_figures(p), "tol": tol}
        results.append(GateCheckResult(name, FAIL if regressed else PASS, reason, figures))
    return results


def _never_predicted(frame: pd.DataFrame, label: str) -> bool:
    """Whether the champion predicted ``label`` on none of the rows (a new class)."""
    if CHAMPION_PRED not in frame:
        return False
    return not bool((frame[CHAMPION_PRED].astype(str) == label).any())


def edge_case_check(frame: pd.DataFrame | None, policy: GatePolicy) -> GateCheckResult:
    """The challenger passes the edge-case set at the configured rate (or as the champion)."""
    name = "edge_cases"
    if frame is None or frame.empty:
        return GateCheckResult(name, PASS, f"{name}: no edge-case set yet, nothing to check", {})
    n = len(frame)
    if n < policy.min_edge_cases:
        return GateCheckResult(
            name,
            NO_EVIDENCE,
            f"{name}: {NOT_ENOUGH_EVIDENCE} ({n} edge cases < {policy.min_edge_cases}), skipped",
            {"n": float(n)},
        )
    ours = float(_correct(frame, CHALLENGER_PRED).mean())
    theirs = float(_correct(frame, CHAMPION_PRED).mean()) if CHAMPION_PRED in frame else math.nan
    passed = ours >= policy.edge_case_pass_rate or (not math.isnan(theirs) and ours >= theirs)
    reason = (
        f"{name}: challenger passes {ours:.4f} of {n} edge cases (champion {theirs:.4f}); "
        f"{'meets' if passed else 'below'} the rate {policy.edge_case_pass_rate:.4f}"
        + ("" if passed else " and the champion's")
    )
    figures = {"n": float(n), "challenger": ours, "champion": theirs}
    return GateCheckResult(name, PASS if passed else FAIL, reason, figures)


def calibration_check(eval_set: str, frame: pd.DataFrame, policy: GatePolicy) -> GateCheckResult:
    """The challenger's ECE on one held-out set is within bounds."""
    name = f"calibration[{eval_set}]"
    n = len(frame)
    if n < policy.min_calibration_rows:
        return GateCheckResult(
            name,
            NO_EVIDENCE,
            f"{name}: {NOT_ENOUGH_EVIDENCE} ({n} rows < {policy.min_calibration_rows}), skipped",
            {"n": float(n)},
        )
    ours = expected_calibration_error(
        frame[CHALLENGER_CONF].to_numpy(), _correct(frame, CHALLENGER_PRED), bins=policy.ece_bins
    )
    theirs = (
        expected_calibration_error(
            frame[CHAMPION_CONF].to_numpy(), _correct(frame, CHAMPION_PRED), bins=policy.ece_bins
        )
        if CHAMPION_PRED in frame
        else math.nan
    )
    bound = (
        policy.max_ece if math.isnan(theirs) else max(policy.max_ece, theirs + policy.ece_tolerance)
    )
    passed = ours <= bound
    reason = (
        f"{name}: challenger ECE {ours:.4f} vs champion {theirs:.4f} on {n} rows; "
        f"{'<=' if passed else '>'} bound {bound:.4f} (max {policy.max_ece:.4f} or champion "
        f"+ {policy.ece_tolerance:.4f})"
    )
    figures = {"n": float(n), "challenger": ours, "champion": theirs, "bound": bound}
    return GateCheckResult(name, PASS if passed else FAIL, reason, figures)


# --- the decision ---------------------------------------------------------------------------
def set_metrics(frame: pd.DataFrame, pred: str, conf: str, policy: GatePolicy) -> dict[str, float]:
    """One model's headline figures on one evaluation set (for MLflow and the UI)."""
    if pred not in frame or frame.empty:
        return {"n_rows": float(len(frame))}
    correct = _correct(frame, pred)
    metrics = {
        "n_rows": float(len(frame)),
        "accuracy": float(correct.mean()),
        "ece": expected_calibration_error(frame[conf].to_numpy(), correct, bins=policy.ece_bins),
    }
    for c in sorted(frame[LABEL].astype(str).unique()):
        metrics[f"recall__{c}"] = float(correct[(frame[LABEL].astype(str) == c).to_numpy()].mean())
    return metrics


def decide(
    *,
    evidence: Mapping[str, pd.DataFrame | None],
    policy: GatePolicy,
    segments: Sequence[str] = (),
    classes: Sequence[str] = (),
) -> GateDecision:
    """Promote or keep the champion, with every check's verdict and figures.

    Args:
        evidence: ``paired_predictions`` frames by evaluation set (``holdout``,
            ``human_holdout``, optionally ``edge_cases``; None or absent = not available).
            Without champion columns the challenger is the first model.
        policy: The gate's tunables.
        segments: Segment columns to slice by (``policy.segments(schema)``).
        classes: The schema's classes: each has a recall slice on each held-out set, a
            class without (enough) rows there says "not enough evidence" and does not
            block (``slice_checks``).

    Returns:
        The decision. Without a champion the challenger is promoted ("no champion
        yet"). Otherwise it is promoted iff no check failed and both overall checks had
        enough evidence. Reasons: failures first, then the overall verdicts, then one
        line naming what was skipped for lack of evidence and how many checks passed.
    """
    frames = {k: v for k, v in evidence.items() if v is not None}
    heldout = (HUMAN_HOLDOUT, HOLDOUT)
    challenger_metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] = {}
    for name, frame in frames.items():
        for key, value in set_metrics(frame, CHALLENGER_PRED, CHALLENGER_CONF, policy).items():
            challenger_metrics[f"{name}.{key}"] = value
        for key, value in set_metrics(frame, CHAMPION_PRED, CHAMPION_CONF, policy).items():
            champion_metrics[f"{name}.{key}"] = value
    rows = sum(len(f) for f in frames.values())
    has_champion = any(CHAMPION_PRED in f for f in frames.values())
    if not has_champion:
        reason = f"{NO_CHAMPION}: promoting the first model (evaluated on {rows} rows)"
        return GateDecision(True, (reason,), challenger_metrics, {}, rows)

    empty = pd.DataFrame(columns=[LABEL, CHALLENGER_PRED, CHAMPION_PRED])
    checks: list[GateCheckResult] = []
    for eval_set in heldout:
        checks.append(overall_check(eval_set, frames.get(eval_set, empty), policy))
    for eval_set in heldout:
        checks += slice_checks(eval_set, frames.get(eval_set, empty), policy, segments, classes)
    checks.append(edge_case_check(frames.get(EDGE_CASES), policy))
    for eval_set in heldout:
        checks.append(calibration_check(eval_set, frames.get(eval_set, empty), policy))

    if policy.representative_class_check:
        checks = _outweigh_biased_class_slices(checks)
    if policy.recent_outweighs_fixed:
        checks = _outweigh_fixed(checks, proven=policy.outweigh_needs_significance)
    failed = [c for c in checks if c.status == FAIL]
    blocking_gaps = [c for c in checks if c.name.startswith("overall[") and c.status == NO_EVIDENCE]
    promote = not failed and not blocking_gaps
    skipped = [c.name for c in checks if c.status == NO_EVIDENCE and c not in blocking_gaps]
    passed = sum(c.status == PASS for c in checks)
    overall = [c for c in checks if c.name.startswith("overall[") and c.status == PASS]
    reasons = [f"FAILED {c.reason}" for c in failed]
    reasons += [c.reason for c in blocking_gaps]
    reasons += [c.reason for c in overall]
    reasons.append(
        f"{passed} of {len(checks)} checks passed"
        + (f"; {NOT_ENOUGH_EVIDENCE}, skipped: {', '.join(skipped)}" if skipped else "")
    )
    return GateDecision(
        promote, tuple(reasons), challenger_metrics, champion_metrics, rows, tuple(checks)
    )


OUTWEIGHED = "outweighed by recent evidence"


def _outweigh_fixed(checks: list[GateCheckResult], *, proven: bool) -> list[GateCheckResult]:
    """Fixed-holdout failures pass when the recent human rows show an improvement (with
    ``proven``, one whose interval is above zero): overall and slice regressions; the
    calibration failure only when the challenger's accuracy there held
    (``overall[holdout]`` passed on its own), so a model that lost both its accuracy and
    its calibration on the random sample is still kept out."""
    recent = next((c for c in checks if c.name == f"overall[{HUMAN_HOLDOUT}]"), None)
    if recent is None or recent.status != PASS:
        return checks
    if not recent.figures.get("ci_low" if proven else "diff", 0.0) > 0:
        return checks
    fixed = next((c for c in checks if c.name == f"overall[{HOLDOUT}]"), None)
    # a significant, material regression there; trailing by max_fixed_drop alone is not
    accuracy_held = fixed is None or fixed.status != FAIL or not fixed.figures.get("regressed", 1)
    out = []
    for check in checks:
        on_fixed = check.name == f"overall[{HOLDOUT}]" or check.name.startswith(f"slice[{HOLDOUT}:")
        on_fixed |= check.name == f"calibration[{HOLDOUT}]" and accuracy_held
        if on_fixed and check.status == FAIL:
            check = GateCheckResult(
                check.name,
                PASS,
                f"{check.reason}; {OUTWEIGHED} (the challenger is ahead on the recent "
                f"human rows: {recent.figures['diff']:+.4f})",
                {**check.figures, "outweighed": 1.0},
            )
        out.append(check)
    return out


UNREPRESENTATIVE = "judged on the representative fixed held-out set instead"


def _outweigh_biased_class_slices(checks: list[GateCheckResult]) -> list[GateCheckResult]:
    """Class-recall failures on the human rows pass when the challenger is ahead overall
    there and the class's recall on the fixed held-out set did not regress (see
    ``GatePolicy.representative_class_check``)."""
    recent = next((c for c in checks if c.name == f"overall[{HUMAN_HOLDOUT}]"), None)
    if recent is None or recent.status != PASS or not recent.figures.get("diff", 0.0) > 0:
        return checks
    by_name = {c.name: c for c in checks}
    prefix = f"slice[{HUMAN_HOLDOUT}:class="
    out = []
    for check in checks:
        if check.name.startswith(prefix) and check.status == FAIL:
            label = check.name.removeprefix(prefix).removesuffix("]")
            fixed = by_name.get(f"slice[{HOLDOUT}:class={label}]")
            if fixed is not None and fixed.status == PASS:
                check = GateCheckResult(
                    check.name,
                    PASS,
                    f"{check.reason}; {UNREPRESENTATIVE} (recall there "
                    f"{fixed.figures['diff']:+.4f}, no regression; the challenger is ahead on "
                    f"the recent human rows: {recent.figures['diff']:+.4f})",
                    {**check.figures, "outweighed": 1.0},
                )
        out.append(check)
    return out


def failed_checks(decision: GateDecision) -> list[str]:
    """Names of the checks that failed or lacked required evidence."""
    return [
        c.name
        for c in decision.checks
        if c.status == FAIL or (c.status == NO_EVIDENCE and c.name.startswith("overall["))
    ]
