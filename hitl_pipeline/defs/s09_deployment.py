"""Deployment: the gated challenger becomes the MLflow ``champion``."""

import dagster as dg

from hitl_pipeline.core.types import ModelRef
from hitl_pipeline.resources.mlflow_registry import TAG_GATE_REASONS, MlflowRegistryResource


@dg.asset(group_name="s09_deployment", kinds={"mlflow"})
def champion_model(
    candidate_model: ModelRef, registry: MlflowRegistryResource
) -> dg.Output[ModelRef]:
    """The serving model. Only reached when ``passes_gate`` passed (it is blocking).

    The promotion is recorded with the gate's reasons, read back from the version.
    """
    gate = registry.get_version(version=candidate_model.version).tags.get(TAG_GATE_REASONS, "")
    reason = f"passed the deployment gate: {gate}" if gate else "passed the deployment gate"
    previous = registry.promote(ref=candidate_model, reason=reason)
    return dg.Output(
        candidate_model,
        metadata={
            "champion_version": candidate_model.version,
            "previous_champion": previous.version if previous else "none",
            "model_uri": candidate_model.uri,
            "gate_reasons": gate,
        },
    )
