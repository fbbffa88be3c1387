"""Gather the loop's state for ``hitl-pipeline status`` (see ``core.status``).

Reads only: the MLflow registry, the Dagster instance's event log, Label Studio's queue
counts and the label ledger. Nothing is trained, no report is computed, no definitions
are loaded, and a store that is not there yet is reported as empty rather than created.
Each store is read in its own ``try``: one that fails costs its line, not the command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pandas as pd

from hitl_pipeline.core.status import (
    ChampionFacts,
    DriftFacts,
    GateFacts,
    HealthFacts,
    LedgerFacts,
    RunFacts,
    StatusFacts,
    Unavailable,
)
from hitl_pipeline.core.triggers import RETRAIN_CRON, RETRAIN_TIMEZONE
from hitl_pipeline.core.types import ModelRef, QueueStatus
from hitl_pipeline.resources.errors import StoreUnavailable
from hitl_pipeline.resources.mlflow_registry import (
    NO_CHAMPION,
    TAG_CHAMPION_BY,
    TAG_CHAMPION_REASON,
    TAG_CHAMPION_SINCE,
    TAG_CHAMPION_UNTIL,
    TAG_CHAMPION_VIA,
    TAG_DATASET_VERSION,
    TAG_ENDED_VIA,
    TAG_GATE_CHAMPION,
    TAG_GATE_FAILED,
    TAG_GATE_PROMOTE,
    TAG_GATE_REASONS,
    MlflowRegistryResource,
)
from hitl_pipeline.settings import Settings

# Names from the definitions, spelled out so that ``status`` need not import them (the
# monitoring and training modules pull in Evidently and scikit-learn); a test pins them.
DRIFT_ASSET, DRIFT_CHECK = "drift_report", "no_dataset_drift"
CANDIDATE_ASSET, HEALTH_ASSET = "candidate_model", "loop_metrics"
JOBS = ("score_batch_job", "drift_review_job", "collect_labels_job", "retrain_job")
TRIGGER_TAG = "hitl/trigger"
ACCURACY_SETS = ("holdout", "human_holdout")  # the held-out sets every candidate is scored on

T = TypeVar("T")


def _read(read: Callable[[], T]) -> T | Unavailable:
    try:
        return read()
    except StoreUnavailable as exc:
        return Unavailable(str(exc))
    except Exception as exc:  # a status page reports a broken store, it does not crash on it
        return Unavailable(f"could not be read: {type(exc).__name__}: {exc}")


def run_metrics(registry: MlflowRegistryResource, ref: ModelRef) -> dict[str, float]:
    """The latest value of each metric on a version's run (candidate and gate figures)."""
    if not ref.run_id:
        return {}
    from mlflow import MlflowClient

    client = MlflowClient(
        tracking_uri=registry.tracking_uri,
        registry_uri=registry.registry_uri or registry.tracking_uri,
    )
    return dict(client.get_run(ref.run_id).data.metrics)


def champion_facts(registry: MlflowRegistryResource, ref: ModelRef) -> ChampionFacts:
    """What a person wants to know about a (former) champion before trusting it."""
    tags = ref.tags
    metrics = run_metrics(registry, ref)
    return ChampionFacts(
        version=ref.version,
        since=tags.get(TAG_CHAMPION_SINCE),
        via=tags.get(TAG_CHAMPION_VIA),
        by=tags.get(TAG_CHAMPION_BY),
        reason=tags.get(TAG_CHAMPION_REASON),
        dataset_version=tags.get(TAG_DATASET_VERSION),
        gate_reasons=tags.get(TAG_GATE_REASONS),
        until=tags.get(TAG_CHAMPION_UNTIL),
        ended_via=tags.get(TAG_ENDED_VIA),
        accuracy={
            name: metrics[f"heldout.{name}.accuracy"]
            for name in ACCURACY_SETS
            if f"heldout.{name}.accuracy" in metrics
        },
    )


def _gate_facts(refs: list[ModelRef]) -> GateFacts | None:
    judged = [r for r in refs if TAG_GATE_PROMOTE in r.tags]
    if not judged:
        return None
    ref = judged[-1]  # versions are numbered in registration order
    compared = ref.tags.get(TAG_GATE_CHAMPION)
    return GateFacts(
        version=ref.version,
        promote=ref.tags[TAG_GATE_PROMOTE] == "true",
        reasons=ref.tags.get(TAG_GATE_REASONS, ""),
        failed_checks=ref.tags.get(TAG_GATE_FAILED, ""),
        compared_with=None if compared in (None, NO_CHAMPION) else compared,
        is_champion="champion" in ref.aliases,
    )


def _registry_facts(
    registry: MlflowRegistryResource,
) -> tuple[ChampionFacts | Unavailable | None, GateFacts | Unavailable | None]:
    # an empty store (SQLite file or PostgreSQL database) would be created by the first
    # read (seconds of schema set-up; MLflow retries a missing database for 100 s)
    exists = _read(registry.store_exists)
    if isinstance(exists, Unavailable):
        return exists, exists
    if not exists:
        return None, None
    refs = _read(registry.list_versions)
    if isinstance(refs, Unavailable):
        return refs, refs
    champion = next((r for r in refs if "champion" in r.aliases), None)
    facts = None if champion is None else _read(lambda: champion_facts(registry, champion))
    return facts, _gate_facts(refs)


def _ledger_facts(ledger: pd.DataFrame) -> LedgerFacts:
    if ledger.empty:
        return LedgerFacts(annotations=0, answered_tasks={}, latest_completed_at=None)
    answered = ledger[~ledger["was_cancelled"].astype(bool)]
    tasks = answered.drop_duplicates(["tier", "task_id"]).groupby("tier").size()
    latest = pd.to_datetime(ledger["completed_at"], utc=True).max()
    return LedgerFacts(
        annotations=len(ledger),
        answered_tasks={str(k): int(v) for k, v in tasks.items()},
        latest_completed_at=None if pd.isna(latest) else latest.to_pydatetime(),
    )


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _dagster_facts(settings: Settings) -> dict[str, Any]:
    """Drift verdict, loop health, last training and last runs from the loop's instance."""
    if not (settings.dagster_home / "dagster.yaml").is_file():
        return {"drift": None, "health": None, "last_training_at": None, "runs": ()}
    import dagster as dg

    from hitl_pipeline.demo.runner import use_home
    from hitl_pipeline.internals import asset_check_status

    use_home(settings)
    status = asset_check_status()
    with dg.DagsterInstance.get() as instance:
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(DRIFT_ASSET), DRIFT_CHECK),
            limit=1,
            status={status.SUCCEEDED, status.FAILED},
        )
        drift = None
        if records:
            record = records[0]
            meta = record.evaluation.metadata if record.evaluation is not None else {}
            share, threshold = _value(meta, "drift_share"), _value(meta, "threshold")
            drift = DriftFacts(
                partition=record.partition or _value(meta, "partition"),
                at=datetime.fromtimestamp(record.create_timestamp, tz=UTC),
                drifted=record.status == status.FAILED,
                drift_share=None if share is None else float(share),
                threshold=None if threshold is None else float(threshold),
                drifted_columns=tuple(_value(meta, "drifted_columns") or ()),
            )
        health = None
        event = instance.get_latest_materialization_event(dg.AssetKey(HEALTH_ASSET))
        if event is not None and event.asset_materialization is not None:
            meta = event.asset_materialization.metadata
            accuracy = _value(meta, "accuracy_latest_batch")
            health = HealthFacts(
                at=datetime.fromtimestamp(event.timestamp, tz=UTC),
                accuracy_latest_batch=None if accuracy is None else float(accuracy),
                audit_alert=bool(_value(meta, "audit_alert")),
                audit_message=str(_value(meta, "audit_message") or ""),
            )
        trained = instance.get_latest_materialization_event(dg.AssetKey(CANDIDATE_ASSET))
        runs = []
        for job in JOBS:
            run_records = instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=1)
            if run_records:
                run_record = run_records[0]
                run = run_record.dagster_run
                # when it ended, else when it started, else when it was queued
                stamp = run_record.end_time or run_record.start_time
                at = (
                    datetime.fromtimestamp(stamp, tz=UTC)
                    if stamp
                    else run_record.create_timestamp.astimezone(UTC)
                )
                runs.append(
                    RunFacts(
                        job=job, status=run.status.value, at=at, trigger=run.tags.get(TRIGGER_TAG)
                    )
                )
    return {
        "drift": drift,
        "health": health,
        "last_training_at": datetime.fromtimestamp(trained.timestamp, tz=UTC) if trained else None,
        "runs": tuple(sorted(runs, key=lambda r: r.at)),
    }


def next_retrain(now: datetime) -> datetime:
    """The weekly schedule's next tick after ``now``, as Dagster's scheduler computes it."""
    from hitl_pipeline.internals import schedule_ticks

    return next(schedule_ticks(RETRAIN_CRON, now.timestamp(), RETRAIN_TIMEZONE)).astimezone(UTC)


def gather(settings: Settings, resources: Mapping[str, Any]) -> StatusFacts:
    """Read every store once; the facts ``core.status.status_lines`` turns into lines."""
    now = datetime.now(UTC)
    label_studio = resources["label_studio"]

    def queue() -> dict[str, QueueStatus] | Unavailable:
        never_started = not settings.label_studio_credentials_file.exists()
        if settings.label_studio_is_local and not settings.label_studio_api_key and never_started:
            return Unavailable(
                f"the local Label Studio ({settings.label_studio_url}) was never started "
                "for this home: `hitl-pipeline labelstudio start`"
            )
        try:  # one quick request that needs no token: is anything there at all?
            httpx.get(f"{settings.label_studio_url}/health", timeout=5.0)
        except httpx.HTTPError:
            return Unavailable(f"Label Studio not reachable at {settings.label_studio_url}")
        return label_studio.queue_status_by_tier()

    # The stores answer in parallel: MLflow's imports and SQLite set-up take about as long
    # as Label Studio's requests and the Dagster event log together.
    with ThreadPoolExecutor(max_workers=2) as pool:
        registry = pool.submit(_registry_facts, resources["registry"])
        queued = pool.submit(_read, queue)
        dagster = _read(lambda: _dagster_facts(settings))
        ledger = _read(
            lambda: _ledger_facts(resources["local_store"].read_ledger(include_quarantined=True))
        )
        champion, gate = registry.result()
    if isinstance(dagster, Unavailable):
        dagster = {k: dagster for k in ("drift", "health", "last_training_at", "runs")}
    return StatusFacts(
        home=str(settings.home),
        now=now,
        champion=champion,
        gate=gate,
        drift=dagster["drift"],
        queue=queued.result(),
        ledger=ledger
        if isinstance(ledger, LedgerFacts)
        else LedgerFacts(annotations=0, answered_tasks={}, latest_completed_at=None),
        health=dagster["health"],
        last_training_at=dagster["last_training_at"],
        next_retrain_at=next_retrain(now),
        runs=dagster["runs"],
    )
