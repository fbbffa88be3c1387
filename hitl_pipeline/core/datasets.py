"""Labelled data: resolve annotations to labels, split a holdout, merge into the dataset.

The training dataset is versioned by content hash (DVC), so ``merge_labelled`` is
written to be canonical: the same rows in any order, from any mix of inputs, give the
same frame (sorted by id, fixed columns, fixed dtypes) and therefore the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.types import (
    ANNOTATORS,
    DECIDED_BY,
    ITEM_ID,
    LABEL,
    LABEL_SOURCE,
    LABELLED_AT,
    N_ANNOTATIONS,
    PARTITION,
    BatchSchema,
)

SOURCE_HUMAN = "human"
SOURCE_SEED = "seed"
DECIDED_SINGLE = "single"
DECIDED_MAJORITY = "majority"
DECIDED_LATEST = "latest"
DECIDED_ADJUDICATED = "adjudicated"
ADJUDICATION_TIER = "adjudication"  # core.tiers.TIER_ADJUDICATION (no import cycle)

# provenance columns every dataset row carries after the features and the label
PROVENANCE_COLUMNS = (LABEL_SOURCE, LABELLED_AT, ANNOTATORS, N_ANNOTATIONS, DECIDED_BY, PARTITION)


def stable_uniform(values: Sequence[str] | pd.Series, key: str) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per value, keyed by ``key``.

    Unlike a seeded generator, a value's number does not depend on which other values
    are present or in what order, so an item always lands on the same side of a split
    and a re-run samples the same items.

    Args:
        values: The strings to hash (item ids).
        key: Mixed into every hash (a salt, a seed).

    Returns:
        A float64 array aligned with ``values``.
    """
    out = np.empty(len(values), dtype="float64")
    for i, value in enumerate(values):
        digest = hashlib.sha256(f"{key}\x1f{value}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


# --- annotations -> labels -----------------------------------------------------------
def _empty_labels() -> pd.DataFrame:
    frame = pd.DataFrame(columns=[ITEM_ID, LABEL, *PROVENANCE_COLUMNS])
    frame[LABELLED_AT] = pd.to_datetime(frame[LABELLED_AT], utc=True)
    frame[N_ANNOTATIONS] = frame[N_ANNOTATIONS].astype("int64")
    return frame


def resolve_labels(annotations: pd.DataFrame) -> pd.DataFrame:
    """One label per item from its finished annotations.

    Cancelled (skipped) annotations and annotations without a label are ignored. An
    annotation pulled twice counts once (its latest ``updated_at``), and an annotator
    who answered twice has one vote (their latest). The label is the majority vote; a
    tie goes to the tied label voted most recently (``completed_at``, then the higher
    annotation id), so the result never depends on row order. An answer in the
    adjudication queue (``tier`` "adjudication") overrides the vote: the latest one wins
    and the item is ``decided_by`` "adjudicated".

    Args:
        annotations: One row per annotation, with the fields of ``core.types.Annotation``
            (``features`` a mapping of feature name to value).

    Returns:
        One row per item, sorted by id: ``item_id``, the features (from the item's latest
        annotation), ``label``, ``label_source`` ("human"), ``labelled_at`` (latest
        vote), ``annotators`` (sorted, ";"-joined), ``n_annotations`` (votes),
        ``decided_by`` ("single", "majority", "latest" or "adjudicated") and
        ``partition``.
    """
    if annotations.empty:
        return _empty_labels()
    votes = annotations[~annotations["was_cancelled"].astype(bool) & annotations[LABEL].notna()]
    if votes.empty:
        return _empty_labels()
    votes = votes.assign(
        completed_at=pd.to_datetime(votes["completed_at"], utc=True),
        updated_at=pd.to_datetime(votes["updated_at"], utc=True),
        item_id=votes[ITEM_ID].map(canonical_text),
        label=votes[LABEL].map(canonical_text),
    )
    votes = votes.sort_values(["annotation_id", "updated_at"], kind="mergesort")
    votes = votes.drop_duplicates("annotation_id", keep="last")
    tier = votes["tier"].fillna("").astype(str) if "tier" in votes else ""
    votes = votes.assign(_adjudication=np.asarray(tier == ADJUDICATION_TIER, dtype=bool))
    votes = votes.sort_values(
        [ITEM_ID, "annotator", "_adjudication", "completed_at", "annotation_id"]
    )
    votes = votes.drop_duplicates([ITEM_ID, "annotator", "_adjudication"], keep="last")
    rulings = votes[votes["_adjudication"]].sort_values(
        [ITEM_ID, "completed_at", "annotation_id"], kind="mergesort"
    )
    rulings = rulings.drop_duplicates(ITEM_ID, keep="last").set_index(ITEM_ID)[LABEL]
    ratings = votes[~votes["_adjudication"]]
    # the majority among ratings; an item only adjudicated still gets its ruling below
    majority_pool = pd.concat([ratings, votes[~votes[ITEM_ID].isin(ratings[ITEM_ID])]])

    per_label = (
        majority_pool.groupby([ITEM_ID, LABEL])
        .agg(
            count=("annotation_id", "size"),
            last_at=("completed_at", "max"),
            last_id=("annotation_id", "max"),
        )
        .reset_index()
        .sort_values(
            [ITEM_ID, "count", "last_at", "last_id"], ascending=[True, False, False, False]
        )
    )
    winners = per_label.drop_duplicates(ITEM_ID, keep="first").set_index(ITEM_ID)
    runner_up = per_label[per_label.duplicated(ITEM_ID, keep="first")]
    second = runner_up.drop_duplicates(ITEM_ID, keep="first").set_index(ITEM_ID)["count"]

    latest = votes.sort_values(
        [ITEM_ID, "completed_at", "annotation_id"], kind="mergesort"
    ).drop_duplicates(ITEM_ID, keep="last")
    latest = latest.set_index(ITEM_ID).loc[winners.index]
    n_votes = votes.groupby(ITEM_ID).size().loc[winners.index]
    tied = second.reindex(winners.index).fillna(0).to_numpy() == winners["count"].to_numpy()

    features = pd.DataFrame(
        [dict(f) if isinstance(f, Mapping) else {} for f in latest["features"]],
        index=winners.index,
    )
    features = features.drop(
        columns=[c for c in features.columns if c in {ITEM_ID, LABEL, *PROVENANCE_COLUMNS}]
    )
    out = features.copy()
    out[LABEL] = winners[LABEL].to_numpy()
    out[LABEL_SOURCE] = SOURCE_HUMAN
    out[LABELLED_AT] = votes.groupby(ITEM_ID)["completed_at"].max().loc[winners.index]
    out[ANNOTATORS] = (
        votes.groupby(ITEM_ID)["annotator"]
        .agg(lambda a: ";".join(sorted(map(str, set(a)))))
        .loc[winners.index]
    )
    out[N_ANNOTATIONS] = n_votes.astype("int64").to_numpy()
    out[DECIDED_BY] = np.select(
        [n_votes.to_numpy() == 1, tied], [DECIDED_SINGLE, DECIDED_LATEST], DECIDED_MAJORITY
    )
    ruled = winners.index.isin(rulings.index)
    if ruled.any():
        out.loc[ruled, LABEL] = rulings.reindex(winners.index[ruled]).to_numpy()
        out.loc[ruled, DECIDED_BY] = DECIDED_ADJUDICATED
    out[PARTITION] = latest[PARTITION].to_numpy() if PARTITION in latest else None
    return out.rename_axis(ITEM_ID).reset_index().sort_values(ITEM_ID).reset_index(drop=True)


def split_out_of_schema(
    annotations: pd.DataFrame, classes: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separate annotations whose label is not one of the schema's classes.

    Label Studio stores whatever result an API client posts, and a project's interface
    can drift from the schema; such a label must not become training data, but the
    annotation is kept (in the ledger) and reported rather than dropped.

    Args:
        annotations: One row per annotation.
        classes: The declared classes.

    Returns:
        ``(usable, rejected)``: cancelled annotations stay in ``usable`` (they are
        counted as skips, not as bad labels); ``rejected`` gets a ``reject_reason``.
    """
    if annotations.empty:
        return annotations, annotations.assign(reject_reason=pd.Series(dtype=object))
    labelled = annotations[LABEL].notna()
    if "was_cancelled" in annotations:
        labelled &= ~annotations["was_cancelled"].astype(bool)
    bad = labelled & ~annotations[LABEL].map(canonical_text).isin(set(classes))
    rejected = annotations[bad].assign(
        reject_reason="label not in the schema's classes " + ", ".join(classes)
    )
    return annotations[~bad], rejected


def edge_case_items(annotations: pd.DataFrame, flag: str = "edge case") -> list[str]:
    """Items any reviewer flagged as an edge case (in their latest answer), sorted."""
    if annotations.empty or "flags" not in annotations:
        return []
    latest = annotations.sort_values(["annotation_id", "updated_at"], kind="mergesort")
    latest = latest.drop_duplicates("annotation_id", keep="last")
    flagged = latest["flags"].map(lambda f: flag in tuple(f) if f is not None else False)
    return sorted(set(latest.loc[flagged.astype(bool), ITEM_ID].map(canonical_text)))


# --- holdout ---------------------------------------------------------------------------
def split_holdout(
    frame: pd.DataFrame,
    *,
    fraction: float,
    salt: str,
    start_fraction: float = 0.0,
    start_rows: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into a holdout and the rest by a salted hash of the item id.

    An item always falls on the same side for a given salt, whatever else is in the
    frame, so a label once used for evaluation never leaks into training later.

    With ``start_fraction`` the holdout starts larger: rows of a ``partition`` (batch)
    are held out at ``start_fraction`` until the earlier partitions hold ``start_rows``
    rows below it, and at ``fraction`` from then on. Until that point every partition
    was held out at ``start_fraction``, so the count is the holdout's own; and as labels
    arrive the count only grows, so a partition can only move from the start share to
    ``fraction``: a row leaves the holdout for training, never the other way. Rows
    without a partition (null or empty) are held out at ``fraction``.

    Args:
        frame: Rows with an ``item_id`` column.
        fraction: Expected share of items in the holdout, in [0, 1].
        salt: Keys the hash; a different salt gives an independent split.
        start_fraction: The share while the holdout fills; 0: off. At least
            ``fraction`` when set.
        start_rows: How many held-out rows end the start share.

    Returns:
        ``(holdout, rest)``, both in the input's row order with the index reset.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if start_fraction and not fraction <= start_fraction <= 1.0:
        raise ValueError(f"start_fraction must be 0 or in [fraction, 1], got {start_fraction}")
    ids = frame[ITEM_ID].map(canonical_text).astype(str)
    uniform = stable_uniform(ids, f"holdout:{salt}")
    share = np.full(len(frame), fraction)
    if start_fraction and start_rows > 0 and PARTITION in frame and len(frame):
        share[_filling(frame[PARTITION], uniform < start_fraction, start_rows)] = start_fraction
    in_holdout = uniform < share
    return (
        frame.loc[in_holdout].reset_index(drop=True),
        frame.loc[~in_holdout].reset_index(drop=True),
    )


def _filling(partitions: pd.Series, held: np.ndarray, rows: int) -> np.ndarray:
    """Rows of the partitions before whose turn fewer than ``rows`` were ``held``."""
    keys = partitions.fillna("").astype(str).reset_index(drop=True)
    known = (keys != "").to_numpy()
    per_partition = pd.Series(held[known]).groupby(keys[known].to_numpy()).sum().sort_index()
    before = per_partition.cumsum() - per_partition
    return known & (keys.map(before) < rows).to_numpy()  # no partition: NaN, not filling


# --- the canonical dataset -------------------------------------------------------------
def dataset_columns(schema: BatchSchema) -> list[str]:
    """The column order of a training dataset for ``schema``."""
    return [schema.id_column, *schema.feature_names, schema.target, *PROVENANCE_COLUMNS]


def canonical_dataset(frame: pd.DataFrame, schema: BatchSchema) -> pd.DataFrame:
    """Labelled rows in the dataset's canonical form (columns, dtypes, order).

    Missing provenance columns are filled: ``label_source`` "seed", ``n_annotations``
    0, the rest null. Columns outside ``dataset_columns(schema)`` are dropped, and rows
    without a label too.

    Args:
        frame: Labelled rows with at least the id, the features and the target.
        schema: The declared schema.

    Returns:
        A new frame sorted by id with a fresh index.
    """
    missing = [
        c for c in [schema.id_column, *schema.feature_names, schema.target] if c not in frame
    ]
    if missing:
        raise ValueError(f"labelled frame lacks column(s): {', '.join(missing)}")
    out = pd.DataFrame(index=range(len(frame)))
    source = frame.reset_index(drop=True)
    out[schema.id_column] = source[schema.id_column].map(canonical_text).astype(object)
    for spec in schema.features:
        if spec.kind == "numeric":
            out[spec.name] = pd.to_numeric(source[spec.name], errors="coerce").astype("float64")
        else:
            out[spec.name] = source[spec.name].map(canonical_text).astype(object)
    out[schema.target] = source[schema.target].map(canonical_text).astype(object)
    out[LABEL_SOURCE] = (
        source[LABEL_SOURCE].map(canonical_text).fillna(SOURCE_SEED).astype(object)
        if LABEL_SOURCE in source
        else SOURCE_SEED
    )
    labelled_at = (
        source[LABELLED_AT] if LABELLED_AT in source else pd.Series(pd.NaT, index=out.index)
    )
    out[LABELLED_AT] = pd.to_datetime(labelled_at, utc=True).astype("datetime64[ns, UTC]")
    for column in (ANNOTATORS, DECIDED_BY, PARTITION):
        out[column] = (
            source[column].map(canonical_text).astype(object) if column in source else None
        )
    counts = source.get(N_ANNOTATIONS, 0)
    out[N_ANNOTATIONS] = pd.Series(counts, index=out.index).fillna(0).astype("int64")
    out = out[out[schema.target].notna() & out[schema.id_column].notna()]
    out = out.sort_values(schema.id_column, kind="mergesort").reset_index(drop=True)
    return out[dataset_columns(schema)]


def merge_labelled(base: pd.DataFrame, new: pd.DataFrame, schema: BatchSchema) -> pd.DataFrame:
    """Union of two labelled frames keyed by item id, newest trustworthy label winning.

    Precedence for an item present more than once: a human label beats any other
    source; between two human labels the later ``labelled_at`` wins; on a full tie the
    row from ``new`` wins over ``base`` (and a later row over an earlier one).

    Args:
        base: The current dataset (or the seed rows; a frame without ``label_source``
            counts as seed labels).
        new: Rows to merge in (for example ``resolve_labels`` output).
        schema: The declared schema.

    Returns:
        The merged dataset, sorted by item id, columns ``dataset_columns(schema)``, with
        float64 numerics, ``str`` categoricals/labels/ids, UTC ``labelled_at`` and int64
        ``n_annotations``: identical content gives identical bytes when written.
    """
    parts = [canonical_dataset(base, schema), canonical_dataset(new, schema)]
    stacked = pd.concat(
        [p.assign(_input=i, _row=np.arange(len(p))) for i, p in enumerate(parts)],
        ignore_index=True,
    )
    stacked["_human"] = (stacked[LABEL_SOURCE] == SOURCE_HUMAN).astype(int)
    stacked = stacked.sort_values(
        [schema.id_column, "_human", LABELLED_AT, "_input", "_row"],
        na_position="first",
        kind="mergesort",
    )
    merged = stacked.drop_duplicates(schema.id_column, keep="last")
    merged = merged.sort_values(schema.id_column, kind="mergesort").reset_index(drop=True)
    return merged[dataset_columns(schema)]
