"""Training: retrain on a dataset version, track it in MLflow, and gate it.

The ``passes_gate`` check is blocking: a challenger that fails it never reaches
``champion_model``, and its reasons are shown in the UI and logged to its MLflow run.
"""

import dagster as dg

from hitl_pipeline.core.gate import FIXED_PREFIX, GatePolicy, decide
from hitl_pipeline.core.training import TrainingParams, evaluate_model, train_model
from hitl_pipeline.core.types import BatchSchema, DatasetVersion, ModelRef
from hitl_pipeline.defs.s03_monitoring import DATASET_VERSION_TAG
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource

_TRAINING = TrainingParams()
_GATE = GatePolicy()


class TrainingConfig(dg.Config):
    estimator: str = _TRAINING.estimator
    seed: int = _TRAINING.seed


class GateConfig(dg.Config):
    tolerance: float = _GATE.tolerance
    min_eval_rows: int = _GATE.min_eval_rows
    fixed_holdout_tolerance: float = _GATE.fixed_holdout_tolerance


def gate_metrics(
    model: object, dataset_store: DvcDatasetStore, version: DatasetVersion, schema: BatchSchema
) -> dict[str, float]:
    """A model's figures on the recent human held-out rows (unprefixed: they decide) and
    on the fixed held-out set of the original regime (prefixed ``fixed_``)."""
    recent = dataset_store.load(version_id=version.version_id, name="human_holdout")
    fixed = dataset_store.load(version_id=version.version_id, name="holdout")
    metrics = evaluate_model(model, recent, schema)
    metrics.update(
        {f"{FIXED_PREFIX}{k}": v for k, v in evaluate_model(model, fixed, schema).items()}
    )
    return metrics


@dg.asset(group_name="s08_training", kinds={"mlflow", "scikitlearn"})
def candidate_model(
    config: TrainingConfig,
    training_dataset: DatasetVersion,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
    production: ProductionSource,
) -> dg.Output[ModelRef]:
    """A model retrained on the dataset version, registered in MLflow as a challenger."""
    schema = production.schema()
    params = TrainingParams.from_dict({**_TRAINING.to_dict(), **config.model_dump()})
    frame = dataset_store.load(version_id=training_dataset.version_id)
    result = train_model(frame, schema, params)
    held_out = gate_metrics(result.model, dataset_store, training_dataset, schema)
    metrics = {**result.metrics, **{f"heldout_{k}": v for k, v in held_out.items()}}
    ref = registry.log_candidate(
        model=result.model,
        params=params.to_dict(),
        metrics=metrics,
        tags={DATASET_VERSION_TAG: training_dataset.version_id},
        dataset=training_dataset,
        input_example=frame[schema.feature_names].head(5),
    )
    return dg.Output(
        ref,
        metadata={
            "model_version": ref.version,
            "dataset_version": training_dataset.version_id,
            "training_rows": len(frame),
            "recent_heldout_accuracy": float(held_out["accuracy"]),
            "recent_heldout_rows": int(held_out["n_rows"]),
            "fixed_heldout_accuracy": float(held_out[f"{FIXED_PREFIX}accuracy"]),
        },
    )


@dg.asset_check(
    asset=candidate_model,
    blocking=True,
    additional_ins={"training_dataset": dg.AssetIn()},
    description="The challenger replaces the champion only if it does at least as well on "
    "the recent held-out human labels and does not lose more than a tolerance on the fixed "
    "held-out set.",
)
def passes_gate(
    config: GateConfig,
    candidate_model: ModelRef,
    training_dataset: DatasetVersion,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
    production: ProductionSource,
) -> dg.AssetCheckResult:
    schema = production.schema()
    champion = registry.champion()
    challenger_metrics = gate_metrics(
        registry.load_model(ref=candidate_model), dataset_store, training_dataset, schema
    )
    champion_metrics = (
        gate_metrics(registry.load_model(ref=champion), dataset_store, training_dataset, schema)
        if champion is not None and champion.version != candidate_model.version
        else None
    )
    decision = decide(
        challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics,
        policy=GatePolicy(
            tolerance=config.tolerance,
            min_eval_rows=config.min_eval_rows,
            fixed_holdout_tolerance=config.fixed_holdout_tolerance,
        ),
    )
    registry.log_gate_decision(ref=candidate_model, decision=decision)
    return dg.AssetCheckResult(
        passed=decision.promote,
        description="; ".join(decision.reasons),
        metadata={
            "challenger_version": candidate_model.version,
            "champion_version": champion.version if champion else "none",
            "challenger_accuracy": float(challenger_metrics["accuracy"]),
            "champion_accuracy": float(champion_metrics["accuracy"])
            if champion_metrics
            else float("nan"),
            "evaluated_rows": decision.evaluated_rows,
        },
    )


def _get(metrics: dict[str, float] | None, key: str) -> float:
    return float(metrics[key]) if metrics else float("nan")
