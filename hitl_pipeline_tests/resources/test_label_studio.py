"""LabelStudioResource against a real Label Studio server (one per session).

The ``labelstudio`` tests talk to the session's local server; the others need no server
(pure helpers, and a dead address).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest

from hitl_pipeline.core.intake import (
    EMPTY_RESULT,
    MULTIPLE_CHOICES,
    UNKNOWN_CONTROL,
    UNKNOWN_LABEL,
)
from hitl_pipeline.core.types import LabelingTask
from hitl_pipeline.resources.label_studio import (
    EDGE_CASE_FLAG,
    FLAGS_CONTROL,
    LABEL_CONTROL,
    LabelStudioAuthError,
    LabelStudioResource,
    LabelStudioUnavailable,
    annotations_from_export,
    build_label_config,
    choice_result,
    read_result,
    task_payload,
)
from hitl_pipeline.resources.label_studio_server import free_port

CLASSES = ("cat", "dog", "fox")


def make_tasks(
    n: int, *, prefix: str = "item", model_version: str = "3", tier: str = "general"
) -> list[LabelingTask]:
    return [
        LabelingTask(
            item_id=f"{prefix}-{i:04d}",
            features={"weight": 1.5 * i, "colour": ["red", "grey"][i % 2], "age": i},
            predicted_label=CLASSES[i % len(CLASSES)],
            score=0.4 + (i % 5) / 10,
            model_version=model_version,
            reasons=("low_confidence",) if i % 2 else ("audit",),
            tier=tier,
            partition="2026-11-02",
            priority=float(n - i),
        )
        for i in range(n)
    ]


class Admin:
    """Direct REST calls a test uses to look behind the resource's back."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Token {token}"}, timeout=120
        )

    def project_ids(self, title: str) -> list[int]:
        response = self.http.get("/api/projects/", params={"title": title, "page_size": 100})
        response.raise_for_status()
        return [p["id"] for p in response.json()["results"] if p["title"] == title]

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        response = self.http.get(
            "/api/tasks",
            params={"project": project_id, "page_size": 10_000, "fields": "all"},
        )
        response.raise_for_status()
        return response.json()["tasks"]

    def annotate(
        self, task_id: int, label: str | None, *, flags: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if label is None:
            body: dict[str, Any] = {"result": [], "was_cancelled": True}
        else:
            result = [choice_result(LABEL_CONTROL, [label])]
            if flags:
                result.append(choice_result(FLAGS_CONTROL, list(flags)))
            body = {"result": result}
        response = self.http.post(f"/api/tasks/{task_id}/annotations/", json=body)
        response.raise_for_status()
        return response.json()

    def relabel(self, annotation_id: int, label: str) -> None:
        response = self.http.patch(
            f"/api/annotations/{annotation_id}/",
            json={"result": [choice_result(LABEL_CONTROL, [label])]},
        )
        response.raise_for_status()


@pytest.fixture
def admin(label_studio) -> Admin:
    return Admin(label_studio.url, label_studio.token)


def task_ids_by_item(admin: Admin, project_id: int) -> dict[str, int]:
    return {t["data"]["item_id"]: t["id"] for t in admin.tasks(project_id)}


# --- without a server -------------------------------------------------------------------
def test_task_payload_carries_our_fields_and_the_prediction() -> None:
    import numpy as np

    task = LabelingTask(
        item_id="a1",
        features={"x": np.float64(2.5), "n": np.int64(3), "missing": float("nan"), "c": "b"},
        predicted_label="dog",
        score=0.62,
        model_version="7",
        reasons=("low_confidence", "ood"),
        tier="expert",
        partition="2026-11-02",
        priority=0.9,
    )
    payload = task_payload(task)
    json.dumps(payload, allow_nan=False)  # strict JSON: numpy and NaN must be gone
    assert payload["data"]["features"] == {"x": 2.5, "n": 3, "missing": None, "c": "b"}
    assert payload["data"]["item_id"] == "a1"
    assert payload["data"]["reasons"] == ["low_confidence", "ood"]
    assert "dog" in payload["data"]["context"] and "ood" in payload["data"]["context"]
    (prediction,) = payload["predictions"]
    assert prediction["model_version"] == "7"
    assert prediction["score"] == pytest.approx(0.62)
    assert prediction["result"] == [choice_result(LABEL_CONTROL, ["dog"])]


def test_label_config_rejects_duplicate_or_missing_classes() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        build_label_config(["a", "a"])
    with pytest.raises(ValueError):
        build_label_config([])
    assert 'value="a &amp; b"' in build_label_config(["a & b", "c"])


def test_annotations_from_export_parses_rows_flags_cancels_and_since() -> None:
    def ann(aid: int, when: str, result: list, cancelled: bool = False, by: Any = 7) -> dict:
        return {
            "id": aid,
            "completed_by": by,
            "result": result,
            "was_cancelled": cancelled,
            "created_at": when,
            "updated_at": when,
            "lead_time": 4.5,
        }

    exported = [
        {
            "id": 11,
            "data": {
                "item_id": "x1",
                "partition": "p",
                "tier": "expert",
                "predicted_label": "cat",
                "model_version": "3",
                "reasons": ["audit"],
                "features": {"a": 1},
            },
            "annotations": [
                ann(
                    1,
                    "2026-11-02T10:00:00.000001Z",
                    [
                        choice_result(LABEL_CONTROL, ["dog"]),
                        choice_result(FLAGS_CONTROL, [EDGE_CASE_FLAG]),
                    ],
                ),
                ann(2, "2026-11-02T11:00:00Z", [], cancelled=True, by={"email": "b@x"}),
            ],
        }
    ]
    rows = annotations_from_export(exported, {7: "a@x"})
    assert [(r.annotation_id, r.label, r.was_cancelled) for r in rows] == [
        (1, "dog", False),
        (2, None, True),
    ]
    first = rows[0]
    assert first.annotator == "a@x" and rows[1].annotator == "b@x"
    assert first.flags == (EDGE_CASE_FLAG,) and first.tier == "expert"
    assert first.completed_at.utcoffset() == timedelta(0)
    assert first.features == {"a": 1} and first.reasons == ("audit",)
    assert first.predicted_label == "cat" and first.model_version == "3"
    since = datetime(2026, 11, 2, 10, 0, 0, 1, tzinfo=UTC)  # exactly the first one's time
    assert [r.annotation_id for r in annotations_from_export(exported, {}, since=since)] == [2]


def _choices(control: str, *values: str) -> dict[str, Any]:
    return choice_result(control, list(values))


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        # one class: a label (flags ride along)
        ([_choices(LABEL_CONTROL, "dog")], ("dog", (), "")),
        (
            [_choices(LABEL_CONTROL, "dog"), _choices(FLAGS_CONTROL, EDGE_CASE_FLAG)],
            ("dog", (EDGE_CASE_FLAG,), ""),
        ),
        # two classes in one item, or the control answered twice: nobody decided, and the
        # first choice does not win (the tester's finding)
        ([_choices(LABEL_CONTROL, "dog", "cat")], (None, (), MULTIPLE_CHOICES)),
        (
            [_choices(LABEL_CONTROL, "dog"), _choices(LABEL_CONTROL, "cat")],
            (None, (), MULTIPLE_CHOICES),
        ),
        # submitted without a class: an empty result, an empty choice, only a flag
        ([], (None, (), EMPTY_RESULT)),
        ([_choices(LABEL_CONTROL)], (None, (), EMPTY_RESULT)),
        ([_choices(FLAGS_CONTROL, EDGE_CASE_FLAG)], (None, (EDGE_CASE_FLAG,), EMPTY_RESULT)),
        # a control our interface does not have, even next to a good class
        ([_choices("comment", "dog")], (None, (), UNKNOWN_CONTROL)),
        (
            [_choices(LABEL_CONTROL, "dog"), _choices("sentiment", "positive")],
            ("dog", (), UNKNOWN_CONTROL),
        ),
        # a flag the interface does not offer
        (
            [_choices(LABEL_CONTROL, "dog"), _choices(FLAGS_CONTROL, "spam")],
            ("dog", ("spam",), UNKNOWN_LABEL),
        ),
        # a class outside the schema is judged later, with the schema (core.intake)
        ([_choices(LABEL_CONTROL, "zebra")], ("zebra", (), "")),
    ],
)
def test_read_result_is_strict(result: list, expected: tuple) -> None:
    assert read_result(result) == expected


@pytest.mark.faults
def test_export_keeps_bad_answers_with_their_problem_and_raw_result() -> None:
    exported = [
        {
            "id": 5,
            "data": {"item_id": "x"},
            "annotations": [
                {
                    "id": 1,
                    "completed_by": 7,
                    "result": [
                        _choices(LABEL_CONTROL, "dog", "cat"),
                        _choices(FLAGS_CONTROL, EDGE_CASE_FLAG),
                    ],
                    "created_at": "2026-11-02T10:00:00Z",
                },
                {
                    "id": 2,
                    "completed_by": 7,
                    "result": [],
                    "was_cancelled": True,
                    "created_at": "2026-11-02T10:01:00Z",
                },
            ],
        }
    ]
    two, skip = annotations_from_export(exported, {7: "a@x"})
    assert (two.label, two.answer_problem, two.flags) == (None, MULTIPLE_CHOICES, ())
    assert json.loads(two.raw_result)[0]["value"]["choices"] == ["dog", "cat"]  # nothing lost
    assert (skip.was_cancelled, skip.label, skip.answer_problem) == (True, None, "")


def test_dead_server_raises_unavailable_naming_url_and_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    resource = LabelStudioResource(url=url, api_key="whatever-token", project_title="t")
    assert resource.is_available() is False
    with pytest.raises(LabelStudioUnavailable) as info:
        resource.pull_annotations()
    assert url in str(info.value)
    assert "hitl-pipeline labelstudio start" in str(info.value)
    with pytest.raises(LabelStudioUnavailable):
        resource.queue_status()


# --- against the real server ------------------------------------------------------------
@pytest.mark.labelstudio
def test_bad_token_is_reported_as_such(label_studio) -> None:
    resource = LabelStudioResource(url=label_studio.url, api_key="not-the-token-123")
    assert resource.is_available() is False
    with pytest.raises(LabelStudioAuthError, match="rejected the API token"):
        resource.queue_status()
    good = LabelStudioResource(url=label_studio.url, api_key=label_studio.token)
    assert good.is_available() is True


@pytest.mark.labelstudio
def test_ensure_project_is_idempotent_and_follows_new_classes(
    label_studio_resource: LabelStudioResource, admin: Admin, project_title: str
) -> None:
    first = label_studio_resource.ensure_project(classes=CLASSES)
    second = label_studio_resource.ensure_project(classes=CLASSES)
    assert first == second
    assert admin.project_ids(project_title) == [first]

    detail = admin.http.get(f"/api/projects/{first}/").json()
    assert detail["show_instruction"] is True and "edge case" in detail["expert_instruction"]
    assert 'name="label"' in detail["label_config"] and 'value="fox"' in detail["label_config"]

    assert label_studio_resource.ensure_project(classes=(*CLASSES, "owl")) == first
    detail = admin.http.get(f"/api/projects/{first}/").json()
    assert 'value="owl"' in detail["label_config"]


@pytest.mark.labelstudio
def test_push_creates_tasks_with_the_models_prediction(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    tasks = make_tasks(7)
    result = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    assert (result.created, result.already_present) == (7, 0)

    stored = {t["data"]["item_id"]: t for t in admin.tasks(result.project_id)}
    assert set(stored) == {t.item_id for t in tasks}
    for task in tasks:
        got = stored[task.item_id]
        assert got["data"]["features"]["colour"] == task.features["colour"]
        assert got["data"]["tier"] == task.tier and got["data"]["reasons"] == list(task.reasons)
        (prediction,) = got["predictions"]
        assert prediction["model_version"] == "3"
        assert prediction["score"] == pytest.approx(task.score)
        assert prediction["result"][0]["value"]["choices"] == [task.predicted_label]
    # the default queue serves the highest priority first
    by_id = sorted(stored.values(), key=lambda t: t["id"])
    assert [t["data"]["item_id"] for t in by_id] == [t.item_id for t in tasks]  # priority n-i

    project = admin.http.get(f"/api/projects/{result.project_id}/").json()
    assert project["model_version"] == "3"  # its predictions are the pre-filled ones


@pytest.mark.labelstudio
def test_repush_and_duplicate_ids_create_nothing_twice(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    tasks = make_tasks(6)
    first = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks + tasks[:2])
    assert (first.created, first.already_present) == (6, 0)
    again = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    assert (again.created, again.already_present) == (0, 6)
    grown = label_studio_resource.push_tasks(classes=CLASSES, tasks=make_tasks(9))
    assert (grown.created, grown.already_present) == (3, 6)
    items = [t["data"]["item_id"] for t in admin.tasks(first.project_id)]
    assert sorted(items) == sorted(t.item_id for t in make_tasks(9))


@pytest.mark.labelstudio
def test_push_after_a_crash_half_way_completes_without_duplicates(
    label_studio: Any, project_title: str, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = make_tasks(10)
    crashing = LabelStudioResource(
        url=label_studio.url,
        api_key=label_studio.token,
        project_title=project_title,
        import_chunk_size=4,
    )
    projects_api = crashing._sdk().projects
    real_import = projects_api.import_tasks
    calls = []

    def import_then_die(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["request"]))
        if len(calls) == 2:  # the process dies during the second chunk
            raise SystemExit("simulated crash")
        return real_import(*args, **kwargs)

    monkeypatch.setattr(projects_api, "import_tasks", import_then_die)
    with pytest.raises(SystemExit):
        crashing.push_tasks(classes=CLASSES, tasks=tasks)
    project_id = admin.project_ids(project_title)[0]
    assert len(admin.tasks(project_id)) == 4  # one chunk made it

    rerun = LabelStudioResource(
        url=label_studio.url, api_key=label_studio.token, project_title=project_title
    )
    result = rerun.push_tasks(classes=CLASSES, tasks=tasks)
    assert (result.created, result.already_present) == (6, 4)
    items = [t["data"]["item_id"] for t in admin.tasks(project_id)]
    assert sorted(items) == sorted(t.item_id for t in tasks)  # each exactly once


@pytest.mark.labelstudio
def test_pull_returns_answers_and_only_new_ones_since_a_cursor(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    assert label_studio_resource.pull_annotations() == []  # no project yet: nothing
    tasks = make_tasks(5)
    pushed = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    ids = task_ids_by_item(admin, pushed.project_id)
    assert label_studio_resource.pull_annotations() == []  # pushed, nobody answered

    a0 = admin.annotate(ids["item-0000"], "dog", flags=(EDGE_CASE_FLAG,))
    admin.annotate(ids["item-0001"], "dog")
    admin.annotate(ids["item-0001"], "fox")  # a second opinion on the same task
    first = label_studio_resource.pull_annotations()
    assert len(first) == 3
    assert {(a.item_id, a.label) for a in first} == {
        ("item-0000", "dog"),
        ("item-0001", "dog"),
        ("item-0001", "fox"),
    }
    row = next(a for a in first if a.item_id == "item-0000")
    assert row.annotator == "admin@tests.hitl.local"
    assert row.flags == (EDGE_CASE_FLAG,) and row.was_cancelled is False
    assert row.predicted_label == tasks[0].predicted_label and row.model_version == "3"
    assert row.features == {"weight": 0.0, "colour": "red", "age": 0}
    assert row.partition == "2026-11-02" and row.reasons == ("audit",)
    assert row.completed_at.utcoffset() == timedelta(0)
    cursor = max(a.updated_at for a in first)

    assert label_studio_resource.pull_annotations(since=cursor) == []
    assert label_studio_resource.pull_annotations(since=pd.Timestamp(cursor)) == []
    time.sleep(0.05)  # timestamps have microseconds; keep the order unambiguous
    admin.annotate(ids["item-0002"], "fox")
    admin.relabel(a0["id"], "fox")  # an edit counts as new
    new = label_studio_resource.pull_annotations(since=cursor)
    assert label_studio_resource.pull_annotations(since=pd.Timestamp(cursor)) == new
    with pytest.raises(ValueError, match="timezone"):
        label_studio_resource.pull_annotations(since=cursor.replace(tzinfo=None))
    assert sorted((a.item_id, a.label) for a in new) == [("item-0000", "fox"), ("item-0002", "fox")]
    assert all(a.updated_at > cursor for a in new)
    assert {a.annotation_id for a in new} & {a.annotation_id for a in first} == {a0["id"]}


@pytest.mark.labelstudio
def test_skipped_task_is_a_cancelled_annotation_without_label(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    pushed = label_studio_resource.push_tasks(classes=CLASSES, tasks=make_tasks(2))
    ids = task_ids_by_item(admin, pushed.project_id)
    admin.annotate(ids["item-0000"], None)
    (skipped,) = label_studio_resource.pull_annotations()
    assert skipped.was_cancelled is True and skipped.label is None
    assert skipped.item_id == "item-0000"
    status = label_studio_resource.queue_status()
    assert (status.total_tasks, status.finished_tasks) == (2, 0)  # a skip labels nothing


@pytest.mark.labelstudio
def test_item_tasks_count_every_answer_for_the_trail(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    """What ``hitl-pipeline trail`` compares with the ledger: answers and skips alike."""
    pushed = label_studio_resource.push_tasks(classes=CLASSES, tasks=make_tasks(3))
    ids = task_ids_by_item(admin, pushed.project_id)
    admin.annotate(ids["item-0001"], "cat")
    admin.annotate(ids["item-0001"], None)  # a second reviewer skipped it
    (answered,) = label_studio_resource.item_tasks(item_id="item-0001")
    assert (answered.tier, answered.task_id, answered.annotations) == (
        "general",
        ids["item-0001"],
        2,
    )
    (waiting,) = label_studio_resource.item_tasks(item_id="item-0002")
    assert waiting.annotations == 0
    assert label_studio_resource.item_tasks(item_id="never-pushed") == []


@pytest.mark.labelstudio
def test_queue_status_counts_finished_tasks_and_latest_answer(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    empty = label_studio_resource.queue_status()
    assert (empty.total_tasks, empty.finished_tasks, empty.latest_completed_at) == (0, 0, None)
    pushed = label_studio_resource.push_tasks(classes=CLASSES, tasks=make_tasks(4))
    ids = task_ids_by_item(admin, pushed.project_id)
    before = label_studio_resource.queue_status()
    assert (before.total_tasks, before.finished_tasks, before.pending_tasks) == (4, 0, 4)
    assert before.latest_completed_at is None
    admin.annotate(ids["item-0003"], "cat")
    last = admin.annotate(ids["item-0001"], "dog")
    after = label_studio_resource.queue_status()
    assert (after.total_tasks, after.finished_tasks) == (4, 2)
    expected = datetime.fromisoformat(last["created_at"]).astimezone(UTC)
    assert after.latest_completed_at == expected
    assert after.latest_completed_at.tzinfo is not None

    started = time.perf_counter()
    for _ in range(5):
        label_studio_resource.queue_status()
    per_call = (time.perf_counter() - started) / 5
    assert per_call < 2.0 and not math.isnan(per_call)  # sensor-cheap even on a busy machine


# --- tiers, overlap, bad annotations -----------------------------------------------------------
def test_tier_titles_fit_label_studio_and_never_collide() -> None:
    from hitl_pipeline.resources.label_studio import tier_project_title

    assert tier_project_title("hitl-pipeline: review", "general") == "hitl-pipeline: review"
    assert tier_project_title("hitl-pipeline: review", "expert") == "hitl-pipeline: review · expert"
    long_a, long_b = "a" * 44 + "-one", "a" * 44 + "-two"
    titles = {
        tier_project_title(b, t) for b in (long_a, long_b) for t in ("expert", "adjudication")
    }
    assert len(titles) == 4 and all(len(t) <= 50 for t in titles)


@pytest.mark.labelstudio
def test_each_tier_is_its_own_project_and_status_and_pull_cover_them_all(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    tasks = make_tasks(4) + make_tasks(3, prefix="exp", tier="expert")
    result = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    assert (result.created, set(result.projects)) == (7, {"general", "expert"})
    assert result.project_id == result.projects["general"]
    expert_title = label_studio_resource.tier_title("expert")
    assert admin.project_ids(expert_title) == [result.projects["expert"]]
    detail = admin.http.get(f"/api/projects/{result.projects['expert']}/").json()
    assert "Expert queue" in detail["expert_instruction"]
    assert sorted(t["data"]["item_id"] for t in admin.tasks(result.projects["expert"])) == [
        "exp-0000",
        "exp-0001",
        "exp-0002",
    ]
    # a re-push of the same items into their tiers creates nothing
    again = label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    assert (again.created, again.already_present) == (0, 7)

    general = task_ids_by_item(admin, result.projects["general"])
    expert = task_ids_by_item(admin, result.projects["expert"])
    admin.annotate(general["item-0001"], "dog")
    admin.annotate(expert["exp-0002"], "fox", flags=(EDGE_CASE_FLAG,))
    by_tier = label_studio_resource.queue_status_by_tier()
    assert {t: (s.total_tasks, s.finished_tasks) for t, s in by_tier.items()} == {
        "general": (4, 1),
        "expert": (3, 1),
    }
    status = label_studio_resource.queue_status()
    assert (status.total_tasks, status.finished_tasks) == (7, 2)
    pulled = {a.item_id: a for a in label_studio_resource.pull_annotations()}
    assert set(pulled) == {"item-0001", "exp-0002"}
    assert (pulled["exp-0002"].tier, pulled["exp-0002"].flags) == ("expert", (EDGE_CASE_FLAG,))
    assert pulled["item-0001"].tier == "general"


@pytest.mark.labelstudio
def test_overlap_uses_label_studios_own_project_settings(
    label_studio: Any, project_title: str, admin: Admin
) -> None:
    resource = LabelStudioResource(
        url=label_studio.url,
        api_key=label_studio.token,
        project_title=project_title,
        overlap_share=0.4,
        overlap_annotators=3,
    )
    result = resource.push_tasks(classes=CLASSES, tasks=make_tasks(10))
    project = admin.http.get(f"/api/projects/{result.project_id}/").json()
    assert (project["maximum_annotations"], project["overlap_cohort_percentage"]) == (3, 40)
    overlaps = sorted(t["overlap"] for t in admin.tasks(result.project_id))
    assert overlaps == [1] * 6 + [3] * 4  # Label Studio itself picks the 40% cohort
    adjudication = resource.push_tasks(
        classes=CLASSES, tasks=make_tasks(2, prefix="adj", tier="adjudication")
    )
    project = admin.http.get(f"/api/projects/{adjudication.project_id}/").json()
    assert project["maximum_annotations"] == 1  # one final decision per item


@pytest.mark.labelstudio
def test_bad_annotations_nothing_lost_nothing_counted_twice(
    label_studio_resource: LabelStudioResource, admin: Admin
) -> None:
    from hitl_pipeline.core.datasets import resolve_labels, split_out_of_schema
    from hitl_pipeline.defs.s06_feedback import count_new_or_edited, upsert_annotations
    from hitl_pipeline.resources.local_store import annotations_to_frame

    pushed = label_studio_resource.push_tasks(classes=CLASSES, tasks=make_tasks(4))
    ids = task_ids_by_item(admin, pushed.project_id)
    edited = admin.annotate(ids["item-0000"], "cat")
    admin.annotate(ids["item-0001"], "zebra")  # not a class: Label Studio stores it anyway
    admin.annotate(ids["item-0002"], None)  # skipped
    admin.annotate(ids["item-0003"], "fox")

    first = annotations_to_frame(label_studio_resource.pull_annotations())
    ledger = upsert_annotations(first.iloc[0:0], first)
    assert count_new_or_edited(first.iloc[0:0], first) == 4
    usable, rejected = split_out_of_schema(ledger, CLASSES)
    assert rejected["item_id"].tolist() == ["item-0001"]
    assert sorted(resolve_labels(usable)["item_id"]) == ["item-0000", "item-0003"]
    skipped = ledger[ledger["item_id"] == "item-0002"]
    assert skipped["was_cancelled"].tolist() == [True] and skipped["label"].isna().all()

    # edited after it was pulled: replaces its copy, counted as one edit, not a new vote
    since = ledger["updated_at"].max()
    time.sleep(1.1)
    admin.relabel(edited["id"], "dog")
    # deleted in Label Studio: its annotation stays in the ledger
    assert label_studio_resource.delete_task(tier="general", item_id="item-0003") is True
    pulled = annotations_to_frame(
        label_studio_resource.pull_annotations(since=since - timedelta(minutes=5))
    )
    assert count_new_or_edited(ledger, pulled) == 1
    ledger = upsert_annotations(ledger, pulled)
    assert len(ledger) == 4 and ledger["annotation_id"].is_unique
    labels = resolve_labels(split_out_of_schema(ledger, CLASSES)[0]).set_index("item_id")
    assert labels.loc["item-0000", "label"] == "dog"
    assert labels.loc["item-0000", "n_annotations"] == 1
    assert labels.loc["item-0003", "label"] == "fox"  # the deleted task's label is kept
    assert label_studio_resource.queue_status().total_tasks == 3
