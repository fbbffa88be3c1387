"""Strict annotation intake through real materializations against the session's real
Label Studio: bad answers, the wrong accounts and deleted tasks are quarantined or
reported, never taken or dropped silently. Only the pure helpers at the top need no server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest

from hitl_pipeline.core.intake import QUARANTINE_REASON
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import ITEM_ID, LABEL, REASONS
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.s05_labeling import labeling_tasks
from hitl_pipeline.defs.s06_feedback import awaiting_answers, human_labels, pull_since
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer
from hitl_pipeline.demo.stream import CLASSES, DEMO_SCHEMA
from hitl_pipeline.resources.label_studio import (
    FLAGS_CONTROL,
    LABEL_CONTROL,
    LabelStudioResource,
    choice_result,
)
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.production import ProductionSource
from hitl_pipeline_tests.defs.test_feedback import PARTITION, routed_batch

REVIEWER = "reviewer@intake.hitl.local"
STRANGER = "stranger@intake.hitl.local"  # has an account and a token, is not on the list


# --- without a server --------------------------------------------------------------------
def test_pull_since_re_reads_everything_for_an_empty_or_pre_strict_ledger() -> None:
    at = pd.Timestamp(datetime(2026, 11, 2, 12, tzinfo=UTC))
    ledger = pd.DataFrame({"updated_at": [at], "answer_problem": [""]})
    assert pull_since(ledger) == at - pd.Timedelta(minutes=5)
    assert pull_since(ledger.drop(columns=["answer_problem"])) is None  # parsed leniently
    assert pull_since(ledger.iloc[0:0]) is None


def test_awaiting_answers_are_pushed_items_without_an_annotation_in_their_tier() -> None:
    ledger = pd.DataFrame({ITEM_ID: ["a", "b"], "tier": ["general", "expert"]})
    pushed = {"general": ["a", "b", "c"], "expert": ["b"], "adjudication": ["a"]}
    # b was answered in the expert queue, not the general one; a never in adjudication
    assert awaiting_answers(pushed, ledger) == {"general": ["b", "c"], "adjudication": ["a"]}
    assert awaiting_answers(pushed, ledger.iloc[0:0]) == {
        "general": ["a", "b", "c"],
        "expert": ["b"],
        "adjudication": ["a"],
    }


# --- against the real server -------------------------------------------------------------
def _post(url: str, token: str, task_id: int, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/api/tasks/{task_id}/annotations/",
        json=body,
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def _answer(*values: str, control: str = LABEL_CONTROL) -> dict[str, Any]:
    return {"result": [choice_result(control, list(values))], "was_cancelled": False}


@pytest.mark.labelstudio
@pytest.mark.faults
def test_only_a_reviewers_single_schema_class_becomes_a_label(
    label_studio, project_title, tmp_path
) -> None:
    save_schema(DEMO_SCHEMA, tmp_path / "schema.json")
    routed, truth = routed_batch(10)
    routed = routed.assign(**{REASONS: "audit"})  # every item in the general queue

    @dg.asset(name="review_queue", partitions_def=BATCH_PARTITIONS)
    def fixed_queue() -> pd.DataFrame:
        return routed

    admin_email = label_studio.server.username
    resource = LabelStudioResource(
        url=label_studio.url,
        api_key=label_studio.token,
        project_title=project_title,
        # the admin is listed on purpose: the service account never counts all the same
        reviewers=[REVIEWER, admin_email],
    )
    store = LocalStore(home=str(tmp_path / "home"))
    resources = {
        "label_studio": resource,
        "local_store": store,
        "production": ProductionSource(
            landing_dir=str(tmp_path / "landing"),
            quarantine_dir=str(tmp_path / "q"),
            schema_path=str(tmp_path / "schema.json"),
        ),
        "registry": object(),  # a tabular schema: the push reads no model's evidence
    }
    dg.materialize([fixed_queue, labeling_tasks], partition_key=PARTITION, resources=resources)
    tokens = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        reviewers=[SimulatedReviewer(REVIEWER), SimulatedReviewer(STRANGER)],
        data_dir=label_studio.data_dir,
    ).ensure_accounts()
    items = routed[ITEM_ID].astype(str).tolist()
    tasks = {
        t["data"]["item_id"]: t["id"]
        for t in httpx.get(
            f"{label_studio.url}/api/tasks",
            params={"project": resource._find_project_checked(), "page_size": 100},
            headers={"Authorization": f"Token {label_studio.token}"},
            timeout=60,
        ).json()["tasks"]
    }
    right = {i: truth[i] for i in items}
    wrong = {i: next(c for c in CLASSES if c != truth[i]) for i in items}
    url, me = label_studio.url, tokens[REVIEWER]

    def by_reviewer(n: int, body: dict[str, Any]) -> dict[str, Any]:
        return _post(url, me, tasks[items[n]], body)

    by_reviewer(0, _answer(right[items[0]]))  # the one good answer
    _post(url, label_studio.token, tasks[items[0]], _answer(wrong[items[0]]))  # admin differs
    two = by_reviewer(1, _answer(right[items[1]], wrong[items[1]]))
    by_reviewer(2, {"result": [], "was_cancelled": False})
    by_reviewer(3, _answer("zebra"))
    by_reviewer(4, _answer("positive", control="sentiment"))
    _post(url, label_studio.token, tasks[items[5]], _answer(right[items[5]]))
    _post(url, tokens[STRANGER], tasks[items[6]], _answer(right[items[6]]))
    by_reviewer(7, {"result": [], "was_cancelled": True})  # a skip
    by_reviewer(8, _answer(right[items[8]], control=LABEL_CONTROL))
    # deleted before the pull: one answered (its answer never reaches us), one not
    assert resource.delete_task(tier="general", item_id=items[8]) is True
    assert resource.delete_task(tier="general", item_id=items[9]) is True

    first = dg.materialize([human_labels], resources=resources)
    labels = first.output_for_node("human_labels").set_index(ITEM_ID)
    meta = {
        k: v.value
        for k, v in first.asset_materializations_for_node("human_labels")[0].metadata.items()
    }
    assert labels.index.tolist() == [items[0]]
    assert labels.loc[items[0], LABEL] == right[items[0]]
    assert labels.loc[items[0], "n_annotations"] == 1  # the admin's vote is no vote
    assert meta["quarantined_by_reason"] == {
        "service_account": 2,
        "not_a_reviewer": 1,
        "unknown_control": 1,
        "multiple_choices": 1,
        "empty_result": 1,
        "unknown_label": 1,
    }
    assert meta["quarantined__multiple_choices"] == 1
    assert (meta["annotations_total"], meta["annotations_quarantined"]) == (9, 7)
    assert (meta["annotations_admitted"], meta["annotations_skipped"]) == (2, 1)
    assert meta["reviewers_counted"] == [REVIEWER]
    assert meta["service_account"] == admin_email
    assert meta["reviewers_configured"] == ", ".join(sorted([REVIEWER, admin_email]))
    assert meta["tasks_missing"] == 2
    assert meta["tasks_missing_items"] == {"general": sorted([items[8], items[9]])}

    # nothing is lost: every pulled annotation is in the ledger, with its reason
    ledger = store.read_ledger(include_quarantined=True)
    assert len(ledger) == 9 and ledger["annotation_id"].is_unique
    reasons = dict(zip(ledger[ITEM_ID], ledger[QUARANTINE_REASON], strict=False))
    assert reasons[items[1]] == "multiple_choices" and reasons[items[6]] == "not_a_reviewer"
    assert '"positive"' in ledger.set_index(ITEM_ID).loc[items[4], "raw_result"]
    # readers that do not ask for quarantined rows never see them
    admitted = store.read_ledger()
    assert sorted(admitted["annotator"]) == [REVIEWER, REVIEWER]
    assert set(admitted[ITEM_ID]) == {items[0], items[7]}

    # a fix re-admits: the reviewer corrects the two-class answer in Label Studio
    response = httpx.patch(
        f"{url}/api/annotations/{two['id']}/",
        json={
            "result": [
                choice_result(LABEL_CONTROL, [right[items[1]]]),
                choice_result(FLAGS_CONTROL, []),
            ]
        },
        headers={"Authorization": f"Token {me}"},
        timeout=60,
    )
    response.raise_for_status()
    second = dg.materialize([human_labels], resources=resources)
    labels = second.output_for_node("human_labels").set_index(ITEM_ID)
    meta = {
        k: v.value
        for k, v in second.asset_materializations_for_node("human_labels")[0].metadata.items()
    }
    assert labels.index.tolist() == sorted([items[0], items[1]])
    assert labels.loc[items[1], LABEL] == right[items[1]]
    assert meta["quarantined__multiple_choices"] == 0
    assert (meta["annotations_total"], meta["annotations_pulled_now"]) == (9, 1)
    assert meta["tasks_missing"] == 2  # still gone, still said
