"""Dataset: seed data plus human-verified labels, versioned with DVC."""

from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from hitl_pipeline.core.datasets import edge_case_items
from hitl_pipeline.core.gate import EDGE_CASES, HUMAN_HOLDOUT
from hitl_pipeline.core.loop import SELECTION, TRAINING, DatasetPolicy, assemble_dataset
from hitl_pipeline.core.types import LABEL_SOURCE, DatasetVersion
from hitl_pipeline.defs.config import SettingsConfig, config_class
from hitl_pipeline.defs.pools import DATASET_REPO_POOL
from hitl_pipeline.defs.preflight import require_stores
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource

if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    DatasetConfig = SettingsConfig
else:
    DatasetConfig = config_class(
        DatasetPolicy,
        "DatasetConfig",
        doc="How human labels are split (training, variant selection, the gate's held-out "
        "rows); generated from core.loop.DatasetPolicy (see its docs).",
    )


@dg.asset(group_name="s07_dataset", kinds={"dvc"}, pool=DATASET_REPO_POOL)
def training_dataset(
    config: DatasetConfig,
    human_labels: pd.DataFrame,
    local_store: LocalStore,
    dataset_store: DvcDatasetStore,
    registry: MlflowRegistryResource,
    production: ProductionSource,
) -> dg.Output[DatasetVersion]:
    """A DVC version holding the training rows, the selection rows that choose the
    training variant, the fixed holdout, the gate's human holdout and the edge cases
    (items a reviewer flagged, with their resolved label, kept out of training)."""
    # a dataset version nobody can train and register a model from is not committed
    require_stores(registry.check, dataset_store.check)
    schema = production.schema()
    seed_train, seed_holdout = local_store.read_seed()
    if human_labels.empty:  # before the first annotation the frame has no feature columns
        human_labels = seed_train.iloc[0:0]
    frames = assemble_dataset(
        seed_train,
        seed_holdout,
        human_labels,
        schema,
        config.to_settings(),
        edge_case_ids=edge_case_items(local_store.read_ledger()),
    )
    training = frames[TRAINING]
    human_rows = int((training[LABEL_SOURCE] == "human").sum())
    version = dataset_store.commit(
        frames=frames,
        message=f"training data: {len(training) - human_rows} seed + {human_rows} human rows",
    )
    return dg.Output(
        version,
        metadata={
            "dataset_version": version.version_id,
            "git_rev": version.git_rev,
            "md5": version.md5,
            "training_rows": len(training),
            "human_training_rows": human_rows,
            "selection_rows": len(frames[SELECTION]),
            "human_holdout_rows": len(frames[HUMAN_HOLDOUT]),
            "edge_case_rows": len(frames[EDGE_CASES]),
        },
    )
