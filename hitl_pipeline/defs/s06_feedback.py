"""Feedback: pull finished annotations from Label Studio, incrementally, into the ledger."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from hitl_pipeline.core.datasets import resolve_labels
from hitl_pipeline.core.loop_health import audit_pass_rate, correction_rate
from hitl_pipeline.defs.s05_labeling import labeling_tasks
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.local_store import LocalStore, annotations_to_frame

# Annotations can be committed slightly out of order; re-reading a short window is free
# because the ledger is keyed by annotation id.
_PULL_OVERLAP = timedelta(minutes=5)


def upsert_annotations(ledger: pd.DataFrame, pulled: pd.DataFrame) -> pd.DataFrame:
    """Ledger plus pulled annotations; an annotation edited since it was pulled replaces
    its earlier copy, so nothing is counted twice."""
    if pulled.empty:
        return ledger
    merged = pd.concat([ledger, pulled], ignore_index=True) if len(ledger) else pulled
    merged = merged.sort_values(["annotation_id", "updated_at"])
    return merged.drop_duplicates("annotation_id", keep="last").reset_index(drop=True)


def count_new_or_edited(ledger: pd.DataFrame, pulled: pd.DataFrame) -> int:
    """Pulled annotations not yet in the ledger, or edited since they were pulled (the
    overlap window re-reads some unchanged ones; those are not counted)."""
    if pulled.empty or ledger.empty:
        return len(pulled)
    known = ledger.set_index("annotation_id")["updated_at"]
    previous = pd.to_datetime(pulled["annotation_id"].map(known), utc=True)
    return int((previous.isna() | (pulled["updated_at"] > previous)).sum())


@dg.asset(group_name="s06_feedback", deps=[labeling_tasks], kinds={"labelstudio"})
def human_labels(
    label_studio: LabelStudioResource, local_store: LocalStore
) -> dg.Output[pd.DataFrame]:
    """One resolved human label per reviewed item, from every annotation pulled so far."""
    ledger = local_store.read_ledger()
    since = ledger["updated_at"].max() - _PULL_OVERLAP if len(ledger) else None
    pulled = annotations_to_frame(label_studio.pull_annotations(since=since))
    new_or_edited = count_new_or_edited(ledger, pulled)
    ledger = upsert_annotations(ledger, pulled)
    local_store.write_ledger(ledger)
    labels = resolve_labels(ledger)
    latest = ledger["completed_at"].max() if len(ledger) else None
    return dg.Output(
        labels,
        metadata={
            "labelled_items": len(labels),
            "annotations_total": len(ledger),
            "annotations_pulled_now": new_or_edited,
            "correction_rate": _number(correction_rate(ledger)),
            "audit_pass_rate": _number(audit_pass_rate(ledger)),
            "labels_through": latest.isoformat() if latest is not None else "",
        },
    )


def _number(value: float | None) -> float:
    # Dagster plots numbers only; NaN marks "nothing to measure yet".
    return float("nan") if value is None else float(value)
