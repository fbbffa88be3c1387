"""What a reviewer sees in Label Studio: the task's columns, the interface, the tab.

The tables need no server; the ``labelstudio`` tests push to the session's real server
and read the tasks, the project and its Data Manager tab back through the REST API.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import httpx
import pytest

from hitl_pipeline.core.routing import reasons_text
from hitl_pipeline.core.types import LabelingTask
from hitl_pipeline.resources.label_studio import (
    FEATURES_OBJECT,
    FLAGS_CONTROL,
    LABEL_CONTROL,
    REVIEW_VIEW_TITLE,
    LabelStudioResource,
    annotations_from_export,
    build_label_config,
    choice_result,
    display_number,
    read_result,
    task_payload,
)

CLASSES = ("retain", "upgrade", "downgrade", "churn")
KINDS = {"tenure_months": "numeric", "monthly_spend": "numeric", "plan": "categorical"}


def make_task(i: int = 0, **changes) -> LabelingTask:
    fields = {
        "item_id": f"b002-{i:05d}",
        "features": {"tenure_months": 41.0, "monthly_spend": 105.8571, "plan": "basic"},
        "predicted_label": CLASSES[i % 4],
        "score": 0.734567,
        "model_version": "4",
        "reasons": ("low_confidence", "audit"),
        "partition": "2026-01-19",
        "priority": float(10 - i),
    }
    return LabelingTask(**{**fields, **changes})


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (105.8571, 105.86),  # 2 decimals from 1 up
        (1234.5678, 1234.57),  # never fewer digits than the whole part
        (0.734567, 0.735),  # below 1: 3 significant digits
        (0.012345, 0.0123),
        (-0.5, -0.5),
        (41.0, 41),  # a whole float reads as an int
        (7, 7),
        (0.0, 0),
        (1e-7, 1e-7),
    ],
)
def test_display_number(value, shown) -> None:
    got = display_number(value)
    assert got == shown and type(got) is type(shown)


@pytest.mark.parametrize("bad", [True, "3", None, float("nan"), float("inf")])
def test_display_number_refuses_what_is_not_a_finite_number(bad) -> None:
    with pytest.raises((TypeError, ValueError)):
        display_number(bad)


@pytest.mark.parametrize(
    ("codes", "text"),
    [
        (("low_confidence", "audit"), "low confidence; random audit"),
        (("out_of_distribution",), "unusual input"),
        (("policy_category", "committee_disagreement"), "policy category; models disagree"),
        (("drift_sample", "disagreement"), "drift sample; reviewers disagreed"),
        (("capacity_fill",), "spare capacity, informative"),
        (("brand_new_code",), "brand new code"),  # unknown codes still read as words
        (("audit", "audit", ""), "random audit"),  # repeats and blanks dropped
        ((), ""),
    ],
)
def test_reasons_text(codes, text) -> None:
    assert reasons_text(codes) == text


@pytest.mark.parametrize(
    ("kinds", "features", "columns"),
    [
        # schema kinds: numbers rounded, categories as text, missing values null
        (
            KINDS,
            {"tenure_months": 41.0, "monthly_spend": 105.8571, "plan": "basic"},
            {"f_tenure_months": 41, "f_monthly_spend": 105.86, "f_plan": "basic"},
        ),
        (KINDS, {"tenure_months": float("nan"), "plan": None}, {"f_tenure_months": None}),
        # a categorical feature coded as a number stays a category (text, not rounded)
        ({"region": "categorical"}, {"region": 3.14159}, {"f_region": "3.14159"}),
        # without kinds a feature is typed by its value
        (None, {"x": 2.25, "c": "b"}, {"f_x": 2.25, "f_c": "b"}),
        # a feature named like one of our keys cannot overwrite it
        (None, {"confidence": 0.1, "tier": "gold"}, {"f_confidence": 0.1, "f_tier": "gold"}),
    ],
)
def test_payload_flattens_features_into_typed_rounded_columns(kinds, features, columns) -> None:
    data = task_payload(make_task(features=features), kinds)["data"]
    for key, value in columns.items():
        assert data[key] == value and type(data[key]) is type(value), key
    assert data["confidence"] == 0.735 and data["tier"] == "general"
    # the exact values, for the training set, are kept apart from the rounded ones
    exact = data["feature_values"]
    assert set(exact) == set(features)
    for name, value in features.items():
        if isinstance(value, float) and not math.isnan(value):
            assert exact[name] == value


def test_payload_reads_in_the_reviewers_order_and_keeps_the_exact_score() -> None:
    payload = task_payload(make_task(), KINDS)
    data = payload["data"]
    assert list(data)[:7] == [
        "item_id",
        "predicted_label",
        "confidence",
        "reasons_text",
        "f_tenure_months",
        "f_monthly_spend",
        "f_plan",
    ]
    assert data["reasons_text"] == "low confidence; random audit"
    assert data["reasons"] == ["low_confidence", "audit"]  # the codes, for the pipeline
    assert data["features"] == {"tenure_months": 41, "monthly_spend": 105.86, "plan": "basic"}
    assert "reviewer_answers" not in data
    (prediction,) = payload["predictions"]
    assert (prediction["score"], prediction["model_version"]) == (0.734567, "4")
    assert data["context"].splitlines() == [
        "Model's label: retain · confidence 0.735 · model version 4",
        "Sent for review because: low confidence; random audit",
        "Item b002-00000 · batch 2026-01-19 · general queue",
    ]


def test_adjudication_payload_names_each_reviewers_answer() -> None:
    note = "Reviewers said: a@x: churn · b@y: retain"
    data = task_payload(
        make_task(tier="adjudication", note=note, reasons=("disagreement",)), KINDS
    )["data"]
    assert data["reviewer_answers"] == note
    assert list(data)[4] == "reviewer_answers"  # right after the reasons
    assert note in data["context"].splitlines()
    assert data["reasons_text"] == "reviewers disagreed" and data["confidence"] == 0.735


def test_export_reads_exact_features_and_score_of_new_and_old_tasks() -> None:
    new = task_payload(make_task(), KINDS)["data"]
    old = {  # the shape earlier versions pushed
        "item_id": "old-1",
        "predicted_label": "churn",
        "score": 0.61,
        "model_version": "2",
        "features": {"monthly_spend": 105.8571},
        "reasons": ["audit"],
        "context": "Model says: churn",
    }
    answer = {"id": 1, "created_at": "2026-01-20T10:00:00Z", "completed_by": 1}
    answer["result"] = [choice_result(LABEL_CONTROL, ["churn"])]
    exported = [
        {"id": 1, "data": new, "annotations": [answer]},
        {"id": 2, "data": old, "annotations": [{**answer, "id": 2}]},
    ]
    got = {a.item_id: a for a in annotations_from_export(exported, {1: "r@x"})}
    assert got["b002-00000"].features["monthly_spend"] == 105.8571  # not the rounded one
    assert got["b002-00000"].model_score == 0.735
    assert got["old-1"].features == {"monthly_spend": 105.8571}
    assert got["old-1"].model_score == 0.61 and got["old-1"].label == "churn"


@pytest.mark.parametrize("classes", [CLASSES, ("a & b", "c"), ("only",)])
def test_label_config_offers_every_class_over_the_feature_table(classes) -> None:
    root = ET.fromstring(build_label_config(classes))
    (table,) = root.iter("Table")
    assert (table.get("name"), table.get("value")) == (FEATURES_OBJECT, "$features")
    (summary,) = root.iter("Text")
    assert summary.get("value") == "$context"
    controls = {c.get("name"): c for c in root.iter("Choices")}
    assert set(controls) == {LABEL_CONTROL, FLAGS_CONTROL}
    assert all(c.get("toName") == FEATURES_OBJECT for c in controls.values())
    label = controls[LABEL_CONTROL]
    assert label.get("choice") == "single-radio" and label.get("required") == "true"
    assert [c.get("value") for c in label.iter("Choice")] == list(classes)
    assert [c.get("value") for c in controls[FLAGS_CONTROL].iter("Choice")] == ["edge case"]
    # the summary comes first, the classes after the table
    order = [el.get("name") for el in root if el.get("name")]
    assert order == ["summary", FEATURES_OBJECT, LABEL_CONTROL, FLAGS_CONTROL]


# --- against the real server ------------------------------------------------------------
def _http(label_studio) -> httpx.Client:
    return httpx.Client(
        base_url=label_studio.url,
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=120,
    )


def _tasks(http: httpx.Client, project_id: int) -> list[dict]:
    response = http.get("/api/tasks", params={"project": project_id, "fields": "all"})
    response.raise_for_status()
    return response.json()["tasks"]


def _review_views(http: httpx.Client, project_id: int) -> list[dict]:
    response = http.get("/api/dm/views/", params={"project": project_id})
    response.raise_for_status()
    return [v for v in response.json() if v["data"].get("title") == REVIEW_VIEW_TITLE]


@pytest.mark.labelstudio
def test_pushed_tasks_read_back_typed_and_the_review_tab_hides_the_raw_fields(
    label_studio, label_studio_resource: LabelStudioResource
) -> None:
    http = _http(label_studio)
    tasks = [make_task(i) for i in range(3)]
    result = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks, feature_kinds=KINDS)
    stored = {t["data"]["item_id"]: t for t in _tasks(http, result.project_id)}
    got = stored["b002-00001"]
    assert got["data"]["f_monthly_spend"] == 105.86 and got["data"]["f_tenure_months"] == 41
    assert got["data"]["f_plan"] == "basic" and got["data"]["confidence"] == 0.735
    assert got["data"]["reasons_text"] == "low confidence; random audit"
    (prediction,) = got["predictions"]
    assert (prediction["model_version"], prediction["score"]) == ("4", pytest.approx(0.734567))
    project = http.get(f"/api/projects/{result.project_id}/").json()
    assert project["model_version"] == "4"  # the pre-annotation shown is this model's

    (view,) = _review_views(http, result.project_id)
    hidden = set(view["data"]["hiddenColumns"]["explore"])
    for raw in ("features", "feature_values", "reasons", "tier", "priority", "context"):
        assert f"tasks:data.{raw}" in hidden
    for shown in ("item_id", "predicted_label", "confidence", "reasons_text", "f_plan"):
        assert f"tasks:data.{shown}" not in hidden
    assert "tasks:inner_id" in hidden  # Label Studio's own defaults are kept
    types = view["data"]["columnsDisplayType"]
    assert {c: t for c, t in types.items() if t == "Number"} == {
        "tasks:data.confidence": "Number",
        "tasks:data.f_tenure_months": "Number",
        "tasks:data.f_monthly_spend": "Number",
    }
    # one true/false column per routing reason
    assert types["tasks:data.reason_low_confidence"] == "Boolean"
    assert got["data"]["reason_low_confidence"] is True and got["data"]["reason_audit"] is True
    # the Data Manager lists the reviewer's columns first, in that order
    columns = http.get("/api/dm/columns/", params={"project": result.project_id}).json()
    data_columns = [c["id"] for c in columns["columns"] if c.get("parent") == "data"]
    visible = [c for c in data_columns if f"tasks:data.{c}" not in hidden]
    assert visible[:7] == [
        "item_id",
        "predicted_label",
        "confidence",
        "reasons_text",
        "f_tenure_months",
        "f_monthly_spend",
        "f_plan",
    ]
    # pushing again leaves one tab, unchanged
    label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks, feature_kinds=KINDS)
    assert [v["id"] for v in _review_views(http, result.project_id)] == [view["id"]]


OLD_CONFIG = """<View>
  <Header value="$context" size="5"/>
  <Table name="features" value="$features"/>
  <Header value="Correct class" size="6"/>
  <Choices name="label" toName="features" choice="single-radio"
           required="true" showInline="true">
    <Choice value="retain"/><Choice value="upgrade"/>
    <Choice value="downgrade"/><Choice value="churn"/>
  </Choices>
  <Header value="Flags (optional)" size="6"/>
  <Choices name="flags" toName="features" choice="multiple" showInline="true">
    <Choice value="edge case"/>
  </Choices>
</View>"""


@pytest.mark.labelstudio
def test_a_project_made_by_an_older_version_is_updated_in_place(
    label_studio, label_studio_resource: LabelStudioResource, project_title: str
) -> None:
    http = _http(label_studio)
    created = http.post("/api/projects/", json={"title": project_title, "label_config": OLD_CONFIG})
    created.raise_for_status()
    project_id = created.json()["id"]
    old_data = {
        "item_id": "old-1",
        "partition": "2026-01-12",
        "tier": "general",
        "priority": 1.0,
        "reasons": ["audit"],
        "predicted_label": "churn",
        "score": 0.61,
        "model_version": "2",
        "features": {"tenure_months": 12.0, "monthly_spend": 30.123, "plan": "basic"},
        "context": "Model says: churn (score 0.61, model 2)",
    }
    imported = http.post(f"/api/projects/{project_id}/import", json=[{"data": old_data}])
    imported.raise_for_status()
    (old_task,) = _tasks(http, project_id)
    answer = {
        "result": [
            choice_result(LABEL_CONTROL, ["churn"]),
            choice_result(FLAGS_CONTROL, ["edge case"]),
        ]
    }
    http.post(f"/api/tasks/{old_task['id']}/annotations/", json=answer).raise_for_status()

    result = label_studio_resource.push_tasks(
        classes=CLASSES, tasks=[make_task(1)], feature_kinds=KINDS
    )
    assert result.project_id == project_id and result.created == 1
    project = http.get(f"/api/projects/{project_id}/").json()
    assert project["label_config"].strip() == build_label_config(CLASSES).strip()
    stored = {t["data"]["item_id"]: t for t in _tasks(http, project_id)}
    assert set(stored) == {"old-1", "b002-00001"}
    assert stored["old-1"]["data"] == old_data
    (kept,) = stored["old-1"]["annotations"]
    assert read_result(kept["result"]) == ("churn", ("edge case",), "")
    assert len(_review_views(http, project_id)) == 1

    # the old task is pulled like a new one, with its exact features and its score
    pulled = {a.item_id: a for a in label_studio_resource.pull_annotations()}
    assert pulled["old-1"].label == "churn" and pulled["old-1"].flags == ("edge case",)
    assert pulled["old-1"].features["monthly_spend"] == 30.123
    assert pulled["old-1"].model_score == 0.61
    assert [t.annotations for t in label_studio_resource.item_tasks(item_id="old-1")] == [1]
