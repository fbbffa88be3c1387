"""MLflow tracking and model registry: candidates, the champion alias, gate decisions.

Every call goes through an explicit ``MlflowClient(tracking_uri, registry_uri)``. Two
MLflow 3.17 code paths read only the process-global tracking URI: ``log_model`` (the
logged model is created through the fluent API) and registering a ``models:/<model_id>``
source (the SQL registry store looks the logged model up with a bare ``MlflowClient()``,
a TODO in MLflow). Those two run inside ``_mlflow_globals``, which sets the URIs under a
process-wide lock and puts back exactly what was there before, environment included.

Champion bookkeeping lives in the registry itself: the ``champion`` and
``previous-champion`` aliases, ``champion.*`` tags on each model version (when, who,
why, which version it replaced), and a bounded JSON history on the registered model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import dagster as dg
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.recovery import MLFLOW, REGISTRY, Fix, RunEnded
from hitl_pipeline.core.types import DatasetVersion, GateDecision, ModelRef
from hitl_pipeline.faults import fault_point
from hitl_pipeline.internals import mlflow_uri_globals, restore_mlflow_uri_globals
from hitl_pipeline.resources.errors import StoreUnavailable, require_writable

if TYPE_CHECKING:
    import mlflow

logger = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
MODEL_ARTIFACT_NAME = "model"

# Tags on a model version.
TAG_DATASET_VERSION = "dataset.version_id"
TAG_DATASET_MD5 = "dataset.md5"
TAG_DATASET_GIT_REV = "dataset.git_rev"
TAG_DATASET_ROWS = "dataset.rows"
TAG_DATASET_PATH = "dataset.path"
TAG_CODE_VERSION = "code.version"
TAG_FILE_MD5_PREFIX = "dataset.file."  # dataset.file.<frame>.md5: every frame of the version
TAG_TRAINING_PARAMS = "training.params"  # JSON, so the version alone says how it was fitted
TAG_ROUTING_POLICY = "lineage.routing"  # JSON: the routing configuration behind the labels
TAG_EXPERIMENT_ID = "hitl.experiment_id"  # with the run id: the run's page in the MLflow UI
TAG_MODEL_ID = "hitl.logged_model_id"
TAG_DAGSTER_RUN_ID = "hitl.dagster_run_id"  # the Dagster run that trained it (run and version)
TAG_CHAMPION_SINCE = "champion.since"
TAG_CHAMPION_BY = "champion.by"
TAG_CHAMPION_REASON = "champion.reason"
TAG_CHAMPION_VIA = "champion.via"  # "promote" | "rollback"
TAG_REPLACED_VERSION = "champion.replaced_version"  # what this version replaced on promotion
TAG_CHAMPION_UNTIL = "champion.until"
TAG_ENDED_BY = "champion.ended_by"
TAG_END_REASON = "champion.end_reason"
TAG_ENDED_VIA = "champion.ended_via"
TAG_GATE_PROMOTE = "gate.promote"
TAG_GATE_REASONS = "gate.reasons"
TAG_GATE_FAILED = "gate.failed_checks"
TAG_GATE_ABANDONED = "gate.abandoned"  # why a version never got a gate decision (recovery)
TAG_RECOVERED = "hitl.recovered"  # on a run that recovery marked FAILED: why
TAG_GATE_CHAMPION = "gate.champion_version"  # the champion the gate compared with ("none")
TAG_DAGSTER_RUN_URL = "hitl.dagster_run_url"
# MLflow's own tags: the runs table's Source column shows the name of a "JOB" source as it
# is, so the Dagster run's URL is what a person sees there.
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
# On the experiment. MLflow 3.17's UI itself follows its "workflowType" switch (see
# ML_WORKFLOW); the tag says the same to every other reader of the experiment.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
ML_WORKFLOW = "workflowType=machine_learning"  # the UI's "Model training" view, by URL
DATASET_SOURCE_TYPE = "dvc"
GATE_DECISION_ARTIFACT = "gate/decision.json"
# Tag on the registered model: the last promotions and rollbacks, newest last.
TAG_HISTORY = "champion.history"

_HISTORY_MAX_CHARS = 5000  # registered-model tag values are VARCHAR(5000) in MLflow's schema
_TAG_MAX_CHARS = 5000
_PARAM_MAX_CHARS = 6000
_MODEL_CACHE_SIZE = 8
# The libraries the pickled model needs; pinned to what is installed. Passing them
# explicitly avoids MLflow's requirement inference, which took 20-30 s a call against
# about 1.6 s (measured with MLflow 3.17 on a 2-core machine).
_MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "cloudpickle", "numpy", "pandas", "scipy")
_METRIC_KEY_RE = re.compile(r"[^0-9A-Za-z_\-. /:]")
# A locked SQLite database (another process writing) is worth waiting for; MLflow itself
# gives up after its 20 s busy timeout. On PostgreSQL: a transaction that lost a
# serialization or deadlock race was rolled back whole, and a connection the server (or a
# proxy) dropped is replaced by the pool; both are safe to repeat.
_TRANSIENT_ATTEMPTS = 6
_TRANSIENT_FIRST_WAIT_S = 0.5
_TRANSIENT_MARKERS = (
    "database is locked",
    "database table is locked",
    "busy",
    "could not serialize access",
    "deadlock detected",
    "server closed the connection unexpectedly",
    "connection reset by peer",
    "terminating connection due to administrator command",
    "ssl syscall error: eof detected",
)
NO_CHAMPION = "none"

_GLOBALS_LOCK = threading.RLock()
_READY_LOCK = threading.Lock()
_READY: dict[tuple[str, str, str, str | None], str] = {}  # (uris, experiment) -> experiment_id
_CACHE_LOCK = threading.Lock()
_PROMOTION_LOCK = threading.RLock()
_PROMOTION_DEPTH = threading.local()  # whether this thread holds the advisory lock
_MODEL_CACHE: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


class PromotionRefused(RuntimeError):
    """A compare-and-set promotion found the registry not as the gate left it."""


@dataclass(frozen=True)
class ChampionEvent:
    """One change of champion, as recorded in the registry."""

    at: str  # ISO 8601, UTC
    action: str  # "promote" | "rollback"
    version: str  # the new champion
    from_version: str | None  # the champion it replaced
    actor: str
    reason: str


@dataclass(frozen=True)
class ReportRef:
    """A report kept as an MLflow artifact."""

    run_id: str
    experiment_id: str
    path: str  # artifact path of the report's main file
    url: str | None  # its page in the MLflow UI (None when no UI is configured)


class MlflowRegistryResource(dg.ConfigurableResource):
    """Candidate models, the champion alias and gate decisions in MLflow.

    One SQLite file (plus a local artifact folder) by default; any tracking server or
    database URI by configuration. Methods take and return our own types only.
    """

    tracking_uri: str = Field(description="e.g. sqlite:////abs/path/mlflow.db or http://host:5000")
    artifact_location: str | None = Field(
        default=None,
        description=(
            "Artifact root of the experiment when it is created (a folder or URI). Default for"
            " SQLite: an 'mlartifacts' folder next to the database file."
        ),
    )
    registry_uri: str | None = Field(default=None, description="Defaults to tracking_uri.")
    experiment_name: str = "hitl-pipeline"
    model_name: str = "hitl-classifier"
    ui_url: str | None = Field(
        default=None,
        description="Base URL of the MLflow UI serving this store, for links in Dagster's "
        "metadata (None: no links).",
    )
    dagster_ui_url: str | None = Field(
        default=None,
        description="Base URL of the Dagster UI: a run's source links to <it>/runs/<run id>.",
    )

    @property
    def monitoring_experiment_name(self) -> str:
        """Where the drift reports and loop-health charts go, beside the training runs."""
        return f"{self.experiment_name}-monitoring"

    # --- candidates ------------------------------------------------------------------
    def log_candidate(
        self,
        *,
        model: Any,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        dataset: DatasetVersion,
        input_example: pd.DataFrame | None = None,
    ) -> ModelRef:
        """Log a fitted model in a new run and register it as a new version.

        Args:
            model: A fitted scikit-learn estimator (pickled with cloudpickle, so classes of
                our own need ``hitl_pipeline`` importable where it is loaded).
            params: Training parameters (stringified; nested values as JSON).
            metrics: Evaluation figures of the candidate.
            tags: Extra tags for the run and the model version. A ``hitl.dagster_run_id``
                among them also becomes the run's source (``mlflow.source.name``: the
                Dagster run's URL when ``dagster_ui_url`` is set).
            dataset: The dataset version it was trained on; logged as the run's dataset
                inputs (MLflow's Datasets column): the version (context ``training``) and
                each evaluation frame of it (context ``evaluation``).
            input_example: A few input rows; gives the model a signature and the dataset
                inputs a schema.

        Returns:
            The new model version; its tags carry the dataset version and code version.
        """
        import mlflow.sklearn
        from mlflow.entities import Metric, Param

        client = self._client()
        experiment_id = self._experiment_id()
        common_tags = {
            TAG_DATASET_VERSION: dataset.version_id,
            TAG_DATASET_MD5: dataset.md5,
            TAG_DATASET_GIT_REV: dataset.git_rev,
            TAG_DATASET_ROWS: str(dataset.rows),
            TAG_DATASET_PATH: dataset.path,
            TAG_CODE_VERSION: code_version(),
            **{
                f"{TAG_FILE_MD5_PREFIX}{Path(path).stem}.md5": md5
                for path, md5 in sorted(dataset.files.items())
            },
            TAG_TRAINING_PARAMS: _truncate(
                json.dumps(_jsonable(dict(params)), sort_keys=True), _TAG_MAX_CHARS
            ),
            **{str(k): _truncate(str(v), _TAG_MAX_CHARS) for k, v in tags.items()},
        }
        run_tags = {**common_tags, **self._source_tags(tags.get(TAG_DAGSTER_RUN_ID))}
        run = client.create_run(
            experiment_id, run_name=f"candidate-{dataset.version_id}", tags=run_tags
        )
        run_id = run.info.run_id
        try:
            client.log_inputs(run_id, datasets=dataset_inputs(dataset, input_example))
            now = _now_ms()
            client.log_batch(
                run_id,
                metrics=[
                    Metric(_metric_key(k), float(v), now, 0) for k, v in sorted(metrics.items())
                ],
                params=[Param(str(k), _param_value(v)) for k, v in sorted(params.items())],
            )
            with self._mlflow_globals(), mlflow.start_run(run_id=run_id):
                info = mlflow.sklearn.log_model(
                    sk_model=model,
                    name=MODEL_ARTIFACT_NAME,
                    # skops (MLflow 3's default) rejects classes of our own as untrusted types.
                    serialization_format="cloudpickle",
                    pip_requirements=_pinned_requirements(),
                    input_example=input_example,
                )
                fault_point("registry.after_log_model")
                version = self._register(
                    model_id=info.model_id,
                    run_id=run_id,
                    tags={
                        **common_tags,
                        TAG_EXPERIMENT_ID: experiment_id,
                        TAG_MODEL_ID: info.model_id,
                    },
                )
        except BaseException:
            # start_run already marks FAILED on its own exceptions; this covers the rest.
            client.set_terminated(run_id, status="FAILED")
            raise
        return version

    def log_gate_decision(
        self, *, ref: ModelRef, decision: GateDecision, champion: ModelRef | None = None
    ) -> None:
        """Record the gate's verdict on a candidate in its run and on its model version.

        ``champion`` is the serving version the gate compared with (None: none); it is
        recorded (tag ``gate.champion_version``) so that :meth:`promote_gated` moves the
        alias only while that version still serves.

        Metrics ``gate.promote`` (1/0), ``gate.evaluated_rows``, ``gate.checks_failed``,
        ``gate.challenger.*``, ``gate.champion.*`` and ``gate.check.<check>.<figure>``;
        tags ``gate.promote``, ``gate.reasons`` and ``gate.failed_checks`` (also on the
        model version); the full decision, every check included, as the artifact
        ``gate/decision.json``.
        """
        from mlflow.entities import Metric, RunTag

        client = self._client()
        now = _now_ms()
        metrics = [
            Metric("gate.promote", float(decision.promote), now, 0),
            Metric("gate.evaluated_rows", float(decision.evaluated_rows), now, 0),
        ]
        for side, values in (
            ("challenger", decision.challenger_metrics),
            ("champion", decision.champion_metrics),
        ):
            metrics += [
                Metric(_metric_key(f"gate.{side}.{k}"), float(v), now, 0)
                for k, v in sorted(values.items())
            ]
        failed = [c.name for c in decision.checks if c.status == "fail"]
        metrics.append(Metric("gate.checks_failed", float(len(failed)), now, 0))
        metrics += [
            Metric(_metric_key(f"gate.check.{c.name}.{k}"), float(v), now, 0)
            for c in decision.checks
            for k, v in sorted(c.figures.items())
        ]
        reasons = _truncate("; ".join(decision.reasons), _TAG_MAX_CHARS)
        failed_text = _truncate(", ".join(failed) or "none", _TAG_MAX_CHARS)
        promote = "true" if decision.promote else "false"
        tags = [
            RunTag(TAG_GATE_PROMOTE, promote),
            RunTag(TAG_GATE_REASONS, reasons),
            RunTag(TAG_GATE_FAILED, failed_text),
        ]
        for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics a batch
            client.log_batch(
                ref.run_id,
                metrics=metrics[start : start + 1000],
                tags=tags if start == 0 else [],
            )
        payload = {
            "model_name": ref.name,
            "model_version": ref.version,
            "decided_at": _now_iso(),
            **asdict(decision),
        }
        client.log_dict(ref.run_id, _jsonable(payload), GATE_DECISION_ARTIFACT)
        client.set_model_version_tag(ref.name, ref.version, TAG_GATE_PROMOTE, promote)
        client.set_model_version_tag(ref.name, ref.version, TAG_GATE_REASONS, reasons)
        client.set_model_version_tag(ref.name, ref.version, TAG_GATE_FAILED, failed_text)
        compared = champion.version if champion is not None else NO_CHAMPION
        client.set_model_version_tag(ref.name, ref.version, TAG_GATE_CHAMPION, compared)

    # --- reports and links -----------------------------------------------------------
    def log_report(
        self,
        *,
        kind: str,
        name: str,
        files: Mapping[str, bytes | str],
        dagster_run_id: str | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ReportRef:
        """Keep a report (an Evidently HTML page, a chart) as artifacts of a finished run in
        the monitoring experiment, where the MLflow UI shows it.

        Args:
            kind: What it is ("drift", "loop_health"); the run is named ``<kind>-<name>``.
            name: Which one (a batch partition, a timestamp).
            files: Artifact file name -> content (text or bytes), stored under ``<kind>/``.
            dagster_run_id: The Dagster run that made it: the run's source.
            metrics: Figures of the report, for MLflow's charts and search.
            tags: More tags for the run.

        Returns:
            The run and the artifact path of the first file, with its page in the UI.
        """
        from mlflow.entities import Metric

        if not files:
            raise ValueError("a report needs at least one file")
        client = self._client()
        experiment_id = self._experiment_id(self.monitoring_experiment_name)
        run_tags = {
            "hitl.report_kind": kind,
            **self._source_tags(dagster_run_id),
            **{str(k): _truncate(str(v), _TAG_MAX_CHARS) for k, v in (tags or {}).items()},
        }
        run = client.create_run(experiment_id, run_name=f"{kind}-{name}", tags=run_tags)
        run_id = run.info.run_id
        try:
            now = _now_ms()
            figures = [
                Metric(_metric_key(k), float(v), now, 0)
                for k, v in sorted((metrics or {}).items())
                if isinstance(v, int | float)
            ]
            if figures:
                client.log_batch(run_id, metrics=figures)
            with tempfile.TemporaryDirectory(prefix="hitl-report-") as tmp:
                for file_name, content in files.items():
                    path = Path(tmp) / Path(file_name).name
                    if isinstance(content, bytes):
                        path.write_bytes(content)
                    else:
                        path.write_text(content, encoding="utf-8")
                    client.log_artifact(run_id, str(path), artifact_path=kind)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        first = f"{kind}/{Path(next(iter(files))).name}"
        return ReportRef(
            run_id=run_id,
            experiment_id=experiment_id,
            path=first,
            url=artifact_url(self.ui_url, experiment_id, run_id, first) if self.ui_url else None,
        )

    def run_link(self, ref: ModelRef) -> str | None:
        """The page of the version's training run in the MLflow UI (None without a UI)."""
        if not self.ui_url or not ref.run_id:
            return None
        experiment_id = ref.tags.get(TAG_EXPERIMENT_ID) or self._experiment_id()
        return run_url(self.ui_url, experiment_id, ref.run_id)

    def version_link(self, ref: ModelRef) -> str | None:
        """The model version's page in the MLflow UI (None without a UI)."""
        return model_version_url(self.ui_url, ref.name, ref.version) if self.ui_url else None

    def gate_decision_link(self, ref: ModelRef) -> str | None:
        """The gate's full decision (``gate/decision.json``) in the run's artifact view."""
        if not self.ui_url or not ref.run_id:
            return None
        experiment_id = ref.tags.get(TAG_EXPERIMENT_ID) or self._experiment_id()
        return artifact_url(self.ui_url, experiment_id, ref.run_id, GATE_DECISION_ARTIFACT)

    def experiment_link(self) -> str | None:
        """The training experiment in the MLflow UI's model-training view."""
        return experiment_url(self.ui_url, self._experiment_id()) if self.ui_url else None

    def _source_tags(self, dagster_run_id: str | None) -> dict[str, str]:
        if not dagster_run_id:
            return {}
        url = dagster_run_url(self.dagster_ui_url, dagster_run_id) if self.dagster_ui_url else None
        return {
            TAG_DAGSTER_RUN_ID: dagster_run_id,
            TAG_SOURCE_TYPE: "JOB",
            TAG_SOURCE_NAME: url or f"dagster run {dagster_run_id}",
            **({TAG_DAGSTER_RUN_URL: url} if url else {}),
        }

    # --- reading the registry --------------------------------------------------------
    def champion(self) -> ModelRef | None:
        """The version behind the ``champion`` alias, or None before the first promotion."""
        return self._by_alias(CHAMPION)

    def previous_champion(self) -> ModelRef | None:
        """The version behind the ``previous-champion`` alias, if any."""
        return self._by_alias(PREVIOUS_CHAMPION)

    def get_version(self, *, version: str) -> ModelRef:
        """One registered version of ``model_name``; KeyError if it does not exist."""
        from mlflow.exceptions import MlflowException

        self._experiment_id()
        try:
            mv = self._client().get_model_version(self.model_name, str(version))
        except MlflowException as exc:
            raise KeyError(f"{self.model_name} has no version {version!r}") from exc
        return _to_ref(mv)

    def list_versions(self) -> list[ModelRef]:
        """Every registered version of ``model_name``, oldest first."""
        client = self._client()
        self._experiment_id()
        refs: list[ModelRef] = []
        token: str | None = None
        while True:
            page = client.search_model_versions(
                f"name = '{self.model_name}'", max_results=1000, page_token=token
            )
            refs += [_to_ref(mv) for mv in page]
            token = page.token
            if not token:
                break
        if not refs:
            return []
        # Search results leave aliases out; the registered model has them all.
        by_version: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(self.model_name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        return sorted(
            (replace(r, aliases=tuple(sorted(by_version.get(r.version, ())))) for r in refs),
            key=lambda r: int(r.version),
        )

    def champion_history(self) -> list[ChampionEvent]:
        """The recent promotions and rollbacks, oldest first (bounded in length)."""
        return [ChampionEvent(**event) for event in self._history()]

    def load_model(self, *, ref: ModelRef) -> Any:
        """The fitted estimator of a version; cached per version in this process.

        The cached object is shared: do not refit or mutate it.
        """
        import mlflow.sklearn

        key = (self._registry_uri(), ref.name, ref.version)
        with _CACHE_LOCK:
            if key in _MODEL_CACHE:
                _MODEL_CACHE.move_to_end(key)
                return _MODEL_CACHE[key]
        self._experiment_id()
        uri = self._client().get_model_version_download_uri(ref.name, ref.version)
        # Artifact URIs such as mlflow-artifacts:/ resolve through the global tracking URI.
        with self._mlflow_globals():
            model = mlflow.sklearn.load_model(uri)
        with _CACHE_LOCK:
            _MODEL_CACHE[key] = model
            while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
        return model

    # --- champion changes ------------------------------------------------------------
    def promote(
        self, *, ref: ModelRef, reason: str, actor: str = "hitl-pipeline"
    ) -> ModelRef | None:
        """Make ``ref`` the champion; the one it replaces becomes ``previous-champion``.

        Args:
            ref: The version to promote.
            reason: Why, for the record (e.g. the gate's reasons).
            actor: Who decided (a person or the pipeline).

        Returns:
            The replaced champion, or None if there was none or ``ref`` already was it
            (then nothing changes).
        """
        with self._promotion_lock():
            return self._promote(ref=ref, reason=reason, actor=actor)

    def _promote(self, *, ref: ModelRef, reason: str, actor: str) -> ModelRef | None:
        client = self._client()
        current = self.champion()
        if current is not None and current.version == ref.version:
            return None
        now = _now_iso()
        replaced = current.version if current is not None else ""
        self._crown(
            ref.version,
            {
                TAG_CHAMPION_SINCE: now,
                TAG_CHAMPION_BY: actor,
                TAG_CHAMPION_REASON: reason,
                TAG_CHAMPION_VIA: "promote",
                TAG_REPLACED_VERSION: replaced,
            },
        )
        if current is not None:
            self._set_version_tags(
                current.version,
                {
                    TAG_CHAMPION_UNTIL: now,
                    TAG_ENDED_BY: actor,
                    TAG_END_REASON: reason,
                    TAG_ENDED_VIA: f"promote of version {ref.version}",
                },
            )
            client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION, current.version)
        fault_point("registry.between_aliases")
        client.set_registered_model_alias(self.model_name, CHAMPION, ref.version)
        self._append_history(
            ChampionEvent(
                at=now,
                action="promote",
                version=ref.version,
                from_version=current.version if current is not None else None,
                actor=actor,
                reason=reason,
            )
        )
        return self.get_version(version=current.version) if current is not None else None

    def promote_gated(self, *, ref: ModelRef, actor: str = "hitl-pipeline") -> ModelRef | None:
        """Promote ``ref`` only as its own gate decided: a compare-and-set on the alias.

        Under a lock held by every promotion and rollback on this registry, the version's
        own gate decision must say promote, and the champion must still be the version
        the gate compared it with. Anything else is refused and nothing changes.

        Returns:
            The replaced champion (None if there was none, or ``ref`` already serves).

        Raises:
            PromotionRefused: No passing gate decision on ``ref``, or the champion moved
                since the gate read it (the gate must judge again against the new one).
        """
        with self._promotion_lock():
            current = self.get_version(version=ref.version)
            tags = current.tags
            if tags.get(TAG_GATE_PROMOTE) != "true":
                verdict = tags.get(TAG_GATE_PROMOTE)
                raise PromotionRefused(
                    f"version {ref.version} of {self.model_name} has "
                    + ("no gate decision" if verdict is None else "failed its gate")
                    + ": only a version whose own gate passed is promoted"
                )
            expected = tags.get(TAG_GATE_CHAMPION)
            serving = self.champion()
            serving_version = serving.version if serving is not None else NO_CHAMPION
            if serving_version == ref.version:
                return None
            if expected is None or serving_version != expected:
                raise PromotionRefused(
                    f"the champion moved since the gate judged version {ref.version}: it "
                    f"compared with {expected or 'an unrecorded champion'}, and version "
                    f"{serving_version} serves now; run the gate again to compare with it"
                )
            gate = tags.get(TAG_GATE_REASONS, "")
            reason = f"passed the deployment gate: {gate}" if gate else "passed the deployment gate"
            return self._promote(ref=ref, reason=reason, actor=actor)

    def check(self) -> None:
        """Fail early, naming the store and its setting, if MLflow cannot be used.

        Reads the tracking store (creating its schema on first use) and writes a probe
        file into a local artifact root. Run before a step's first write, so that a run
        against a dead store leaves nothing half-done elsewhere.

        Raises:
            StoreUnavailable: The tracking store or the artifact folder is not usable.
        """
        try:
            # MLflow retries a connection it cannot open for 100 s before it gives up; a
            # missing database or a stopped server is reported at once instead
            for uri in {self.tracking_uri, self._registry_uri()}:
                if _is_postgres(uri):
                    _postgres_schema_exists(uri, missing_ok=False)
            experiment = self._client().get_experiment(self._experiment_id())
        except Exception as exc:
            raise StoreUnavailable(
                f"MLflow tracking store {self.tracking_uri} cannot be used ({_short(exc)}); "
                "it is set by HITL_MLFLOW_TRACKING_URI (default: database <prefix>_mlflow "
                "on HITL_POSTGRES_URL when that is set, else a SQLite file under HITL_HOME): "
                "point it at a reachable, writable store (`hitl-pipeline up --postgres URL` "
                "creates the PostgreSQL databases)"
            ) from exc
        root = _local_path(experiment.artifact_location)
        if root is None:
            return  # a remote artifact store: the tracking server answered for it
        require_writable(
            root,
            what=f"MLflow artifact folder of experiment {self.experiment_name!r}",
            setting="HITL_MLFLOW_TRACKING_URI (artifacts under HITL_HOME)",
        )

    def rollback(self, *, to_version: str | None = None, reason: str, actor: str) -> ModelRef:
        """Put an earlier version back as champion.

        Without ``to_version`` the ``previous-champion`` comes back. Afterwards
        ``previous-champion`` points at what the restored version had replaced when it was
        last promoted (or nowhere), so repeated rollbacks walk back through the champions
        instead of flipping between two versions.

        Args:
            to_version: The version to restore; default the previous champion.
            reason: Why, for the record.
            actor: Who rolled back.

        Returns:
            The new champion.

        Raises:
            LookupError: There is no previous champion to go back to.
            KeyError: ``to_version`` does not exist.
            ValueError: ``to_version`` is already the champion.
        """
        with self._promotion_lock():
            return self._rollback(to_version=to_version, reason=reason, actor=actor)

    def _rollback(self, *, to_version: str | None, reason: str, actor: str) -> ModelRef:
        client = self._client()
        current = self.champion()
        if to_version is None:
            target = self.previous_champion()
            if target is None:
                raise LookupError(f"{self.model_name} has no previous champion to roll back to")
        else:
            target = self.get_version(version=str(to_version))
        if current is not None and current.version == target.version:
            raise ValueError(f"version {target.version} of {self.model_name} already is champion")

        now = _now_iso()
        self._crown(
            target.version,
            {
                TAG_CHAMPION_SINCE: now,
                TAG_CHAMPION_BY: actor,
                TAG_CHAMPION_REASON: reason,
                TAG_CHAMPION_VIA: "rollback",
            },
        )
        if current is not None:
            self._set_version_tags(
                current.version,
                {
                    TAG_CHAMPION_UNTIL: now,
                    TAG_ENDED_BY: actor,
                    TAG_END_REASON: reason,
                    TAG_ENDED_VIA: f"rollback to version {target.version}",
                },
            )
        client.set_registered_model_alias(self.model_name, CHAMPION, target.version)
        before_target = target.tags.get(TAG_REPLACED_VERSION, "")
        if before_target and before_target != target.version and self._exists(before_target):
            client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION, before_target)
        else:
            # Nothing earlier to go back to: a later plain rollback must fail rather than
            # bring back the version just rolled back from.
            self._delete_alias(PREVIOUS_CHAMPION)
        self._append_history(
            ChampionEvent(
                at=now,
                action="rollback",
                version=target.version,
                from_version=current.version if current is not None else None,
                actor=actor,
                reason=reason,
            )
        )
        return self.get_version(version=target.version)

    # --- recovery --------------------------------------------------------------------
    def fail_orphaned_runs(self, *, run_ended: RunEnded) -> list[Fix]:
        """Mark FAILED the runs left RUNNING by a Dagster run that is no longer in progress.

        A run is judged by the Dagster run in its ``hitl.dagster_run_id`` tag: while that
        run is in progress it may still be writing, and the MLflow run is left alone; runs
        without the tag are left alone too. Nothing is created on a store that does not
        exist yet.

        Args:
            run_ended: Given a Dagster run id, None while the run is in progress, else why
                it no longer is.

        Returns:
            One fix per run marked FAILED (its ``hitl.recovered`` tag says why).
        """
        from mlflow.entities import ViewType

        if not self._store_exists():
            return []
        client = self._client()
        experiment_ids = [self._experiment_id()]
        monitoring = client.get_experiment_by_name(self.monitoring_experiment_name)
        if monitoring is not None:
            experiment_ids.append(monitoring.experiment_id)
        running = []
        token: str | None = None
        while True:
            page = client.search_runs(
                experiment_ids,
                filter_string="attributes.status = 'RUNNING'",
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                page_token=token,
            )
            running += list(page)
            token = page.token
            if not token:
                break
        fixes = []
        for run in running:
            dagster_run = run.data.tags.get(TAG_DAGSTER_RUN_ID)
            ended = run_ended(dagster_run) if dagster_run else None
            if ended is None:
                continue
            run_id = run.info.run_id
            # It may have finished between the search and the Dagster look-up.
            if client.get_run(run_id).info.status != "RUNNING":
                continue
            reason = f"its Dagster run {dagster_run} is {ended}"
            client.set_tag(run_id, TAG_RECOVERED, reason)
            client.set_terminated(run_id, status="FAILED")
            logger.warning("marked MLflow run %s FAILED: %s", run_id, reason)
            fixes.append(
                Fix(
                    MLFLOW,
                    f"run {run_id} ({run.info.run_name})",
                    "marked FAILED (was RUNNING)",
                    reason,
                )
            )
        return fixes

    def abandon_undecided_versions(self, *, run_ended: RunEnded) -> list[Fix]:
        """Settle the versions whose gate decision a killed run never recorded.

        A version without a ``gate.promote`` tag, never champion, whose Dagster run (tag
        ``hitl.dagster_run_id``) is no longer in progress: if the decision reached its
        MLflow run (a kill between the run's tags and the version's), the version gets it
        copied; otherwise it is tagged ``gate.abandoned`` with the reason, and stays out of
        promotion (the gate never passed it).

        Args:
            run_ended: Given a Dagster run id, None while the run is in progress, else why
                it no longer is.

        Returns:
            One fix per version settled.
        """
        from mlflow.exceptions import MlflowException

        if not self._store_exists():
            return []
        client = self._client()
        fixes = []
        for ref in self.list_versions():
            tags = ref.tags
            settled = TAG_GATE_PROMOTE in tags or TAG_GATE_ABANDONED in tags
            if settled or ref.aliases or TAG_CHAMPION_SINCE in tags:
                continue
            dagster_run = tags.get(TAG_DAGSTER_RUN_ID)
            ended = run_ended(dagster_run) if dagster_run else None
            if ended is None:
                continue
            run_tags: dict[str, str] = {}
            if ref.run_id:
                with contextlib.suppress(MlflowException):  # a deleted run
                    run_tags = client.get_run(ref.run_id).data.tags
            label = f"{self.model_name} v{ref.version}"
            if TAG_GATE_PROMOTE in run_tags:
                decided = {
                    key: run_tags[key]
                    for key in (TAG_GATE_PROMOTE, TAG_GATE_REASONS, TAG_GATE_FAILED)
                    if key in run_tags
                }
                self._set_version_tags(ref.version, decided)
                fixes.append(
                    Fix(
                        REGISTRY,
                        label,
                        f"gate decision copied from run {ref.run_id} "
                        f"(gate.promote={decided[TAG_GATE_PROMOTE]})",
                        f"the run recorded it but its Dagster run {dagster_run} is {ended}",
                    )
                )
                continue
            reason = f"no gate decision, and its Dagster run {dagster_run} is {ended}"
            self._set_version_tags(ref.version, {TAG_GATE_ABANDONED: reason})
            logger.warning("tagged %s %s: %s", label, TAG_GATE_ABANDONED, reason)
            fixes.append(Fix(REGISTRY, label, f"tagged {TAG_GATE_ABANDONED}", reason))
        return fixes

    def store_exists(self) -> bool:
        """Whether the tracking and registry stores exist, without creating them: False
        when a SQLite file, or a PostgreSQL database or its MLflow schema, is not there
        yet (a first use would create the schema).

        Raises:
            sqlalchemy.exc.OperationalError: a PostgreSQL server cannot be reached.
        """
        return self._store_exists()

    def _store_exists(self) -> bool:
        """False when a SQLite tracking or registry file, or a PostgreSQL database or its
        MLflow schema, is not there yet (nothing to fix)."""
        uris = (self.tracking_uri, self._registry_uri())
        paths = [_sqlite_path(uri) for uri in uris]
        if not all(path is None or path.exists() for path in paths):
            return False
        return all(_postgres_schema_exists(uri) for uri in uris if _is_postgres(uri))

    # --- internals -------------------------------------------------------------------
    def _registry_uri(self) -> str:
        return self.registry_uri or self.tracking_uri

    def _client(self) -> mlflow.MlflowClient:
        import mlflow

        client = mlflow.MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self._registry_uri()
        )
        return _RetryingClient(client)  # type: ignore[return-value]

    @contextmanager
    def _promotion_lock(self) -> Iterator[None]:
        """One champion change at a time: across threads, and across processes that share
        the registry: a lock file beside a SQLite registry, a PostgreSQL advisory lock
        (keyed by the model's name) on a PostgreSQL one, held for the whole compare-and-set
        by whichever machine promotes. Registries behind a tracking server rely on the
        Dagster pool that the promoting steps share."""
        with _PROMOTION_LOCK:
            registry_uri = self._registry_uri()
            if getattr(_PROMOTION_DEPTH, "depth", 0):
                # already held by this thread (the RLock let it in): a second advisory
                # lock on another connection would wait for this very thread
                yield
                return
            if _is_postgres(registry_uri):
                with _postgres_advisory_lock(registry_uri, f"promotion:{self.model_name}"):
                    _PROMOTION_DEPTH.depth = 1
                    try:
                        yield
                    finally:
                        _PROMOTION_DEPTH.depth = 0
                return
            db_path = _sqlite_path(registry_uri)
            if db_path is None:
                yield
                return
            from filelock import FileLock

            db_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(db_path.with_name(f"{db_path.name}.promotion-lock")):
                yield

    def _experiment_id(self, name: str | None = None) -> str:
        """Set the stores and an experiment (default: the training one) up once per
        process; returns the experiment id.

        The first use of an empty SQLite file creates the schema (about 12 s on a loaded
        machine). Several processes may start on a fresh store together, and MLflow's
        tracking store does not lock its own set-up, so it runs under a file lock (a
        PostgreSQL advisory lock for a PostgreSQL store).
        """
        name = name or self.experiment_name
        key = (self.tracking_uri, self._registry_uri(), name, self.artifact_location)
        with _READY_LOCK:
            if key in _READY:
                return _READY[key]
            with _sqlite_init_lock(self.tracking_uri, self._registry_uri()):
                client = self._client()
                client.search_experiments(max_results=1)  # creates the tracking schema
                client.search_registered_models(max_results=1)  # and the registry's
                experiment_id = self._get_or_create_experiment(client, name)
            _READY[key] = experiment_id
            return experiment_id

    def _get_or_create_experiment(self, client: mlflow.MlflowClient, name: str) -> str:
        """The experiment's id, created (or restored) as needed, and marked as model
        training (MLflow 3 treats unmarked experiments as GenAI ones)."""
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name,
                    artifact_location=self._artifact_location(),
                    tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND},
                )
            except MlflowException:
                # Another process (non-SQLite back-ends are not file-locked) won the race.
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if TAG_EXPERIMENT_KIND not in experiment.tags:  # made before it was marked
            client.set_experiment_tag(
                experiment.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND
            )
        return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        location = self.artifact_location
        if location is None:
            db_path = _sqlite_path(self.tracking_uri)
            if db_path is None:
                return None  # a tracking server decides
            location = str(db_path.parent / "mlartifacts")
        if "://" in location or location.startswith("file:"):
            return location
        return Path(location).expanduser().resolve().as_uri()

    def _register(self, *, model_id: str, run_id: str, tags: Mapping[str, str]) -> ModelRef:
        """Create a new version of ``model_name`` (globals scoped by the caller)."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        client = self._client()
        try:
            client.create_registered_model(
                self.model_name, description="Classifier retrained by the hitl-pipeline flywheel."
            )
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        mv = client.create_model_version(
            self.model_name,
            source=f"models:/{model_id}",
            run_id=run_id,
            tags=dict(tags),
            model_id=model_id,
        )
        return _to_ref(mv)

    def _exists(self, version: str) -> bool:
        try:
            self.get_version(version=version)
        except KeyError:
            return False
        return True

    def _by_alias(self, alias: str) -> ModelRef | None:
        from mlflow.exceptions import MlflowException

        self._experiment_id()
        client = self._client()
        try:
            registered = client.get_registered_model(self.model_name)
        except MlflowException:
            return None  # nothing registered yet
        version = registered.aliases.get(alias)
        return None if version is None else self.get_version(version=str(version))

    def _crown(self, version: str, tags: Mapping[str, str]) -> None:
        """Tag a version as champion, clearing what an earlier reign of it left behind."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        for key in (TAG_CHAMPION_UNTIL, TAG_ENDED_BY, TAG_END_REASON, TAG_ENDED_VIA):
            with contextlib.suppress(MlflowException):
                client.delete_model_version_tag(self.model_name, version, key)
        self._set_version_tags(version, tags)

    def _set_version_tags(self, version: str, tags: Mapping[str, str]) -> None:
        client = self._client()
        for key, value in tags.items():
            client.set_model_version_tag(
                self.model_name, version, key, _truncate(value, _TAG_MAX_CHARS)
            )

    def _delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already absent
            self._client().delete_registered_model_alias(self.model_name, alias)

    def _history(self) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        try:
            registered = self._client().get_registered_model(self.model_name)
        except MlflowException:
            return []
        raw = registered.tags.get(TAG_HISTORY)
        try:
            events = json.loads(raw) if raw else []
        except json.JSONDecodeError:
            logger.warning("unreadable %s tag on %s, starting afresh", TAG_HISTORY, self.model_name)
            return []
        return [e for e in events if isinstance(e, dict)]

    def _append_history(self, event: ChampionEvent) -> None:
        short = ChampionEvent(**{**asdict(event), "reason": _truncate(event.reason, 300)})
        events = [*self._history(), asdict(short)]
        text = json.dumps(events, separators=(",", ":"))
        while len(text) > _HISTORY_MAX_CHARS and len(events) > 1:
            events = events[1:]
            text = json.dumps(events, separators=(",", ":"))
        self._client().set_registered_model_tag(self.model_name, TAG_HISTORY, text)

    @contextmanager
    def _mlflow_globals(self) -> Iterator[None]:
        """Point MLflow's process-global URIs at ours for the duration of the block.

        Serialised with the other users of this resource in the process; code elsewhere
        that uses MLflow's fluent API from another thread at that moment would see our URIs.
        """
        import mlflow

        env_keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
        with _GLOBALS_LOCK:
            saved_env = {key: os.environ.get(key) for key in env_keys}
            saved = mlflow_uri_globals()
            try:
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self._registry_uri())
                yield
            finally:
                restore_mlflow_uri_globals(*saved)
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


# --- links into the UIs (route forms of MLflow 3.17's UI, a hash router) -------------------
def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI."""
    return f"{_base(ui_url)}/#/experiments/{experiment_id}/runs/{run_id}"


def artifact_url(ui_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """An artifact opened in the run page's artifact view (HTML and images are rendered
    there; the raw ``get-artifact`` endpoint only offers a download)."""
    return f"{run_url(ui_url, experiment_id, run_id)}/artifacts/{quote(path)}"


def model_version_url(ui_url: str, name: str, version: str) -> str:
    """A registered model version's page in the MLflow UI."""
    return f"{_base(ui_url)}/#/models/{quote(name, safe='')}/versions/{version}"


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """An experiment's runs in the MLflow UI's model-training view."""
    return f"{_base(ui_url)}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}"


def dagster_run_url(ui_url: str, run_id: str) -> str:
    """A run's page in the Dagster UI."""
    return f"{_base(ui_url)}/runs/{run_id}"


def _base(url: str) -> str:
    return url.rstrip("/").removesuffix("/#")


def dataset_inputs(dataset: DatasetVersion, example: pd.DataFrame | None = None) -> list[Any]:
    """The dataset version as MLflow dataset inputs: the version itself for training (name
    the version id, digest its md5) and every other frame of it for evaluation.

    The source is the DVC location (``dvc.api.open(path, repo=..., rev=git_rev)`` reads
    it back); the schema is the example's columns when one is given.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.models import infer_signature

    schema = None
    if example is not None:
        inputs = infer_signature(example).inputs
        schema = json.dumps({"mlflow_colspec": inputs.to_dict()}) if inputs is not None else None

    def one(name: str, digest: str, path: str, rows: int | None, context: str) -> Any:
        source = {"path": path, "git_rev": dataset.git_rev, "version_id": dataset.version_id}
        return DatasetInput(
            Dataset(
                name=name,
                digest=digest[:36],  # MLflow's digest column holds 36 characters
                source_type=DATASET_SOURCE_TYPE,
                source=json.dumps(source, sort_keys=True),
                schema=schema if context == "training" else None,
                profile=json.dumps({"num_rows": rows}) if rows is not None else None,
            ),
            tags=[InputTag("mlflow.data.context", context)],
        )

    inputs_ = [one(dataset.version_id, dataset.md5, dataset.path, dataset.rows, "training")]
    for path, md5 in sorted(dataset.files.items()):
        if path != dataset.path:
            inputs_.append(
                one(f"{dataset.version_id}/{Path(path).stem}", md5, path, None, "evaluation")
            )
    return inputs_


def code_version() -> str:
    """The git commit of this project's checkout (``-dirty`` if modified), else its version."""
    root = Path(__file__).resolve().parents[2]
    try:
        top = _git_out(root, "rev-parse", "--show-toplevel")
        # Only our own checkout counts, not a repository that happens to contain the venv.
        if Path(top).resolve() == root:
            sha = _git_out(root, "rev-parse", "HEAD")
            dirty = _git_out(
                root, "status", "--porcelain", "--untracked-files=no", "--", "hitl_pipeline"
            )
            return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"hitl-pipeline=={metadata.version('hitl-pipeline')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def _git_out(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
        timeout=30,
    ).stdout.strip()


def _pinned_requirements() -> list[str]:
    requirements = []
    for dist in _MODEL_REQUIREMENTS:
        try:
            requirements.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            requirements.append(dist)
    return requirements


def _to_ref(mv: Any) -> ModelRef:
    return ModelRef(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        aliases=tuple(sorted(mv.aliases or ())),
        tags=dict(mv.tags or {}),
    )


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


@contextmanager
def _sqlite_init_lock(*uris: str) -> Iterator[None]:
    """Exclusive locks beside the SQLite database files among ``uris``, and advisory locks
    on the PostgreSQL databases among them, in a fixed order.

    Stores behind a tracking server need none. Each file is locked once: flock on a second
    descriptor of the same file would wait for this very process.
    """
    import fcntl

    paths = sorted({p for p in map(_sqlite_path, uris) if p is not None})
    with contextlib.ExitStack() as stack:
        for uri in sorted({u for u in uris if _is_postgres(u)}):
            stack.enter_context(_postgres_advisory_lock(uri, "schema"))
        for db_path in paths:
            db_path.parent.mkdir(parents=True, exist_ok=True)  # SQLite will not create folders
            lock_path = db_path.with_name(f"{db_path.name}.init-lock")
            fh = stack.enter_context(lock_path.open("a", encoding="utf-8"))
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _is_postgres(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock``, derived from ``name``."""
    import hashlib

    digest = hashlib.sha256(f"hitl-pipeline:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _postgres_advisory_lock(uri: str, name: str) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock ``name`` on the database at ``uri``.

    The lock lives in a connection of its own, held for the block: every process that
    takes the same name on the same database waits here, whichever machine it runs on,
    and the server releases it if this process dies.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    key = _advisory_key(name)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
    finally:
        engine.dispose()


def _postgres_schema_exists(uri: str, *, missing_ok: bool = True) -> bool:
    """Whether the PostgreSQL database at ``uri`` exists and holds MLflow's schema.

    One attempt, 10 s at most to connect; a database that does not exist is False (an
    error unless ``missing_ok``), a server that cannot be reached an error.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            found = connection.execute(sqlalchemy.text("SELECT to_regclass('alembic_version')"))
            return found.scalar() is not None
    except sqlalchemy.exc.OperationalError as exc:
        if missing_ok and "does not exist" in str(exc):
            return False  # no database yet
        raise
    finally:
        engine.dispose()


class _RetryingClient:
    """An ``MlflowClient`` whose calls wait and retry while the database is locked.

    A locked SQLite file rolls the transaction back, so repeating the call is safe.
    """

    def __init__(self, client: Any) -> None:
        self._wrapped = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._wrapped, name)
        if not callable(attr):
            return attr
        from tenacity import (
            before_sleep_log,
            retry,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
        )

        return retry(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(_TRANSIENT_ATTEMPTS),
            wait=wait_exponential(multiplier=_TRANSIENT_FIRST_WAIT_S, max=8),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )(attr)


def _is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


def _local_path(uri: str | None) -> Path | None:
    """The folder of a ``file:`` URI or plain path; None for remote artifact stores."""
    if not uri:
        return None
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri or uri.startswith("mlflow-artifacts:") else Path(uri)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _metric_key(key: str) -> str:
    return _METRIC_KEY_RE.sub("_", str(key))[:250]


def _param_value(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        text = json.dumps(_jsonable(value), sort_keys=True)
    else:
        text = str(value)
    return _truncate(text, _PARAM_MAX_CHARS)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
