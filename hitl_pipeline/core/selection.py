"""Active-learning ranking inside a review capacity: uncertain, diverse, stratified.

Picking the top-k most uncertain items spends a batch's labels on near-duplicates from
one corner of the space. The picks here are made in two passes:

1. coverage: the most urgent item of every stratum (each predicted class, and each
   segment of every drifted column: its categories, or quartiles of a numeric column)
   that is not covered yet, so no class or drifted segment goes without a label;
2. diversity: greedy, each next pick maximising ``priority * (1 - exp(-d / scale))``
   where ``d`` is its distance to the nearest item already picked and ``scale`` the
   typical nearest-neighbour distance of the pool (a k-center greedy weighted by
   uncertainty): a near-duplicate of a pick is worth almost nothing.

Distances are taken in a simple embedding of the features (robustly standardised
numerics, one-hot categoricals, text as TF-IDF reduced by SVD), where drifted columns
weigh ``drift_weight`` times as much when the drift check failed, so the picks spread
along what changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hitl_pipeline.core.text import TextRepresentation


def feature_embedding(
    frame: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    text: Sequence[str] = (),
    column_weights: dict[str, float] | None = None,
    max_categories: int = 30,
    text_components: int = 10,
) -> np.ndarray:
    """A dense embedding of the features for distance computations.

    Numerics are centred on the median and divided by the inter-quartile range (by
    the standard deviation when that is 0; missing values sit at the centre);
    categoricals are one-hot (the ``max_categories`` most frequent levels) scaled by
    ``1/sqrt(2)`` so two different levels are 1 apart; a text column is its TF-IDF
    reduced to ``text_components`` unit-variance SVD components, fitted on these rows
    (only distances among them matter), so posts on one topic sit close together.

    Args:
        frame: The rows.
        numeric: Numeric feature columns.
        categorical: Categorical feature columns.
        text: Text feature columns.
        column_weights: Multiplier per column (default 1).
        max_categories: One-hot levels kept per categorical column.
        text_components: SVD components per text column.

    Returns:
        A float array of shape (rows, dims); (rows, 0) when there are no features.
    """
    weights = column_weights or {}
    parts: list[np.ndarray] = []
    for name in numeric:
        x = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            continue
        q1, med, q3 = np.percentile(finite, [25, 50, 75])
        spread = (q3 - q1) or float(np.std(finite)) or 1.0
        z = np.where(np.isfinite(x), (x - med) / spread, 0.0)
        parts.append((np.clip(z, -10, 10) * weights.get(name, 1.0))[:, None])
    for name in categorical:
        values = frame[name].astype(str).to_numpy()
        levels = pd.Series(values).value_counts().index[:max_categories]
        onehot = (values[:, None] == np.asarray(levels)[None, :]).astype("float64")
        parts.append(onehot * (weights.get(name, 1.0) / np.sqrt(2.0)))
    for name in text:
        dense = TextRepresentation([name], n_components=text_components).fit_transform(frame)
        if dense.shape[1]:
            parts.append(dense * weights.get(name, 1.0))
    if not parts:
        return np.zeros((len(frame), 0), dtype="float64")
    return np.hstack(parts)


def segment_labels(frame: pd.DataFrame, column: str, *, numeric: bool) -> np.ndarray:
    """The segment of each row along one column: its category, or its quartile."""
    if not numeric:
        return frame[column].astype(str).to_numpy()
    x = pd.to_numeric(frame[column], errors="coerce")
    try:
        bins = pd.qcut(x, 4, labels=False, duplicates="drop")
    except ValueError:
        bins = pd.Series(np.zeros(len(x)), index=x.index)
    return np.asarray([f"q{int(b)}" if pd.notna(b) else "missing" for b in bins], dtype=object)


def _distances(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    return np.sqrt(((points - center) ** 2).sum(axis=1))


def _scale(embedding: np.ndarray, rng_key: int = 0) -> float:
    """Median nearest-neighbour distance of (a sample of) the pool."""
    n = embedding.shape[0]
    if n < 2 or embedding.shape[1] == 0:
        return 1.0
    idx = np.arange(n)
    if n > 500:
        idx = np.random.default_rng(rng_key).choice(n, size=500, replace=False)
    sample = embedding[idx]
    d2 = ((sample[:, None, :] - sample[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(d2, np.inf)
    nearest = np.sqrt(d2.min(axis=1))
    positive = nearest[nearest > 0]
    return float(np.median(positive)) if positive.size else 1.0


def select_diverse(
    priority: np.ndarray,
    capacity: int,
    *,
    embedding: np.ndarray | None = None,
    strata: Sequence[np.ndarray] = (),
    tie_break: np.ndarray | None = None,
    coverage_share: float = 0.75,
) -> np.ndarray:
    """Indices of the items to review, in pick order.

    Args:
        priority: Urgency of each candidate (higher first), >= 0.
        capacity: How many to pick.
        embedding: Candidate features for distances (None: no diversity, pure priority).
        strata: Label arrays (aligned with ``priority``); every distinct label of each
            gets its most urgent item picked first, within ``coverage_share`` of the
            capacity (larger strata first).
        tie_break: Keys ordering equal priorities (e.g. item ids), for reproducibility.
        coverage_share: Most of the capacity the coverage pass may take.

    Returns:
        An int array of at most ``capacity`` distinct indices.
    """
    priority = np.asarray(priority, dtype="float64")
    n = len(priority)
    capacity = min(max(capacity, 0), n)
    if capacity == 0:
        return np.zeros(0, dtype=int)
    keys = np.arange(n) if tie_break is None else np.asarray(tie_break)
    order = np.lexsort((keys, -priority))  # most urgent first
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    if capacity == n:
        return order

    picked: list[int] = []
    chosen = np.zeros(n, dtype=bool)
    budget = int(np.floor(capacity * coverage_share))
    for labels in strata:
        labels = np.asarray(labels)
        values, counts = np.unique(labels, return_counts=True)
        for value in values[np.argsort(-counts, kind="stable")]:
            if len(picked) >= budget:
                break
            members = np.flatnonzero(labels == value)
            if chosen[members].any():
                continue
            best = int(members[np.argmin(rank[members])])
            picked.append(best)
            chosen[best] = True

    if embedding is None or embedding.shape[1] == 0:
        rest = [int(i) for i in order if not chosen[i]]
        return np.asarray(picked + rest[: capacity - len(picked)], dtype=int)

    scale = _scale(embedding)
    nearest = np.full(n, np.inf)
    for i in picked:
        nearest = np.minimum(nearest, _distances(embedding, embedding[i]))
    # ranks are a strict order, so ties in the gain go to the more urgent item
    tiny = (n - rank) * 1e-12
    while len(picked) < capacity:
        novelty = np.where(np.isinf(nearest), 1.0, 1.0 - np.exp(-nearest / scale))
        gain = priority * novelty + tiny
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        chosen[best] = True
        nearest = np.minimum(nearest, _distances(embedding, embedding[best]))
    return np.asarray(picked, dtype=int)
