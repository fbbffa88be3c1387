"""Finished replays kept on disk, so that an interrupted benchmark resumes where it stopped.

A benchmark on a real stream replays every strategy, budget and repeat: an hour on a
small machine. Each finished replay (one strategy, budget and repeat) is written to
``<out>/runs/<key>/`` as soon as it ends, and a later run with the same ``--out`` and a
matching key loads it instead of replaying it again. The key covers everything a
replay's records depend on: the data file's bytes, every setting of the run except
which strategies, budgets and repeats are asked for (a replay does not depend on the
others beside it) and how many run at once (``--jobs``), the source of
``hitl_pipeline`` itself and the versions of the libraries that fit and check the
models. Change any of them and the old replays are not used; ``--fresh`` ignores them
all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hitl_pipeline.benchmark.config import BenchmarkConfig
from hitl_pipeline.benchmark.datasets import file_sha256, written_beside
from hitl_pipeline.benchmark.report import CORRECT

RUNS_FOLDER = "runs"
# libraries whose version can change a replay's figures
_LIBRARIES = ("scikit-learn", "numpy", "pandas", "scipy", "evidently")
_PACKAGE = Path(__file__).resolve().parents[1]


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def run_key(config: BenchmarkConfig) -> str:
    """Identifies what one replay's records depend on (see the module docstring)."""
    what = dataclasses.replace(
        config,
        data=Path(config.data.name),
        strategies=(),
        budgets=(),
        repeats=0,
        out=Path(),
        progress=False,
        jobs=1,
        fresh=False,
    )
    parts = {
        "data": file_sha256(config.data),
        "config": repr(what),
        "source": _source_digest(),
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _to_json(value: Any) -> Any:
    """numpy values in a record (scalars, the per-row ``correct`` array) as plain ones."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"a replay record holds a {type(value).__name__}, which is not kept")


def _from_json(record: dict[str, Any]) -> dict[str, Any]:
    if CORRECT in record:
        record[CORRECT] = np.asarray(record[CORRECT], dtype=bool)
    return record


class ReplayStore:
    """The finished replays of one benchmark, one JSON file each.

    Args:
        config: The benchmark's config: ``out`` is where the replays are kept; with
            ``fresh`` those found are ignored (and overwritten as the run goes).
    """

    def __init__(self, config: BenchmarkConfig) -> None:
        self.key = run_key(config)
        self.folder = Path(config.out) / RUNS_FOLDER / self.key
        self.fresh = config.fresh

    def _path(self, strategy: str, budget: float, repeat: int) -> Path:
        return self.folder / f"{strategy}-{budget:g}-{repeat}.json"

    def finished(self, runs: Iterable[tuple[str, float, int]]) -> int:
        """How many of ``(strategy, budget, repeat)`` runs have a kept replay to load."""
        return 0 if self.fresh else sum(self._path(*run).exists() for run in runs)

    def load(self, strategy: str, budget: float, repeat: int) -> list[dict[str, Any]] | None:
        """The records of a finished replay, or None when it has to run."""
        path = self._path(strategy, budget, repeat)
        if self.fresh or not path.exists():
            return None
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a file cut short by a crash: replay it again
        if not isinstance(records, list):
            return None
        return [_from_json(record) for record in records]

    def save(self, strategy: str, budget: float, repeat: int, records: list[dict]) -> None:
        """Keep a finished replay (written whole, then renamed into place)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(strategy, budget, repeat)
        with written_beside(path, "w") as out:
            json.dump(records, out, default=_to_json)
