"""Step outputs stored per run, so that two runs of the same job never read each other's.

Dagster's default filesystem IO manager keeps one file per asset (and partition), shared
by every run: when two ``retrain_job`` runs overlap, run A's ``champion_model`` step can
load run B's ``candidate_model`` and promote a model that A's gate never judged. Here each
output is a file named after the run that produced it. An input is read from the run
that produced it in this job; an asset that is not part of the run is read from the run
of its latest materialization (of that partition), which is the value the UI shows.

A ``ParquetBatch`` (a batch on disk, ``core.chunks``) has its file moved into place as
``<run id>.batch.parquet`` and loads back as a handle: a batch of ten million rows
passes from stage to stage without ever being one frame. Other pandas DataFrames are
stored as Parquet (``<run id>.parquet``, with ``frames_as_parquet``):
a scored batch of millions of rows is written by row group and read back without
pickle's copies; a frame Arrow cannot hold (objects of mixed types) and every other value
is pickled (``<run id>.pickle``). Either is loaded transparently.

An input may ask for some rows only, with ``rows_where`` in its metadata (``{column:
value}``, every condition met): a stored frame is then read with a Parquet filter, so
``labeling_tasks`` reads the review queue's routed rows of a batch of millions, never the
whole batch.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from hitl_pipeline.core.chunks import ParquetBatch

UNPARTITIONED = "__all__"
PARQUET, PICKLE, BATCH = ".parquet", ".pickle", ".batch.parquet"
STORED_SUFFIXES = (PARQUET, PICKLE)
PARQUET_ROW_GROUP = 100_000
ROWS_WHERE = "rows_where"  # input metadata: {column: value}, the rows an input reads


class MissingStepOutput(LookupError):
    """No stored value for an input: the asset was never materialized (in that partition)."""


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Step outputs under ``<base_dir>/<asset key>/<partition>/<run id>.parquet|.pickle``."""

    base_dir: str = Field(description="Folder holding the stored outputs.")
    keep_runs: int = Field(
        default=20,
        description="Stored values kept per asset and partition (the newest; older runs' "
        "values are deleted, their materializations stay in the instance).",
    )
    frames_as_parquet: bool = Field(
        default=True,
        description="Store pandas DataFrames as Parquet files (other values are pickled).",
    )

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None and context.dagster_type.is_nothing:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        folder = self._folder(context.asset_key, partition)
        folder.mkdir(parents=True, exist_ok=True)
        path = self._write(folder, context.run_id, obj)
        context.add_output_metadata({"stored_value": dg.MetadataValue.path(str(path))})
        self._prune(folder)

    def load_input(self, context: dg.InputContext) -> Any:
        if context.has_asset_partitions and len(context.asset_partition_keys) != 1:
            return {key: self._load(context, key) for key in context.asset_partition_keys}
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self._load(context, partition)

    # --- internals -------------------------------------------------------------------
    def _load(self, context: dg.InputContext, partition: str | None) -> Any:
        folder = self._folder(context.asset_key, partition)
        where = dict(context.definition_metadata.get(ROWS_WHERE) or {})
        for run_id in self._source_runs(context, partition):
            batch = folder / f"{run_id}{BATCH}"
            if batch.is_file():
                return ParquetBatch.of(batch)
            parquet = folder / f"{run_id}{PARQUET}"
            if parquet.is_file():
                if not where or pq.ParquetFile(parquet).metadata.num_rows == 0:
                    return pd.read_parquet(parquet)  # (an empty frame may have no columns)
                filters = [(column, "==", value) for column, value in where.items()]
                return pd.read_parquet(parquet, filters=filters)
            path = folder / f"{run_id}{PICKLE}"
            if path.is_file():
                with path.open("rb") as fh:
                    return _rows_where(pickle.load(fh), where)
        which = f" partition {partition}" if partition else ""
        raise MissingStepOutput(
            f"no stored value of {context.asset_key.to_user_string()}{which} under {folder}: "
            "materialize it first (or re-run the run that produced it)"
        )

    def _source_runs(self, context: dg.InputContext, partition: str | None) -> list[str]:
        """The run whose value to read: the producing step's run, else the latest one."""
        runs: list[str] = []
        upstream = context.upstream_output
        if upstream is not None:
            # an asset outside this job has no producing step here (and no run id)
            with contextlib.suppress(dg.DagsterInvariantViolationError):
                runs.append(upstream.run_id)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=context.asset_key,
                asset_partitions=[partition] if partition is not None else None,
            ),
            limit=1,
        ).records
        if records:
            runs.append(records[0].run_id)
        return runs

    def _folder(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        return Path(self.base_dir, *asset_key.path, partition or UNPARTITIONED)

    def _write(self, folder: Path, run_id: str, obj: Any) -> Path:
        """Store one value atomically (a reader never sees half a file); returns its path."""
        stale = [folder / f"{run_id}{s}" for s in (BATCH, PARQUET, PICKLE)]
        if isinstance(obj, ParquetBatch):
            path = folder / f"{run_id}{BATCH}"
            # a rename on one filesystem; else copied to a temporary name, then renamed
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
                pass
            shutil.move(obj.path, tmp.name)
            os.replace(tmp.name, path)
            obj.relocate(path)
            for old in stale:
                if old != path:
                    old.unlink(missing_ok=True)
            return path
        table = _as_table(obj) if self.frames_as_parquet else None
        if table is not None:
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
                pq.write_table(table, tmp, row_group_size=PARQUET_ROW_GROUP)
            path = folder / f"{run_id}{PARQUET}"
            os.replace(tmp.name, path)
            # a re-executed step of the same run may have stored it another way before
            for old in stale:
                if old != path:
                    old.unlink(missing_ok=True)
            return path
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
            pickle.dump(obj, tmp, protocol=pickle.HIGHEST_PROTOCOL)
        path = folder / f"{run_id}{PICKLE}"
        os.replace(tmp.name, path)
        for old in stale:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def _prune(self, folder: Path) -> None:
        stored = sorted(
            (p for p in folder.iterdir() if p.suffix in STORED_SUFFIXES), key=_mtime, reverse=True
        )
        for old in stored[self.keep_runs :]:
            old.unlink(missing_ok=True)


def _rows_where(value: Any, where: dict[str, Any]) -> Any:
    """A pickled frame's rows meeting every ``{column: value}`` condition (other values
    as they are)."""
    if not where or not isinstance(value, pd.DataFrame) or value.empty:
        return value
    keep = pd.Series(True, index=value.index)
    for column, wanted in where.items():
        keep &= value[column] == wanted
    return value[keep].reset_index(drop=True)


def _as_table(obj: Any) -> pa.Table | None:
    """``obj`` as an Arrow table when it is a frame that comes back from Parquet unchanged.

    None for anything else: objects Arrow cannot type, tuples or lists in cells (they
    would come back as arrays), column names that are not strings (they would come back
    as strings).
    """
    if not isinstance(obj, pd.DataFrame) or not all(isinstance(c, str) for c in obj.columns):
        return None
    try:
        table = pa.Table.from_pandas(obj)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if any(pa.types.is_nested(field.type) for field in table.schema):
        return None
    return table


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by a concurrent run meanwhile
        return 0.0
