"""Training: retrain on a dataset version, track it in MLflow, and gate it.

The ``passes_gate`` check is blocking: a challenger that fails it never reaches
``champion_model``. Its verdict, the reasons and every check's figures are shown in the
UI (check metadata) and logged to the candidate's MLflow run and model version.
"""

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from hitl_pipeline.core.gate import EDGE_CASES, HOLDOUT, HUMAN_HOLDOUT, GatePolicy, failed_checks
from hitl_pipeline.core.loop import SELECTION, TRAINING, judge_challenger, train_challenger
from hitl_pipeline.core.routing import RoutingPolicy
from hitl_pipeline.core.training import TrainingParams, evaluate_frames, model_factory_version
from hitl_pipeline.core.types import DatasetVersion, GateDecision, ModelRef
from hitl_pipeline.defs.config import SettingsConfig, config_class
from hitl_pipeline.defs.s03_monitoring import DATASET_VERSION_TAG
from hitl_pipeline.faults import fault_point
from hitl_pipeline.resources.dvc_store import DATA_DIR, DvcDatasetStore
from hitl_pipeline.resources.mlflow_registry import (
    TAG_DAGSTER_RUN_ID,
    TAG_ROUTING_POLICY,
    MlflowRegistryResource,
)
from hitl_pipeline.resources.production import ProductionSource

if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    TrainingConfig = SettingsConfig
else:
    TrainingConfig = config_class(
        TrainingParams,
        "TrainingConfig",
        doc="Training tunables, generated from core.training.TrainingParams (see its docs).",
    )
if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    GateConfig = SettingsConfig
else:
    GateConfig = config_class(
        GatePolicy,
        "GateConfig",
        doc="Gate tunables, generated from core.gate.GatePolicy (see its docs).",
    )
ROUTING_ASSET = dg.AssetKey("review_queue")
# the user's model: which factory built it and the version of its code
TAG_MODEL_FACTORY = "hitl.model_factory"
TAG_MODEL_FACTORY_VERSION = "hitl.model_factory_version"
EVAL_FRAMES = (HOLDOUT, HUMAN_HOLDOUT, EDGE_CASES)


def load_frames(
    store: DvcDatasetStore,
    version: DatasetVersion,
    names: tuple[str, ...] = (HOLDOUT, HUMAN_HOLDOUT, EDGE_CASES),
) -> dict[str, pd.DataFrame | None]:
    """Frames of a dataset version by name; None for a frame it does not hold."""
    return {
        name: store.load(version_id=version.version_id, name=name)
        if f"{DATA_DIR}/{name}.parquet" in version.files
        else None
        for name in names
    }


def routing_lineage(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The routing configuration that produced the labels, as far as it is known.

    The :class:`RoutingPolicy` defaults, overlaid with the run config of the latest
    ``review_queue`` materialization (what a person may have changed in the launchpad).
    """
    lineage: dict[str, Any] = {"policy_defaults": dataclasses.asdict(RoutingPolicy())}
    event = instance.get_latest_materialization_event(ROUTING_ASSET)
    run = instance.get_run_by_id(event.run_id) if event is not None else None
    if run is not None:
        run_config: dict[str, Any] = dict(run.run_config or {})
        ops: dict[str, Any] = run_config.get("ops", {})
        lineage["latest_run_id"] = run.run_id
        lineage["latest_run_config"] = ops.get(ROUTING_ASSET.path[-1], {}).get("config", {})
    return lineage


@dg.asset(group_name="s08_training", kinds={"mlflow", "scikitlearn"})
def candidate_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    training_dataset: DatasetVersion,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
    production: ProductionSource,
) -> dg.Output[ModelRef]:
    """A model retrained on the dataset version, registered in MLflow as a challenger.

    Its model version records the lineage: dataset version and md5 of every frame
    (training, held-out, edge cases), code version, parameters and routing configuration;
    with ``model_factory`` set, the factory and its code version too.
    """
    schema = production.schema()
    params = config.to_settings()
    frame = dataset_store.load(version_id=training_dataset.version_id)
    loaded = load_frames(dataset_store, training_dataset, (SELECTION, *EVAL_FRAMES))
    # the training variant is chosen on the selection rows, never on the gate's rows
    result = train_challenger({**loaded, TRAINING: frame}, schema, params)
    frames = {k: v for k, v in loaded.items() if v is not None and k in EVAL_FRAMES}
    held_out = evaluate_frames(result.model, frames, schema)
    metrics = {
        **result.metrics,
        **{f"heldout.{s}.{k}": v for s, values in held_out.items() for k, v in values.items()},
    }
    factory_tags = (
        {
            TAG_MODEL_FACTORY: params.model_factory,
            TAG_MODEL_FACTORY_VERSION: model_factory_version(params.model_factory),
        }
        if params.model_factory
        else {}
    )
    fault_point("training.before_register")
    ref = registry.log_candidate(
        model=result.model,
        params=params.to_dict(),
        metrics=metrics,
        tags={
            DATASET_VERSION_TAG: training_dataset.version_id,
            TAG_DAGSTER_RUN_ID: context.run_id,
            TAG_ROUTING_POLICY: json.dumps(routing_lineage(context.instance), sort_keys=True),
            **factory_tags,
        },
        dataset=training_dataset,
        input_example=frame[schema.feature_names].head(5),
    )
    return dg.Output(
        ref,
        metadata={
            **mlflow_links(registry, ref),
            "model_version": ref.version,
            "dataset_version": training_dataset.version_id,
            "training_rows": len(frame),
            "model": params.model_factory or params.resolved_estimator(schema),
            **{
                f"{s}_accuracy": float(values.get("accuracy", float("nan")))
                for s, values in held_out.items()
            },
            **{f"{s}_rows": int(values["n_rows"]) for s, values in held_out.items()},
        },
    )


@dg.asset_check(
    asset=candidate_model,
    blocking=True,
    additional_ins={"training_dataset": dg.AssetIn()},
    description="The challenger replaces the champion only if, with paired bootstrap "
    "intervals, it is not worse overall on the recent human held-out rows nor on the fixed "
    "held-out set, no class or segment slice regresses, it passes the edge-case set and "
    "stays calibrated; too little evidence is reported, never guessed.",
)
def passes_gate(
    config: GateConfig,
    candidate_model: ModelRef,
    training_dataset: DatasetVersion,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
    production: ProductionSource,
) -> dg.AssetCheckResult:
    schema, policy = production.schema(), config.to_settings()
    champion = registry.champion()
    if champion is not None and champion.version == candidate_model.version:
        champion = None  # re-check of the serving model: nothing to compare with
    decision = judge_challenger(
        load_frames(dataset_store, training_dataset, (SELECTION, *EVAL_FRAMES)),
        schema,
        challenger=registry.load_model(ref=candidate_model),
        champion=registry.load_model(ref=champion) if champion is not None else None,
        policy=policy,
    )
    fault_point("gate.before_decision")
    registry.log_gate_decision(ref=candidate_model, decision=decision, champion=champion)
    return dg.AssetCheckResult(
        passed=decision.promote,
        description="; ".join(decision.reasons),
        metadata={
            **mlflow_links(registry, candidate_model, gate=True),
            **gate_metadata(decision, candidate_model, champion),
        },
    )


def mlflow_links(
    registry: MlflowRegistryResource, ref: ModelRef, *, gate: bool = False
) -> dict[str, dg.MetadataValue]:
    """The version's run and registry page in the MLflow UI (and, for the gate, the full
    decision it logged); nothing when no MLflow UI is configured."""
    links = {
        "mlflow_run": registry.run_link(ref),
        "mlflow_model_version": registry.version_link(ref),
        "gate_decision": registry.gate_decision_link(ref) if gate else None,
    }
    return {key: dg.MetadataValue.url(url) for key, url in links.items() if url}


def gate_metadata(
    decision: GateDecision, challenger: ModelRef, champion: ModelRef | None
) -> dict[str, Any]:
    """What a person wants to see on the check in the UI: verdicts and figures."""
    rows = [
        f"| {c.name} | {c.status} | "
        + ", ".join(f"{k}={v:.4f}" for k, v in c.figures.items())
        + " |"
        for c in decision.checks
    ]
    metadata: dict[str, Any] = {
        "challenger_version": challenger.version,
        "champion_version": champion.version if champion else "none",
        "evaluated_rows": decision.evaluated_rows,
        "failed_checks": ", ".join(failed_checks(decision)) or "none",
        "checks": dg.MetadataValue.md(
            "| check | status | figures |\n|---|---|---|\n" + "\n".join(rows)
        ),
    }
    for check in decision.checks:  # the headline checks as plottable numbers
        if check.name.startswith(("overall[", "calibration[", "edge_cases")):
            for key, value in check.figures.items():
                metadata[f"{check.name}.{key}"] = float(value)
    return metadata
