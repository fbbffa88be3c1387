"""The landing folder: batch files, their content fingerprints, and the hash cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from hitl_pipeline.resources import production
from hitl_pipeline.resources.production import BatchNotFound, ProductionSource


def _source(tmp_path: Path) -> ProductionSource:
    return ProductionSource(
        landing_dir=str(tmp_path / "landing"),
        quarantine_dir=str(tmp_path / "quarantine"),
        schema_path=str(tmp_path / "schema.json"),
    )


def _land(tmp_path: Path, name: str, values: list[float]) -> Path:
    (tmp_path / "landing").mkdir(exist_ok=True)
    path = tmp_path / "landing" / name
    pd.DataFrame({"item_id": [str(i) for i in range(len(values))], "x": values}).to_parquet(path)
    return path


@pytest.fixture
def hashes(monkeypatch) -> list[int]:
    """Counts the files hashed (the cache starts empty)."""
    monkeypatch.setattr(production, "_FINGERPRINTS", {})
    calls: list[int] = []
    sha256 = hashlib.sha256

    def counted(*args, **kwargs):
        calls.append(1)
        return sha256(*args, **kwargs)

    monkeypatch.setattr(production.hashlib, "sha256", counted)
    return calls


def test_an_unchanged_file_is_hashed_once_and_a_rewritten_one_again(tmp_path, hashes) -> None:
    source = _source(tmp_path)
    path = _land(tmp_path, "2026-01-05.parquet", [1.0, 2.0])
    _land(tmp_path, "2026-01-12.parquet", [3.0])
    first = {b.partition_key: b.fingerprint for b in source.list_batches()}
    assert len(hashes) == 2
    again = {b.partition_key: b.fingerprint for b in source.list_batches()}
    assert again == first and len(hashes) == 2  # the sensor's next tick reads nothing
    assert source.batch_file(partition_key="2026-01-05").fingerprint == first["2026-01-05"]
    assert len(hashes) == 2

    _land(tmp_path, "2026-01-05.parquet", [1.0, 2.5])  # a corrected file, same name
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    corrected = source.batch_file(partition_key="2026-01-05").fingerprint
    assert corrected != first["2026-01-05"] and len(hashes) == 3


def test_reading_a_batch_hashes_nothing(tmp_path, hashes) -> None:
    source = _source(tmp_path)
    _land(tmp_path, "2026-01-05.parquet", [1.0, 2.0, 3.0])
    assert len(source.read_batch(partition_key="2026-01-05")) == 3
    assert sum(len(c) for c in source.read_chunks(partition_key="2026-01-05")) == 3
    assert hashes == []


def test_a_missing_or_doubled_partition_is_named(tmp_path) -> None:
    source = _source(tmp_path)
    _land(tmp_path, "2026-01-05.parquet", [1.0])
    with pytest.raises(BatchNotFound, match="2026-01-12"):
        source.batch_file(partition_key="2026-01-12")
    (tmp_path / "landing" / "2026-01-05.csv").write_text("item_id,x\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="several files"):
        source.read_batch(partition_key="2026-01-05")
