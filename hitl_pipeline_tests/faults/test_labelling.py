"""Fault suite: the Label Studio hand-offs killed half-way, and Label Studio down.

Against the session's real Label Studio server. Pushes and pulls run through the real
``labeling_tasks`` and ``human_labels`` assets; a killed one runs in a separate process
that ``HITL_FAULT`` ends at a named point, as ``kill -9`` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from hitl_pipeline.core.types import ITEM_ID, LABEL
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer
from hitl_pipeline.faults import KILL_EXIT_STATUS
from hitl_pipeline.resources.label_studio import LABEL_CONTROL, choice_result
from hitl_pipeline.resources.label_studio_server import free_port
from hitl_pipeline_tests.defs.test_feedback import routed_batch
from hitl_pipeline_tests.faults.labelling import pull, push, resources

pytestmark = [pytest.mark.faults, pytest.mark.labelstudio]
ROOT = Path(__file__).resolve().parents[2]
REVIEWER = "reviewer@faults.hitl.local"


@pytest.fixture
def server_env(label_studio, monkeypatch) -> dict[str, str]:
    env = {
        "HITL_LABEL_STUDIO_URL": label_studio.url,
        "HITL_LABEL_STUDIO_API_KEY": label_studio.token,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HITL_FAULT", raising=False)
    monkeypatch.delenv("HITL_REVIEWERS", raising=False)
    return env


def _killed(
    action: str, home: Path, title: str, fault: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hitl_pipeline_tests.faults.labelling",
            action,
            "--home",
            str(home),
            "--title",
            title,
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "HITL_FAULT": fault},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tasks(bound: dict[str, Any]) -> list[tuple[int, str]]:
    """(task id, item id) of every task in the test's general queue, all pages."""
    resource = bound["label_studio"]
    pager = resource._sdk().tasks.list(
        project=resource._find_project_checked(), page_size=1000, fields="all"
    )
    return [(int(t.id), str((t.data or {})[ITEM_ID])) for t in pager]


def test_a_push_killed_between_chunks_is_finished_without_duplicates(
    label_studio, server_env, project_title, tmp_path
):
    killed = _killed(
        "push", tmp_path, project_title, "push.after_chunk:kill@2", "--rows", "30", "--chunk", "10"
    )
    assert killed.returncode == KILL_EXIT_STATUS, killed.stderr[-2000:]
    bound = resources(tmp_path, project_title, chunk=10)
    assert len(_tasks(bound)) == 20  # two chunks made it before the kill
    assert bound["local_store"].read_pushed() == {}  # recorded only after a push finishes

    rerun = push(bound, 30)
    assert rerun.success
    result = rerun.output_for_node("labeling_tasks", "result")
    assert (result.created, result.already_present) == (10, 20)
    items = [item for _, item in _tasks(bound)]
    assert len(items) == 30 and len(set(items)) == 30  # nothing missing, nothing twice
    assert sorted(bound["local_store"].read_pushed()["general"]) == sorted(items)


def test_pulls_through_an_outage_and_a_kill_lose_and_double_nothing(
    label_studio, server_env, project_title, tmp_path
):
    bound = resources(tmp_path, project_title)
    assert push(bound, 6).success
    _, truth = routed_batch(6)
    token = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        reviewers=[SimulatedReviewer(REVIEWER)],
        data_dir=label_studio.data_dir,
    ).ensure_accounts()[REVIEWER]
    for task_id, item in _tasks(bound):
        answer = truth[item]
        httpx.post(
            f"{label_studio.url}/api/tasks/{task_id}/annotations/",
            json={"result": [choice_result(LABEL_CONTROL, [answer])], "was_cancelled": False},
            headers={"Authorization": f"Token {token}"},
            timeout=60,
        ).raise_for_status()
    store = bound["local_store"]

    # Label Studio down: the pull fails naming the server and the fix; nothing written
    dead_url = f"http://127.0.0.1:{free_port()}"
    down = pull(resources(tmp_path, project_title, url=dead_url))
    assert not down.success
    failure = next(e for e in down.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error.message)
    assert f"Label Studio is not reachable at {dead_url}" in message
    assert store.read_ledger(include_quarantined=True).empty

    # killed after reading every annotation, before the ledger is written
    killed = _killed("pull", tmp_path, project_title, "pull.before_ledger_write:kill")
    assert killed.returncode == KILL_EXIT_STATUS, killed.stderr[-2000:]
    assert store.read_ledger(include_quarantined=True).empty

    first = pull(bound)
    assert first.success
    labels = first.output_for_node("human_labels").set_index(ITEM_ID)[LABEL].to_dict()
    assert labels == truth  # every annotation, once, with its answer
    again = pull(bound)
    ledger = store.read_ledger(include_quarantined=True)
    assert again.success and len(ledger) == 6 and ledger["annotation_id"].is_unique
