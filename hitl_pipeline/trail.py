"""Gather an item's audit trail from where the loop keeps its records (``hitl-pipeline trail``)."""

from __future__ import annotations

from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.trail import DatasetMembership, ModelUse, item_trail
from hitl_pipeline.core.types import ITEM_ID, LABEL
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import TAG_DATASET_VERSION, MlflowRegistryResource

FRAMES = ("training", "holdout", "human_holdout", "edge_cases")


def trail_for(
    item_id: str,
    *,
    local_store: LocalStore,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
) -> list[str]:
    """The trail of one item (see ``core.trail.item_trail``)."""
    item = str(canonical_text(item_id))
    memberships = []
    for version in dataset_store.list_versions():
        frames = {}
        for name in FRAMES:
            try:  # older versions lack the newer side frames
                frame = dataset_store.load(version_id=version.version_id, name=name)
            except KeyError:
                continue
            hit = frame[frame[ITEM_ID].map(canonical_text) == item]
            if len(hit):
                frames[name] = str(hit[LABEL].iloc[0])
        if frames:
            memberships.append(DatasetMembership(version.version_id, frames))
    models = [
        ModelUse(ref.version, ref.tags.get(TAG_DATASET_VERSION, ""), ref.aliases)
        for ref in registry.list_versions()
    ]
    return item_trail(
        item,
        decisions=local_store.read_tables(kind="decisions"),
        ledger=local_store.read_ledger(),
        datasets=memberships,
        models=models,
    )
