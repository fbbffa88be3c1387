"""The baselines: which ``k`` items of a scored batch each one would have labelled.

The ``default`` strategy is not here: it is the pipeline's routing (``core.loop``),
replayed by ``benchmark.replay``. ``oracle`` labels everything and ``none`` nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.committee import committee_disagreement
from hitl_pipeline.core.datasets import stable_uniform
from hitl_pipeline.core.types import CONFIDENCE, ENTROPY, ITEM_ID, MARGIN, BatchSchema


@dataclass
class ChooserState:
    """What a baseline may look at: the schema, the repeat's seed and, for the
    committee, members fitted on the champion's training data."""

    schema: BatchSchema
    seed: int
    committee: list[Any] = field(default_factory=list)


Chooser = Callable[[pd.DataFrame, int, ChooserState], np.ndarray]


def _top(values: np.ndarray, k: int, ids: np.ndarray) -> np.ndarray:
    """Positions of the ``k`` largest values, ties broken by id."""
    return np.lexsort((ids, -values))[:k]


def _by_score(score: Callable[[pd.DataFrame], np.ndarray]) -> Chooser:
    def choose(scores: pd.DataFrame, k: int, _state: ChooserState) -> np.ndarray:
        return _top(score(scores), k, scores[ITEM_ID].to_numpy())

    return choose


def _random(scores: pd.DataFrame, k: int, state: ChooserState) -> np.ndarray:
    draw = stable_uniform(scores[ITEM_ID].astype(str), f"random:{state.seed}")
    return np.argsort(draw, kind="stable")[:k]


def _committee(scores: pd.DataFrame, k: int, state: ChooserState) -> np.ndarray:
    if len(state.committee) < 2:
        values = 1.0 - scores[MARGIN].to_numpy()
    else:
        values = committee_disagreement(state.committee, scores, state.schema)
    return _top(values, k, scores[ITEM_ID].to_numpy())


CHOOSERS: dict[str, Chooser] = {
    "random": _random,
    "least_confidence": _by_score(lambda s: 1.0 - s[CONFIDENCE].to_numpy()),
    "margin": _by_score(lambda s: 1.0 - s[MARGIN].to_numpy()),
    "entropy": _by_score(lambda s: s[ENTROPY].to_numpy()),
    "committee": _committee,
}
