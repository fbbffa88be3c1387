"""Gather an item's audit trail from where the loop keeps its records (``hitl-pipeline trail``).

Reading every frame of every dataset version through DVC costs about 0.15 s a frame, so a
trail over a long-running loop took as long as its history. Dataset versions never change:
each version's item ids and labels are kept once, as a small index beside the loop's
other tables (``$HITL_HOME/cache/trail_index/<version>-<key>.parquet``, the key a hash
of the frames' md5s), and a frame shared by several versions (the fixed held-out set)
is read once. Of the routing decisions, only the item's rows and the columns the trail
shows are read (a Parquet filter on the id), so batches of millions of rows cost a pass
over their id column, not every decision in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hitl_pipeline.core.intake import QUARANTINE_REASON
from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.trail import DatasetMembership, ModelUse, QueuedTask, item_trail
from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    LABEL,
    MODEL_VERSION,
    PREDICTED_LABEL,
    REASONS,
    ROUTE,
    TIER,
    DatasetVersion,
)
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.label_studio import LabelStudioResource, LabelStudioUnavailable
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import TAG_DATASET_VERSION, MlflowRegistryResource

FRAMES = ("training", "holdout", "human_holdout", "edge_cases")
INDEX_KIND = "cache/trail_index"
_FRAME, _MD5 = "frame", "md5"
DECISIONS_KIND = "decisions"
# what core.trail.item_trail shows of a routing decision
DECISION_COLUMNS = (ITEM_ID, ROUTE, REASONS, MODEL_VERSION, PREDICTED_LABEL, CONFIDENCE, TIER)


def _frame_md5s(version: DatasetVersion) -> dict[str, str]:
    """Frame name -> md5 of the frames the trail reads (older versions lack side frames)."""
    names = {
        path.rsplit("/", 1)[-1].removesuffix(".parquet"): md5 for path, md5 in version.files.items()
    }
    return {name: md5 for name, md5 in names.items() if name in FRAMES}


def version_index(
    version: DatasetVersion,
    *,
    dataset_store: DvcDatasetStore,
    local_store: LocalStore,
    frames: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """Every (item, frame, label) of one dataset version, from the kept index when its
    md5s still match, else read through DVC and kept.

    Args:
        version: The dataset version.
        dataset_store: Where its frames are.
        local_store: Where the index is kept.
        frames: md5 -> (item, label) rows already read in this call, shared across versions.
    """
    md5s = _frame_md5s(version)
    # the name carries the frames' md5s: a version id reused for other content (a
    # repository rebuilt under the same home) never finds a stale index
    key = hashlib.sha1(json.dumps(md5s, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{version.version_id}-{key}"
    kept = local_store.read_table(kind=INDEX_KIND, name=name)
    if kept is not None:
        return kept
    parts = []
    for name, md5 in sorted(md5s.items()):
        if md5 not in frames:
            frame = dataset_store.load(version_id=version.version_id, name=name)
            frames[md5] = pd.DataFrame(
                {
                    ITEM_ID: frame[ITEM_ID].map(lambda v: str(canonical_text(v))),
                    LABEL: frame[LABEL].astype(str),
                }
            )
        parts.append(frames[md5].assign(**{_FRAME: name, _MD5: md5}))
    index = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=[ITEM_ID, LABEL, _FRAME, _MD5])
    )
    local_store.write_table(kind=INDEX_KIND, name=name, frame=index)
    return index


def memberships(
    item: str, *, dataset_store: DvcDatasetStore, local_store: LocalStore
) -> list[DatasetMembership]:
    """The dataset versions that hold the item, with the label each frame holds."""
    out = []
    frames: dict[str, pd.DataFrame] = {}
    for version in dataset_store.list_versions():
        index = version_index(
            version, dataset_store=dataset_store, local_store=local_store, frames=frames
        )
        hit = index[index[ITEM_ID] == item].drop_duplicates(_FRAME)
        if len(hit):
            held = dict(zip(hit[_FRAME], hit[LABEL], strict=True))
            out.append(DatasetMembership(version.version_id, held))
    return out


def item_decisions(item: str, *, local_store: LocalStore) -> pd.DataFrame:
    """The item's routing decisions in every kept batch, with the batch in a ``table``
    column; empty when no batch holds it.

    Args:
        item: The canonical item id (``core.schema.canonical_text``).
        local_store: Where ``review_queue`` keeps each batch's decisions.
    """
    frames = []
    for name in local_store.table_names(kind=DECISIONS_KIND):
        rows = _item_rows(local_store.table_path(kind=DECISIONS_KIND, name=name), item)
        if len(rows):
            frames.append(rows.assign(table=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _item_rows(path: Path, item: str) -> pd.DataFrame:
    """One decisions table's rows of ``item``, in the trail's columns only."""
    schema = pq.read_schema(path)
    columns = [c for c in DECISION_COLUMNS if c in schema.names]
    if ITEM_ID not in columns:
        return pd.DataFrame()
    id_type = schema.field(ITEM_ID).type
    if pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
        # validation stores ids as their canonical text: an equality filter finds them
        return pq.read_table(path, columns=columns, filters=pc.field(ITEM_ID) == item).to_pandas()
    # ids kept in another type (a table written before ids were canonical): compare as
    # the trail does, on the id column alone first
    ids = pq.read_table(path, columns=[ITEM_ID]).column(ITEM_ID).to_pandas()
    rows = np.flatnonzero(ids.map(lambda v: str(canonical_text(v))).to_numpy() == item)
    if not len(rows):
        return pd.DataFrame()
    return pq.read_table(path, columns=columns).take(pa.array(rows)).to_pandas()


def _queued(
    item: str, label_studio: LabelStudioResource | None, pushed: Mapping[str, list[str]]
) -> tuple[list[QueuedTask], str | None]:
    tiers = [tier for tier, items in pushed.items() if item in items]
    if label_studio is None or not tiers:
        return [], None  # never pushed: Label Studio has no task for it
    try:
        return label_studio.item_tasks(item_id=item, tiers=tiers), None
    except LabelStudioUnavailable as exc:
        if "not reachable" in str(exc):
            return [], f"Label Studio not reachable at {label_studio.url}"
        return [], f"Label Studio could not be asked ({exc})"


def trail_for(
    item_id: str,
    *,
    local_store: LocalStore,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
    label_studio: LabelStudioResource | None = None,
) -> list[str]:
    """The trail of one item (see ``core.trail.item_trail``).

    With ``label_studio``, an item that was pushed for review is also looked up there, so
    that answers given since the last pull show as such rather than as "no annotation".
    """
    item = str(canonical_text(item_id))
    # MLflow's imports and store set-up take as long as the rest: they run alongside
    with ThreadPoolExecutor(max_workers=1) as pool:
        versions = pool.submit(registry.list_versions)
        every = local_store.read_ledger(include_quarantined=True)
        canonical = every[ITEM_ID].map(lambda v: str(canonical_text(v))) if len(every) else None
        mine = every[canonical == item] if canonical is not None else every
        pulled = mine.groupby(TIER).size().to_dict() if len(mine) else {}
        queued, queue_error = _queued(item, label_studio, local_store.read_pushed())
        datasets = memberships(item, dataset_store=dataset_store, local_store=local_store)
        models = [
            ModelUse(ref.version, ref.tags.get(TAG_DATASET_VERSION, ""), ref.aliases)
            for ref in versions.result()
        ]
    return item_trail(
        item,
        decisions=item_decisions(item, local_store=local_store),
        ledger=every[every[QUARANTINE_REASON] == ""].reset_index(drop=True),
        datasets=datasets,
        models=models,
        queued=queued,
        pulled={str(k): int(v) for k, v in pulled.items()},
        queue_error=queue_error,
    )
