"""Out-of-distribution scores: how unlike the training data an input is.

A model is often confidently wrong far from its training data, where confidence says
nothing. The detector is an ``IsolationForest`` on the same preprocessing as the
classifier (a plain scikit-learn ``Pipeline``), and its raw isolation score is turned
into a percentile of the training rows' own scores, so ``ood_score`` reads the same way
on any data set: 0.99 means "more isolated than 99% of the training rows".

Text columns enter the forest as ``core.text.TextRepresentation`` (TF-IDF reduced by
SVD) rather than the classifier's sparse TF-IDF, whose thousands of dimensions a forest
of random splits cannot isolate in. A forest cannot see unseen words (to the TF-IDF an
unseen word is no word at all), so each text column adds a percentile of its own: the
row's mean word surprisal (``core.text.mean_surprisal``: rare words cost more, unseen
ones most) ranked among the training rows' own, counted leave-one-out. The largest of a
row's percentiles is then ranked among the training rows' largest: the maximum of two
percentiles exceeds 0.99 for about 2% of in-distribution rows, the re-ranked one for
about 1%, as on a schema without text.

Why the surprisal and not the share of unseen words: on a closed vocabulary (every
training word used by many posts, as in the moderation demo) no training row has an
unseen word, so a post with a single new word would rank above all of them and a
drifted batch would be flagged nearly whole. The mean surprisal grades it instead: one
slang word in an ordinary post raises it a little, a post made of new words a lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from hitl_pipeline.core.text import TextRepresentation
from hitl_pipeline.core.training import build_preprocessor
from hitl_pipeline.core.types import BatchSchema


@dataclass(frozen=True)
class OodDetector:
    """A fitted isolation forest and the training rows' sorted outlier scores.

    Attributes:
        model: ``Pipeline(preprocess, IsolationForest)``.
        reference: Sorted outlier scores (higher = more isolated) of the fitted rows.
        text: The fitted ``TextRepresentation`` of a schema with text, else None.
        text_reference: The fitted rows' leave-one-out mean word surprisals, sorted per
            text column (rows x text columns), else None.
        combined_reference: The fitted rows' largest percentile (the forest's or a text
            column's), sorted, else None.
    """

    model: Any
    reference: np.ndarray
    text: Any = None
    text_reference: np.ndarray | None = None
    combined_reference: np.ndarray | None = None


def fit_ood_detector(
    frame: pd.DataFrame, schema: BatchSchema, *, seed: int = 0, max_rows: int = 20_000
) -> OodDetector:
    """Fit the detector on training rows.

    Args:
        frame: Rows with the schema's features (labels are ignored).
        schema: Declares numeric and categorical features.
        seed: Random state of the forest and of the subsample.
        max_rows: Fit on at most this many rows (a uniform subsample), to bound the cost.

    Returns:
        The detector.

    Raises:
        ValueError: When ``frame`` has no rows.
    """
    if len(frame) == 0:
        raise ValueError("no rows to fit the out-of-distribution detector on")
    rows = frame[schema.feature_names]
    if len(rows) > max_rows:
        rows = rows.sample(n=max_rows, random_state=seed)
    text = TextRepresentation(schema.text_features, seed=seed) if schema.text_features else None
    preprocess = build_preprocessor(schema, text_step=text)
    model = Pipeline(
        [
            ("preprocess", preprocess),
            (
                "forest",
                IsolationForest(
                    n_estimators=100, max_samples=min(256, len(rows)), random_state=seed
                ),
            ),
        ]
    )
    model.fit(rows)
    raw = -np.asarray(model.score_samples(rows), dtype="float64")
    reference = np.sort(raw)
    if text is None:
        return OodDetector(model=model, reference=reference)
    fitted = model.named_steps["preprocess"].named_transformers_["text"]
    text_reference = np.sort(fitted.reference_surprisal_, axis=0)
    largest = _largest_percentile(
        _percentile(reference, raw), fitted.reference_surprisal_, text_reference
    )
    return OodDetector(
        model=model,
        reference=reference,
        text=fitted,
        text_reference=text_reference,
        combined_reference=np.sort(largest),
    )


def _percentile(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of the sorted ``reference`` at or below each value."""
    return np.searchsorted(reference, values, side="right") / len(reference)


def _largest_percentile(
    forest: np.ndarray, surprisal: np.ndarray, text_reference: np.ndarray
) -> np.ndarray:
    """Per row, the largest of its forest percentile and its text columns' percentiles."""
    largest = forest.copy()
    for column in range(surprisal.shape[1]):
        largest = np.maximum(largest, _percentile(text_reference[:, column], surprisal[:, column]))
    return largest


def ood_scores(detector: OodDetector, frame: pd.DataFrame, schema: BatchSchema) -> np.ndarray:
    """Percentile of each row's isolation among the training rows, in [0, 1].

    Args:
        detector: From ``fit_ood_detector``.
        frame: Rows with the schema's features.
        schema: The declared schema.

    Returns:
        One float per row; 1.0 means more isolated than every training row. With
        text, the percentile of the row's largest percentile (the forest's, or a text
        column's mean word surprisal) among the training rows' own: 1.0 means more
        isolated, or rarer words, than every training row.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype="float64")
    raw = -np.asarray(detector.model.score_samples(frame[schema.feature_names]), dtype="float64")
    scores = np.searchsorted(detector.reference, raw, side="right") / len(detector.reference)
    if (
        detector.text is None
        or detector.text_reference is None
        or detector.combined_reference is None
    ):
        return scores
    largest = _largest_percentile(scores, detector.text.surprisal(frame), detector.text_reference)
    return _percentile(detector.combined_reference, largest)
