"""Label Studio adapter: push review tasks with the model's pre-annotation, pull answers.

Takes and returns our own types (``core.types``), never SDK objects. Label Studio is the
source of truth for what was pushed: a re-run (even after a crash half-way through a
push) asks it which item ids it already holds and imports only the rest.

Paths chosen for speed (measured against server 1.23.2 / SDK 2.1.2: an export of 10,000
tasks took 40-60 s, ``tasks.list`` over them 45-110 s):

- push: ``projects.import_tasks`` in chunks of ``import_chunk_size`` (about 1 s per 500
  tasks). Which item ids exist is asked with the Data Manager's ``in_list`` filter on
  ``data.item_id``, a few hundred ids a request: the cost follows the push, not the
  project.
- pull: the bulk export. Incremental pulls first ask the Data Manager for the tasks
  updated after ``since`` (an annotation's creation or edit bumps its task's
  ``updated_at``), then export only those tasks. The SDK sends ``ids=`` where the server
  reads ``ids[]``, so the ids go through ``additional_query_parameters``. Data Manager
  datetimes must be written ``...%fZ``: an ``+00:00`` offset gives HTTP 500.
- queue status: two one-row Data Manager queries (counts come back as ``total``).

What a reviewer sees (``task_payload``, ``build_label_config``, ``review_view_data``):
each task's ``data`` holds one typed column per feature, ``f_<name>`` (numbers rounded
for reading; the prefix keeps a feature called ``confidence`` or ``tier`` from clashing
with our own keys), the model's ``predicted_label`` and ``confidence``, and
``reasons_text`` ("low confidence; random audit"). The exact feature values the training
set is built from travel in ``feature_values``; ``features`` is the rounded table the
labelling interface shows. Each project gets a Data Manager tab, "Review", that puts
those columns first, types the numbers and hides the raw fields. Tasks pushed by an
earlier version keep their shape (``features`` exact, ``score``): every reader accepts
both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from hitl_pipeline.core.intake import (
    EMPTY_RESULT,
    MULTIPLE_CHOICES,
    UNKNOWN_CONTROL,
    UNKNOWN_LABEL,
    IntakePolicy,
)
from hitl_pipeline.core.labeling_config import (
    EDGE_CASE_FLAG,
    FEATURES_OBJECT,
    FLAGS_CONTROL,
    LABEL_CONTROL,
    SUMMARY_OBJECT,  # noqa: F401  (read from here by earlier callers)
    highlight_column,
    highlight_html,
    label_config,
    reason_column,
    reason_flags,
    schema_text_features,
    short_text,
)
from hitl_pipeline.core.routing import (
    REASON_AUDIT,
    REASON_DISAGREEMENT,
    REASON_DRIFT_SAMPLE,
    REASON_EXPLORE,
    REASON_FILL,
    REASON_LOW_CONFIDENCE,
    REASON_OOD,
    REASON_POLICY,
    REASON_REVIEWERS_DISAGREED,
    reasons_text,
)
from hitl_pipeline.core.tiers import TIER_ADJUDICATION, TIER_EXPERT, TIER_GENERAL, TIERS
from hitl_pipeline.core.trail import QueuedTask
from hitl_pipeline.core.types import Annotation, LabelingTask, PushResult, QueueStatus
from hitl_pipeline.faults import fault_point
from hitl_pipeline.resources.errors import StoreUnavailable

# The interface's names (FEATURES_OBJECT, LABEL_CONTROL, FLAGS_CONTROL, EDGE_CASE_FLAG,
# SUMMARY_OBJECT) live with its generator, core.labeling_config; imported above so that
# readers of this module keep finding them here.
# Every task gets one true/false Data Manager column per reason an item can be pushed
# for (``reason_<code>``), so each column exists on every task and filters cleanly.
REVIEW_REASONS = (
    REASON_LOW_CONFIDENCE,
    REASON_DISAGREEMENT,
    REASON_POLICY,
    REASON_OOD,
    REASON_AUDIT,
    REASON_DRIFT_SAMPLE,
    REASON_EXPLORE,
    REASON_FILL,
    REASON_REVIEWERS_DISAGREED,
)

# Keys of a task's ``data``. Features are flattened into ``f_<name>`` columns.
FEATURE_PREFIX = "f_"
ITEM_KEY, LABEL_KEY, CONFIDENCE_KEY, REASONS_TEXT_KEY = (
    "item_id",
    "predicted_label",
    "confidence",
    "reasons_text",
)
ANSWERS_KEY = "reviewer_answers"  # adjudication tasks: who said what
FEATURE_VALUES_KEY = "feature_values"  # exact values: what the training set is built from
# Kept for the pipeline, never for reading: hidden in the "Review" tab. ``score`` is the
# confidence of tasks pushed by earlier versions.
INTERNAL_KEYS = (
    "features",
    FEATURE_VALUES_KEY,
    "reasons",
    "tier",
    "priority",
    "context",
    "score",
)
REVIEW_VIEW_TITLE = "Review"

DEFAULT_INSTRUCTIONS = (
    "<p>Choose the correct class for the item shown in the table.</p>"
    "<p>The model's guess is pre-selected and summarised above the table, with the reasons "
    "the item was sent to a person. Change it whenever it is wrong: your answer becomes a "
    "training label.</p>"
    "<p>Tick <b>edge case</b> for items that are unusual, ambiguous or that a future model "
    "must not get wrong: they join the edge-case set every new model is tested on.</p>"
    "<p>Skip an item only when it cannot be judged at all.</p>"
)

_TIER_INSTRUCTIONS = {
    TIER_GENERAL: DEFAULT_INSTRUCTIONS,
    TIER_EXPERT: (
        "<p><b>Expert queue.</b> These items fall under a policy that needs a domain expert "
        "(a sensitive class, a rule on the features, or a policy category): judge them by "
        "the domain guideline, not by the model's guess.</p>" + DEFAULT_INSTRUCTIONS
    ),
    TIER_ADJUDICATION: (
        "<p><b>Adjudication queue.</b> Reviewers disagreed on these items; their answers are "
        "listed above the table. Decide the correct class: your answer is final and becomes "
        "the training label. If the disagreement comes from an unclear guideline, say so to "
        "the team that owns it.</p>"
        "<p>Tick <b>edge case</b> for items a future model must not get wrong.</p>"
    ),
}
_TIER_DESCRIPTIONS = {
    TIER_GENERAL: "Items the hitl-pipeline routed to general reviewers.",
    TIER_EXPERT: "Items the hitl-pipeline routed to domain experts by policy.",
    TIER_ADJUDICATION: "Items whose reviewers disagreed: the decision here is final.",
}

_DM_DATETIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the only form the Data Manager filter accepts
# Ids travel in the query string. Reverse proxies commonly cap a request line at 8 KB
# (nginx's default), so each request carries at most this many characters of ids.
_QUERY_BUDGET = 4000
_MAX_TITLE = 50  # the server refuses longer project titles


class LabelStudioUnavailable(StoreUnavailable):
    """Label Studio cannot be used: not reachable, or it refuses our requests."""


class LabelStudioAuthError(LabelStudioUnavailable):
    """Label Studio answered but rejected the API token."""


# --- pure helpers (no server needed) ----------------------------------------------------
def build_label_config(classes: Sequence[str], *, text_features: Sequence[str] = ()) -> str:
    """The labelling interface: the model's guess and why, text features with the model's
    evidence marked, the features as a table, one class (``core.labeling_config``).

    Compatible with every earlier interface: the same controls (``label``, ``flags``)
    over the same object (the ``features`` table), so Label Studio accepts it on a
    project that already holds answers, and tasks pushed earlier still show (their
    ``context`` and ``features`` are what the summary and the table read).

    Args:
        classes: the class names, in display order.
        text_features: the schema's text features.

    Returns:
        Label Studio XML with a single-choice ``label`` control and an optional
        ``flags`` control (``edge case``), both over the ``features`` table.
    """
    return label_config(classes, text_features=text_features)


def choice_result(control: str, values: Sequence[str]) -> dict[str, Any]:
    """One Label Studio result item choosing ``values`` in a Choices ``control``."""
    return {
        "from_name": control,
        "to_name": FEATURES_OBJECT,
        "type": "choices",
        "value": {"choices": list(values)},
    }


def tier_project_title(base: str, tier: str) -> str:
    """The Label Studio project of one review tier (at most 50 characters).

    The general queue keeps ``base`` itself, so a loop that ran before tiers existed
    keeps its project. A title too long for a suffix is shortened with a hash of the
    full base, so two bases never share a tier project.
    """
    if tier == TIER_GENERAL:
        return base
    suffix = f" · {tier}"
    if len(base) + len(suffix) <= _MAX_TITLE:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    return f"{base[: _MAX_TITLE - len(suffix) - 7]}~{digest}{suffix}"


def display_number(value: float | int) -> float | int:
    """A number rounded for reading: 2 decimals, or 3 significant digits below 1.

    Whole numbers become ints (``3.0`` -> ``3``); ``1234.567`` -> ``1234.57``,
    ``0.012345`` -> ``0.0123``. Never used for what the training set is built from.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if value == 0:
        return 0
    decimals = max(2, 2 - math.floor(math.log10(abs(value))))
    rounded = round(value, decimals)
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def feature_column(name: str) -> str:
    """The ``data`` key of one feature's own column (``f_<name>``)."""
    return f"{FEATURE_PREFIX}{name}"


def _display_value(value: Any, kind: str) -> Any:
    """A feature value as a reviewer reads it: numbers of a numeric feature rounded,
    everything else as text (free text whole); missing values stay null."""
    value = _jsonable(value)
    if value is None:
        return None
    if kind == "numeric" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return display_number(value)
    return str(value)


def _kind_of(value: Any) -> str:
    value = _jsonable(value)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return "numeric" if numeric else "categorical"


def task_payload(
    task: LabelingTask,
    feature_kinds: Mapping[str, str] | None = None,
    evidence: Mapping[str, Sequence[tuple[str, float]]] | None = None,
) -> dict[str, Any]:
    """A task as Label Studio imports it: our fields in ``data``, the model as a prediction.

    Args:
        task: the routed item.
        feature_kinds: feature name -> ``"numeric"``, ``"categorical"`` or ``"text"`` (the
            batch schema's ``FeatureSpec.kind``). A feature not in it is typed by its value.
        evidence: text feature -> ``(token, weight)`` that drove the model's label
            (``core.labeling_config.linear_text_evidence``); marked in ``h_<name>``.

    Returns:
        ``{"data": ..., "predictions": [...]}``. ``data`` holds, in the order a reviewer
        reads them: ``item_id``, ``predicted_label``, ``confidence`` (rounded),
        ``reasons_text``, one ``f_<name>`` per feature (rounded if numeric, text if
        categorical or free text), one ``reason_<code>`` (true/false) per routing reason
        (``REVIEW_REASONS`` and any other the item has), ``model_version``,
        ``partition``; then what the pipeline needs: ``features`` (the rounded table the
        interface shows, free text cut short), ``feature_values`` (the exact values),
        ``reasons`` (the codes), ``tier``, ``priority``, ``context`` (the summary above
        the table), ``h_<name>`` per text feature (its marked HTML) and, on adjudication
        tasks, ``reviewer_answers``. The prediction carries the exact score and the
        model version.
    """
    kinds = dict(feature_kinds or {})
    shown = {
        str(name): _display_value(value, kinds.get(str(name)) or _kind_of(value))
        for name, value in task.features.items()
    }
    texts = [n for n in schema_text_features(kinds) if n in shown]
    table = {
        name: short_text(value) if name in texts and value is not None else value
        for name, value in shown.items()
    }
    why = reasons_text(task.reasons) or "-"
    confidence = _jsonable(task.score)
    lines = [
        f"Model's label: {task.predicted_label} · confidence {_score_text(task.score)} "
        f"· model version {task.model_version}",
        f"Sent for review because: {why}",
    ]
    if task.note:
        lines.append(task.note)
    lines.append(f"Item {task.item_id} · batch {task.partition or '-'} · {task.tier} queue")
    data: dict[str, Any] = {
        ITEM_KEY: task.item_id,
        LABEL_KEY: task.predicted_label,
        CONFIDENCE_KEY: None if confidence is None else display_number(confidence),
        REASONS_TEXT_KEY: why,
    }
    if task.note:
        data[ANSWERS_KEY] = task.note
    data.update({feature_column(name): value for name, value in shown.items()})
    data.update(reason_flags(task.reasons, REVIEW_REASONS))
    data.update(
        {
            "model_version": task.model_version,
            "partition": task.partition,
            "features": table,
            FEATURE_VALUES_KEY: {str(k): _jsonable(v) for k, v in task.features.items()},
            "reasons": list(task.reasons),
            "tier": task.tier,
            "priority": _jsonable(task.priority),
            "context": "\n".join(lines),
        }
    )
    for name in texts:
        data[highlight_column(name)] = highlight_html(
            shown[name] or "", (evidence or {}).get(name, ()), label=task.predicted_label
        )
    return {
        "data": data,
        "predictions": [
            {
                "result": [choice_result(LABEL_CONTROL, [task.predicted_label])],
                "score": _jsonable(task.score),
                "model_version": task.model_version,
            }
        ],
    }


def read_result(result: Sequence[Mapping[str, Any]]) -> tuple[str | None, tuple[str, ...], str]:
    """The class, the flags and what is wrong with one answer's ``result``.

    Strict: an answer is a class only when it chose exactly one value in our ``label``
    control and used no control our interface lacks. The first choice of several is
    not a class: a person who ticked two did not decide.

    Args:
        result: an exported annotation's ``result`` items.

    Returns:
        ``(label, flags, problem)``: ``label`` is None unless exactly one class was
        chosen; ``problem`` is ``""`` or one of ``core.intake.ANSWER_PROBLEMS``, tested
        in that order (a control we do not know, several classes, none, a flag our
        interface does not offer). Whether the class is in the schema is judged later.
    """
    chosen: list[str] = []
    flags: list[str] = []
    unknown_control = False
    for item in result:
        values = [str(c) for c in ((item.get("value") or {}).get("choices") or ())]
        name = item.get("from_name")
        if name == LABEL_CONTROL:
            chosen.extend(values)
        elif name == FLAGS_CONTROL:
            flags.extend(values)
        else:
            unknown_control = True
    label = chosen[0] if len(chosen) == 1 else None
    if unknown_control:
        problem = UNKNOWN_CONTROL
    elif len(chosen) > 1:
        problem = MULTIPLE_CHOICES
    elif not chosen:
        problem = EMPTY_RESULT
    elif set(flags) - {EDGE_CASE_FLAG}:
        problem = UNKNOWN_LABEL
    else:
        problem = ""
    return label, tuple(flags), problem


def annotations_from_export(
    tasks: Iterable[Mapping[str, Any]],
    users: Mapping[int, str],
    *,
    since: datetime | None = None,
) -> list[Annotation]:
    """Our annotations from Label Studio's JSON export (one row per annotation).

    Every annotation is returned, whatever its shape: what is wrong with an answer is
    recorded in ``answer_problem`` (``read_result``) for ``core.intake`` to quarantine,
    and the result itself is kept in ``raw_result``, so nothing is dropped here.

    Args:
        tasks: exported tasks, each with ``data`` and ``annotations``.
        users: user id -> e-mail, to name annotators.
        since: keep only annotations created or updated strictly after this instant.

    Returns:
        Annotations ordered by ``(updated_at, annotation_id)``; cancelled (skipped) ones
        carry ``was_cancelled=True``, ``label=None`` and no problem.
    """
    out: list[Annotation] = []
    for task in tasks:
        data = task.get("data") or {}
        for ann in task.get("annotations") or []:
            updated_at = _parse_time(ann.get("updated_at") or ann["created_at"])
            if since is not None and updated_at <= since:
                continue
            result = list(ann.get("result") or [])
            label, flags, problem = read_result(result)
            cancelled = bool(ann.get("was_cancelled"))
            out.append(
                Annotation(
                    item_id=str(data.get("item_id", "")),
                    task_id=int(task["id"]),
                    annotation_id=int(ann["id"]),
                    label=None if cancelled else label,
                    annotator=_annotator(ann.get("completed_by"), users),
                    completed_at=_parse_time(ann["created_at"]),
                    updated_at=updated_at,
                    was_cancelled=cancelled,
                    predicted_label=data.get("predicted_label"),
                    model_version=data.get("model_version"),
                    partition=str(data.get("partition") or ""),
                    # exact values; tasks pushed before they had their own key
                    # carried them in "features"
                    features=dict(data.get(FEATURE_VALUES_KEY) or data.get("features") or {}),
                    reasons=tuple(data.get("reasons") or ()),
                    flags=() if cancelled or problem else flags,
                    tier=str(data.get("tier") or ""),
                    lead_time_s=ann.get("lead_time"),
                    answer_problem="" if cancelled else problem,
                    raw_result=json.dumps(result, sort_keys=True, default=str),
                    model_score=_number_or_none(data.get(CONFIDENCE_KEY, data.get("score"))),
                )
            )
    out.sort(key=lambda a: (a.updated_at, a.annotation_id))
    return out


def review_view_data(
    feature_kinds: Mapping[str, str], task_columns: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The "Review" tab of a project's Data Manager: numbers typed, raw fields hidden.

    Label Studio 1.23 orders a project's data columns as the interface names them, then
    as tasks first brought them (``task_payload`` puts the reviewer's columns first);
    a tab can hide columns and type them, not reorder them.

    Args:
        feature_kinds: feature name -> ``"numeric"``, ``"categorical"`` or ``"text"``.
        task_columns: the project's columns (``GET /api/dm/columns``): every one Label
            Studio hides by default stays hidden.

    Returns:
        The view's ``data``: ``title``, ``hiddenColumns`` (``explore`` for the table,
        ``labeling`` for the list beside the labelling interface), ``columnsDisplayType``.
    """

    def column(key: str) -> str:
        return f"tasks:data.{key}"

    texts = schema_text_features(feature_kinds)
    internal = [column(k) for k in (*INTERNAL_KEYS, *map(highlight_column, texts))]
    default_hidden = [
        f"tasks:{c['id']}"
        for c in task_columns
        if c.get("parent") != "data"
        and not (c.get("visibility_defaults") or {}).get("explore", True)
    ]
    explore_hidden = sorted({*internal, *default_hidden})
    reading = {column(k) for k in (ITEM_KEY, LABEL_KEY, CONFIDENCE_KEY, REASONS_TEXT_KEY)}
    everything = {
        *explore_hidden,
        column("model_version"),
        column("partition"),
        column(ANSWERS_KEY),
        *(column(feature_column(n)) for n in feature_kinds),
        *(column(reason_column(r)) for r in REVIEW_REASONS),
        *(f"tasks:{c['id']}" for c in task_columns if c.get("parent") != "data"),
    }
    labeling_hidden = sorted(everything - reading - {"tasks:id", "tasks:total_annotations"})
    numeric = [column(feature_column(n)) for n, k in feature_kinds.items() if k == "numeric"]
    reasons = [column(reason_column(r)) for r in REVIEW_REASONS]
    return {
        "title": REVIEW_VIEW_TITLE,
        "hiddenColumns": {"explore": explore_hidden, "labeling": labeling_hidden},
        "columnsDisplayType": {
            **{c: "Number" for c in (column(CONFIDENCE_KEY), *numeric)},
            **{c: "Boolean" for c in reasons},
        },
    }


def _offered_classes(config: str) -> list[str]:
    """The classes a labelling interface offers in its ``label`` control."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(config)
    except ET.ParseError:
        return []
    for control in root.iter("Choices"):
        if control.get("name") == LABEL_CONTROL:
            return [str(c.get("value")) for c in control.iter("Choice")]
    return []


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _score_text(score: float) -> str:
    return str(display_number(score)) if math.isfinite(score) else "n/a"


def _jsonable(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars unwrapped, NaN/inf as null, the rest as text."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _plain_utc(moment: datetime) -> datetime:
    """A plain UTC ``datetime``, also from a ``pd.Timestamp`` (whose nanoseconds go)."""
    utc = moment.astimezone(UTC)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
    )


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _annotator(completed_by: Any, users: Mapping[int, str]) -> str:
    if isinstance(completed_by, Mapping):  # an expanded user object
        return str(completed_by.get("email") or completed_by.get("id"))
    if completed_by is None:
        return ""
    return users.get(int(completed_by), f"user-{completed_by}")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _chunks_within(
    items: Sequence[Any], budget: int, cost: Callable[[Any], int]
) -> Iterator[list[Any]]:
    """Consecutive chunks whose summed ``cost`` stays within ``budget`` (one item at least)."""
    chunk: list[Any] = []
    used = 0
    for item in items:
        size = cost(item)
        if chunk and used + size > budget:
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += size
    if chunk:
        yield chunk


def _quoted_len(text: str) -> int:
    # a JSON string in a URL-encoded query: quotes, comma and escapes grow it
    return len(quote(json.dumps(text))) + 3


def _dm_query(filters: Sequence[Mapping[str, Any]] = (), ordering: Sequence[str] = ()) -> str:
    query: dict[str, Any] = {}
    if filters:
        query["filters"] = {"conjunction": "and", "items": list(filters)}
    if ordering:
        query["ordering"] = list(ordering)
    return json.dumps(query)


# --- the resource ------------------------------------------------------------------------
class LabelStudioResource(dg.ConfigurableResource):
    """Label Studio: one project per review tier, tasks in, annotations out.

    Each tier (``core.tiers.TIERS``: general, expert, adjudication) is a project of its
    own, so each queue has its own instructions, members and settings; tasks move
    between them only when the pipeline pushes them. Overlap (a share of tasks answered
    by several people) uses Label Studio's own project settings ``maximum_annotations``
    and ``overlap_cohort_percentage``, which the community edition honours: each task
    gets an ``overlap`` (how many answers it needs), and Label Studio's labelling
    stream serves it to that many annotators.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        api_key: a legacy API token (``Authorization: Token ...``); bound with
            ``dg.EnvVar`` so that the UI shows the variable's name, never the token.
        credentials_file: used when ``api_key`` is not set: the local server's
            credentials file, whose ``token`` is read when the first request is made.
        project_title: the general review project; the other tiers are named after it
            (``tier_project_title``). Found by title, created when missing.
        overlap_share: share of the general and expert tasks that need more than one
            answer (0 = one each). The adjudication queue always needs one.
        overlap_annotators: answers an overlapping task needs.
        request_timeout_s: per request; large exports take tens of seconds.
        import_chunk_size: tasks per import call: the most a crash mid-push can leave
            half-done (Label Studio imports each call in one transaction).
        reviewers: e-mails of the accounts whose annotations count as labels. Empty:
            every account except the service account counts. The service account (the
            user owning ``api_key``) never counts, even when listed: it pushes tasks and
            administers, and its annotations are not reviews (``core.intake``).
    """

    url: str
    api_key: str | None = None
    credentials_file: str | None = None
    project_title: str = "hitl-pipeline: review"
    request_timeout_s: float = 600
    import_chunk_size: int = 500
    overlap_share: float = 0.0
    overlap_annotators: int = 2
    reviewers: list[str] = Field(default_factory=list)

    _client: Any = PrivateAttr(default=None)
    _service_account: str | None = PrivateAttr(default=None)

    # --- projects --------------------------------------------------------------------
    def tier_title(self, tier: str) -> str:
        """The title of the project holding ``tier``'s queue."""
        return tier_project_title(self.project_title, tier)

    def ensure_project(
        self,
        *,
        classes: Sequence[str],
        title: str | None = None,
        instructions: str = "",
        tier: str = TIER_GENERAL,
        feature_kinds: Mapping[str, str] | None = None,
    ) -> int:
        """Find a tier's project by title, or create it; keep its interface and settings current.

        Args:
            classes: the class names offered to reviewers. A project whose interface
                lists other classes is updated, without losing tasks or answers; a class
                that answers in the project use cannot be dropped (``ValueError``).
            title: project title; defaults to the tier's (``tier_title``).
            instructions: HTML shown to reviewers; empty keeps the tier's own.
            tier: which queue the project serves (instructions and overlap follow it).
            feature_kinds: feature name -> ``"numeric"``, ``"categorical"`` or
                ``"text"``: text features get their own block in the interface; when
                given, the project's "Review" Data Manager tab is created or brought up
                to date (``review_view_data``).

        Returns:
            The project id.
        """
        title = title or self.tier_title(tier)
        if len(title) > _MAX_TITLE:
            raise ValueError(f"Label Studio project titles have at most {_MAX_TITLE} characters")
        label_config = build_label_config(
            classes, text_features=schema_text_features(feature_kinds)
        )
        instructions = instructions or _TIER_INSTRUCTIONS.get(tier, DEFAULT_INSTRUCTIONS)
        settings = self._overlap_settings(tier)
        client = self._sdk()
        with self._errors():
            project_id = self._find_project(title)
            if project_id is None:
                created = client.projects.create(
                    title=title,
                    description=_TIER_DESCRIPTIONS.get(tier, _TIER_DESCRIPTIONS[TIER_GENERAL]),
                    label_config=label_config,
                    expert_instruction=instructions,
                    show_instruction=True,
                    show_skip_button=True,
                    **settings,
                )
                project_id = int(created.id)
                if feature_kinds is not None:
                    self._ensure_review_view(project_id, feature_kinds)
                return project_id
            current = client.projects.get(project_id)
            changes: dict[str, Any] = {}
            if (current.label_config or "").strip() != label_config.strip():
                self._check_no_class_in_use_dropped(
                    project_id, title, current.label_config or "", classes
                )
                changes["label_config"] = label_config
            if (current.expert_instruction or "") != instructions:
                changes["expert_instruction"] = instructions
                changes["show_instruction"] = True
            for key, value in settings.items():
                if getattr(current, key, None) != value:
                    changes[key] = value
            if changes:
                client.projects.update(project_id, **changes)
            if feature_kinds is not None:
                self._ensure_review_view(project_id, feature_kinds)
            return project_id

    def _check_no_class_in_use_dropped(
        self, project_id: int, title: str, current_config: str, classes: Sequence[str]
    ) -> None:
        """Refuse an interface without a class that answers in the project already use.

        Label Studio 1.23 accepts such an interface (it checks the labels of existing
        answers only in a strict mode its API does not use), and those answers would
        then name a class the schema lacks: each would be quarantined as
        ``unknown_label`` at the next pull. Adding classes is always fine.
        """
        dropped = sorted(set(_offered_classes(current_config)) - {str(c) for c in classes})
        if not dropped:
            return
        raw = self._sdk()._client_wrapper.httpx_client  # the summary's counts are untyped
        response = raw.request(f"api/projects/{project_id}/summary/", method="GET")
        response.raise_for_status()
        used = (response.json().get("created_labels") or {}).get(LABEL_CONTROL) or {}
        in_use = {c: int(used[c]) for c in dropped if used.get(c)}
        if in_use:
            counts = ", ".join(f"{c!r} ({n} answer(s))" for c, n in in_use.items())
            raise ValueError(
                f"the schema's classes {list(classes)} drop {counts} that answers in Label "
                f"Studio project {title!r} use: put the class(es) back in the schema file's "
                "classes (classes may be added mid-stream, not removed while answers use them)"
            )

    def _ensure_review_view(self, project_id: int, feature_kinds: Mapping[str, str]) -> None:
        """Create the project's "Review" tab, or update it when it differs from ours.

        Other tabs (a reviewer's own) are left alone. Label Studio keeps tabs per
        project, shared by the organisation.
        """
        client = self._sdk()
        raw = client._client_wrapper.httpx_client  # the SDK types drop the tab's keys
        columns = raw.request("api/dm/columns/", method="GET", params={"project": project_id})
        columns.raise_for_status()
        wanted = review_view_data(feature_kinds, columns.json().get("columns", []))
        views = raw.request("api/dm/views/", method="GET", params={"project": project_id})
        views.raise_for_status()
        ours = [v for v in views.json() if (v.get("data") or {}).get("title") == REVIEW_VIEW_TITLE]
        if not ours:
            created = raw.request(
                "api/dm/views/", method="POST", json={"project": project_id, "data": wanted}
            )
            created.raise_for_status()
            return
        current = ours[0].get("data") or {}
        if any(current.get(k) != v for k, v in wanted.items()):
            updated = raw.request(
                f"api/dm/views/{ours[0]['id']}/",
                method="PATCH",
                json={"project": project_id, "data": {**current, **wanted}},
            )
            updated.raise_for_status()

    def _overlap_settings(self, tier: str) -> dict[str, int]:
        if not 0.0 <= self.overlap_share <= 1.0:
            raise ValueError(f"overlap_share must be in [0, 1], got {self.overlap_share}")
        if tier == TIER_ADJUDICATION or self.overlap_share == 0.0:
            return {"maximum_annotations": 1, "overlap_cohort_percentage": 100}
        if self.overlap_annotators < 2:
            raise ValueError("overlap_annotators must be at least 2 when overlap_share > 0")
        return {
            "maximum_annotations": self.overlap_annotators,
            "overlap_cohort_percentage": round(self.overlap_share * 100),
        }

    # --- push --------------------------------------------------------------------------
    def push_tasks(
        self,
        *,
        classes: Sequence[str],
        tasks: Sequence[LabelingTask],
        feature_kinds: Mapping[str, str] | None = None,
        evidence: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]] | None = None,
    ) -> PushResult:
        """Import the tasks Label Studio does not hold yet, with the model's pre-annotation.

        Idempotent: item ids already in the project are skipped, so a re-run, even after a
        crash half-way through a previous push, never duplicates a task. Tasks go in by
        descending priority, so Label Studio's default (sequential) queue serves the most
        useful items first. Each task goes to its tier's project (created on first use).

        Args:
            classes: the class names (the project is created or updated with them).
            tasks: the routed items; a repeated item id is pushed once.
            feature_kinds: feature name -> ``"numeric"``, ``"categorical"`` or ``"text"``
                (the batch schema's): numbers are rounded and typed by it. None: each
                feature is typed by its values.
            evidence: item id -> text feature -> ``(token, weight)`` that drove the
                model's label, marked in the task's text.

        Returns:
            How many tasks were created and how many were already present, over all
            tiers; ``project_id`` is the general queue's (or the only tier's) project.
        """
        unknown = sorted({t.predicted_label for t in tasks} - set(classes))
        if feature_kinds is None:
            feature_kinds = {str(n): _kind_of(v) for t in tasks[:1] for n, v in t.features.items()}
        if unknown:
            raise ValueError(f"predicted labels not among the classes {list(classes)}: {unknown}")
        by_tier: dict[str, list[LabelingTask]] = {}
        for task in tasks:
            by_tier.setdefault(task.tier, []).append(task)
        results = {
            tier: self._push_tier(
                classes=classes,
                tier=tier,
                tasks=tier_tasks,
                feature_kinds=feature_kinds,
                evidence=evidence or {},
            )
            for tier, tier_tasks in sorted(by_tier.items())
        }
        if not results:  # nothing to push: still make sure the general queue exists
            results[TIER_GENERAL] = self._push_tier(
                classes=classes,
                tier=TIER_GENERAL,
                tasks=[],
                feature_kinds=feature_kinds,
                evidence={},
            )
        main = results.get(TIER_GENERAL) or next(iter(results.values()))
        return PushResult(
            created=sum(r.created for r in results.values()),
            already_present=sum(r.already_present for r in results.values()),
            project_id=main.project_id,
            projects={tier: r.project_id for tier, r in results.items()},
        )

    def _push_tier(
        self,
        *,
        classes: Sequence[str],
        tier: str,
        tasks: Sequence[LabelingTask],
        feature_kinds: Mapping[str, str],
        evidence: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]],
    ) -> PushResult:
        project_id = self.ensure_project(classes=classes, tier=tier, feature_kinds=feature_kinds)
        unique: dict[str, LabelingTask] = {}
        for task in tasks:
            unique.setdefault(task.item_id, task)
        existing = self._existing_item_ids(project_id, list(unique)) if unique else set()
        missing = sorted(
            (t for t in unique.values() if t.item_id not in existing),
            key=lambda t: -t.priority,
        )
        client = self._sdk()
        created = 0
        with self._errors():
            for chunk in _chunks(missing, self.import_chunk_size):
                response = client.projects.import_tasks(
                    project_id,
                    request=[
                        task_payload(t, feature_kinds, evidence.get(t.item_id)) for t in chunk
                    ],
                    request_options=self._long(),
                )
                created += int(response.task_count or 0)
                fault_point("push.after_chunk")
            if missing:
                current = Counter(t.model_version for t in missing).most_common(1)[0][0]
                self._select_model_version(project_id, current)
        return PushResult(
            created=created, already_present=len(unique) - len(missing), project_id=project_id
        )

    # --- pull --------------------------------------------------------------------------
    def pull_annotations(
        self, *, since: datetime | None = None, tiers: Sequence[str] = TIERS
    ) -> list[Annotation]:
        """Finished annotations of every tier's queue, skipped ones included, oldest first.

        Args:
            since: timezone-aware instant; when given, only annotations created or
                updated strictly after it (use the largest ``updated_at`` seen as the
                next ``since``).
            tiers: the queues to read.

        Returns:
            One :class:`Annotation` per annotation (a task answered twice gives two);
            ``tier`` is the queue the annotation was made in.
        """
        if since is not None:
            if since.tzinfo is None:
                raise ValueError("since must be timezone-aware (UTC)")
            since = _plain_utc(since)
        out: list[Annotation] = []
        for tier in tiers:
            project_id = self._find_project_checked(tier)
            if project_id is not None:
                out.extend(replace(a, tier=tier) for a in self._pull_project(project_id, since))
        out.sort(key=lambda a: (a.updated_at, a.annotation_id))
        return out

    def _pull_project(self, project_id: int, since: datetime | None) -> list[Annotation]:
        with self._errors():
            if since is None:
                tasks = self._export(project_id)
            else:
                changed = self._task_ids(
                    project_id,
                    [
                        {
                            "filter": "filter:tasks:updated_at",
                            "operator": "greater",
                            "type": "Datetime",
                            # whole milliseconds, rounded down: the exact cut is made below
                            "value": since.replace(
                                microsecond=since.microsecond // 1000 * 1000
                            ).strftime(_DM_DATETIME),
                        }
                    ],
                )
                tasks = []
                for chunk in _chunks_within(changed, _QUERY_BUDGET, lambda i: len(str(i)) + 10):
                    tasks.extend(self._export(project_id, ids=chunk))
            users = {int(u.id): str(u.email) for u in self._sdk().users.list() if u.id is not None}
        return annotations_from_export(tasks, users, since=since)

    def queue_status(self) -> QueueStatus:
        """How far reviewers are over every tier: cheap enough for a sensor every 30 s.

        Returns:
            Total tasks, tasks with a submitted (not skipped) answer, and when the
            newest of those was submitted, summed over the tiers' projects.
        """
        per_tier = self.queue_status_by_tier().values()
        latest = [s.latest_completed_at for s in per_tier if s.latest_completed_at is not None]
        return QueueStatus(
            total_tasks=sum(s.total_tasks for s in per_tier),
            finished_tasks=sum(s.finished_tasks for s in per_tier),
            latest_completed_at=max(latest) if latest else None,
        )

    def queue_status_by_tier(self) -> dict[str, QueueStatus]:
        """``queue_status`` of each tier whose project exists."""
        out = {}
        for tier in TIERS:
            project_id = self._find_project_checked(tier)
            if project_id is not None:
                out[tier] = self._project_status(project_id)
        return out

    def item_tasks(self, *, item_id: str, tiers: Sequence[str] = TIERS) -> list[QueuedTask]:
        """The item's tasks in the tiers' queues, with how many answers each holds now
        (submitted and skipped; ``hitl-pipeline trail`` compares them with the ledger)."""
        out = []
        for tier in tiers:
            project_id = self._find_project_checked(tier)
            if project_id is None:
                continue
            with self._errors():
                tasks = self._sdk().tasks.list(
                    project=project_id,
                    fields="all",
                    page_size=100,
                    query=_dm_query(
                        [
                            {
                                "filter": "filter:tasks:data.item_id",
                                "operator": "equal",
                                "type": "String",
                                "value": item_id,
                            }
                        ]
                    ),
                )
                out += [
                    QueuedTask(
                        tier=tier,
                        task_id=int(t.id),
                        annotations=int(t.total_annotations or 0)
                        + int(t.cancelled_annotations or 0),
                    )
                    for t in tasks
                ]
        return out

    def delete_task(self, *, tier: str, item_id: str) -> bool:
        """Delete an item's task from a tier's queue (what an admin does in the UI).

        Returns:
            Whether a task was deleted.
        """
        project_id = self._find_project_checked(tier)
        if project_id is None:
            return False
        with self._errors():
            ids = self._task_ids(
                project_id,
                [
                    {
                        "filter": "filter:tasks:data.item_id",
                        "operator": "equal",
                        "type": "String",
                        "value": item_id,
                    }
                ],
            )
            for task_id in ids:
                self._sdk().tasks.delete(task_id)
        return bool(ids)

    def _project_status(self, project_id: int) -> QueueStatus:
        client = self._sdk()
        with self._errors():
            everything = client.tasks.list(project=project_id, page_size=1, fields="task_only")
            finished = client.tasks.list(
                project=project_id,
                page_size=1,
                fields="task_only",
                query=_dm_query(
                    [
                        {
                            "filter": "filter:tasks:completed_at",
                            "operator": "empty",
                            "type": "Datetime",
                            "value": False,
                        }
                    ],
                    ordering=["-tasks:completed_at"],
                ),
            )
        latest = None
        if finished.items:
            raw = getattr(finished.items[0], "completed_at", None)
            if isinstance(raw, datetime):
                latest = raw.astimezone(UTC) if raw.tzinfo else raw.replace(tzinfo=UTC)
            elif isinstance(raw, str):
                latest = _parse_time(raw)
        return QueueStatus(
            total_tasks=int(everything.response.total),
            finished_tasks=int(finished.response.total),
            latest_completed_at=latest,
        )

    # --- intake ------------------------------------------------------------------------
    def service_account(self) -> str:
        """The e-mail of the user owning the API token (asked once per resource)."""
        if self._service_account is None:
            with self._errors():
                me = self._sdk().users.whoami()
            self._service_account = str(me.email or f"user-{me.id}")
        return self._service_account

    def intake_policy(self, *, classes: Sequence[str]) -> IntakePolicy:
        """Who counts and which classes exist: the configured reviewers, the service
        account (never counted) and ``classes``."""
        return IntakePolicy.build(
            classes, reviewers=self.reviewers, service_accounts=[self.service_account()]
        )

    def missing_items(self, pushed: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Pushed items whose task is gone from their tier's queue (deleted in Label
        Studio, or the whole project deleted): their unpulled answers are lost.

        Args:
            pushed: tier -> item ids the pipeline pushed to that tier's queue.

        Returns:
            tier -> sorted missing item ids, for tiers with any missing.
        """
        out: dict[str, list[str]] = {}
        for tier, item_ids in pushed.items():
            wanted = sorted({str(i) for i in item_ids})
            if not wanted:
                continue
            project_id = self._find_project_checked(tier)
            present = set() if project_id is None else self._existing_item_ids(project_id, wanted)
            missing = [i for i in wanted if i not in present]
            if missing:
                out[tier] = missing
        return out

    # --- health ------------------------------------------------------------------------
    def is_available(self) -> bool:
        """True when Label Studio answers and accepts the token. Never raises."""
        try:
            self.check_available()
        except LabelStudioUnavailable:
            return False
        return True

    def check_available(self) -> None:
        """Raise :class:`LabelStudioUnavailable` (or its ``LabelStudioAuthError``) if unusable."""
        with self._errors():
            self._sdk().users.whoami(request_options={"max_retries": 0, "timeout": 10.0})

    # --- internals ---------------------------------------------------------------------
    def _sdk(self) -> Any:
        if self._client is None:
            from label_studio_sdk import LabelStudio  # heavy import, only when used

            self._client = LabelStudio(
                base_url=self.url.rstrip("/"),
                api_key=self._api_key(),
                timeout=self.request_timeout_s,
            )
        return self._client

    def _api_key(self) -> str:
        if isinstance(self.api_key, dg.EnvVar):  # used without Dagster resolving it first
            return str(self.api_key.get_value())
        if self.api_key:
            return self.api_key
        if self.credentials_file:
            from hitl_pipeline.resources.label_studio_server import read_credentials

            credentials = read_credentials(Path(self.credentials_file))
            if credentials is not None:
                return credentials.token
        raise LabelStudioAuthError(
            f"no API token for Label Studio at {self.url}: set HITL_LABEL_STUDIO_API_KEY, or "
            "start the local server with `hitl-pipeline labelstudio start`, which writes "
            f"its credentials to {self.credentials_file or 'its data dir'}"
        )

    def _long(self) -> dict[str, Any]:
        return {"timeout": self.request_timeout_s}

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn transport and auth failures into our errors, with what to do about them."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TimeoutException as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} did not answer in time ({type(exc).__name__}); "
                f"it may be overloaded, or request_timeout_s={self.request_timeout_s} is too "
                "short for this export"
            ) from exc
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio is not reachable at {self.url} ({exc}). Start the local server "
                "with `hitl-pipeline labelstudio start`, or point the Label Studio URL setting "
                "at a running server."
            ) from exc
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise LabelStudioAuthError(
                    f"Label Studio at {self.url} rejected the API token (HTTP "
                    f"{exc.status_code}): check the configured api_key. The local server "
                    "accepts the token its data dir was first started with; legacy tokens "
                    "must be enabled for the organisation."
                ) from exc
            raise

    def _find_project(self, title: str) -> int | None:
        matches = [
            int(p.id)
            for p in self._sdk().projects.list(title=title, page_size=100)
            if p.title == title
        ]
        return min(matches) if matches else None  # the oldest, should titles repeat

    def _find_project_checked(self, tier: str = TIER_GENERAL) -> int | None:
        with self._errors():
            return self._find_project(self.tier_title(tier))

    def _export(self, project_id: int, ids: Sequence[int] | None = None) -> list[dict]:
        options: dict[str, Any] = self._long()
        if ids is not None:
            options["additional_query_parameters"] = {"ids[]": [int(i) for i in ids]}
        raw = b"".join(
            self._sdk().projects.exports.download_sync(
                project_id, export_type="JSON", request_options=options
            )
        )
        return json.loads(raw) if raw else []

    def _existing_item_ids(self, project_id: int, item_ids: Sequence[str]) -> set[str]:
        """Which of ``item_ids`` the project holds, asked of Label Studio in chunks.

        The Data Manager's ``in_list`` filter is an SQL ``IN`` on the task data, so the
        cost follows the size of the push, not of the project (an export of a 5,000-task
        project to check a push took 6.5 s; 500 ids absent from it, 0.14 s).
        """
        found: set[str] = set()
        with self._errors():
            for chunk in _chunks_within(sorted(item_ids), _QUERY_BUDGET, _quoted_len):
                found.update(
                    str((t.data or {}).get("item_id"))
                    for t in self._sdk().tasks.list(
                        project=project_id,
                        fields="task_only",
                        page_size=1000,
                        query=_dm_query(
                            [
                                {
                                    "filter": "filter:tasks:data.item_id",
                                    "operator": "in_list",
                                    "type": "List",
                                    "value": list(chunk),
                                }
                            ]
                        ),
                        request_options=self._long(),
                    )
                )
        return found & set(item_ids)

    def _task_ids(self, project_id: int, filters: Sequence[Mapping[str, Any]]) -> list[int]:
        pager = self._sdk().tasks.list(
            project=project_id,
            fields="task_only",
            page_size=1000,
            query=_dm_query(filters),
            request_options=self._long(),
        )
        return [int(t.id) for t in pager]

    def _select_model_version(self, project_id: int, model_version: str) -> None:
        # Label Studio pre-selects only predictions of the project's model version: follow
        # the newest model so reviewers see its guess pre-filled.
        client = self._sdk()
        if (client.projects.get(project_id).model_version or "") != model_version:
            client.projects.update(project_id, model_version=model_version)
