"""Simulated reviewers: their habits (no server) and their answers in a real Label Studio."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from hitl_pipeline.core.types import LabelingTask
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer, classes_from_config
from hitl_pipeline.resources.label_studio import (
    EDGE_CASE_FLAG,
    LabelStudioResource,
    build_label_config,
)

CLASSES = ("cat", "dog", "fox")


def truth_of(i: int) -> str:
    return CLASSES[(i * 7) % 3]


def tasks_with_truth(n: int) -> tuple[list[LabelingTask], dict[str, str]]:
    tasks = [
        LabelingTask(
            item_id=f"r-{i:04d}",
            features={"x": float(i)},
            predicted_label=CLASSES[i % 3],  # right on a third of the items
            score=0.5,
            model_version="1",
            reasons=("low_confidence",),
            priority=float(i % 10),
        )
        for i in range(n)
    ]
    return tasks, {t.item_id: truth_of(i) for i, t in enumerate(tasks)}


# --- habits, without a server -------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_error_rate_is_respected_and_errors_are_wrong_classes(rate: float) -> None:
    reviewer = SimulatedReviewer(email="r@x", error_rate=rate, seed=5, flag_rate=0.0)
    n = 3000
    answers = [
        reviewer.answer(item_id=str(i), truth=truth_of(i), predicted=None, classes=CLASSES)
        for i in range(n)
    ]
    wrong = sum(a.label != truth_of(i) for i, a in enumerate(answers))
    sigma = (rate * (1 - rate) / n) ** 0.5
    assert abs(wrong / n - rate) <= 4 * sigma + 1e-9
    assert all(a.label in CLASSES for a in answers)
    assert all(4.0 <= a.lead_time_s <= 30.0 for a in answers)


def test_bias_sends_every_error_to_the_bias_class() -> None:
    reviewer = SimulatedReviewer(email="b@x", error_rate=0.5, bias_toward="fox", seed=1)
    errors: Counter[tuple[str, str | None]] = Counter()
    for i in range(600):
        truth = truth_of(i)
        answer = reviewer.answer(item_id=str(i), truth=truth, predicted=None, classes=CLASSES)
        if answer.label != truth:
            errors[(truth, answer.label)] += 1
    assert all(label == "fox" for truth, label in errors if truth != "fox")
    assert all(label != "fox" for truth, label in errors if truth == "fox")  # still wrong
    biased = sum(n for (truth, _), n in errors.items() if truth != "fox")
    assert 160 <= biased <= 240  # half of the 400 non-fox items


def test_answers_are_deterministic_and_skips_and_flags_behave() -> None:
    a = SimulatedReviewer(email="a@x", error_rate=0.2, seed=3, skip_rate=0.1, flag_rate=1.0)
    same = SimulatedReviewer(email="a@x", error_rate=0.2, seed=3, skip_rate=0.1, flag_rate=1.0)
    other = SimulatedReviewer(email="a@x", error_rate=0.2, seed=4, skip_rate=0.1, flag_rate=1.0)

    def answers(reviewer: SimulatedReviewer) -> list:
        return [
            reviewer.answer(item_id=str(i), truth="cat", predicted="dog", classes=CLASSES)
            for i in range(300)
        ]

    first = answers(a)
    assert first == answers(same)
    assert first != answers(other)
    skipped = [x for x in first if x.label is None]
    assert 10 <= len(skipped) <= 55 and all(x.flags == () for x in skipped)
    # the model was wrong on every item and flag_rate is 1: every answer flags it
    assert all(x.flags == (EDGE_CASE_FLAG,) for x in first if x.label is not None)
    right_model = a.answer(item_id="0", truth="cat", predicted="cat", classes=CLASSES)
    assert right_model.flags == ()


def test_classes_are_read_from_the_projects_interface() -> None:
    assert classes_from_config(build_label_config(["b", "a & c"])) == ["b", "a & c"]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        SimulatedReviewer(email="x", error_rate=1.5)
    with pytest.raises(ValueError, match="distinct"):
        ReviewerPool(
            url="http://x", api_key="k", reviewers=[SimulatedReviewer("a"), SimulatedReviewer("a")]
        )


@pytest.mark.parametrize("on_postgres", [True, False])
def test_init_fallback_creates_the_user_where_the_server_keeps_its_data(
    tmp_path, monkeypatch, on_postgres: bool
) -> None:
    """The ``label-studio init`` fallback runs with the server's database settings: on
    PostgreSQL its database (as ``deployment.label_studio_env`` forms them), else none.
    The command is caught before it runs: no server is touched."""
    from hitl_pipeline.deployment import PostgresServer
    from hitl_pipeline.resources import label_studio_server

    ran = []

    def fake_run(command, **kwargs):
        ran.append((command, kwargs["env"]))
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

    monkeypatch.setattr(label_studio_server.subprocess, "run", fake_run)
    for name in ("DJANGO_DB", "POSTGRE_NAME"):  # the caller's own settings stay out
        monkeypatch.delenv(name, raising=False)
    database = label_studio_server.PostgresDatabase(
        server=PostgresServer(host="db.example", port=5433, user="loop"), name="hitl_labelstudio"
    )
    pool = ReviewerPool(
        url="http://127.0.0.1:1",
        api_key="admin",
        reviewers=[SimulatedReviewer(email="ada@hitl.local")],
        data_dir=tmp_path,
        postgres=database if on_postgres else None,
    )
    token = pool._init_locally("ada@hitl.local")

    ((command, env),) = ran
    assert command[1:3] == ["init", "-q"] and "ada@hitl.local" in command
    assert token.startswith("sim-") and token in command
    if on_postgres:
        assert env["DJANGO_DB"] == "default"
        assert (env["POSTGRE_NAME"], env["POSTGRE_HOST"]) == ("hitl_labelstudio", "db.example")
        assert (env["POSTGRE_PORT"], env["POSTGRE_USER"]) == ("5433", "loop")
    else:
        assert "POSTGRE_NAME" not in env


# --- in a real Label Studio ---------------------------------------------------------------
def test_a_configured_reviewer_list_gains_the_simulated_reviewers() -> None:
    from hitl_pipeline.demo.app import count_simulated_reviewers

    pool = ReviewerPool(
        url="http://x",
        api_key="k",
        reviewers=[SimulatedReviewer("a@sim"), SimulatedReviewer("b@sim")],
        adjudicators=[SimulatedReviewer("judge@sim")],
    )
    listed = {"HITL_REVIEWERS": "me@team.org, a@sim"}
    count_simulated_reviewers(pool, listed)
    assert listed["HITL_REVIEWERS"] == "me@team.org,a@sim,b@sim,judge@sim"
    unset: dict[str, str] = {}
    count_simulated_reviewers(pool, unset)
    assert unset == {}  # unset stays unset: every account but the service account counts


@pytest.mark.labelstudio
def test_pool_answers_open_tasks_as_distinct_users_with_expected_labels(
    label_studio, label_studio_resource: LabelStudioResource, project_title: str
) -> None:
    tasks, truth = tasks_with_truth(40)
    label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    reviewers = [
        SimulatedReviewer(email="careful@sim.hitl.local", error_rate=0.0, seed=1),
        SimulatedReviewer(email="sloppy@sim.hitl.local", error_rate=0.3, seed=2, skip_rate=0.1),
    ]
    pool = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        reviewers=reviewers,
        project_title=project_title,
        seed=11,
    )
    unknown = dict(list(truth.items())[:30])  # 10 items have no known truth: left open
    assert pool.answer_open_tasks(truth=unknown, limit=12) == 12
    assert pool.answer_open_tasks(truth=unknown) == 18
    assert pool.answer_open_tasks(truth=unknown) == 0  # nothing open that it can judge

    pulled = label_studio_resource.pull_annotations()
    assert len(pulled) == 30 and len({a.item_id for a in pulled}) == 30
    by_email = {r.email: r for r in reviewers}
    assert {a.annotator for a in pulled} == set(by_email)  # real, distinct accounts
    predicted = {t.item_id: t.predicted_label for t in tasks}
    for annotation in pulled:
        expected = by_email[annotation.annotator].answer(
            item_id=annotation.item_id,
            truth=truth[annotation.item_id],
            predicted=predicted[annotation.item_id],
            classes=CLASSES,
        )
        assert annotation.label == expected.label  # the pulled label is what it chose
        assert annotation.was_cancelled is (expected.label is None)
        assert annotation.flags == expected.flags
        assert annotation.lead_time_s == pytest.approx(expected.lead_time_s)
    careful = [a for a in pulled if a.annotator == "careful@sim.hitl.local"]
    assert careful and all(a.label == truth[a.item_id] for a in careful)
    # highest priority first: the first 12 answered are the 12 top-priority items
    first_twelve = sorted(pulled, key=lambda a: a.annotation_id)[:12]
    priority = {t.item_id: t.priority for t in tasks}
    assert min(priority[a.item_id] for a in first_twelve) >= 6.0
    status = label_studio_resource.queue_status()
    assert status.total_tasks == 40
    assert status.finished_tasks == sum(1 for a in pulled if not a.was_cancelled)


@pytest.mark.labelstudio
def test_overlap_gives_some_tasks_two_different_reviewers(
    label_studio, label_studio_resource: LabelStudioResource, project_title: str
) -> None:
    tasks, truth = tasks_with_truth(30)
    label_studio_resource.push_tasks(classes=CLASSES, tasks=tasks)
    pool = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        reviewers=[
            SimulatedReviewer(email="careful@sim.hitl.local", error_rate=0.0, seed=1),
            SimulatedReviewer(email="third@sim.hitl.local", error_rate=0.1, seed=3),
        ],
        project_title=project_title,
        overlap=0.5,
    )
    submitted = pool.answer_open_tasks(truth=truth)
    pulled = label_studio_resource.pull_annotations()
    assert submitted == len(pulled)
    per_task = Counter(a.item_id for a in pulled)
    assert set(per_task) == set(truth) and set(per_task.values()) <= {1, 2}
    doubled = [item for item, n in per_task.items() if n == 2]
    assert 6 <= len(doubled) <= 24  # about half of 30
    for item in doubled:
        assert len({a.annotator for a in pulled if a.item_id == item}) == 2


@pytest.mark.labelstudio
def test_agreement_adjudication_and_annotator_quality_against_known_truth(
    label_studio, project_title: str
) -> None:
    """The whole trust machinery on a real server, checked against the simulated truth:
    Label Studio's overlap setting doubles a share of tasks, a careless and a biased
    reviewer disagree with the careful one, disputes go to the adjudication project, an
    error-free adjudicator decides them, and every adjudicated label is the truth."""
    import pandas as pd

    from hitl_pipeline.core.agreement import (
        agreement_by_queue,
        annotator_quality,
        disputed_items,
        latest_votes,
    )
    from hitl_pipeline.core.datasets import resolve_labels
    from hitl_pipeline.defs.s06_feedback import adjudication_tasks_for
    from hitl_pipeline.resources.local_store import annotations_to_frame

    resource = LabelStudioResource(
        url=label_studio.url,
        api_key=label_studio.token,
        project_title=project_title,
        overlap_share=1.0,  # every general task needs two answers
        overlap_annotators=2,
    )
    tasks, truth = tasks_with_truth(60)
    resource.push_tasks(classes=CLASSES, tasks=tasks)
    careful = SimulatedReviewer(email="careful@sim.hitl.local", error_rate=0.0, seed=1)
    careless = SimulatedReviewer(email="careless@sim.hitl.local", error_rate=0.4, seed=2)
    biased = SimulatedReviewer(
        email="biased@sim.hitl.local", error_rate=0.4, bias_toward="fox", seed=3
    )
    judge = SimulatedReviewer(email="judge@sim.hitl.local", error_rate=0.0, seed=4)
    pool = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        reviewers=[careful, careless, biased],
        adjudicators=[judge],
        project_title=project_title,
        seed=5,
    )
    assert pool.answer_open_tasks(truth=truth) == 120  # two answers on each of 60 tasks

    ledger = annotations_to_frame(resource.pull_annotations())
    votes = latest_votes(ledger, classes=CLASSES)
    assert votes.groupby("item_id").size().eq(2).all()
    disputed = disputed_items(votes)
    # every dispute involves a wrong answer, and every wrong answer meets a right one or
    # another wrong one: disputes are exactly the items with two different answers
    two_labels = votes.groupby("item_id")["label"].nunique()
    assert disputed == sorted(two_labels[two_labels > 1].index)
    assert 10 <= len(disputed) <= 45

    (general,) = agreement_by_queue(votes)
    assert general.alpha is not None and general.alpha < 0.667 and general.signal

    pushed = resource.push_tasks(classes=CLASSES, tasks=adjudication_tasks_for(ledger, CLASSES))
    assert pushed.created == len(disputed) and set(pushed.projects) == {"adjudication"}
    assert pool.answer_open_tasks(truth=truth) == len(disputed)  # one ruling each
    ledger = annotations_to_frame(resource.pull_annotations())
    labels = resolve_labels(ledger).set_index("item_id")
    ruled = labels[labels["decided_by"] == "adjudicated"]
    assert sorted(ruled.index) == disputed
    assert all(ruled["label"] == pd.Series(truth).reindex(ruled.index))
    # agreeing pairs can still both be wrong (two careless errors): rarely
    accuracy = (labels["label"] == pd.Series(truth).reindex(labels.index)).mean()
    assert accuracy >= 0.9
    assert disputed_items(latest_votes(ledger, classes=CLASSES)) == []

    quality = annotator_quality(latest_votes(ledger, classes=CLASSES), labels.reset_index())
    quality = quality.set_index("annotator")
    assert quality.loc[careful.email, "matches_final"] == pytest.approx(1.0, abs=0.05)
    for sloppy in (careless.email, biased.email):
        assert quality.loc[sloppy, "matches_final"] < 0.85
    wrong = ledger[(ledger["annotator"] == biased.email) & ledger["tier"].eq("general")]
    wrong = wrong[wrong["label"] != wrong["item_id"].map(truth)]
    not_fox = wrong[wrong["item_id"].map(truth) != "fox"]
    assert len(not_fox) > 0 and set(not_fox["label"]) == {"fox"}  # every such error is "fox"
