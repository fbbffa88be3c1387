"""Feedback: pull finished annotations from every review queue into the ledger, resolve
them to labels, send disagreements to adjudication, and check the audit of auto-accepts."""

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from hitl_pipeline.core.agreement import disputed_items, latest_votes, summary_metrics
from hitl_pipeline.core.datasets import resolve_labels, split_out_of_schema
from hitl_pipeline.core.intake import (
    ANSWER_PROBLEM,
    QUARANTINE_REASON,
    SERVICE_ACCOUNT,
    IntakePolicy,
    reason_counts,
    split_quarantined,
)
from hitl_pipeline.core.loop_health import (
    AuditPolicy,
    audit_pass_rate,
    audit_verdict,
    correction_rate,
    correction_rates,
)
from hitl_pipeline.core.routing import REASON_AUDIT, REASON_REVIEWERS_DISAGREED
from hitl_pipeline.core.tiers import TIER_ADJUDICATION
from hitl_pipeline.core.types import ITEM_ID, TIER, LabelingTask, PushResult
from hitl_pipeline.defs.config import SettingsConfig, config_class
from hitl_pipeline.defs.pools import LABEL_LEDGER_POOL, LABEL_STUDIO_POOL
from hitl_pipeline.defs.preflight import store_failures
from hitl_pipeline.defs.s05_labeling import labeling_tasks
from hitl_pipeline.faults import fault_point
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.local_store import LocalStore, annotations_to_frame
from hitl_pipeline.resources.production import ProductionSource

REASON_DISAGREEMENT = REASON_REVIEWERS_DISAGREED
AUDIT_CHECK = "audit_pass_rate_holds"
if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    AuditConfig = SettingsConfig
else:
    AuditConfig = config_class(
        AuditPolicy,
        "AuditConfig",
        doc="When the audit raises the concept-drift alert; generated from "
        "core.loop_health.AuditPolicy (see its docs).",
    )
# The newest audited batch, in the check's metadata: the batch the concept-drift sensor
# sends to the boosted review when the check fails.
AUDIT_PARTITION = "audit_partition"

# Annotations can be committed slightly out of order; re-reading a short window is free
# because the ledger is keyed by annotation id.
_PULL_OVERLAP = timedelta(minutes=5)
_LISTED = 50  # item ids listed in metadata and logs; the count is always complete


def upsert_annotations(ledger: pd.DataFrame, pulled: pd.DataFrame) -> pd.DataFrame:
    """Ledger plus pulled annotations; an annotation edited since it was pulled replaces
    its earlier copy, so nothing is counted twice."""
    if pulled.empty:
        return ledger
    merged = pd.concat([ledger, pulled], ignore_index=True) if len(ledger) else pulled
    # stable: on a tie the pulled copy wins, so a re-pull re-parses what was stored
    merged = merged.sort_values(["annotation_id", "updated_at"], kind="mergesort")
    return merged.drop_duplicates("annotation_id", keep="last").reset_index(drop=True)


def count_new_or_edited(ledger: pd.DataFrame, pulled: pd.DataFrame) -> int:
    """Pulled annotations not yet in the ledger, or edited since they were pulled (the
    overlap window re-reads some unchanged ones; those are not counted)."""
    if pulled.empty or ledger.empty:
        return len(pulled)
    known = ledger.set_index("annotation_id")["updated_at"]
    previous = pd.to_datetime(pulled["annotation_id"].map(known), utc=True)
    return int((previous.isna() | (pulled["updated_at"] > previous)).sum())


def pull_since(ledger: pd.DataFrame) -> pd.Timestamp | None:
    """Where the next pull starts: shortly before the newest annotation in the ledger.

    None (everything) for an empty ledger, and for one written before answers were
    checked (no ``answer_problem`` column): its rows were parsed leniently (a two-class
    answer stored as its first class), so they are pulled and judged again once.
    """
    if ledger.empty or ANSWER_PROBLEM not in ledger:
        return None
    return ledger["updated_at"].max() - _PULL_OVERLAP


def awaiting_answers(
    pushed: Mapping[str, Sequence[str]], ledger: pd.DataFrame
) -> dict[str, list[str]]:
    """Pushed items of each tier with no annotation pulled from that tier yet: the ones
    whose answers would be lost, unseen, if their task disappeared."""
    seen = (
        set(zip(ledger[TIER].astype(str), ledger[ITEM_ID].astype(str), strict=True))
        if len(ledger)
        else set()
    )
    out = {
        tier: sorted(i for i in set(map(str, ids)) if (tier, i) not in seen)
        for tier, ids in pushed.items()
    }
    return {tier: ids for tier, ids in out.items() if ids}


@dg.asset(
    group_name="s06_feedback",
    deps=[labeling_tasks],
    kinds={"labelstudio"},
    pool=LABEL_LEDGER_POOL,
)
def human_labels(
    context: dg.AssetExecutionContext,
    label_studio: LabelStudioResource,
    local_store: LocalStore,
    production: ProductionSource,
) -> dg.Output[pd.DataFrame]:
    """One resolved human label per reviewed item, from every annotation pulled so far.

    Intake is strict (``core.intake``): only a configured reviewer's answer of exactly
    one schema class is a vote; the rest stays in the ledger, quarantined with a reason
    and counted here. Each run judges the whole ledger again, so a fix re-admits. Pushed
    items whose task vanished from Label Studio before an answer was pulled are reported.
    An adjudicated answer decides its item.
    """
    classes = production.schema().classes
    ledger = local_store.read_ledger(include_quarantined=True)
    with store_failures():
        pulled = annotations_to_frame(label_studio.pull_annotations(since=pull_since(ledger)))
    new_or_edited = count_new_or_edited(ledger, pulled)
    ledger = upsert_annotations(ledger, pulled)
    policy = label_studio.intake_policy(classes=classes)
    usable, quarantined = split_quarantined(ledger, policy)
    fault_point("pull.before_ledger_write")
    local_store.write_ledger(pd.concat([usable, quarantined]).sort_values("annotation_id"))
    missing = label_studio.missing_items(awaiting_answers(local_store.read_pushed(), ledger))
    _warn(context, quarantined, pulled, missing, policy)

    labels = resolve_labels(usable)
    latest = usable["completed_at"].max() if len(usable) else None
    per_reason = reason_counts(quarantined)
    counted = sorted(set(usable.loc[~usable["was_cancelled"].astype(bool), "annotator"]))
    return dg.Output(
        labels,
        metadata={
            "labelled_items": len(labels),
            "annotations_total": len(ledger),
            "annotations_pulled_now": new_or_edited,
            "annotations_admitted": len(usable),
            "annotations_skipped": int(usable["was_cancelled"].astype(bool).sum()),
            "annotations_quarantined": len(quarantined),
            "quarantined_by_reason": dg.MetadataValue.json(per_reason),
            **{f"quarantined__{reason}": n for reason, n in per_reason.items()},
            "reviewers_counted": dg.MetadataValue.json(counted),
            "reviewers_configured": (
                "every account except the service account (no reviewer list configured)"
                if policy.open_to_everyone
                else ", ".join(sorted(policy.reviewers))
            ),
            "service_account": ", ".join(sorted(policy.service_accounts)),
            "tasks_missing": sum(len(ids) for ids in missing.values()),
            "tasks_missing_items": dg.MetadataValue.json(
                {tier: ids[:_LISTED] for tier, ids in missing.items()}
            ),
            "correction_rate": _number(correction_rate(usable)),
            "audit_pass_rate": _number(audit_pass_rate(usable)),
            "labels_through": latest.isoformat() if latest is not None else "",
            **feedback_figures(usable, labels, classes),
        },
    )


def _warn(
    context: dg.AssetExecutionContext,
    quarantined: pd.DataFrame,
    pulled: pd.DataFrame,
    missing: Mapping[str, Sequence[str]],
    policy: IntakePolicy,
) -> None:
    """Say in the run's log what was not taken, so nobody has to open the metadata."""
    fresh = quarantined[quarantined["annotation_id"].isin(pulled["annotation_id"])]
    if len(fresh):
        counts = fresh[QUARANTINE_REASON].value_counts().to_dict()
        context.log.warning(
            f"{len(fresh)} pulled annotation(s) quarantined, not labels: "
            + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
            + f" (service account {', '.join(sorted(policy.service_accounts))}; reviewers: "
            + ("every other account" if policy.open_to_everyone else "the configured list")
            + "). They stay in the ledger with their reason."
        )
    if (fresh[QUARANTINE_REASON] == SERVICE_ACCOUNT).any():
        context.log.warning(
            "the pipeline's service account never labels: whoever answered as it should "
            "sign up under their own account (the organisation's invite link) and label there"
        )
    for tier, ids in missing.items():
        context.log.warning(
            f"{len(ids)} item(s) pushed to the {tier} queue have no task in Label Studio "
            f"any more and no answer pulled (deleted?): {', '.join(ids[:_LISTED])}"
            + (" ..." if len(ids) > _LISTED else "")
        )


def feedback_figures(
    annotations: pd.DataFrame, labels: pd.DataFrame, classes: tuple[str, ...]
) -> dict[str, Any]:
    """Agreement, decisions and correction-rate figures as Dagster metadata."""
    votes = latest_votes(annotations, classes=classes)
    decided = labels["decided_by"].value_counts().to_dict() if len(labels) else {}
    by_tier = correction_rates(annotations, by=TIER)
    flagged = by_tier[by_tier["verdict"] != "healthy"]["message"].tolist()
    return {
        **summary_metrics(votes, labels),
        "decided_by": dg.MetadataValue.json({str(k): int(v) for k, v in decided.items()}),
        **{f"correction_rate__{r.group}": float(r.rate) for r in by_tier.itertuples()},
        "correction_band": " | ".join(flagged) if flagged else "every queue in the healthy band",
    }


def adjudication_tasks_for(
    annotations: pd.DataFrame, classes: tuple[str, ...]
) -> list[LabelingTask]:
    """One adjudication task per disputed item, showing who answered what and the model's
    label and confidence (``note`` lists the answers, one reviewer each: "Reviewers said:
    a@x: churn · b@y: retain"). The confidence is the one pushed with the first task;
    NaN ("n/a") for answers pulled before it was kept in the ledger."""
    votes = latest_votes(annotations, classes=classes)
    disputed = disputed_items(votes)
    if not disputed:
        return []
    latest = annotations.sort_values("updated_at").drop_duplicates(ITEM_ID, keep="last")
    latest = latest.set_index(latest[ITEM_ID].astype(str))
    tasks = []
    for item_id in disputed:
        row = latest.loc[item_id]
        mine = votes[(votes[ITEM_ID] == item_id) & (votes[TIER] != TIER_ADJUDICATION)]
        said = " · ".join(
            f"{a}: {lab}" for a, lab in sorted(zip(mine["annotator"], mine["label"], strict=True))
        )
        score = row.get("model_score")
        tasks.append(
            LabelingTask(
                item_id=item_id,
                features=dict(row["features"]) if isinstance(row["features"], Mapping) else {},
                predicted_label=str(row["predicted_label"]),
                score=float("nan") if score is None or pd.isna(score) else float(score),
                model_version=str(row["model_version"]),
                # the original reasons, minus "audit": the audit figure is the first reviewers'
                reasons=(
                    *(r for r in row["reasons"] if r != REASON_AUDIT),
                    REASON_DISAGREEMENT,
                ),
                tier=TIER_ADJUDICATION,
                partition=str(row["partition"]),
                priority=float(len(mine)),
                note=f"Reviewers said: {said}",
            )
        )
    return tasks


@dg.asset(
    group_name="s06_feedback",
    deps=[human_labels],
    kinds={"labelstudio"},
    pool=LABEL_STUDIO_POOL,
)
def adjudication_tasks(
    label_studio: LabelStudioResource, local_store: LocalStore, production: ProductionSource
) -> dg.Output[PushResult]:
    """Items whose reviewers disagreed, pushed to the adjudication queue (once each)."""
    classes = production.schema().classes
    usable, _ = split_out_of_schema(local_store.read_ledger(), classes)
    tasks = adjudication_tasks_for(usable, classes)
    kinds = {f.name: f.kind for f in production.schema().features}
    result = (
        label_studio.push_tasks(classes=classes, tasks=tasks, feature_kinds=kinds)
        if tasks
        else PushResult(created=0, already_present=0, project_id=0)
    )
    if tasks:  # recorded, so a deleted adjudication task is reported like any other
        local_store.record_pushed(
            name="adjudication",
            item_ids=[t.item_id for t in tasks],
            tiers=[t.tier for t in tasks],
        )
    return dg.Output(
        result,
        metadata={
            "disputed_open": len(tasks),
            "tasks_created": result.created,
            "tasks_already_present": result.already_present,
        },
    )


@dg.asset_check(
    asset=human_labels,
    name=AUDIT_CHECK,
    description="The audit sample of auto-accepted items: its pass rate (Wilson interval) "
    "must not fall below the floor or significantly below earlier batches. A failure "
    "is concept drift even when the input drift check passes, and starts the same "
    "response as a drift alert (boosted review of the batch, early retrain).",
)
def audit_pass_rate_holds(
    config: AuditConfig, local_store: LocalStore, production: ProductionSource
) -> dg.AssetCheckResult:
    usable, _ = split_out_of_schema(local_store.read_ledger(), production.schema().classes)
    verdict = audit_verdict(usable, config.to_settings())
    return dg.AssetCheckResult(
        passed=not verdict.alert,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.message,
        metadata={
            "audited": verdict.audited,
            "audit_pass_rate": _number(verdict.rate),
            "audit_ci_low": _number(verdict.low),
            "audit_ci_high": _number(verdict.high),
            "earlier_pass_rate": _number(verdict.baseline_rate),
            AUDIT_PARTITION: verdict.partitions[-1] if verdict.partitions else "",
        },
    )


def _number(value: float | None) -> float:
    # Dagster plots numbers only; NaN marks "nothing to measure yet".
    return float("nan") if value is None else float(value)
