"""Push a review batch to, or pull annotations from, the real Label Studio through the
real assets: in this process, or with ``python -m hitl_pipeline_tests.faults.labelling``
in a separate one that ``HITL_FAULT`` can kill.

The server comes from ``HITL_LABEL_STUDIO_URL`` / ``HITL_LABEL_STUDIO_API_KEY``; the
queue is a project of the test's own (``--title``), so other tests never see its tasks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.s05_labeling import labeling_tasks
from hitl_pipeline.defs.s06_feedback import human_labels
from hitl_pipeline.demo.stream import DEMO_SCHEMA
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.production import ProductionSource
from hitl_pipeline_tests.defs.test_feedback import PARTITION, routed_batch


def resources(home: Path, title: str, *, chunk: int = 500, url: str | None = None) -> dict:
    save_schema(DEMO_SCHEMA, home / "schema.json")
    return {
        "label_studio": LabelStudioResource(
            url=url or os.environ["HITL_LABEL_STUDIO_URL"],
            api_key=os.environ["HITL_LABEL_STUDIO_API_KEY"],
            project_title=title,
            import_chunk_size=chunk,
        ),
        "local_store": LocalStore(home=str(home)),
        "production": ProductionSource(
            landing_dir=str(home / "landing"),
            quarantine_dir=str(home / "quarantine"),
            schema_path=str(home / "schema.json"),
        ),
        "registry": object(),  # a tabular schema: the push reads no model's evidence
    }


def push(bound: dict[str, Any], rows: int) -> dg.ExecuteInProcessResult:
    routed, _ = routed_batch(rows)
    routed = routed.assign(reasons="audit")  # every item in the general queue

    @dg.asset(name="review_queue", partitions_def=BATCH_PARTITIONS)
    def fixed_queue() -> pd.DataFrame:
        return routed

    return dg.materialize(
        [fixed_queue, labeling_tasks],
        partition_key=PARTITION,
        resources=bound,
        raise_on_error=False,
    )


def pull(bound: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return dg.materialize([human_labels], resources=bound, raise_on_error=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["push", "pull"])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=500)
    args = parser.parse_args(argv)
    bound = resources(args.home, args.title, chunk=args.chunk)
    result = push(bound, args.rows) if args.action == "push" else pull(bound)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
