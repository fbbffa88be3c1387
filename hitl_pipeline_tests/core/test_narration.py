"""The demo terminal's lines: one table of events and the line each becomes."""

from datetime import UTC, datetime

import pytest

from hitl_pipeline.core.narration import LoopEvent, narrate, queue_line
from hitl_pipeline.core.types import QueueStatus

P = "2026-01-12"


def mat(name: str, partition: str | None = None, **metadata) -> LoopEvent:
    return LoopEvent(kind="materialization", name=name, partition=partition, metadata=metadata)


def check(name: str, passed: bool, description: str = "", **metadata) -> LoopEvent:
    return LoopEvent(
        kind="check",
        name=name,
        partition=None,
        passed=passed,
        description=description,
        metadata=metadata,
    )


@pytest.mark.parametrize(
    ("event", "line"),
    [
        # a batch: valid rows, quarantined only when there are some
        (
            mat("production_batch", P, rows=400, quarantined_rows=0),
            f"[{P}] batch landed: 400 valid rows",
        ),
        (
            mat("production_batch", P, rows=397, quarantined_rows=3),
            f"[{P}] batch landed: 397 valid rows, 3 quarantined",
        ),
        # metadata missing altogether: a placeholder, no crash
        (mat("production_batch", P), f"[{P}] batch landed: ? valid rows"),
        # scored: confidence to two places, out-of-distribution share only when non-zero
        (
            mat(
                "predictions",
                P,
                rows=400,
                model_version="1",
                mean_confidence=0.83456,
                share_ood_99=0.0,
            ),
            f"[{P}] rows scored: 400 by champion v1, mean confidence 0.83",
        ),
        (
            mat(
                "predictions",
                P,
                rows=400,
                model_version="3",
                mean_confidence=0.7,
                share_ood_99=0.0712,
            ),
            f"[{P}] rows scored: 400 by champion v3, mean confidence 0.70, 7% out of distribution",
        ),
        (mat("predictions", P, rows=12), f"[{P}] rows scored: 12"),
        # the drift report itself says nothing: its check carries the verdict
        (mat("drift_report", P, drift_share=0.5), None),
        (
            LoopEvent(
                kind="check",
                name="no_dataset_drift",
                partition=P,
                passed=True,
                metadata={"drift_share": 0.1234, "threshold": 0.5},
            ),
            f"[{P}] drift verdict: no drift (12% of columns drifted, alert at 50%)",
        ),
        (
            LoopEvent(
                kind="check",
                name="no_dataset_drift",
                partition=P,
                passed=False,
                metadata={
                    "drift_share": 0.625,
                    "threshold": 0.5,
                    "drifted_columns": ["a", "b", "c", "d", "e", "f"],
                },
            ),
            f"[{P}] drift verdict: DRIFT (62% of columns drifted, alert at 50%): "
            "a, b, c, d, e ...; the drift sensor boosts this batch's review",
        ),
        (
            check("no_dataset_drift", False),
            "drift verdict: DRIFT; the drift sensor boosts this batch's review",
        ),
        # a drifted text column alarms below the share: the line says why
        (
            LoopEvent(
                kind="check",
                name="no_dataset_drift",
                partition=P,
                passed=False,
                metadata={
                    "drift_share": 1 / 3,
                    "threshold": 0.5,
                    "drifted_columns": ["text"],
                    "text_drifted": ["text"],
                },
            ),
            f"[{P}] drift verdict: DRIFT (33% of columns drifted, alert at 50%, text drifted: "
            "text): text; the drift sensor boosts this batch's review",
        ),
        # routed: reasons by count (an item can have several), top four named, the rest
        # summed; "confident" is the auto-accepted share, over capacity said apart
        (
            mat(
                "review_queue",
                P,
                rows=400,
                to_review=100,
                drift_response=False,
                reasons={"confident": 300, "low_confidence": 91, "audit": 9},
            ),
            f"[{P}] items routed: 100 of 400 to review, 300 auto-accepted; "
            "reasons: 91 low confidence, 9 audit",
        ),
        (
            mat(
                "review_queue",
                P,
                rows=400,
                to_review=200,
                drift_response=True,
                reasons={
                    "low_confidence": 103,
                    "drift_sample": 71,
                    "out_of_distribution": 29,
                    "audit": 9,
                    "policy_category": 2,
                    "over_capacity": 40,
                },
            ),
            f"[{P}] items routed: 200 of 400 to review, 200 auto-accepted; reasons: "
            "103 low confidence, 71 drift sample, 29 out of distribution, 9 audit, 2 more; "
            "40 over capacity [drift response: larger review capacity]",
        ),
        (mat("review_queue", P), f"[{P}] items routed"),
        # pushed: new tasks, the tiers, what was there already only when some were
        (
            mat(
                "labeling_tasks",
                P,
                tasks_created=100,
                tasks_already_present=0,
                tasks_by_tier={"general": 91, "expert": 9},
            ),
            f"[{P}] tasks pushed to Label Studio: 100 new (by tier: general 91, expert 9)",
        ),
        (
            mat("labeling_tasks", P, tasks_created=100, tasks_already_present=100),
            f"[{P}] tasks pushed to Label Studio: 100 new, 100 already there",
        ),
        # pulled
        (
            mat(
                "human_labels",
                annotations_pulled_now=120,
                annotations_admitted=118,
                annotations_quarantined=2,
                quarantined_by_reason={"service_account": 2},
                labelled_items=100,
            ),
            "annotations pulled: 120 new or edited; ledger: 118 admitted, "
            "2 quarantined (service account 2); 100 items labelled",
        ),
        # nothing new, nothing quarantined: zero counts are not listed
        (
            mat(
                "human_labels",
                annotations_pulled_now=0,
                annotations_admitted=0,
                annotations_quarantined=0,
                quarantined_by_reason={"service_account": 0, "empty_result": 0},
                labelled_items=0,
            ),
            "annotations pulled: none new; ledger: 0 admitted; 0 items labelled",
        ),
        (mat("human_labels"), "annotations pulled: ?"),
        (
            mat(
                "training_dataset",
                dataset_version="ds-3",
                training_rows=900,
                human_training_rows=100,
                human_holdout_rows=40,
            ),
            "dataset versioned with DVC: ds-3, 900 training rows (100 from people), "
            "40 human held-out",
        ),
        # accuracies rounded to three places; a NaN (no rows in that set) left out
        (
            mat(
                "candidate_model",
                model_version="3",
                training_rows=900,
                fixed_holdout_accuracy=0.87654,
                human_holdout_accuracy=float("nan"),
            ),
            "candidate v3 trained on 900 rows; accuracy fixed holdout 0.877",
        ),
        # the gate: the decision with its first reason only
        (
            check(
                "passes_gate",
                True,
                "better by +0.143 on 63 rows; calibrated",
                challenger_version="3",
                champion_version="1",
            ),
            "gate decision: PROMOTE v3 over v1: better by +0.143 on 63 rows",
        ),
        (
            check(
                "passes_gate",
                False,
                "23 recent held-out labels, 30 needed; edge cases ok",
                challenger_version="2",
                champion_version="1",
            ),
            "gate decision: KEEP champion v1, v2 rejected: 23 recent held-out labels, 30 needed",
        ),
        (
            check("passes_gate", True, challenger_version="1", champion_version="none"),
            "gate decision: PROMOTE v1",
        ),
        (check("passes_gate", False), "gate decision: KEEP the champion"),
        (
            mat("champion_model", champion_version="3", previous_champion="1"),
            "champion version: v3 (was v1)",
        ),
        (
            mat("champion_model", champion_version="1", previous_champion="none"),
            "champion version: v1 (the first)",
        ),
        (mat("champion_model"), "champion version: v? (the first)"),
        (
            mat("routing_threshold", threshold=0.71234),
            "routing threshold re-fitted for the new champion: 0.712",
        ),
        (mat("routing_threshold", threshold="not fitted: no human held-out labels yet"), None),
        # other checks speak only when they fail
        (check("audit_pass_rate_holds", True, "pass rate 0.97"), None),
        (
            check("audit_pass_rate_holds", False, "pass rate 0.62 below 0.90"),
            "check audit_pass_rate_holds FAILED: pass rate 0.62 below 0.90",
        ),
        # loop health's checks warn
        (
            LoopEvent(
                kind="check",
                name="correction_rate_in_band",
                passed=False,
                warning=True,
                description="34% of 120 labels corrected",
            ),
            "warning correction_rate_in_band: 34% of 120 labels corrected",
        ),
        # assets nobody watches line by line
        (mat("loop_metrics", rows=3), None),
        # runs: a retrain and a drift response are announced, other jobs are not
        (
            LoopEvent(
                kind="run_started",
                name="retrain_job",
                trigger="drift_alert",
                run_id="abcdef1234567890",
            ),
            "retrain started (trigger: drift alert), run abcdef12",
        ),
        (
            LoopEvent(kind="run_started", name="drift_review_job", trigger="drift_alert"),
            "drift response started (trigger: drift alert): re-routing the batch with more "
            "review capacity",
        ),
        (LoopEvent(kind="run_started", name="score_batch_job", trigger="new_batch"), None),
        (
            LoopEvent(
                kind="run_failed",
                name="score_batch_job",
                trigger="new_batch",
                run_id="0123456789",
                description="batch x rejected: no rows\nTraceback",
            ),
            "run 01234567 (score_batch_job, new batch) FAILED: batch x rejected: no rows; "
            "see the Dagster UI",
        ),
        # a retrain the gate stopped: the gate's line already said why
        (
            LoopEvent(kind="run_failed", name="retrain_job", metadata={"gate_rejected": True}),
            None,
        ),
    ],
)
def test_line_for_each_event(event: LoopEvent, line: str | None) -> None:
    assert narrate(event) == line


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (
            QueueStatus(300, 220, datetime(2026, 1, 1, tzinfo=UTC)),
            "Label Studio queue: 80 task(s) waiting, 220 of 300 answered",
        ),
        (QueueStatus(0, 0, None), "Label Studio queue: 0 task(s) waiting, 0 of 0 answered"),
    ],
)
def test_queue_depth(status: QueueStatus, line: str) -> None:
    assert queue_line(status) == line
