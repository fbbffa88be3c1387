"""Bad input at the door: a real ``production_batch`` materialization on a landing folder
in a temporary directory (no other service is involved in this stage)."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.defs.s01_ingest import production_batch
from hitl_pipeline.demo.stream import DEMO_SCHEMA, DriftingStream
from hitl_pipeline.resources.production import ProductionSource

PARTITION = "2026-01-12"
pytestmark = pytest.mark.faults  # malformed batches are part of the fault suite


@pytest.fixture
def source(tmp_path: Path) -> ProductionSource:
    save_schema(DEMO_SCHEMA, tmp_path / "schema.json")
    (tmp_path / "landing").mkdir()
    return ProductionSource(
        landing_dir=str(tmp_path / "landing"),
        quarantine_dir=str(tmp_path / "quarantine"),
        schema_path=str(tmp_path / "schema.json"),
    )


def _batch() -> pd.DataFrame:
    return DriftingStream(rows_per_batch=60).batch(1).drop(columns=["label"])


def _land(source: ProductionSource, frame: pd.DataFrame, suffix: str = ".parquet") -> Path:
    path = Path(source.landing_dir) / f"{PARTITION}{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _materialize(source: ProductionSource, instance: dg.DagsterInstance):
    return dg.materialize(
        [production_batch],
        partition_key=PARTITION,
        resources={"production": source},
        instance=instance,
        raise_on_error=False,
    )


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected the ingest step to fail"
    return str(failures[0].step_failure_data.user_failure_data.description)


@pytest.mark.parametrize(
    ("break_batch", "expected"),
    [
        (lambda f: f.drop(columns=["monthly_spend"]), "monthly_spend"),
        (lambda f: f.assign(tenure_months="about a year"), "tenure_months"),
        (lambda f: f.drop(columns=["item_id"]), "item_id"),
        (lambda f: f.assign(channel="carrier-pigeon"), "carrier-pigeon"),
        (lambda f: f.head(0), "no rows"),
        (lambda f: f.assign(monthly_spend=float("nan")), "entirely null"),
        (lambda f: f.assign(monthly_spend=float("inf")), "monthly_spend"),
    ],
    ids=[
        "missing column",
        "wrong type",
        "missing id",
        "unknown category in every row",
        "empty",
        "a column all null",
        "a column all infinite",
    ],
)
def test_unusable_batch_is_rejected_naming_the_problem_and_touches_nothing(
    source, break_batch, expected
):
    _land(source, break_batch(_batch()))
    with dg.instance_for_test() as instance:
        result = _materialize(source, instance)
        assert not result.success
        assert expected in _failure_message(result)
        assert instance.get_latest_materialization_event(dg.AssetKey("production_batch")) is None
    assert not Path(source.quarantine_dir).exists()

    # the corrected file lands; a re-run continues
    _land(source, _batch())
    with dg.instance_for_test() as instance:
        result = _materialize(source, instance)
        assert result.success
        assert len(result.asset_value("production_batch")) == 60


def test_bad_rows_are_quarantined_with_reasons(source):
    frame = _batch()
    frame.loc[3, "channel"] = "carrier-pigeon"
    frame.loc[7, "tenure_months"] = -5.0
    _land(source, frame, suffix=".csv")
    with dg.instance_for_test() as instance:
        result = _materialize(source, instance)
    assert result.success
    valid = result.asset_value("production_batch").to_pandas()
    assert len(valid) == 58
    quarantined = pd.read_parquet(Path(source.quarantine_dir) / f"{PARTITION}.parquet")
    reasons = dict(zip(quarantined["item_id"], quarantined["quarantine_reason"], strict=True))
    assert set(reasons) == {frame.loc[3, "item_id"], frame.loc[7, "item_id"]}
    assert "carrier-pigeon" in reasons[frame.loc[3, "item_id"]]
    assert "tenure_months" in reasons[frame.loc[7, "item_id"]]


def test_missing_batch_file_says_where_it_was_expected(source):
    with dg.instance_for_test() as instance:
        result = _materialize(source, instance)
    assert not result.success
    assert f"{PARTITION}.parquet" in _failure_message(result)


@pytest.mark.parametrize(
    ("land", "expected"),
    [
        (lambda landing: (landing / f"{PARTITION}.parquet").write_bytes(b"garbage"), "cannot read"),
        (
            lambda landing: (
                _batch().to_parquet(landing / f"{PARTITION}.parquet"),
                _batch().to_csv(landing / f"{PARTITION}.csv"),
            ),
            "several files",
        ),
    ],
    ids=["unreadable file", "two files for one day"],
)
def test_unusable_files_are_rejected_naming_the_problem(source, land, expected):
    land(Path(source.landing_dir))
    with dg.instance_for_test() as instance:
        result = _materialize(source, instance)
    assert not result.success
    assert expected in _failure_message(result)
    assert not Path(source.quarantine_dir).exists()


@pytest.mark.parametrize(
    "chunk_rows",
    [
        100_000,  # one chunk: the duplicates sit in the same frame as their first rows
        7,  # many chunks: each duplicate lands several chunks after its first occurrence
    ],
)
def test_duplicate_ids_are_quarantined_not_scored_twice(source, chunk_rows):
    source = ProductionSource(
        landing_dir=source.landing_dir,
        quarantine_dir=source.quarantine_dir,
        schema_path=source.schema_path,
        chunk_rows=chunk_rows,
    )
    frame = _batch()
    _land(source, pd.concat([frame, frame.head(3)], ignore_index=True))
    with dg.instance_for_test() as instance:
        result = _materialize(source, instance)
    assert result.success
    valid = result.asset_value("production_batch").to_pandas()
    assert valid["item_id"].is_unique and len(valid) == 60
    quarantined = pd.read_parquet(Path(source.quarantine_dir) / f"{PARTITION}.parquet")
    assert sorted(quarantined["item_id"]) == sorted(frame.head(3)["item_id"])
