"""Score a validated batch with a fitted model and keep what later stages decide on.

Besides the predicted label, every row carries the full class probabilities and three
uncertainty figures (confidence, margin, entropy), because routing, drift monitoring and
the loop-health metrics all read them and must not re-score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.types import (
    CONFIDENCE,
    ENTROPY,
    MARGIN,
    MODEL_VERSION,
    PREDICTED_LABEL,
    BatchSchema,
    proba_column,
)


def probability_matrix(model: Any, features: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
    """Class probabilities laid out in the schema's class order.

    A model fitted on data that lacked some class has a shorter ``classes_``; those
    classes get probability 0 rather than shifting every column.

    Args:
        model: A fitted classifier with ``predict_proba`` and ``classes_``.
        features: The feature columns.
        classes: The schema's classes, in order.

    Returns:
        An array of shape (rows, len(classes)).

    Raises:
        ValueError: When the model knows a class the schema does not declare.
    """
    model_classes = [str(c) for c in model.classes_]
    unknown = sorted(set(model_classes) - set(classes))
    if unknown:
        raise ValueError(f"model predicts class(es) not in the schema: {', '.join(unknown)}")
    out = np.zeros((len(features), len(classes)), dtype="float64")
    if len(features) == 0:
        return out
    raw = np.asarray(model.predict_proba(features), dtype="float64")
    index = {name: i for i, name in enumerate(classes)}
    out[:, [index[c] for c in model_classes]] = raw
    return out


def uncertainty(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predicted index, confidence, margin and normalised entropy of each row.

    Entropy uses the natural log and is divided by ``log(n_classes)``, so it lies in
    [0, 1] whatever the number of classes (1 = uniform); with a single class it is 0.

    Args:
        proba: Probabilities, shape (rows, n_classes); rows need not sum to exactly 1.

    Returns:
        ``(argmax, confidence, margin, entropy)``, each of length ``rows``. Ties go to
        the first class in order. The margin is top-1 minus top-2 probability (top-1
        when there is only one class).
    """
    n_rows, n_classes = proba.shape
    if n_rows == 0:
        empty = np.zeros(0, dtype="float64")
        return np.zeros(0, dtype=int), empty, empty.copy(), empty.copy()
    proba = np.clip(proba, 0.0, 1.0)
    predicted = np.argmax(proba, axis=1)
    confidence = proba[np.arange(n_rows), predicted]
    if n_classes > 1:
        top2 = np.partition(proba, n_classes - 2, axis=1)[:, n_classes - 2]
        margin = confidence - top2
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(proba > 0, proba * np.log(proba), 0.0)
        entropy = np.clip(-terms.sum(axis=1) / np.log(n_classes), 0.0, 1.0)
    else:
        margin = confidence.copy()
        entropy = np.zeros(n_rows, dtype="float64")
    return predicted, confidence, margin, entropy


def score_batch(
    model: Any, frame: pd.DataFrame, schema: BatchSchema, *, model_version: str
) -> pd.DataFrame:
    """Score a validated batch.

    Args:
        model: A fitted classifier (for example the pipeline from ``core.training``)
            with ``predict_proba`` and ``classes_``.
        frame: Validated rows (``core.schema.validate_batch``), holding at least the id
            and feature columns.
        schema: The declared schema; its classes fix the probability columns.
        model_version: Recorded on every row so a prediction can be traced to a model.

    Returns:
        One row per input row (index reset), columns in this order: id, time column
        (when the schema declares one and the frame has it), the features, one
        ``proba__<class>`` per schema class, ``predicted_label``, ``confidence`` (top-1
        probability), ``margin`` (top-1 minus top-2), ``entropy`` (natural-log entropy
        divided by ``log(n_classes)``, in [0, 1]) and ``model_version``.
    """
    frame = frame.reset_index(drop=True)
    features = frame[schema.feature_names]
    proba = probability_matrix(model, features, schema.classes)
    predicted, confidence, margin, entropy = uncertainty(proba)

    leading = [schema.id_column]
    if schema.time_column is not None and schema.time_column in frame.columns:
        leading.append(schema.time_column)
    out = frame[leading + schema.feature_names].copy()
    for i, name in enumerate(schema.classes):
        out[proba_column(name)] = proba[:, i]
    out[PREDICTED_LABEL] = np.asarray(schema.classes, dtype=object)[predicted]
    out[CONFIDENCE] = confidence
    out[MARGIN] = margin
    out[ENTROPY] = entropy
    out[MODEL_VERSION] = model_version
    return out
