"""RunScopedIOManager: frames as Parquet, other values pickled, each run's own file."""

import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.chunks import ParquetBatch, frame_chunks, write_chunks
from hitl_pipeline.defs.io_manager import ROWS_WHERE, RunScopedIOManager

VALUE = {"n": 1}


@dg.asset
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "x": [1.5, None, 3.0],
            "when": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
            "n": [VALUE["n"]] * 3,
        }
    )


@dg.asset
def doubled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(x=frame["x"] * 2)


@dg.asset
def summary(frame: pd.DataFrame) -> dict:
    return {"rows": len(frame), "n": int(frame["n"].iloc[0])}


@dg.asset
def with_tuples() -> pd.DataFrame:
    # tuples in cells would come back from Parquet as arrays: pickled instead
    return pd.DataFrame({"reasons": [("a", "b"), ()]})


@dg.asset
def tuple_reasons(with_tuples: pd.DataFrame) -> list:
    return with_tuples["reasons"].tolist()


def _stored(base, asset: str) -> dict[str, str]:
    folder = base / asset / "__all__"
    return {p.stem: p.suffix for p in folder.iterdir()}


def test_frames_are_parquet_per_run_and_load_back_unchanged(tmp_path):
    io = RunScopedIOManager(base_dir=str(tmp_path), keep_runs=2)
    instance = dg.DagsterInstance.ephemeral()
    VALUE["n"] = 1
    first = dg.materialize(
        [frame, doubled, summary, with_tuples, tuple_reasons],
        resources={"io_manager": io},
        instance=instance,
    )
    assert first.success
    assert _stored(tmp_path, "frame") == {first.run_id: ".parquet"}
    assert _stored(tmp_path, "summary") == {first.run_id: ".pickle"}
    assert _stored(tmp_path, "with_tuples") == {first.run_id: ".pickle"}
    expected = frame().assign(x=[3.0, None, 6.0])
    pd.testing.assert_frame_equal(first.output_for_node("doubled"), expected)
    stored = pd.read_parquet(tmp_path / "doubled" / "__all__" / f"{first.run_id}.parquet")
    pd.testing.assert_frame_equal(stored, expected)

    # a second run writes its own file; a run of `summary` alone reads the latest
    VALUE["n"] = 2
    second = dg.materialize([frame], resources={"io_manager": io}, instance=instance)
    assert set(_stored(tmp_path, "frame")) == {first.run_id, second.run_id}
    third = dg.materialize(
        [summary, frame.to_source_asset()], resources={"io_manager": io}, instance=instance
    )
    assert third.output_for_node("summary") == {"rows": 3, "n": 2}

    # the tuple frame reaches its consumer as it was
    assert first.output_for_node("tuple_reasons") == [("a", "b"), ()]

    # pruning counts both kinds: keep_runs=2 leaves the two newest of `frame`
    dg.materialize([frame], resources={"io_manager": io}, instance=instance)
    assert len(_stored(tmp_path, "frame")) == 2
    assert first.run_id not in _stored(tmp_path, "frame")


def test_frames_can_stay_pickled(tmp_path):
    io = RunScopedIOManager(base_dir=str(tmp_path), frames_as_parquet=False)
    result = dg.materialize([frame, doubled], resources={"io_manager": io})
    assert _stored(tmp_path, "frame") == {result.run_id: ".pickle"}
    assert len(result.output_for_node("doubled")) == 3


def test_missing_value_names_the_asset(tmp_path):
    io = RunScopedIOManager(base_dir=str(tmp_path))
    with pytest.raises(Exception, match="no stored value of frame"):
        dg.materialize([doubled, frame.to_source_asset()], resources={"io_manager": io})


STAGING: dict[str, str] = {}


@dg.asset
def big_batch() -> ParquetBatch:
    # a stage writes its rows to a file of its own and passes the handle on
    path = Path(STAGING["dir"]) / f"staged-{uuid.uuid4().hex}.parquet"
    rows = pd.DataFrame({"item_id": [f"i{k}" for k in range(250)], "x": range(250)})
    write_chunks(frame_chunks(rows, 100), path)
    return ParquetBatch.of(path)


@dg.asset
def batch_sum(big_batch: ParquetBatch) -> dict:
    assert isinstance(big_batch, ParquetBatch)  # a handle, not a frame
    return {"rows": len(big_batch), "sum": int(sum(c["x"].sum() for c in big_batch.chunks(64)))}


def test_a_parquet_batch_is_moved_into_its_run_and_loads_as_a_handle(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    STAGING["dir"] = str(staging)
    io = RunScopedIOManager(base_dir=str(tmp_path / "io"))
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([big_batch, batch_sum], resources={"io_manager": io}, instance=instance)
    assert first.output_for_node("batch_sum") == {"rows": 250, "sum": sum(range(250))}
    stored = tmp_path / "io" / "big_batch" / "__all__" / f"{first.run_id}.batch.parquet"
    assert stored.is_file() and not list(staging.iterdir())  # moved, not copied
    handle = first.output_for_node("big_batch")
    assert handle == ParquetBatch(path=str(stored), rows=250)

    # another run's batch sits beside it; a run of batch_sum alone reads the latest
    second = dg.materialize([big_batch], resources={"io_manager": io}, instance=instance)
    third = dg.materialize(
        [batch_sum, big_batch.to_source_asset()], resources={"io_manager": io}, instance=instance
    )
    assert third.output_for_node("batch_sum")["rows"] == 250
    assert {p.name for p in stored.parent.iterdir()} == {
        f"{first.run_id}.batch.parquet",
        f"{second.run_id}.batch.parquet",
    }


@dg.asset
def routed() -> pd.DataFrame:
    return pd.DataFrame(
        {"item_id": [f"i{k}" for k in range(6)], "route": ["review", "auto"] * 3, "x": range(6)}
    )


@dg.asset(ins={"routed": dg.AssetIn(metadata={ROWS_WHERE: {"route": "review"}})})
def reviewed_only(routed: pd.DataFrame) -> dict:
    ids = routed["item_id"].tolist() if "item_id" in routed else []
    return {"ids": ids, "index": routed.index.tolist()}


@pytest.mark.parametrize("frames_as_parquet", [True, False])
def test_an_input_reads_only_the_rows_its_metadata_asks_for(tmp_path, frames_as_parquet):
    io = RunScopedIOManager(base_dir=str(tmp_path), frames_as_parquet=frames_as_parquet)
    result = dg.materialize([routed, reviewed_only], resources={"io_manager": io})
    assert result.output_for_node("reviewed_only") == {
        "ids": ["i0", "i2", "i4"],
        "index": [0, 1, 2],
    }
    # the stored value keeps every row
    (stored,) = (tmp_path / "routed" / "__all__").iterdir()
    assert len(pd.read_parquet(stored) if frames_as_parquet else pd.read_pickle(stored)) == 6


@dg.asset(name="routed")
def nothing_routed() -> pd.DataFrame:
    return pd.DataFrame()


@pytest.mark.parametrize("frames_as_parquet", [True, False])
def test_an_empty_frame_is_read_whatever_rows_an_input_asks_for(tmp_path, frames_as_parquet):
    io = RunScopedIOManager(base_dir=str(tmp_path), frames_as_parquet=frames_as_parquet)
    result = dg.materialize([nothing_routed, reviewed_only], resources={"io_manager": io})
    assert result.output_for_node("reviewed_only") == {"ids": [], "index": []}
