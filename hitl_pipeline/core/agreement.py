"""Inter-annotator agreement, disputes for adjudication, and annotator quality.

Label Studio's community edition has no agreement metrics (several annotators per task,
agreement and the review workflow are enterprise features in 1.23); these are ours.
The figures come from well-kept libraries: Cohen's kappa from scikit-learn for pairs of
annotators, Fleiss' kappa from statsmodels and Krippendorff's alpha from
``krippendorff`` for items with two or more votes. Alpha is the headline figure because
it allows a different set (and number) of annotators per item, which is how overlap
works here.

Adjudication votes are decisions, not ratings: they are left out of agreement and used
only to judge the annotators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.tiers import TIER_ADJUDICATION
from hitl_pipeline.core.types import ITEM_ID, LABEL, TIER

# Krippendorff's own guidance: alpha >= 0.8 reliable, 0.667 the lowest for tentative
# conclusions. Below it, people read the guideline differently.
MIN_ALPHA = 0.667
MIN_PAIR_ITEMS = 5  # fewer shared items than this make a pairwise kappa meaningless


def latest_votes(annotations: pd.DataFrame, *, classes: Sequence[str] = ()) -> pd.DataFrame:
    """One vote per (item, annotator, tier): each annotator's latest labelled answer.

    Cancelled (skipped) annotations, annotations without a label and, when ``classes``
    is given, labels outside it are not votes. An annotation pulled twice counts once.

    Args:
        annotations: One row per annotation (fields of ``core.types.Annotation``).
        classes: The schema's classes; empty accepts any label.

    Returns:
        Columns ``item_id``, ``annotator``, ``label``, ``tier``, ``completed_at``,
        ``annotation_id``; sorted by item, annotator.
    """
    columns = [ITEM_ID, "annotator", LABEL, TIER, "completed_at", "annotation_id"]
    if annotations.empty:
        return pd.DataFrame(columns=columns)
    keep = annotations[LABEL].notna()
    if "was_cancelled" in annotations:
        keep &= ~annotations["was_cancelled"].astype(bool)
    votes = annotations[keep].copy()
    if classes:
        votes = votes[votes[LABEL].astype(str).isin(set(classes))]
    if TIER not in votes:
        votes[TIER] = ""
    votes[ITEM_ID] = votes[ITEM_ID].map(canonical_text)
    votes[TIER] = votes[TIER].fillna("").astype(str)
    votes = votes.sort_values(["annotation_id", "updated_at"], kind="mergesort")
    votes = votes.drop_duplicates("annotation_id", keep="last")
    votes = votes.sort_values([ITEM_ID, "annotator", TIER, "completed_at", "annotation_id"])
    votes = votes.drop_duplicates([ITEM_ID, "annotator", TIER], keep="last")
    return votes[columns].reset_index(drop=True)


def _ratings(votes: pd.DataFrame) -> pd.DataFrame:
    """Votes that are ratings (not adjudication decisions)."""
    return votes[votes[TIER] != TIER_ADJUDICATION]


def _counts(ratings: pd.DataFrame) -> pd.DataFrame:
    """Items x labels vote counts, for items with two or more votes."""
    per_item = ratings.groupby(ITEM_ID)[LABEL].transform("size")
    multi = ratings[per_item >= 2]
    if multi.empty:
        return pd.DataFrame()
    return pd.crosstab(multi[ITEM_ID], multi[LABEL].astype(str))


def krippendorff_alpha(counts: pd.DataFrame) -> float | None:
    """Krippendorff's alpha (nominal) from an items x labels count table.

    Returns:
        Alpha, or None with fewer than two items or a single label in use (no expected
        disagreement: alpha is undefined).
    """
    import krippendorff

    if len(counts) < 2 or (counts.sum(axis=0) > 0).sum() < 2:
        return None
    return float(
        krippendorff.alpha(
            value_counts=counts.to_numpy(dtype=float), level_of_measurement="nominal"
        )
    )


def fleiss_kappa(counts: pd.DataFrame) -> float | None:
    """Fleiss' kappa over the items rated by the most common number of annotators.

    Fleiss needs the same number of ratings per item, so items with another count are
    left out (alpha uses them all).
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss

    if counts.empty:
        return None
    per_item = counts.sum(axis=1)
    same = counts[per_item == per_item.mode().max()]
    if len(same) < 2 or (same.sum(axis=0) > 0).sum() < 2:
        return None
    return float(_fleiss(same.to_numpy(), method="fleiss"))


def _observed(counts: pd.DataFrame) -> float | None:
    """Share of agreeing pairs among all pairs of votes on the same item."""
    if counts.empty:
        return None
    values = counts.to_numpy(dtype=float)
    n = values.sum(axis=1)
    agreeing = (values * (values - 1)).sum(axis=1)
    return float(agreeing.sum() / (n * (n - 1)).sum())


@dataclass(frozen=True)
class QueueAgreement:
    """Agreement in one review queue (tier)."""

    tier: str
    overlap_items: int  # items with two or more votes
    observed: float | None  # share of agreeing vote pairs
    alpha: float | None  # Krippendorff, nominal
    fleiss: float | None
    signal: str | None  # a message when agreement is too low to trust the guideline


def agreement_by_queue(
    votes: pd.DataFrame, *, min_alpha: float = MIN_ALPHA
) -> list[QueueAgreement]:
    """Agreement per review queue, with a guideline signal where it is low.

    Args:
        votes: ``latest_votes`` output.
        min_alpha: Below this alpha the queue's guideline is reported as unclear.

    Returns:
        One entry per tier that has ratings, sorted by tier.
    """
    out = []
    ratings = _ratings(votes)
    for tier, group in sorted(ratings.groupby(TIER), key=lambda kv: str(kv[0])):
        counts = _counts(group)
        alpha = krippendorff_alpha(counts)
        signal = None
        if alpha is not None and alpha < min_alpha:
            signal = (
                f"queue {tier!r}: agreement alpha={alpha:.2f} < {min_alpha} over {len(counts)} "
                "items reviewed twice or more: reviewers read the guideline differently; "
                "clarify the instructions (see the per-label figures for which classes) "
                "before trusting these labels for training"
            )
        out.append(
            QueueAgreement(
                tier=str(tier),
                overlap_items=len(counts),
                observed=_observed(counts),
                alpha=alpha,
                fleiss=fleiss_kappa(counts),
                signal=signal,
            )
        )
    return out


def agreement_by_label(votes: pd.DataFrame) -> dict[str, float]:
    """Specific agreement per label: of the vote pairs involving the label, how many
    have it on both sides (2·both / (2·both + one side only)).

    Returns:
        Label -> agreement in [0, 1], for labels used on items with two or more votes.
    """
    counts = _counts(_ratings(votes))
    out: dict[str, float] = {}
    if counts.empty:
        return out
    total = counts.sum(axis=1)
    for label in counts.columns:
        c = counts[label]
        both = (c * (c - 1)).sum()  # 2 x (unordered pairs with the label on both sides)
        one = (c * (total - c)).sum()  # unordered pairs with the label on one side only
        if both + one > 0:
            out[str(label)] = float(both / (both + one))
    return out


def pairwise_kappa(votes: pd.DataFrame, *, min_items: int = MIN_PAIR_ITEMS) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators on the items both rated.

    Returns:
        Columns ``annotator_a``, ``annotator_b``, ``shared_items``, ``observed``,
        ``kappa`` (NaN when they share fewer than ``min_items`` items or only one label).
    """
    from sklearn.metrics import cohen_kappa_score

    ratings = _ratings(votes)
    wide = ratings.pivot_table(index=ITEM_ID, columns="annotator", values=LABEL, aggfunc="last")
    rows = []
    for a, b in combinations(sorted(map(str, wide.columns)), 2):
        both = wide[[a, b]].dropna()
        kappa = float("nan")
        if len(both) >= min_items and len(set(both[a]) | set(both[b])) > 1:
            kappa = float(cohen_kappa_score(both[a], both[b]))
        rows.append(
            {
                "annotator_a": a,
                "annotator_b": b,
                "shared_items": len(both),
                "observed": float((both[a] == both[b]).mean()) if len(both) else float("nan"),
                "kappa": kappa,
            }
        )
    return pd.DataFrame(
        rows, columns=["annotator_a", "annotator_b", "shared_items", "observed", "kappa"]
    )


def annotator_quality(votes: pd.DataFrame, final_labels: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: how often their ratings match the final label, and agreement with peers.

    Args:
        votes: ``latest_votes`` output.
        final_labels: ``resolve_labels`` output (``item_id``, ``label``).

    Returns:
        Columns ``annotator``, ``votes``, ``judged_items`` (their items that got
        another vote or a ruling), ``matches_final`` (share of those where they gave
        the final label; NaN without any), ``peer_items`` (items someone else rated
        too), ``peer_agreement`` (share of those where a peer gave the same label),
        sorted by annotator.
    """
    ratings = _ratings(votes)
    final = final_labels.set_index(ITEM_ID)[LABEL] if len(final_labels) else pd.Series(dtype=str)
    # a lone vote is its own final label: only items someone else voted on judge a person
    checked = votes.groupby(ITEM_ID)["annotator"].transform("size") > 1
    rows = []
    for annotator, own in ratings.groupby("annotator"):
        judged = own[checked.reindex(own.index, fill_value=False)]
        match = judged[LABEL].astype(str) == judged[ITEM_ID].map(final).astype(str)
        peers = ratings[(ratings["annotator"] != annotator) & ratings[ITEM_ID].isin(own[ITEM_ID])]
        paired = own.merge(peers[[ITEM_ID, LABEL]], on=ITEM_ID, suffixes=("", "_peer"))
        rows.append(
            {
                "annotator": str(annotator),
                "votes": len(own),
                "judged_items": len(judged),
                "matches_final": float(match.mean()) if len(judged) else float("nan"),
                "peer_items": int(paired[ITEM_ID].nunique()),
                "peer_agreement": float((paired[LABEL] == paired[f"{LABEL}_peer"]).mean())
                if len(paired)
                else float("nan"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "annotator",
            "votes",
            "judged_items",
            "matches_final",
            "peer_items",
            "peer_agreement",
        ],
    )


def disputed_items(votes: pd.DataFrame) -> list[str]:
    """Items whose ratings disagree and that no adjudicator has decided yet.

    Returns:
        Sorted item ids.
    """
    ratings = _ratings(votes)
    labels_per_item = ratings.groupby(ITEM_ID)[LABEL].nunique()
    disputed = set(labels_per_item[labels_per_item > 1].index)
    decided = set(votes.loc[votes[TIER] == TIER_ADJUDICATION, ITEM_ID])
    return sorted(disputed - decided)


def summary_metrics(
    votes: pd.DataFrame, final_labels: pd.DataFrame
) -> dict[str, float | int | str]:
    """Flat numbers for Dagster metadata: overall and per-queue alpha, per-label specific
    agreement, open disputes, and the guideline signals."""
    counts = _counts(_ratings(votes))
    out: dict[str, float | int | str] = {
        "agreement_overlap_items": len(counts),
        "agreement_alpha": _nan(krippendorff_alpha(counts)),
        "agreement_fleiss_kappa": _nan(fleiss_kappa(counts)),
        "agreement_observed": _nan(_observed(counts)),
        "disputed_open": len(disputed_items(votes)),
    }
    for label, value in sorted(agreement_by_label(votes).items()):
        out[f"agreement_label__{label}"] = value
    signals = []
    for queue in agreement_by_queue(votes):
        out[f"agreement_alpha__{queue.tier}"] = _nan(queue.alpha)
        if queue.signal:
            signals.append(queue.signal)
    out["guideline_signal"] = " | ".join(signals) if signals else "none"
    return out


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


__all__ = [
    "MIN_ALPHA",
    "QueueAgreement",
    "agreement_by_label",
    "agreement_by_queue",
    "annotator_quality",
    "disputed_items",
    "fleiss_kappa",
    "krippendorff_alpha",
    "latest_votes",
    "pairwise_kappa",
    "summary_metrics",
]
