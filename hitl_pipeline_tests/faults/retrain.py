"""A retrain (training -> gate -> promotion) through the real assets, in this process or,
with ``python -m hitl_pipeline_tests.faults.retrain``, in a separate one that a fault
test can kill.

Only ``training_dataset`` is replaced, by an asset that returns a dataset version already
committed to the loop's DVC repository (the labelling stages are not under test here).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from hitl_pipeline.core.datasets import canonical_dataset
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import LABEL, LABEL_SOURCE, LABELLED_AT, DatasetVersion
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s08_training import candidate_model, passes_gate
from hitl_pipeline.defs.s09_deployment import champion_model
from hitl_pipeline.demo.stream import CLASSES, DEMO_SCHEMA, EVENT_TIME, DriftingStream
from hitl_pipeline.settings import Settings

STREAM = DriftingStream(seed_train_rows=900, seed_holdout_rows=500)
# accepts any challenger that is not absurd: the tests judge the promotion, not the model
LENIENT_GATE = {
    "tolerance": 1.0,
    "fixed_holdout_tolerance": 1.0,
    "slice_tolerance": 1.0,
    "fixed_slice_tolerance": 1.0,
    "edge_case_pass_rate": 0.0,
    "max_ece": 1.0,
}
RESOURCE_KEYS = ("production", "registry", "dataset_store", "io_manager")


def run_config(seed: int, *, lenient: bool = True) -> dict[str, Any]:
    ops: dict[str, Any] = {
        "candidate_model": {"config": {"max_iter": 30, "learning_rate": 0.2, "seed": seed}}
    }
    if lenient:
        ops["candidate_model_passes_gate"] = {"config": LENIENT_GATE}
    return {"ops": ops}


def prepare_home(settings: Settings) -> dict[str, DatasetVersion]:
    """The schema, and two dataset versions: clean seed labels and 60% flipped ones."""
    settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
    save_schema(DEMO_SCHEMA, settings.schema_path)
    train, holdout = STREAM.seed_sets()
    recent = pd.concat([STREAM.batch(0), STREAM.batch(1)])
    recent = recent.assign(
        **{LABEL_SOURCE: "human", LABELLED_AT: recent[EVENT_TIME] + pd.Timedelta(days=1)}
    )
    frames = {
        "holdout": canonical_dataset(holdout, DEMO_SCHEMA),
        "human_holdout": canonical_dataset(recent, DEMO_SCHEMA),
    }
    rng = np.random.default_rng(3)
    flipped = train.copy()
    chosen = rng.random(len(flipped)) < 0.6
    shift = rng.integers(1, len(CLASSES), size=int(chosen.sum()))
    index = flipped.loc[chosen, LABEL].map(CLASSES.index).to_numpy()
    flipped.loc[chosen, LABEL] = np.asarray(CLASSES)[(index + shift) % len(CLASSES)]
    store = build_resources(settings)["dataset_store"]
    return {
        "clean": store.commit(
            frames={"training": canonical_dataset(train, DEMO_SCHEMA), **frames}, message="c"
        ),
        "flipped": store.commit(
            frames={"training": canonical_dataset(flipped, DEMO_SCHEMA), **frames}, message="f"
        ),
    }


def dataset_asset(version: DatasetVersion) -> dg.AssetsDefinition:
    @dg.asset(name="training_dataset", group_name="s07_dataset")
    def training_dataset() -> DatasetVersion:
        return version

    return training_dataset


def retrain(
    resources: dict[str, Any],
    version: DatasetVersion,
    config: dict[str, Any],
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [dataset_asset(version), candidate_model, passes_gate, champion_model],
        resources={k: resources[k] for k in RESOURCE_KEYS},
        run_config=config,
        instance=instance,
        raise_on_error=False,
    )


def main(argv: list[str] | None = None) -> int:
    """Retrain on a committed dataset version, recorded in the DAGSTER_HOME instance."""
    parser = argparse.ArgumentParser()
    parser.add_argument("version_id")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strict", action="store_true", help="the default gate")
    args = parser.parse_args(argv)
    resources = build_resources(Settings.from_env())
    version = resources["dataset_store"].get(version_id=args.version_id)
    with dg.DagsterInstance.get() as instance:
        result = retrain(
            resources, version, run_config(args.seed, lenient=not args.strict), instance
        )
    candidate = result.output_for_node("candidate_model") if result.success else None
    print(
        json.dumps(
            {
                "success": result.success,
                "run_id": result.run_id,
                "candidate": candidate.version if candidate else None,
            }
        )
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
