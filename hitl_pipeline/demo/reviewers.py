"""Simulated reviewers: a test and demo device that answers in Label Studio like people do.

Each simulated reviewer is a real Label Studio user in the project's organisation, and
submits through the same REST call the labelling UI makes when a person clicks Submit or
Skip (``POST /api/tasks/<id>/annotations/`` with the reviewer's own token). So the
pipeline cannot tell them from people, and the path a real person uses is never bypassed.

Accounts are made the way a person joins: through the organisation's invite link
(sign-up form), or logged into when they already exist; either way over HTTP only, so a
shared Label Studio works too. For a local server, ``data_dir`` allows a fallback through
``label-studio init`` should sign-up be refused.

Answers are deterministic: whether reviewer R errs on item X depends only on R's seed and
X, not on the order or batching in which tasks are answered.
"""

from __future__ import annotations

import hashlib
import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from hitl_pipeline.core.tiers import TIER_ADJUDICATION, TIERS
from hitl_pipeline.resources.label_studio import (
    EDGE_CASE_FLAG,
    FLAGS_CONTROL,
    LABEL_CONTROL,
    choice_result,
    tier_project_title,
)

if TYPE_CHECKING:  # the server module loads only for the ``label-studio init`` fallback
    from hitl_pipeline.resources.label_studio_server import PostgresDatabase

DEFAULT_PROJECT_TITLE = "hitl-pipeline: review"
DEFAULT_REVIEWER_PASSWORD = "hitl-simulated-reviewer"


@dataclass(frozen=True)
class SimulatedReviewer:
    """One simulated annotator with known habits.

    Attributes:
        email: the Label Studio account (created on first use).
        error_rate: chance of answering a wrong class.
        bias_toward: when erring, pick this class (if it is not the truth) instead of a
            random wrong one: a systematic confusion, as people have.
        seed: makes the reviewer's choices reproducible.
        skip_rate: chance of skipping an item (a cancelled annotation, no label).
        flag_rate: chance of flagging an item as an edge case when the model's guess was
            wrong (what a reviewer notices).
        seconds_per_item: (min, max) of the reported time spent on an item.
    """

    email: str
    error_rate: float = 0.05
    bias_toward: str | None = None
    seed: int = 0
    skip_rate: float = 0.0
    flag_rate: float = 0.25
    seconds_per_item: tuple[float, float] = (4.0, 30.0)

    def __post_init__(self) -> None:
        for name in ("error_rate", "skip_rate", "flag_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    def answer(
        self, *, item_id: str, truth: str, predicted: str | None, classes: Sequence[str]
    ) -> ReviewAnswer:
        """What this reviewer submits for one item (deterministic in seed and item id)."""
        rng = random.Random(f"{self.seed}:{self.email}:{item_id}")
        lead_time = round(rng.uniform(*self.seconds_per_item), 1)
        if rng.random() < self.skip_rate:
            return ReviewAnswer(label=None, flags=(), lead_time_s=lead_time)
        label = truth
        if rng.random() < self.error_rate:
            wrong = [c for c in classes if c != truth]
            if self.bias_toward is not None and self.bias_toward in wrong:
                label = self.bias_toward
            elif wrong:
                label = rng.choice(wrong)
        flags: tuple[str, ...] = ()
        if predicted is not None and predicted != truth and rng.random() < self.flag_rate:
            flags = (EDGE_CASE_FLAG,)
        return ReviewAnswer(label=label, flags=flags, lead_time_s=lead_time)


@dataclass(frozen=True)
class ReviewAnswer:
    """One submission: a class (``None`` = skipped), flags, and the time it took."""

    label: str | None
    flags: tuple[str, ...]
    lead_time_s: float


@dataclass
class ReviewerPool:
    """Simulated reviewers sharing the open tasks of every review tier's project.

    Attributes:
        url: Label Studio base URL.
        api_key: an admin token: reads the queue and creates the reviewers' accounts.
        reviewers: who answers; each open task goes to one of them (deterministically),
            or to as many distinct ones as the task's ``overlap`` asks (Label Studio
            sets it from the project's overlap settings).
        project_title: the general review project; the other tiers' projects are
            named after it (``tier_project_title``).
        overlap: share of tasks that a second, different reviewer answers too, on top
            of what Label Studio asks (a demo knob; a real team sets the project's
            overlap instead).
        adjudicators: who answers the adjudication queue (default: the reviewers).
        seed: fixes which reviewer gets which task.
        data_dir: the local server's data dir, for a ``label-studio init`` fallback when
            sign-up through the invite link is refused.
        postgres: the local server's PostgreSQL database when it keeps its data there
            (``HITL_POSTGRES_URL``): the fallback must create the user in it, not in a
            SQLite file of the data dir the server never reads.
        password: password of every simulated account.
    """

    url: str
    api_key: str
    reviewers: Sequence[SimulatedReviewer]
    project_title: str = DEFAULT_PROJECT_TITLE
    overlap: float = 0.0
    seed: int = 0
    adjudicators: Sequence[SimulatedReviewer] = ()
    data_dir: Path | None = None
    postgres: PostgresDatabase | None = None
    password: str = DEFAULT_REVIEWER_PASSWORD
    timeout_s: float = 120.0
    _tokens: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.reviewers:
            raise ValueError("a reviewer pool needs at least one reviewer")
        if len({r.email for r in self.reviewers}) != len(self.reviewers) or len(
            {r.email for r in self.adjudicators}
        ) != len(self.adjudicators):
            raise ValueError("reviewer e-mails must be distinct")
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap}")
        self.url = self.url.rstrip("/")

    # --- public --------------------------------------------------------------------------
    def answer_open_tasks(
        self,
        *,
        truth: Mapping[str, str],
        classes: Sequence[str] | None = None,
        limit: int | None = None,
        overlap: float | None = None,
        tiers: Sequence[str] = TIERS,
    ) -> int:
        """Answer open tasks (owed an answer, not skipped) in each tier's project, highest
        priority first.

        Args:
            truth: item id -> true class; items without a known truth are left open.
            classes: the class names; read from each project's interface when omitted.
            limit: answer at most this many tasks per project.
            overlap: overrides the pool's overlap share for this call.
            tiers: the queues to work on.

        Returns:
            How many annotations were submitted (skips included; an overlapping task
            counts once per answer).
        """
        share = self.overlap if overlap is None else overlap
        adjudicators = self.adjudicators or self.reviewers
        return sum(
            self._answer_project(
                title=tier_project_title(self.project_title, tier),
                people=adjudicators if tier == TIER_ADJUDICATION else self.reviewers,
                # an adjudicator's decision is final: one answer per disputed item
                share=0.0 if tier == TIER_ADJUDICATION else share,
                truth=truth,
                classes=classes,
                limit=limit,
            )
            for tier in tiers
        )

    def _answer_project(
        self,
        *,
        title: str,
        people: Sequence[SimulatedReviewer],
        share: float,
        truth: Mapping[str, str],
        classes: Sequence[str] | None,
        limit: int | None,
    ) -> int:
        with self._admin() as admin:
            project = self._project(admin, title)
            if project is None:
                return 0
            project_id, label_config = project
            classes = list(classes) if classes is not None else classes_from_config(label_config)
            open_tasks = self._open_tasks(admin, project_id)
        submitted = answered_tasks = 0
        # No keep-alive: Label Studio's development server answers a reused connection
        # about 40 ms later than a fresh one (measured 84 vs 65 ms per annotation).
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=self.timeout_s, limits=fresh) as http:
            for task in open_tasks:
                if limit is not None and answered_tasks >= limit:
                    break
                data = task.get("data") or {}
                item_id = str(data.get("item_id"))
                if item_id not in truth:
                    continue
                needed = int(task.get("overlap") or 1)
                done = int(task.get("total_annotations") or 0)
                # Label Studio may raise a task's overlap after it was first answered (it
                # spreads overlap_cohort_percentage over the whole project as tasks
                # arrive): the assignment is prefix-stable, so the first `done` reviewers
                # are those who already answered and the rest are still owed.
                owed = self._assign(item_id, share, people=people, needed=needed)[done:]
                if not owed:
                    continue
                for reviewer in owed:
                    answer = reviewer.answer(
                        item_id=item_id,
                        truth=str(truth[item_id]),
                        predicted=data.get("predicted_label"),
                        classes=classes,
                    )
                    self._submit(http, reviewer, int(task["id"]), answer)
                    submitted += 1
                answered_tasks += 1
        return submitted

    def ensure_accounts(self) -> dict[str, str]:
        """Make sure every reviewer has an account; returns e-mail -> API token."""
        return {r.email: self._token(r) for r in [*self.reviewers, *self.adjudicators]}

    # --- assignment ----------------------------------------------------------------------
    def _assign(
        self,
        item_id: str,
        share: float,
        *,
        people: Sequence[SimulatedReviewer] | None = None,
        needed: int = 1,
    ) -> list[SimulatedReviewer]:
        """Distinct reviewers for one item: ``needed`` of them (the task's overlap), or
        two when the pool's own overlap share picks the item."""
        people = list(people or self.reviewers)
        rng = random.Random(f"pool:{self.seed}:{item_id}")
        order = rng.sample(range(len(people)), len(people))
        count = max(needed, 2 if rng.random() < share else 1)
        return [people[i] for i in order[: min(count, len(people))]]

    # --- Label Studio traffic ------------------------------------------------------------
    def _admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {self.api_key}"},
            timeout=self.timeout_s,
        )

    def _project(self, admin: httpx.Client, title: str) -> tuple[int, str] | None:
        response = admin.get("/api/projects/", params={"title": title})
        response.raise_for_status()
        matches = [p for p in response.json()["results"] if p["title"] == title]
        if not matches:
            return None
        project = min(matches, key=lambda p: p["id"])
        detail = admin.get(f"/api/projects/{project['id']}/")
        detail.raise_for_status()
        return int(project["id"]), str(detail.json()["label_config"])

    def _open_tasks(self, admin: httpx.Client, project_id: int) -> list[dict[str, Any]]:
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": f"filter:tasks:{column}",
                        "operator": "equal",
                        "type": "Number",
                        "value": 0,
                    }
                    for column in ("cancelled_annotations",)
                ],
            },
            # the order a person working down the queue tab would see
            "ordering": ["-tasks:data.priority"],
        }
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            response = admin.get(
                "/api/tasks",
                params={
                    "project": project_id,
                    "page": page,
                    "page_size": 1000,
                    "fields": "task_only",
                    "query": json.dumps(query),
                },
            )
            if response.status_code == 404 and tasks:  # past the last page
                break
            response.raise_for_status()
            body = response.json()
            tasks.extend(body["tasks"])
            if len(tasks) >= body["total"] or not body["tasks"]:
                break
            page += 1
        # ties in priority: oldest task first, so the order is reproducible
        tasks.sort(key=lambda t: (-float((t.get("data") or {}).get("priority") or 0), t["id"]))
        return tasks

    def _submit(
        self, http: httpx.Client, reviewer: SimulatedReviewer, task_id: int, answer: ReviewAnswer
    ) -> None:
        if answer.label is None:
            body: dict[str, Any] = {"result": [], "was_cancelled": True}
        else:
            result = [choice_result(LABEL_CONTROL, [answer.label])]
            if answer.flags:
                result.append(choice_result(FLAGS_CONTROL, list(answer.flags)))
            body = {"result": result, "was_cancelled": False}
        body["lead_time"] = answer.lead_time_s
        response = http.post(
            f"/api/tasks/{task_id}/annotations/",
            json=body,
            headers={"Authorization": f"Token {self._token(reviewer)}"},
        )
        response.raise_for_status()

    def _token(self, reviewer: SimulatedReviewer) -> str:
        token = self._tokens.get(reviewer.email)
        if token is None:
            token = self._login(reviewer.email) or self._sign_up(reviewer.email)
            if token is None and self.data_dir is not None:
                token = self._init_locally(reviewer.email)
            if token is None:
                raise RuntimeError(
                    f"could not create or log into the Label Studio account {reviewer.email} "
                    f"at {self.url}"
                )
            self._tokens[reviewer.email] = token
        return token

    def _login(self, email: str) -> str | None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as browser:
            return _submit_form(browser, "/user/login/", email=email, password=self.password)

    def _sign_up(self, email: str) -> str | None:
        with self._admin() as admin:
            invite = admin.get("/api/invite")
            invite.raise_for_status()
            path = invite.json()["invite_url"]
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as browser:
            return _submit_form(browser, path, email=email, password=self.password)

    def _init_locally(self, email: str) -> str:
        from hitl_pipeline.resources.label_studio_server import add_local_user

        assert self.data_dir is not None
        token = "sim-" + hashlib.sha256(f"{self.url}:{email}".encode()).hexdigest()[:32]
        add_local_user(
            self.data_dir,
            email=email,
            password=self.password,
            token=token,
            postgres=self.postgres,
        )
        return token


def classes_from_config(label_config: str) -> list[str]:
    """The classes offered by the ``label`` control of a labelling interface."""
    root = ET.fromstring(label_config)
    for control in root.iter("Choices"):
        if control.get("name") == LABEL_CONTROL:
            return [str(c.get("value")) for c in control.iter("Choice")]
    raise ValueError(f"no Choices named {LABEL_CONTROL!r} in the project's label config")


def _submit_form(browser: httpx.Client, path: str, *, email: str, password: str) -> str | None:
    """Fill a Label Studio account form (log-in or sign-up) as a browser would.

    Returns:
        The account's API token when the form logged us in, else None.
    """
    page = browser.get(path)
    if page.status_code != 200:
        return None
    csrf = browser.cookies.get("csrftoken")
    if not csrf:
        return None
    response = browser.post(
        path,
        data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": str(browser.base_url).rstrip("/") + path},
    )
    # A form that fails re-renders with 200; success redirects into the app.
    if response.status_code not in (301, 302, 303):
        return None
    token = browser.get("/api/current-user/token")
    if token.status_code != 200:
        return None
    return str(token.json()["token"])
