"""Text tasks in Label Studio: what a reviewer sees of a post, and classes that grow.

The tables need no server; the ``labelstudio`` tests push a text project to the
session's real server and read it back through the REST API.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import httpx
import pytest

from hitl_pipeline.core.types import LabelingTask
from hitl_pipeline.resources.label_studio import (
    LABEL_CONTROL,
    REVIEW_REASONS,
    LabelStudioResource,
    build_label_config,
    choice_result,
    review_view_data,
    task_payload,
)

CLASSES = ("ok", "toxic", "spam", "threat")
KINDS = {"text": "text", "channel": "categorical", "links": "numeric"}
LONG = (
    "you are such a clown, get lost and take your numbskull opinions about the mid "
    "season patch somewhere else"
)


def make_task(i: int = 0, **changes) -> LabelingTask:
    fields = {
        "item_id": f"p003-{i:05d}",
        "features": {
            "text": LONG if i == 0 else f"post {i} free offer",
            "channel": "chat",
            "links": 0.0,
        },
        "predicted_label": "toxic" if i % 2 == 0 else "spam",
        "score": 0.61,
        "model_version": "3",
        "reasons": ("low_confidence",) if i % 3 else ("policy_category", "audit"),
        "partition": "2026-01-26",
        "priority": float(10 - i),
    }
    return LabelingTask(**{**fields, **changes})


EVIDENCE = {"text": [("clown", 0.9), ("get lost", 0.7)]}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("f_text", LONG),  # the Data Manager column: the whole post
        ("f_channel", "chat"),
        ("f_links", 0),
        ("reason_low_confidence", False),
        ("reason_policy_category", True),
        ("reason_audit", True),
        ("reasons_text", "policy category; random audit"),
    ],
)
def test_text_task_columns(key, value):
    data = task_payload(make_task(0), KINDS, EVIDENCE)["data"]
    assert data[key] == value and type(data[key]) is type(value)


def test_text_task_marks_the_evidence_and_cuts_the_table_short():
    data = task_payload(make_task(0), KINDS, EVIDENCE)["data"]
    marked = data["h_text"]
    assert marked.count("<mark") == 2
    assert 'title="clown +0.90 toward toxic">clown</mark>' in marked
    assert 'title="get lost +0.70 toward toxic">get lost</mark>' in marked
    assert data["features"]["text"].endswith("…") and len(data["features"]["text"]) <= 80
    assert data["feature_values"]["text"] == LONG  # the exact text, for training
    reason_columns = {k.removeprefix("reason_") for k in data if k.startswith("reason_")}
    assert reason_columns == set(REVIEW_REASONS)
    # without evidence (a model with no per-token weights) the post is shown unmarked
    plain = task_payload(make_task(0), KINDS)["data"]["h_text"]
    assert "<mark" not in plain and "numbskull opinions" in plain


def test_review_tab_types_reasons_as_booleans_and_hides_the_marked_html():
    view = review_view_data(KINDS)
    types = view["columnsDisplayType"]
    assert types["tasks:data.reason_policy_category"] == "Boolean"
    assert types["tasks:data.f_links"] == "Number" and "tasks:data.f_text" not in types
    assert "tasks:data.h_text" in view["hiddenColumns"]["explore"]
    assert "tasks:data.f_text" not in view["hiddenColumns"]["explore"]
    assert "tasks:data.reason_audit" not in view["hiddenColumns"]["explore"]


# --- against the real server ------------------------------------------------------------
def _http(label_studio) -> httpx.Client:
    return httpx.Client(
        base_url=label_studio.url,
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=120,
    )


def _tasks(http: httpx.Client, project_id: int, query: dict | None = None) -> list[dict]:
    params = {"project": project_id, "fields": "all", "page_size": 1000}
    if query is not None:
        params["query"] = json.dumps(query)
    response = http.get("/api/tasks", params=params)
    response.raise_for_status()
    return response.json()["tasks"]


@pytest.mark.labelstudio
def test_a_text_project_shows_the_post_marked_and_filters_by_reason(
    label_studio, label_studio_resource: LabelStudioResource
):
    http = _http(label_studio)
    tasks = [make_task(i) for i in range(6)]
    result = label_studio_resource.push_tasks(
        classes=CLASSES,
        tasks=tasks,
        feature_kinds=KINDS,
        evidence={"p003-00000": EVIDENCE},
    )
    assert result.created == 6
    project = http.get(f"/api/projects/{result.project_id}/").json()
    assert project["label_config"].strip() == build_label_config(CLASSES, text_features=["text"])
    root = ET.fromstring(project["label_config"])
    assert [h.get("value") for h in root.iter("HyperText")] == ["$h_text"]

    stored = {t["data"]["item_id"]: t for t in _tasks(http, result.project_id)}
    first = stored["p003-00000"]["data"]
    assert first["f_text"] == LONG and first["h_text"].count("<mark") == 2
    assert "<mark" not in stored["p003-00001"]["data"]["h_text"]

    # one filterable column per reason: the Data Manager answers a Boolean filter on it
    flagged = _tasks(
        http,
        result.project_id,
        {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:data.reason_policy_category",
                        "operator": "equal",
                        "type": "Boolean",
                        "value": True,
                    }
                ],
            }
        },
    )
    expected = {t.item_id for t in tasks if "policy_category" in t.reasons}
    assert {t["data"]["item_id"] for t in flagged} == expected == {"p003-00000", "p003-00003"}


@pytest.mark.labelstudio
def test_a_class_added_mid_stream_reaches_every_project_without_losing_tasks_or_answers(
    label_studio, label_studio_resource: LabelStudioResource
):
    http = _http(label_studio)
    tasks = [make_task(i) for i in range(4)] + [make_task(4, tier="expert")]
    before = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks, feature_kinds=KINDS)
    general = before.projects["general"]
    stored = _tasks(http, general)
    for task, label in zip(stored[:2], ("toxic", "spam"), strict=True):
        answer = {"result": [choice_result(LABEL_CONTROL, [label])]}
        http.post(f"/api/tasks/{task['id']}/annotations/", json=answer).raise_for_status()

    grown = (*CLASSES, "scam")
    after = label_studio_resource.push_tasks(
        classes=grown, tasks=[*tasks, make_task(5)], feature_kinds=KINDS
    )

    assert (after.created, after.already_present) == (1, 5)
    for tier in ("general", "expert"):
        project = http.get(f"/api/projects/{after.projects[tier]}/").json()
        offered = [c.get("value") for c in ET.fromstring(project["label_config"]).iter("Choice")]
        assert offered[: len(grown)] == list(grown), tier
    kept = _tasks(http, general)
    assert len(kept) == 5
    assert sum(t["total_annotations"] for t in kept) == 2
    # the new class is accepted as an answer and pulled as a label
    newest = next(t for t in kept if t["data"]["item_id"] == "p003-00005")
    answer = {"result": [choice_result(LABEL_CONTROL, ["scam"])]}
    http.post(f"/api/tasks/{newest['id']}/annotations/", json=answer).raise_for_status()
    pulled = {a.item_id: a.label for a in label_studio_resource.pull_annotations()}
    assert pulled == {
        stored[0]["data"]["item_id"]: "toxic",
        stored[1]["data"]["item_id"]: "spam",
        "p003-00005": "scam",
    }


@pytest.mark.labelstudio
def test_dropping_a_class_that_answers_use_is_refused_naming_the_class_and_the_fix(
    label_studio, label_studio_resource: LabelStudioResource
):
    http = _http(label_studio)
    result = label_studio_resource.push_tasks(
        classes=CLASSES, tasks=[make_task(1)], feature_kinds=KINDS
    )
    (task,) = _tasks(http, result.project_id)
    answer = {"result": [choice_result(LABEL_CONTROL, ["threat"])]}
    http.post(f"/api/tasks/{task['id']}/annotations/", json=answer).raise_for_status()

    fix = r"drop 'threat' \(1 answer\(s\)\).*put the class\(es\) back in the schema file"
    with pytest.raises(ValueError, match=fix):
        label_studio_resource.push_tasks(
            classes=("ok", "toxic", "spam"), tasks=[make_task(1)], feature_kinds=KINDS
        )
    assert len(_tasks(http, result.project_id)) == 1
