"""Out-of-distribution scores: how unlike the training data an input is.

A model is often confidently wrong far from its training data, where confidence says
nothing. The detector is an ``IsolationForest`` on the same preprocessing as the
classifier (a plain scikit-learn ``Pipeline``), and its raw isolation score is turned
into a percentile of the training rows' own scores, so ``ood_score`` reads the same way
on any data set: 0.99 means "more isolated than 99% of the training rows".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from hitl_pipeline.core.training import TrainingParams, build_pipeline
from hitl_pipeline.core.types import BatchSchema


@dataclass(frozen=True)
class OodDetector:
    """A fitted isolation forest and the training rows' sorted outlier scores.

    Attributes:
        model: ``Pipeline(preprocess, IsolationForest)``.
        reference: Sorted outlier scores (higher = more isolated) of the fitted rows.
    """

    model: Any
    reference: np.ndarray


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
    preprocess = build_pipeline(schema, TrainingParams()).named_steps["preprocess"]
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
    return OodDetector(model=model, reference=reference)


def ood_scores(detector: OodDetector, frame: pd.DataFrame, schema: BatchSchema) -> np.ndarray:
    """Percentile of each row's isolation among the training rows, in [0, 1].

    Args:
        detector: From ``fit_ood_detector``.
        frame: Rows with the schema's features.
        schema: The declared schema.

    Returns:
        One float per row; 1.0 means more isolated than every training row.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype="float64")
    raw = -np.asarray(detector.model.score_samples(frame[schema.feature_names]), dtype="float64")
    return np.searchsorted(detector.reference, raw, side="right") / len(detector.reference)
