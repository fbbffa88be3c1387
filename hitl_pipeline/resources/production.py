"""The production source: a landing folder with one batch file per day.

A batch for partition ``2026-06-01`` is ``<landing>/2026-06-01.parquet`` or ``.csv``. A
SQL table or an object store can stand in later behind the same three methods.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.chunks import DEFAULT_CHUNK_ROWS, check_chunk_rows, open_parquet
from hitl_pipeline.core.schema import load_schema
from hitl_pipeline.core.types import BatchSchema

_BATCH_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(parquet|csv)$")


class BatchNotFound(FileNotFoundError):
    """No file in the landing folder for the requested partition."""


@dataclass(frozen=True)
class BatchFile:
    """One batch file waiting in the landing folder."""

    partition_key: str
    path: Path
    fingerprint: str  # content hash: a corrected file re-dropped gets a new one


# content hashes by (path, size, modification time): the landing sensor lists every
# batch each tick, and hashing a file of millions of rows each time would read it whole
_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if len(_FINGERPRINTS) > 4096:  # bounded: a long-running daemon sees many files
            _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


class ProductionSource(dg.ConfigurableResource):
    """Reads production batches from the landing folder and keeps quarantined rows."""

    landing_dir: str
    quarantine_dir: str
    schema_path: str
    chunk_rows: int = Field(
        default=DEFAULT_CHUNK_ROWS,
        description="Rows read, scored and routed at a time: bounds the memory a batch "
        "of any size takes.",
    )

    def list_batches(self) -> list[BatchFile]:
        """Every well-named batch file, oldest partition first."""
        return [BatchFile(key, path, _fingerprint(path)) for key, path in self._named_files()]

    def _named_files(self) -> list[tuple[str, Path]]:
        landing = Path(self.landing_dir)
        if not landing.is_dir():
            return []
        files = []
        for path in sorted(landing.iterdir()):
            match = _BATCH_NAME.match(path.name)
            if match is None or not path.is_file():
                continue
            try:
                date.fromisoformat(match.group(1))
            except ValueError:
                continue
            files.append((match.group(1), path))
        return files

    def batch_file(self, *, partition_key: str) -> BatchFile:
        """The file of one partition; a clear error when it is missing or ambiguous."""
        path = self._batch_path(partition_key)
        return BatchFile(partition_key, path, _fingerprint(path))

    def _batch_path(self, partition_key: str) -> Path:
        found = [path for key, path in self._named_files() if key == partition_key]
        if not found:
            raise BatchNotFound(
                f"no batch for partition {partition_key}: expected "
                f"{Path(self.landing_dir) / (partition_key + '.parquet')} (or .csv)"
            )
        if len(found) > 1:
            names = ", ".join(path.name for path in found)
            raise ValueError(f"partition {partition_key} has several files ({names}); keep one")
        return found[0]

    def read_batch(self, *, partition_key: str) -> pd.DataFrame:
        """Read one partition's rows as they landed (validation happens in ``core``)."""
        path = self._batch_path(partition_key)
        try:
            if path.suffix == ".csv":
                return pd.read_csv(path, dtype={"item_id": str}, encoding="utf-8")
            return pd.read_parquet(path)
        except Exception as exc:  # unreadable file: say which file, keep the cause
            raise ValueError(f"cannot read batch file {path}: {exc}") from exc

    def read_chunks(
        self, *, partition_key: str, columns: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """One partition's rows as they landed, ``chunk_rows`` at a time (only ``columns``
        when given).

        Raises:
            ValueError: When the file cannot be read (naming it) or ``chunk_rows`` < 1.
        """
        check_chunk_rows(self.chunk_rows)
        path = self._batch_path(partition_key)
        try:
            if path.suffix == ".csv":
                reader = pd.read_csv(
                    path,
                    dtype={"item_id": str},
                    encoding="utf-8",
                    chunksize=self.chunk_rows,
                    usecols=columns,
                )
                yield from reader
                return
            handle = open_parquet(path)
            seen = False
            for batch in handle.iter_batches(batch_size=self.chunk_rows, columns=columns):
                seen = True
                yield batch.to_pandas()
            if not seen:
                yield handle.schema_arrow.empty_table().to_pandas()
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise ValueError(f"cannot read batch file {path}: {exc}") from exc

    def staging_file(self, *, name: str) -> Path:
        """A fresh path for a stage's Parquet output (the IO manager moves it into place)."""
        folder = Path(self.quarantine_dir).parent / "staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}-{uuid.uuid4().hex[:12]}.parquet"

    def schema(self) -> BatchSchema:  # type: ignore[override]  # pydantic's is deprecated
        """The declared batch schema."""
        path = Path(self.schema_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no batch schema at {path}: declare the batch columns there "
                "(`hitl-pipeline demo` writes one for the demo stream)"
            )
        return load_schema(path)

    def quarantine_file(self, *, partition_key: str) -> Path:
        """Where one partition's quarantined rows are kept."""
        return Path(self.quarantine_dir) / f"{partition_key}.parquet"

    def write_quarantine(self, *, partition_key: str, rows: pd.DataFrame) -> Path | None:
        """Keep quarantined rows with their reasons; ``None`` when there are none."""
        target = Path(self.quarantine_dir) / f"{partition_key}.parquet"
        if rows.empty:
            target.unlink(missing_ok=True)  # a corrected re-run clears the old quarantine
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        rows.astype({c: str for c in rows.columns if rows[c].dtype == object}).to_parquet(
            target, index=False
        )
        return target
