"""The doctor's report: what the CLI prints and the recovery sensor's skip reason says."""

import pytest

from hitl_pipeline.core.recovery import DAGSTER, DVC, MLFLOW, DoctorReport, Fix

DEAD = Fix(DAGSTER, "run r1 (retrain_job)", "marked failed", "no process alive")
ORPHAN = Fix(MLFLOW, "run m1 (candidate)", "marked FAILED (was RUNNING)", "r1 is FAILURE")
DATA = Fix(DVC, "data/training.parquet", "restored", "modified")


@pytest.mark.parametrize(
    ("report", "summary", "ok"),
    [
        (DoctorReport(), "nothing to fix", True),
        (DoctorReport(fixes=(DEAD,)), "1 dagster fix", True),
        # counted per store, in the order the checks ran
        (
            DoctorReport(fixes=(DEAD, ORPHAN, ORPHAN, DATA)),
            "1 dagster fix; 2 mlflow fixes; 1 dvc fix",
            True,
        ),
        # a check that could not run is named, and the report is not ok
        (
            DoctorReport(fixes=(DATA,), errors=("mlflow runs: OperationalError: locked",)),
            "1 dvc fix; check failed: mlflow runs: OperationalError: locked",
            False,
        ),
    ],
)
def test_summary(report: DoctorReport, summary: str, ok: bool) -> None:
    assert report.summary() == summary
    assert report.ok is ok


def test_lines_name_store_object_action_and_reason() -> None:
    report = DoctorReport(fixes=(DEAD,), errors=("dataset repository: OSError: gone",))

    assert report.lines() == [
        "[dagster] run r1 (retrain_job): marked failed (no process alive)",
        "error: dataset repository: OSError: gone",
    ]
