"""Committee disagreement: where models that saw slightly different data disagree.

Two sources of a committee, both plain scikit-learn models:

- in the pipeline, the champion and the previous champion (already registered, so it
  costs one extra ``predict_proba`` and no training);
- in the benchmark (or offline), a small bootstrap committee from ``fit_committee``.

Disagreement is the mean pairwise total-variation distance between the members' class
probabilities, in [0, 1]: 0 when all agree exactly, 1 when two members put all their
mass on different classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.inference import probability_matrix
from hitl_pipeline.core.training import TrainingParams, train_model
from hitl_pipeline.core.types import BatchSchema


def disagreement(probas: Sequence[np.ndarray]) -> np.ndarray:
    """Mean pairwise total-variation distance between members' probabilities.

    Args:
        probas: One (rows, classes) array per member, classes in the same order.

    Returns:
        One value in [0, 1] per row; zeros when there are fewer than two members.
    """
    if len(probas) < 2:
        rows = probas[0].shape[0] if probas else 0
        return np.zeros(rows, dtype="float64")
    total = np.zeros(probas[0].shape[0], dtype="float64")
    pairs = 0
    for i in range(len(probas)):
        for j in range(i + 1, len(probas)):
            total += 0.5 * np.abs(probas[i] - probas[j]).sum(axis=1)
            pairs += 1
    return np.clip(total / pairs, 0.0, 1.0)


def fit_committee(
    frame: pd.DataFrame,
    schema: BatchSchema,
    params: TrainingParams,
    *,
    members: int = 3,
    seed: int = 0,
    max_iter: int | None = 60,
) -> list[Any]:
    """Fit members on bootstrap resamples of the labelled rows.

    Args:
        frame: Labelled rows, as for ``core.training.train_model``.
        schema: The declared schema.
        params: Training parameters; each member gets its own seed and, when
            ``max_iter`` is given, fewer rounds (members only need to disagree where
            the data is thin, not to be as good as the champion).
        members: Committee size.
        seed: Seeds the resamples.
        max_iter: Rounds per member (None keeps ``params.max_iter``).

    Returns:
        The fitted members (plain scikit-learn pipelines).
    """
    rng = np.random.default_rng(seed)
    labelled = frame[frame[schema.target].notna()].reset_index(drop=True)
    out = []
    for k in range(members):
        sample = labelled.iloc[rng.integers(0, len(labelled), size=len(labelled))]
        # bootstrap duplicates share an id; train_model sorts by id (stable), fine
        member_params = dataclasses.replace(
            params, seed=params.seed + k + 1, max_iter=max_iter or params.max_iter
        )
        try:
            out.append(train_model(sample, schema, member_params).model)
        except ValueError:  # a resample with a single class: skip the member
            continue
    return out


def committee_disagreement(
    models: Sequence[Any], frame: pd.DataFrame, schema: BatchSchema
) -> np.ndarray:
    """Disagreement of fitted models on rows (see ``disagreement``)."""
    features = frame[schema.feature_names]
    return disagreement([probability_matrix(m, features, schema.classes) for m in models])
