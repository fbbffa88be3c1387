"""Score a validated batch with a fitted model and keep what later stages decide on.

Besides the predicted label, every row carries the full class probabilities and three
uncertainty figures (confidence, margin, entropy), because routing, drift monitoring and
the loop-health metrics all read them and must not re-score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.types import (
    CONFIDENCE,
    DISAGREEMENT,
    ENTROPY,
    MARGIN,
    MODEL_VERSION,
    OOD_SCORE,
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


def batch_confidence(model: Any, chunks: Iterable[pd.DataFrame], schema: BatchSchema) -> np.ndarray:
    """Each row's confidence (top-class probability) over a batch that comes in chunks.

    Only the confidences are kept (eight bytes a row), so a batch of millions of rows is
    re-scored in the memory of one chunk's features.

    Args:
        model: A fitted classifier with ``predict_proba`` and ``classes_``.
        chunks: Rows with the schema's feature columns, in chunks.
        schema: The declared schema.

    Returns:
        The confidences, in row order (as ``score_batch``'s ``confidence`` column).
    """
    parts = [
        uncertainty(probability_matrix(model, chunk[schema.feature_names], schema.classes))[1]
        for chunk in chunks
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype="float64")


# A step run on each scored chunk with its input rows (``core.loop.escalation_scores``
# bound to the committee and detector): adds the columns routing escalates on.
ChunkExtra = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]


def score_chunks(
    model: Any,
    chunks: Iterable[pd.DataFrame],
    schema: BatchSchema,
    *,
    model_version: str,
    extra: ChunkExtra | None = None,
) -> Iterator[pd.DataFrame]:
    """Score a batch chunk by chunk (``score_batch`` on each), in order.

    Every figure of a row depends on that row alone, so the chunks put together equal
    ``score_batch`` on the whole batch, while only one chunk's scores are in memory.

    Args:
        model: A fitted classifier with ``predict_proba`` and ``classes_``.
        chunks: Validated rows in consecutive chunks (``core.chunks.parquet_chunks``).
        schema: The declared schema.
        model_version: Recorded on every row.
        extra: Called as ``extra(scores, rows)`` on each chunk; returns the scores with
            more columns (committee disagreement, out-of-distribution score).

    Yields:
        ``score_batch`` output per chunk.
    """
    for chunk in chunks:
        rows = chunk.reset_index(drop=True)
        scores = score_batch(model, rows, schema, model_version=model_version)
        if extra is not None:
            scores = extra(scores, rows)
        yield scores


@dataclass
class ScoreSummary:
    """The figures the inference stage reports, accumulated over scored chunks."""

    rows: int = 0
    confidence_sum: float = 0.0
    disagreement_sum: float = 0.0
    disagreement_rows: int = 0
    ood_99: int = 0
    ood_rows: int = 0
    predicted: Counter[str] = field(default_factory=Counter)

    def add(self, scores: pd.DataFrame) -> pd.DataFrame:
        """Count one chunk of scores in; returns it unchanged (to chain in a stream)."""
        self.rows += len(scores)
        if not len(scores):
            return scores
        self.confidence_sum += float(scores[CONFIDENCE].sum())
        self.predicted.update(scores[PREDICTED_LABEL].astype(str).value_counts().to_dict())
        if DISAGREEMENT in scores:
            self.disagreement_sum += float(scores[DISAGREEMENT].sum())
            self.disagreement_rows += len(scores)
        if OOD_SCORE in scores:
            self.ood_99 += int((scores[OOD_SCORE] >= 0.99).sum())
            self.ood_rows += len(scores)
        return scores

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.rows if self.rows else 0.0

    @property
    def mean_disagreement(self) -> float | None:
        return self.disagreement_sum / self.disagreement_rows if self.disagreement_rows else None

    @property
    def share_ood_99(self) -> float | None:
        return self.ood_99 / self.ood_rows if self.ood_rows else None
