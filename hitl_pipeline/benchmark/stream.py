"""The replayed file: read, typed, ordered and cut into seed and batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hitl_pipeline.benchmark.config import HOLDOUT_SALT, BenchmarkConfig
from hitl_pipeline.core.datasets import split_holdout
from hitl_pipeline.core.text import looks_like_text
from hitl_pipeline.core.types import ITEM_ID, BatchSchema, FeatureSpec

TARGET = "label"


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (optionally compressed) or Parquet file as a frame."""
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def infer_schema(
    frame: pd.DataFrame,
    *,
    target: str,
    max_categories: int = 50,
    text_columns: tuple[str, ...] | None = None,
) -> tuple[BatchSchema, pd.DataFrame]:
    """A ``BatchSchema`` for a labelled frame: numeric, categorical or text per column.

    A column is text when named in ``text_columns`` or, when that is None, when its
    values are long, mostly distinct strings (``core.text.looks_like_text``); numeric
    when every non-null value parses as a number, except integer codes with at most 10
    distinct values stored as text; categorical otherwise. Categorical columns keep
    their ``max_categories`` most frequent levels declared (the rest is encoded as
    unknown).

    Args:
        frame: Feature columns plus ``target`` (and ``item_id``, which is skipped).
        target: The label column.
        max_categories: Most declared levels per categorical column.
        text_columns: The text columns; None: inferred; (): none.

    Returns:
        ``(schema, frame)``: the frame with numerics as float64, categoricals, text and
        the label as ``str`` (nulls kept), the label renamed to ``label``.

    Raises:
        ValueError: When a named text column is not in the frame.
    """
    missing = [c for c in text_columns or () if c not in frame.columns or c == target]
    if missing:
        raise ValueError(
            f"--text-columns names column(s) not among the features: {', '.join(missing)} "
            f"(columns: {', '.join(c for c in frame.columns if c not in (ITEM_ID, target))})"
        )
    out = pd.DataFrame({ITEM_ID: frame[ITEM_ID].astype(str)})
    features: list[FeatureSpec] = []
    for column in frame.columns:
        if column in (ITEM_ID, target):
            continue
        values = frame[column]
        is_text = column in text_columns if text_columns is not None else looks_like_text(values)
        if is_text:
            out[column] = values.map(lambda v: None if pd.isna(v) else str(v)).astype(object)
            features.append(FeatureSpec(column, "text", nullable=bool(values.isna().any())))
            continue
        parsed = pd.to_numeric(values, errors="coerce")
        numeric = bool(parsed.notna().sum() == values.notna().sum()) and values.notna().any()
        whole = bool(np.all(np.mod(parsed.dropna(), 1) == 0))
        if numeric and values.dtype == object and whole and parsed.nunique() <= 10:
            numeric = False  # integer codes written as text: categories, not quantities
        if numeric:
            out[column] = parsed.astype("float64")
            features.append(FeatureSpec(column, "numeric", nullable=bool(parsed.isna().any())))
        else:
            text = values.map(lambda v: None if pd.isna(v) else str(v)).astype(object)
            out[column] = text
            levels = tuple(text.value_counts().index[:max_categories].astype(str))
            features.append(FeatureSpec(column, "categorical", nullable=bool(text.isna().any())))
            del levels  # unknown levels are ignored by the encoder; no closed list needed
    labels = frame[target].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    out[TARGET] = labels
    classes = tuple(sorted(labels.dropna().unique()))
    return BatchSchema(features=tuple(features), classes=classes), out


def load_stream(config: BenchmarkConfig) -> tuple[BatchSchema, pd.DataFrame]:
    """Read, order, cap and type the file; rows without a label are dropped."""
    frame = read_table(Path(config.data))
    if config.target not in frame:
        raise ValueError(f"no column {config.target!r} in {config.data}")
    if config.time_column:
        frame = frame.sort_values(config.time_column, kind="mergesort")
    drop = [c for c in (*config.drop, config.time_column) if c and c in frame]
    frame = frame.drop(columns=drop)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    if config.max_rows is not None:
        frame = frame.head(config.max_rows)
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    frame = frame.drop(columns=unnamed)  # a saved index is not a feature
    frame = frame.rename(columns=str)
    # the replay numbers the rows itself; a file's own id column is no feature
    frame = frame.drop(columns=[ITEM_ID], errors="ignore")
    frame.insert(0, ITEM_ID, [f"r{i:08d}" for i in range(len(frame))])
    return infer_schema(frame, target=config.target, text_columns=config.text_columns)


def split_stream(
    frame: pd.DataFrame, config: BenchmarkConfig
) -> tuple[pd.DataFrame, pd.DataFrame, list[pd.DataFrame]]:
    """Seed training rows, fixed held-out rows and the batches, in time order."""
    if len(frame) < config.seed_rows + config.batch_rows:
        raise ValueError(
            f"{len(frame)} rows: need at least seed_rows + batch_rows "
            f"({config.seed_rows} + {config.batch_rows})"
        )
    seed = frame.iloc[: config.seed_rows]
    fixed, seed_train = split_holdout(seed, fraction=config.holdout_fraction, salt=HOLDOUT_SALT)
    rest = frame.iloc[config.seed_rows :]
    n_batches = len(rest) // config.batch_rows
    batches = [
        rest.iloc[i * config.batch_rows : (i + 1) * config.batch_rows].reset_index(drop=True)
        for i in range(n_batches)
    ]
    return seed_train, fixed, batches
