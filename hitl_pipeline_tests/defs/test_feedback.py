"""Tiers, agreement, adjudication and loop health through real Dagster materializations
against the session's real Label Studio (no other outside service: the registry and the
dataset store of ``loop_metrics`` are duck-typed fakes without history)."""

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    LABEL,
    MODEL_VERSION,
    PREDICTED_LABEL,
    PRIORITY,
    REASONS,
    ROUTE,
    TIER,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.s05_labeling import labeling_tasks
from hitl_pipeline.defs.s06_feedback import adjudication_tasks, audit_pass_rate_holds, human_labels
from hitl_pipeline.defs.s10_loop_health import loop_metrics
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer
from hitl_pipeline.demo.stream import CLASSES, DEMO_SCHEMA, DriftingStream
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import ReportRef
from hitl_pipeline.resources.production import ProductionSource

pytestmark = pytest.mark.labelstudio
PARTITION = "2026-01-12"


class NoHistoryRegistry:
    """A registry that never promoted anything, and keeps the reports it is given."""

    def __init__(self) -> None:
        self.reports: dict[str, bytes | str] = {}

    def champion_history(self) -> list:
        return []

    def log_report(self, *, kind: str, name: str, files: dict, **_: object) -> ReportRef:
        self.reports.update(files)
        return ReportRef(run_id="r1", experiment_id="2", path=f"{kind}/x", url="http://ui/x")


def routed_batch(n: int) -> tuple[pd.DataFrame, dict[str, str]]:
    batch = DriftingStream(rows_per_batch=n).batch(1)
    truth = dict(zip(batch[ITEM_ID].astype(str), batch[LABEL], strict=True))
    routed = batch.drop(columns=[LABEL]).assign(
        **{
            PREDICTED_LABEL: [CLASSES[i % 4] for i in range(n)],
            CONFIDENCE: 0.5,
            MODEL_VERSION: "1",
            ROUTE: "review",
            REASONS: ["low_confidence;policy_category" if i < 3 else "audit" for i in range(n)],
            PRIORITY: [float(n - i) for i in range(n)],
            TIER: "general",
        }
    )
    return routed, truth


def test_tiers_agreement_adjudication_and_loop_health(label_studio, project_title, tmp_path):
    save_schema(DEMO_SCHEMA, tmp_path / "schema.json")
    routed, truth = routed_batch(24)

    @dg.asset(name="review_queue", partitions_def=BATCH_PARTITIONS)
    def fixed_queue() -> pd.DataFrame:
        return routed

    resources = {
        "label_studio": LabelStudioResource(
            url=label_studio.url,
            api_key=label_studio.token,
            project_title=project_title,
            overlap_share=1.0,
        ),
        "local_store": LocalStore(home=str(tmp_path / "home")),
        "production": ProductionSource(
            landing_dir=str(tmp_path / "landing"),
            quarantine_dir=str(tmp_path / "q"),
            schema_path=str(tmp_path / "schema.json"),
        ),
        "registry": NoHistoryRegistry(),
        "dataset_store": object(),
    }
    pushed = dg.materialize(
        [fixed_queue, labeling_tasks], partition_key=PARTITION, resources=resources
    )
    push = pushed.output_for_node("labeling_tasks")
    assert dict(push.projects).keys() == {"general", "expert"}  # policy_category -> experts
    meta = pushed.asset_materializations_for_node("labeling_tasks")[0].metadata
    assert meta["tasks_by_tier"].value == {"general": 21, "expert": 3}

    pool = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        project_title=project_title,
        reviewers=[
            SimulatedReviewer("careful@sim.hitl.local", error_rate=0.0, seed=1),
            SimulatedReviewer("careless@sim.hitl.local", error_rate=0.5, seed=2),
        ],
        adjudicators=[SimulatedReviewer("judge@sim.hitl.local", error_rate=0.0, seed=4)],
    )
    assert pool.answer_open_tasks(truth=truth) == 48  # Label Studio asked two answers each

    collect = [human_labels, adjudication_tasks, audit_pass_rate_holds]
    first = dg.materialize(collect, resources=resources)
    labels_meta = first.asset_materializations_for_node("human_labels")[0].metadata
    disputed = labels_meta["disputed_open"].value
    assert disputed > 0 and labels_meta["agreement_overlap_items"].value == 24
    assert labels_meta["agreement_alpha"].value < 0.667
    # no reviewer list: every account but the service account counts, and it says so
    assert labels_meta["reviewers_counted"].value == [
        "careful@sim.hitl.local",
        "careless@sim.hitl.local",
    ]
    assert labels_meta["reviewers_configured"].value.startswith("every account except")
    assert labels_meta["annotations_quarantined"].value == 0
    assert labels_meta["tasks_missing"].value == 0
    assert "guideline" in labels_meta["guideline_signal"].value
    adjudication = first.output_for_node("adjudication_tasks")
    assert adjudication.created == disputed
    (check,) = first.get_asset_check_evaluations()
    assert check.check_name == "audit_pass_rate_holds"
    assert check.metadata["audited"].value == 21 * 2  # every general answer was an audit

    assert pool.answer_open_tasks(truth=truth) == disputed
    second = dg.materialize(collect, resources=resources)
    labels = second.output_for_node("human_labels").set_index(ITEM_ID)
    ruled = labels[labels["decided_by"] == "adjudicated"]
    assert len(ruled) == disputed
    assert (ruled[LABEL] == ruled.index.map(truth)).all()
    assert second.output_for_node("adjudication_tasks").created == 0  # nothing left to rule

    health = dg.materialize([loop_metrics], resources=resources)
    meta = health.asset_materializations_for_node("loop_metrics")[0].metadata
    assert meta["annotations_total"].value == 48 + disputed
    assert meta["annotation_cost"].value == pytest.approx(
        21 * 2 * 0.10 + 3 * 2 * 1.00 + disputed * 0.50
    )
    (batch,) = meta["per_batch"].value.records
    assert batch.data["partition"] == PARTITION
    assert 0.0 <= batch.data["audit_pass_rate"] <= 1.0
    assert meta["chart"].value == "http://ui/x"
    assert resources["registry"].reports["loop_health.png"][:4] == b"\x89PNG"
    cycles = health.output_for_node("loop_metrics")
    assert cycles["partition"].tolist() == [PARTITION]
