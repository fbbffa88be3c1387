"""Deployment: the gated challenger becomes the MLflow ``champion``."""

import dagster as dg

from hitl_pipeline.core.types import ModelRef
from hitl_pipeline.defs.pools import CHAMPION_ALIAS_POOL
from hitl_pipeline.defs.s08_training import mlflow_links
from hitl_pipeline.resources.mlflow_registry import (
    TAG_GATE_REASONS,
    MlflowRegistryResource,
    PromotionRefused,
)


@dg.asset(group_name="s09_deployment", kinds={"mlflow"}, pool=CHAMPION_ALIAS_POOL)
def champion_model(
    candidate_model: ModelRef, registry: MlflowRegistryResource
) -> dg.Output[ModelRef]:
    """The serving model. Only reached when ``passes_gate`` passed (it is blocking).

    The promotion is a compare-and-set: the alias moves to this run's candidate only if
    the candidate's own gate decision says promote and the champion is still the version
    that gate compared it with; otherwise the step fails and nothing changes.
    """
    try:
        previous = registry.promote_gated(ref=candidate_model)
    except PromotionRefused as exc:
        raise dg.Failure(description=f"not promoted: {exc}") from exc
    champion = registry.champion()
    serving = champion or candidate_model
    return dg.Output(
        serving,
        metadata={
            **mlflow_links(registry, serving),
            **(
                {"previous_champion_version": dg.MetadataValue.url(url)}
                if previous is not None and (url := registry.version_link(previous))
                else {}
            ),
            "champion_version": champion.version if champion else candidate_model.version,
            "previous_champion": previous.version if previous else "none",
            "model_uri": candidate_model.uri,
            "gate_reasons": candidate_model.tags.get(TAG_GATE_REASONS, "")
            or registry.get_version(version=candidate_model.version).tags.get(TAG_GATE_REASONS, ""),
        },
    )
