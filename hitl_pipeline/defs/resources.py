"""The one place where outside systems are bound, from ``HITL_*`` environment variables.

The environment is read when Dagster loads the definitions (this function runs then),
not when the module is imported.
"""

from typing import Any

import dagster as dg

from hitl_pipeline.defs.io_manager import RunScopedIOManager
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource
from hitl_pipeline.settings import Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """Resources of one loop, keyed as the assets ask for them."""
    return {
        "production": ProductionSource(
            landing_dir=str(settings.landing),
            quarantine_dir=str(settings.quarantine),
            schema_path=str(settings.schema_path),
        ),
        "registry": MlflowRegistryResource(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_location=settings.mlflow_artifacts.as_uri(),
            ui_url=settings.mlflow_ui_url,
            dagster_ui_url=settings.dagster_ui_url,
        ),
        # The token never becomes plain resource config (the UI shows that): the variable's
        # name when it is set, else the local server's owner-only credentials file.
        "label_studio": LabelStudioResource(
            url=settings.label_studio_url,
            project_title=settings.label_studio_project,
            api_key=dg.EnvVar("HITL_LABEL_STUDIO_API_KEY")
            if settings.label_studio_api_key
            else None,
            credentials_file=str(settings.label_studio_credentials_file),
            overlap_share=settings.review_overlap_share,
            reviewers=list(settings.reviewers),
        ),
        "dataset_store": DvcDatasetStore(
            repo_path=str(settings.dataset_repo), remote_url=settings.dvc_remote
        ),
        "local_store": LocalStore(home=str(settings.home)),
        # one stored value per run: overlapping runs never read each other's outputs
        "io_manager": RunScopedIOManager(base_dir=str(settings.dagster_home / "outputs")),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
