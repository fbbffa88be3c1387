"""Out-of-distribution scores: how unlike the training data an input is.

A model is often confidently wrong far from its training data, where confidence says
nothing. The detector is an ``IsolationForest`` on the same preprocessing as the
classifier (a plain scikit-learn ``Pipeline``), and its raw isolation score is turned
into a percentile of the training rows' own scores, so ``ood_score`` reads the same way
on any data set: 0.99 means "more isolated than 99% of the training rows".

Text columns enter the forest as ``core.text.TextRepresentation`` (TF-IDF reduced by
SVD) rather than the classifier's sparse TF-IDF, whose thousands of dimensions a forest
of random splits cannot isolate in. Words the training rows never used get a percentile
of their own: a row's share of unseen words ranked among the training rows' shares
(counted leave-one-out), and ``ood_score`` is the larger of the two percentiles. A
forest alone cannot see them: to the TF-IDF an unseen word is no word at all.
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
        oov_reference: Sorted unseen-word shares of the fitted rows, else None.
    """

    model: Any
    reference: np.ndarray
    # text schemas: the fitted representation and the training rows' sorted
    # leave-one-out unseen-word shares (the largest over the text columns)
    text: Any = None
    oov_reference: np.ndarray | None = None


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
    reference = np.sort(-np.asarray(model.score_samples(rows), dtype="float64"))
    if text is None:
        return OodDetector(model=model, reference=reference)
    fitted = model.named_steps["preprocess"].named_transformers_["text"]
    oov_reference = np.sort(fitted.reference_oov_.max(axis=1))
    return OodDetector(model=model, reference=reference, text=fitted, oov_reference=oov_reference)


def ood_scores(detector: OodDetector, frame: pd.DataFrame, schema: BatchSchema) -> np.ndarray:
    """Percentile of each row's isolation among the training rows, in [0, 1].

    Args:
        detector: From ``fit_ood_detector``.
        frame: Rows with the schema's features.
        schema: The declared schema.

    Returns:
        One float per row; 1.0 means more isolated than every training row (or, with
        text, more unseen words than any training row has).
    """
    if len(frame) == 0:
        return np.zeros(0, dtype="float64")
    raw = -np.asarray(detector.model.score_samples(frame[schema.feature_names]), dtype="float64")
    scores = np.searchsorted(detector.reference, raw, side="right") / len(detector.reference)
    if detector.text is None or detector.oov_reference is None:
        return scores
    shares = detector.text.oov(frame).max(axis=1)
    # "left": a row using only known words ranks with the training rows that do too
    unseen = np.searchsorted(detector.oov_reference, shares, side="left")
    return np.maximum(scores, unseen / len(detector.oov_reference))
