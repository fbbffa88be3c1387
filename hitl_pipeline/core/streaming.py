"""A production batch from landing file to review queue, one chunk at a time.

The stages that touch every row (``defs/s01`` ... ``defs/s04``) call these functions on
Parquet files, and ``hitl-pipeline benchmark-scale`` replays them, so the figures it
prints are those of the pipeline's own code. Nothing here holds a whole batch: rows are
read by record batch (``chunk_rows`` rows), written by row group, and the two steps that
need the whole batch see a bounded part of it (drift: a seeded sample,
``DriftPolicy.sample_rows``; routing: the candidates ``BatchRouter`` keeps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hitl_pipeline.core.chunks import DEFAULT_CHUNK_ROWS, ParquetSink, parquet_chunks, parquet_rows
from hitl_pipeline.core.inference import ChunkExtra, ScoreSummary, score_chunks
from hitl_pipeline.core.routing import BatchRouter, RoutingPlan, RoutingPolicy
from hitl_pipeline.core.schema import QUARANTINE_REASON, canonical_text, validate_batch
from hitl_pipeline.core.types import (
    MODEL_VERSION,
    PROBA_PREFIX,
    REASONS,
    ROUTE,
    ROUTE_REVIEW,
    BatchSchema,
)


@dataclass(frozen=True)
class IngestResult:
    """What validating a batch chunk by chunk left behind.

    Attributes:
        valid_rows: Rows written to the validated file.
        quarantined_rows: Rows set aside.
        quarantine_reasons: Rows per reason (the ten most frequent).
        quarantine_file: Where the quarantined rows are; None when there are none.
    """

    valid_rows: int
    quarantined_rows: int
    quarantine_reasons: dict[str, int]
    quarantine_file: Path | None


def repeated_id_hashes(id_chunks: Iterable[pd.Series]) -> np.ndarray:
    """The 64-bit hashes of ids that occur more than once in a whole batch.

    A pass over the id column alone, eight bytes a row (80 MB for ten million rows):
    with it, ``validate_chunks`` quarantines a duplicate that lands in a later chunk than
    its first occurrence, which one chunk alone cannot see.

    Args:
        id_chunks: The batch's id column, in chunks, as landed (canonicalised here the
            way validation does, so ``17.0`` and ``"17"`` are one id).
    """
    parts = []
    for ids in id_chunks:
        if pd.api.types.infer_dtype(ids, skipna=True) == "string":
            # text ids (as Parquet keeps them) are their own canonical text: no per-row
            # call (a quarter of this pass)
            canonical = ids.astype(object).fillna("")
        else:
            canonical = ids.map(canonical_text).astype(object).fillna("")
        parts.append(pd.util.hash_array(canonical.to_numpy(dtype=object)))
    if not parts:
        return np.empty(0, dtype=np.uint64)
    hashes = np.sort(np.concatenate(parts))
    return np.unique(hashes[1:][hashes[1:] == hashes[:-1]])


def _later_duplicates(
    valid: pd.DataFrame, id_column: str, repeated: np.ndarray, first_seen: set[str]
) -> pd.Series:
    """Rows whose id an earlier chunk already held (only ids among ``repeated`` are
    looked at, and only those are remembered in ``first_seen``)."""
    ids = valid[id_column].astype(object)
    hashes = pd.util.hash_array(ids.fillna("").to_numpy(dtype=object))
    maybe = np.isin(hashes, repeated)
    later = np.zeros(len(valid), dtype=bool)
    for row in np.flatnonzero(maybe):
        item = ids.iloc[row]
        if item in first_seen:
            later[row] = True
        else:
            first_seen.add(item)
    return pd.Series(later, index=valid.index)


def validate_chunks(
    chunks: Iterable[pd.DataFrame],
    schema: BatchSchema,
    *,
    valid_path: str | Path,
    quarantine_path: str | Path,
    repeated_ids: np.ndarray | None = None,
) -> IngestResult:
    """Validate a landed batch chunk by chunk (``core.schema.validate_batch``).

    Each chunk is held to the batch rules on its own (a chunk mostly broken fails the
    batch); a batch of one chunk is validated exactly as a whole. Ids are checked for
    duplicates within a chunk, and, given ``repeated_ids``, across chunks: the first
    occurrence is kept and every later one quarantined, as in a single frame.

    Args:
        chunks: The landed rows, in chunks (``core.chunks.parquet_chunks``).
        schema: The declared schema.
        valid_path: Where the valid rows go (Parquet, written atomically).
        quarantine_path: Where quarantined rows go (removed when there are none).
        repeated_ids: ``repeated_id_hashes`` of the batch's id column.

    Raises:
        BatchSchemaError: When a chunk cannot be used (nothing is written then).
    """
    reasons: dict[str, int] = {}
    quarantined = 0
    quarantine = Path(quarantine_path)
    bad_sink = ParquetSink(quarantine)
    try:
        with ParquetSink(valid_path) as sink:
            seen = False
            first_seen: set[str] = set()
            for chunk in chunks:
                seen = True
                checked = validate_batch(chunk, schema)
                valid, bad = checked.valid, checked.quarantined
                if repeated_ids is not None and len(repeated_ids) and len(valid):
                    later = _later_duplicates(valid, schema.id_column, repeated_ids, first_seen)
                    if later.any():
                        dupes = valid[later].copy()
                        dupes[QUARANTINE_REASON] = [
                            f"duplicate {schema.id_column} {v!r}" for v in dupes[schema.id_column]
                        ]
                        valid = valid[~later]
                        bad = pd.concat([bad, dupes], ignore_index=True)
                sink.write(valid)
                if len(bad):
                    quarantined += len(bad)
                    for reason, count in bad[QUARANTINE_REASON].value_counts().items():
                        reasons[str(reason)] = reasons.get(str(reason), 0) + int(count)
                    bad_sink.write(
                        bad.astype({c: str for c in bad.columns if bad[c].dtype == object})
                    )
            if not seen:
                validate_batch(pd.DataFrame(), schema)  # raises, naming what is missing
    except BaseException:
        bad_sink.abort()
        raise
    if quarantined:
        bad_sink.close()
    else:
        bad_sink.abort()
        quarantine.unlink(missing_ok=True)  # a corrected re-run clears the old quarantine
    top = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    return IngestResult(
        valid_rows=parquet_rows(valid_path),
        quarantined_rows=quarantined,
        quarantine_reasons=top,
        quarantine_file=quarantine if quarantined else None,
    )


def score_file(
    model: Any,
    source: str | Path,
    target: str | Path,
    schema: BatchSchema,
    *,
    model_version: str,
    extra: ChunkExtra | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ScoreSummary:
    """``score_to_file`` on a validated Parquet file, ``chunk_rows`` rows at a time."""
    return score_to_file(
        model,
        parquet_chunks(source, chunk_rows),
        target,
        schema,
        model_version=model_version,
        extra=extra,
    )


def score_to_file(
    model: Any,
    chunks: Iterable[pd.DataFrame],
    target: str | Path,
    schema: BatchSchema,
    *,
    model_version: str,
    extra: ChunkExtra | None = None,
) -> ScoreSummary:
    """Score a validated batch chunk by chunk into a Parquet file of predictions.

    Args:
        model: The champion.
        chunks: Validated rows, in chunks.
        target: Where the scores go (``score_batch`` columns plus what ``extra`` adds).
        schema: The declared schema.
        model_version: Recorded on every row.
        extra: ``core.loop.escalation_scores`` bound to the committee and detector.

    Returns:
        The stage's figures.
    """
    summary = ScoreSummary()
    with ParquetSink(target) as sink:
        for scores in score_chunks(model, chunks, schema, model_version=model_version, extra=extra):
            sink.write(summary.add(scores))
    return summary


def routing_policy(policy: RoutingPolicy, threshold: float | None) -> RoutingPolicy:
    """The policy with the re-fitted confidence threshold, when there is one (clipped)."""
    if threshold is None:
        return policy
    return replace(policy, confidence_threshold=min(max(float(threshold), 0.0), 1.0))


@dataclass(frozen=True)
class RoutedFile:
    """A routed batch: every row's decision on disk, the review queue in memory.

    Attributes:
        plan: The decisions (``RoutingPlan``), with the number of candidates kept.
        review: The rows routed to people, with every ``route_predictions`` column.
        reasons: Rows per reason code over the whole batch.
    """

    plan: RoutingPlan
    review: pd.DataFrame
    reasons: dict[str, int]


def route_file(
    source: str | Path,
    target: str | Path,
    policy: RoutingPolicy,
    schema: BatchSchema,
    *,
    threshold: float | None = None,
    drift: bool = False,
    drifted_columns: Sequence[str] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> RoutedFile:
    """``route_chunks`` on a Parquet file of scores."""
    return route_chunks(
        lambda columns: parquet_chunks(source, chunk_rows, columns=columns),
        target,
        policy,
        schema,
        total_rows=parquet_rows(source),
        columns=pq.ParquetFile(source).schema_arrow.names,
        threshold=threshold,
        drift=drift,
        drifted_columns=drifted_columns,
    )


def route_chunks(
    read: Callable[[list[str] | None], Iterable[pd.DataFrame]],
    target: str | Path,
    policy: RoutingPolicy,
    schema: BatchSchema,
    *,
    total_rows: int,
    columns: Sequence[str],
    threshold: float | None = None,
    drift: bool = False,
    drifted_columns: Sequence[str] = (),
) -> RoutedFile:
    """Route a batch of scores in two passes (``BatchRouter``), writing every decision.

    Args:
        read: ``read(columns)`` yields the scores in chunks, in the same order each time
            (``columns`` None: every column).
        target: Where every row's decision goes (``route_predictions`` columns, Parquet).
        policy: The routing settings.
        schema: The batch schema.
        total_rows: Rows in the batch.
        columns: The columns of the scores.
        threshold: The re-fitted confidence threshold (None: the policy's).
        drift: Route as the drift response.
        drifted_columns: Columns the drift check flagged.
    """
    policy = routing_policy(policy, threshold)
    router = BatchRouter(policy, drift=drift, total_rows=total_rows)
    # the first pass never needs the probability columns or the model version
    needed = [c for c in columns if not c.startswith(PROBA_PREFIX) and c != MODEL_VERSION]
    for chunk in read(needed):
        router.add(chunk)
    plan = router.plan(schema=schema, drifted_columns=drifted_columns)
    review: list[pd.DataFrame] = []
    reasons: dict[str, int] = {}
    first = 0
    with ParquetSink(target) as sink:
        for chunk in read(None):
            routed = plan.apply(chunk, first_row=first)
            first += len(chunk)
            sink.write(routed)
            review.append(routed[routed[ROUTE] == ROUTE_REVIEW])
            # a handful of distinct reason strings: split each once, not every row's
            for text, count in routed[REASONS].value_counts().items():
                for code in str(text).split(";"):
                    reasons[code] = reasons.get(code, 0) + int(count)
    queue = pd.concat(review, ignore_index=True) if review else pd.DataFrame()
    return RoutedFile(plan=plan, review=queue, reasons=reasons)
