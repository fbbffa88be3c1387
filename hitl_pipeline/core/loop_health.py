"""Health of the loop itself, from the annotations people made.

Each function returns None when there is nothing to measure (no annotations yet), which
the UI shows as a gap rather than as a misleading 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from hitl_pipeline.core.routing import REASON_AUDIT, has_reason
from hitl_pipeline.core.types import LABEL, PREDICTED_LABEL


def _finished(annotations: pd.DataFrame) -> pd.DataFrame:
    """Annotations that carry a label (not cancelled) next to a model prediction."""
    if annotations.empty:
        return annotations
    keep = annotations[LABEL].notna() & annotations[PREDICTED_LABEL].notna()
    if "was_cancelled" in annotations:
        keep &= ~annotations["was_cancelled"].astype(bool)
    return annotations[keep]


def correction_rate(annotations: pd.DataFrame) -> float | None:
    """Share of annotations whose label differs from the model's prediction.

    Args:
        annotations: One row per annotation (fields of ``core.types.Annotation``).

    Returns:
        The share in [0, 1] among non-cancelled annotations with both a label and a
        prediction, or None when there are none.
    """
    done = _finished(annotations)
    if done.empty:
        return None
    differs = done[LABEL].astype(str) != done[PREDICTED_LABEL].astype(str)
    return float(differs.mean())


def audit_pass_rate(annotations: pd.DataFrame) -> float | None:
    """Share of audit annotations that confirmed the model's prediction.

    The audit sample is uniform over auto-accepted items, so this estimates the
    accuracy of what nobody reviewed.

    Args:
        annotations: One row per annotation, with ``reasons`` (tuple of codes or a
            ";"-joined string).

    Returns:
        The share in [0, 1] among finished annotations of audited items, or None when
        there are none.
    """
    done = _finished(annotations)
    if done.empty or "reasons" not in done:
        return None
    audited = done[has_reason(done["reasons"], REASON_AUDIT)]
    if audited.empty:
        return None
    return float((audited[LABEL].astype(str) == audited[PREDICTED_LABEL].astype(str)).mean())


def label_counts(
    labels: pd.DataFrame | pd.Series,
    *,
    classes: Sequence[str] = (),
    column: str = LABEL,
) -> dict[str, int] | None:
    """How many labels of each class.

    Args:
        labels: A frame with a label column, or the label Series itself.
        classes: Classes to report even when absent (count 0), in this order; other
            labels follow in sorted order.
        column: The label column of a frame.

    Returns:
        Class -> count, or None when there are no labels.
    """
    series = labels if isinstance(labels, pd.Series) else labels[column]
    series = series.dropna().astype(str)
    if series.empty:
        return None
    counts = series.value_counts()
    ordered = [*classes, *sorted(set(counts.index) - set(classes))]
    return {name: int(counts.get(name, 0)) for name in ordered}
