"""Labeling: push the items to review into Label Studio with the model's pre-annotation."""

import dagster as dg
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.labeling_config import linear_text_evidence
from hitl_pipeline.core.tiers import EXPERT_REASONS, FeatureRule, TierPolicy, assign_tiers
from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    MODEL_VERSION,
    PREDICTED_LABEL,
    PRIORITY,
    REASONS,
    ROUTE,
    ROUTE_REVIEW,
    LabelingTask,
    PushResult,
)
from hitl_pipeline.defs.io_manager import ROWS_WHERE
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.pools import LABEL_STUDIO_POOL
from hitl_pipeline.defs.preflight import store_failures
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource


class TierConfig(dg.Config):
    """Which reviewed items go to the domain experts' queue instead of general reviewers."""

    expert_classes: list[str] = Field(default_factory=list)
    expert_reasons: list[str] = Field(default_factory=lambda: list(EXPERT_REASONS))
    # rules as "column op value", e.g. "amount > 5000" or 'plan in ["gold"]'
    expert_rules: list[str] = Field(default_factory=list)
    # at most this share of a batch's reviewed items goes to experts for being out of
    # distribution alone (most unfamiliar first); None: no cap
    max_unfamiliar_share: float | None = TierPolicy.max_unfamiliar_share

    def policy(self) -> TierPolicy:
        return TierPolicy(
            expert_classes=tuple(self.expert_classes),
            expert_reasons=tuple(self.expert_reasons),
            expert_rules=tuple(FeatureRule.parse(r) for r in self.expert_rules),
            max_unfamiliar_share=self.max_unfamiliar_share,
        )


def tasks_from_queue(
    queue: pd.DataFrame, features: list[str], partition: str, policy: TierPolicy | None = None
) -> list[LabelingTask]:
    """The review rows of a routed batch as Label Studio tasks, highest priority first,
    each in its tier's queue."""
    review = queue[queue[ROUTE] == ROUTE_REVIEW].sort_values(PRIORITY, ascending=False)
    tiers = assign_tiers(review, policy or TierPolicy())
    return [
        LabelingTask(
            item_id=str(row[ITEM_ID]),
            features={name: _plain(row[name]) for name in features},
            predicted_label=str(row[PREDICTED_LABEL]),
            score=float(row[CONFIDENCE]),
            model_version=str(row[MODEL_VERSION]),
            reasons=tuple(str(row[REASONS]).split(";")),
            tier=str(tier),
            partition=partition,
            priority=float(row[PRIORITY]),
        )
        for tier, (_, row) in zip(tiers, review.iterrows(), strict=True)
    ]


def text_evidence(
    tasks: list[LabelingTask], text_features: list[str], registry: MlflowRegistryResource
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """The words that drove each task's label, by the model version that scored it
    (``core.labeling_config.linear_text_evidence``; none for a schema without text)."""
    if not text_features or not tasks:
        return {}
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for version in sorted({t.model_version for t in tasks}):
        mine = [t for t in tasks if t.model_version == version]
        model = registry.load_model(ref=registry.get_version(version=version))
        frame = pd.DataFrame([dict(t.features) for t in mine])
        words = linear_text_evidence(model, frame, text_features)
        out.update({task.item_id: found for task, found in zip(mine, words, strict=True)})
    return out


def _plain(value: object) -> object:
    """JSON-friendly scalar (numpy types do not serialise)."""
    return value.item() if hasattr(value, "item") else value


@dg.asset(
    partitions_def=BATCH_PARTITIONS,
    group_name="s05_labeling",
    kinds={"labelstudio"},
    pool=LABEL_STUDIO_POOL,
    # only the routed rows of the queue are read (it may hold every row of the batch)
    ins={"review_queue": dg.AssetIn(metadata={ROWS_WHERE: {ROUTE: ROUTE_REVIEW}})},
)
def labeling_tasks(
    context: dg.AssetExecutionContext,
    config: TierConfig,
    review_queue: pd.DataFrame,
    label_studio: LabelStudioResource,
    local_store: LocalStore,
    production: ProductionSource,
    registry: MlflowRegistryResource,
) -> dg.Output[PushResult]:
    """Tasks in Label Studio, one project per tier; re-runs push only what is missing."""
    schema = production.schema()
    tasks = tasks_from_queue(
        review_queue, schema.feature_names, context.partition_key, config.policy()
    )
    with store_failures():
        result = label_studio.push_tasks(
            classes=schema.classes,
            tasks=tasks,
            feature_kinds={f.name: f.kind for f in schema.features},
            evidence=text_evidence(tasks, schema.text_features, registry),
        )
    # after the push: a push that failed half-way is recorded by its re-run
    local_store.record_pushed(
        name=context.partition_key,
        item_ids=[t.item_id for t in tasks],
        tiers=[t.tier for t in tasks],
    )
    per_tier = pd.Series([t.tier for t in tasks], dtype=object).value_counts().to_dict()
    return dg.Output(
        result,
        metadata={
            "tasks_routed": len(tasks),
            "tasks_created": result.created,
            "tasks_already_present": result.already_present,
            "tasks_by_tier": dg.MetadataValue.json({str(k): int(v) for k, v in per_tier.items()}),
            "project": dg.MetadataValue.url(
                f"{label_studio.url.rstrip('/')}/projects/{result.project_id}/data"
            ),
        },
    )
