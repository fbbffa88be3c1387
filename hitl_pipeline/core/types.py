"""Our own value types, shared by every layer.

Resources translate SDK objects into these; assets and ``core`` functions only ever see
these, DataFrames and arrays. Column-name constants live here too so that every stage
agrees on the shape of a frame without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# --- column names shared by the stages -------------------------------------------------
ITEM_ID = "item_id"
LABEL = "label"
PREDICTED_LABEL = "predicted_label"
CONFIDENCE = "confidence"
MARGIN = "margin"
ENTROPY = "entropy"
MODEL_VERSION = "model_version"
PROBA_PREFIX = "proba__"  # one column per class: proba__<class>
ROUTE = "route"  # "review" or "auto_accept"
REASONS = "reasons"  # ";"-joined reason codes, e.g. "low_confidence;audit"
PRIORITY = "priority"  # higher = reviewed first
TIER = "tier"
LABEL_SOURCE = "label_source"  # "seed" | "human" | ...
LABELLED_AT = "labelled_at"  # when the label was decided (UTC); null for seed labels
ANNOTATORS = "annotators"  # ";"-joined annotators whose votes decided a human label
N_ANNOTATIONS = "n_annotations"  # votes behind a human label (0 for seed labels)
DECIDED_BY = "decided_by"  # "single" | "majority" | "latest" | "adjudicated" (how decided)
PARTITION = "partition"
DISAGREEMENT = "disagreement"  # committee disagreement in [0, 1] (core.committee)
OOD_SCORE = "ood_score"  # isolation percentile among the training rows (core.ood)
REVIEW_RANK = "review_rank"  # 1 = picked first for review; null when not picked by ranking
THRESHOLD = "confidence_threshold"  # the confidence threshold the decision used

ROUTE_REVIEW = "review"
ROUTE_AUTO = "auto_accept"


def proba_column(class_name: str) -> str:
    """Name of the probability column of one class."""
    return f"{PROBA_PREFIX}{class_name}"


# --- schema --------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """One declared input column of a production batch."""

    name: str
    # "text": free text (a post, a comment) that models read through a text representation
    kind: Literal["numeric", "categorical", "text"]
    categories: tuple[str, ...] = ()  # categorical only; empty means "any value"
    nullable: bool = False
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class BatchSchema:
    """The declared shape of a production batch (and of labelled training data)."""

    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...]
    id_column: str = ITEM_ID
    target: str = LABEL
    time_column: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def text_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "text"]


class BatchSchemaError(ValueError):
    """A batch cannot be used at all (missing column, wholly wrong type, no rows...)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("batch rejected: " + "; ".join(self.problems))


@dataclass(frozen=True)
class ValidatedBatch:
    """Rows that passed validation, and the quarantined rows with a ``quarantine_reason``."""

    valid: Any  # pd.DataFrame
    quarantined: Any  # pd.DataFrame, original columns + "quarantine_reason"


# --- models and registry -------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A registered model version."""

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class TrainingResult:
    """A fitted model and what it was fitted with."""

    model: Any  # a fitted sklearn estimator exposing predict_proba and classes_
    params: Mapping[str, Any]
    metrics: Mapping[str, float]


# --- drift ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftSummary:
    """What the drift report found, reduced to what decisions need."""

    dataset_drift: bool
    drift_share: float  # share of feature columns that drifted
    drift_share_threshold: float
    drifted_columns: tuple[str, ...]
    column_scores: Mapping[str, float]  # per column drift score (method-dependent)
    column_methods: Mapping[str, str]
    prediction_drift: bool
    confidence_drift: bool
    reference_rows: int
    current_rows: int


# --- dataset versions ----------------------------------------------------------------
@dataclass(frozen=True)
class DatasetVersion:
    """A content-addressed, restorable version of the training dataset."""

    version_id: str  # human-friendly id, e.g. "dataset-v0003" (a git tag in the DVC repo)
    git_rev: str  # commit in the dataset repository
    md5: str  # DVC content hash of the data file
    rows: int
    path: str  # path of the data file inside the dataset repository
    # every data file of the version (path inside the dataset repository -> DVC md5), so
    # that side files (edge cases, holdout...) are pinned and restorable too
    files: Mapping[str, str] = field(default_factory=dict)


# --- labelling -----------------------------------------------------------------------
@dataclass(frozen=True)
class LabelingTask:
    """One routed item as it goes to Label Studio, with the model's pre-annotation."""

    item_id: str
    features: Mapping[str, Any]
    predicted_label: str
    score: float
    model_version: str
    reasons: tuple[str, ...]
    tier: str = "general"
    partition: str = ""
    priority: float = 0.0
    note: str = ""  # shown to the reviewer, e.g. the earlier votes on an adjudication task


@dataclass(frozen=True)
class PushResult:
    created: int
    already_present: int
    project_id: int
    # tier -> Label Studio project id of every queue the push touched
    projects: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Annotation:
    """One finished human annotation pulled back from Label Studio."""

    item_id: str
    task_id: int
    annotation_id: int
    label: str | None  # None when skipped, or when not exactly one class was chosen
    annotator: str
    completed_at: datetime  # timezone-aware UTC
    updated_at: datetime
    was_cancelled: bool
    predicted_label: str | None
    model_version: str | None
    partition: str
    features: Mapping[str, Any]
    reasons: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # reviewer flags, e.g. ("edge case",): feeds the edge-case set
    tier: str = ""
    lead_time_s: float | None = None  # seconds the reviewer spent, as Label Studio measured
    # what is wrong with the answer itself, "" when nothing (core.intake.ANSWER_PROBLEMS);
    # who answered and the schema are judged later, by core.intake
    answer_problem: str = ""
    raw_result: str = ""  # the answer's result as Label Studio holds it (JSON), for audits
    model_score: float | None = None  # the model's confidence in its label, as pushed


@dataclass(frozen=True)
class QueueStatus:
    """How far the people are with the review queue."""

    total_tasks: int
    finished_tasks: int
    latest_completed_at: datetime | None

    @property
    def pending_tasks(self) -> int:
        return self.total_tasks - self.finished_tasks


# --- gate ----------------------------------------------------------------------------
@dataclass(frozen=True)
class GateCheckResult:
    """One check of the promotion gate: its verdict, the reason and the figures behind it.

    ``status`` is "pass", "fail" or "not enough evidence".
    """

    name: str  # e.g. "overall[human_holdout]", "slice[holdout:class=churn]", "edge_cases"
    status: str
    reason: str
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger may replace the champion, and why."""

    promote: bool
    reasons: tuple[str, ...]
    challenger_metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float]
    evaluated_rows: int
    checks: tuple[GateCheckResult, ...] = ()  # every check, in the order they ran


def coerce_setting(default: Any, value: Any) -> Any:
    """A setting's value given as text (a command line, MLflow's params) typed like its
    default: ``"none"``/``"null"`` is None, a tuple is comma-separated, bools accept
    true/false/1/0/yes, numbers parse; a value that is not text is taken as it is."""
    if value is None:
        return None
    if not isinstance(value, str):
        return value
    if value.lower() in ("none", "null"):
        return None
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(default, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float) or default is None:
        try:
            return float(value)
        except ValueError:
            return value
    return value
