"""Step outputs stored per run, so that two runs of the same job never read each other's.

Dagster's default filesystem IO manager keeps one file per asset (and partition), shared
by every run: when two ``retrain_job`` runs overlap, run A's ``champion_model`` step can
load run B's ``candidate_model`` and promote a model that A's gate never judged. Here each
output is a file named after the run that produced it. An input is read from the run
that produced it in this job; an asset that is not part of the run is read from the run
of its latest materialization (of that partition), which is the value the UI shows.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

UNPARTITIONED = "__all__"


class MissingStepOutput(LookupError):
    """No stored value for an input: the asset was never materialized (in that partition)."""


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Pickled step outputs under ``<base_dir>/<asset key>/<partition>/<run id>.pickle``."""

    base_dir: str = Field(description="Folder holding the stored outputs.")
    keep_runs: int = Field(
        default=20,
        description="Stored values kept per asset and partition (the newest; older runs' "
        "values are deleted, their materializations stay in the instance).",
    )

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None and context.dagster_type.is_nothing:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        folder = self._folder(context.asset_key, partition)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{context.run_id}.pickle"
        # written whole or not at all: a reader never sees half a pickle
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
            pickle.dump(obj, tmp, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp.name, path)
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
        for run_id in self._source_runs(context, partition):
            path = folder / f"{run_id}.pickle"
            if path.is_file():
                with path.open("rb") as fh:
                    return pickle.load(fh)
        where = f" partition {partition}" if partition else ""
        raise MissingStepOutput(
            f"no stored value of {context.asset_key.to_user_string()}{where} under {folder}: "
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

    def _prune(self, folder: Path) -> None:
        stored = sorted(folder.glob("*.pickle"), key=_mtime, reverse=True)
        for old in stored[self.keep_runs :]:
            old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by a concurrent run meanwhile
        return 0.0
