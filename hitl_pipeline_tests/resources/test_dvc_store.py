"""DvcDatasetStore against real git + DVC repositories and a local DVC remote in tmp_path."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from hitl_pipeline.resources.dvc_store import (
    DatasetIntegrityError,
    DvcDatasetStore,
    frame_to_parquet_bytes,
)


def _frame(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"item-{i:03d}" for i in range(offset, offset + n)],
            "x": [float(i) / 3 for i in range(offset, offset + n)],
            "segment": pd.Categorical(["a" if i % 2 else "b" for i in range(n)]),
            "label": ["pos" if i % 3 else "neg" for i in range(n)],
        }
    )


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _remote_objects(remote: Path) -> set[str]:
    return {p.parent.name + p.name for p in remote.rglob("*") if p.is_file()}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, encoding="utf-8"
    ).stdout


@pytest.fixture
def store(tmp_path: Path) -> DvcDatasetStore:
    return DvcDatasetStore(
        repo_path=str(tmp_path / "datasets"), remote_url=str(tmp_path / "remote")
    )


def test_serialisation_is_deterministic_and_order_independent() -> None:
    frame = _frame(20)
    shuffled = frame.sample(frac=1.0, random_state=1).set_index("x", drop=False)
    assert frame_to_parquet_bytes(frame) == frame_to_parquet_bytes(shuffled.reset_index(drop=True))
    assert frame_to_parquet_bytes(frame) != frame_to_parquet_bytes(_frame(21))


def test_reads_on_a_missing_repository_create_nothing(tmp_path: Path) -> None:
    store = DvcDatasetStore(repo_path=str(tmp_path / "nope"), remote_url=str(tmp_path / "r"))
    assert store.latest() is None
    assert store.list_versions() == []
    with pytest.raises(KeyError):
        store.get(version_id="dataset-v0001")
    assert not (tmp_path / "nope").exists()


def test_versions_restore_and_idempotency(store: DvcDatasetStore, tmp_path: Path) -> None:
    first, edge = _frame(30), _frame(5, offset=100)
    v1 = store.commit(frames={"training": first, "edge_cases": edge}, message="seed data")
    assert v1.version_id == "dataset-v0001"
    assert v1.rows == 30 and v1.path == "data/training.parquet"
    assert set(v1.files) == {"data/training.parquet", "data/edge_cases.parquet"}
    # DVC's md5 is the plain md5 of the bytes we wrote.
    assert v1.md5 == hashlib.md5(frame_to_parquet_bytes(first)).hexdigest()
    head_before = _git(Path(store.repo_path), "rev-parse", "HEAD")

    # Same content in another row order: no new version, no new commit.
    again = store.commit(
        frames={"training": first.iloc[::-1], "edge_cases": edge}, message="re-run"
    )
    assert again == v1
    assert _git(Path(store.repo_path), "rev-parse", "HEAD") == head_before

    second = pd.concat([first, _frame(10, offset=30)], ignore_index=True)
    v2 = store.commit(frames={"training": second, "edge_cases": edge}, message="new labels")
    assert v2.version_id == "dataset-v0002"
    assert v2.md5 != v1.md5 and v2.rows == 40
    assert v2.files["data/edge_cases.parquet"] == v1.files["data/edge_cases.parquet"]
    assert [v.version_id for v in store.list_versions()] == ["dataset-v0001", "dataset-v0002"]
    assert store.latest() == v2 and store.get(version_id="dataset-v0001") == v1

    # v1 restores byte-identically although the workspace now holds v2.
    restored = store.restore(version_id="dataset-v0001", dest=tmp_path / "out" / "v1.parquet")
    assert _md5(restored) == v1.md5
    assert restored.read_bytes() == frame_to_parquet_bytes(first)
    (tmp_path / "dir").mkdir()
    edge_file = store.restore(version_id="dataset-v0001", dest=tmp_path / "dir", name="edge_cases")
    assert edge_file == tmp_path / "dir" / "edge_cases.parquet"
    assert _md5(edge_file) == v1.files["data/edge_cases.parquet"]

    pd.testing.assert_frame_equal(store.load(version_id="dataset-v0001"), first)
    pd.testing.assert_frame_equal(store.load(version_id="dataset-v0002"), second)
    pd.testing.assert_frame_equal(store.load(version_id="dataset-v0001", name="edge_cases"), edge)
    with pytest.raises(KeyError):
        store.load(version_id="dataset-v0001", name="holdout")

    # The dataset repository stays clean and every object reached the remote.
    assert _git(Path(store.repo_path), "status", "--porcelain") == ""
    assert {v1.md5, v2.md5, v1.files["data/edge_cases.parquet"]} <= _remote_objects(
        tmp_path / "remote"
    )


def test_restore_from_a_fresh_clone_uses_only_the_remote(
    store: DvcDatasetStore, tmp_path: Path
) -> None:
    v1 = store.commit(frames={"training": _frame(12)}, message="v1")
    v2 = store.commit(frames={"training": _frame(15)}, message="v2")
    # Only the git history and the DVC remote survive: the original repo and cache are gone.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", store.repo_path, str(clone)], check=True)
    shutil.rmtree(store.repo_path)
    assert not (clone / ".dvc" / "cache").exists()

    cloned = DvcDatasetStore(repo_path=str(clone), remote_url=store.remote_url)
    assert cloned.list_versions() == [v1, v2]
    restored = cloned.restore(version_id=v1.version_id, dest=tmp_path / "restored.parquet")
    assert _md5(restored) == v1.md5
    pd.testing.assert_frame_equal(cloned.load(version_id=v2.version_id), _frame(15))

    # A corrupted remote object is detected, and nothing is left at the destination.
    obj = tmp_path / "remote" / "files" / "md5" / v1.md5[:2] / v1.md5[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"not the data")
    with pytest.raises(DatasetIntegrityError):
        cloned.restore(version_id=v1.version_id, dest=tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_commit_in_a_clone_continues_numbering(store: DvcDatasetStore, tmp_path: Path) -> None:
    store.commit(frames={"training": _frame(8)}, message="v1")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", store.repo_path, str(clone)], check=True)
    cloned = DvcDatasetStore(repo_path=str(clone), remote_url=store.remote_url)
    v2 = cloned.commit(frames={"training": _frame(9)}, message="from the clone")
    assert v2.version_id == "dataset-v0002"
    assert _git(clone, "log", "-1", "--format=%an <%ae>").strip() == (
        "hitl-pipeline <hitl-pipeline@localhost>"
    )


@pytest.mark.parametrize("crash_in", ["dvc_add_done", "_make_tag", "_push"])
def test_a_half_done_commit_is_finished_by_the_next_one(
    store: DvcDatasetStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str
) -> None:
    v1 = store.commit(frames={"training": _frame(10)}, message="v1")
    new = _frame(14)

    class Crash(RuntimeError):
        pass

    def boom(*args: object, **kwargs: object) -> None:
        raise Crash(crash_in)

    if crash_in == "dvc_add_done":
        # Dies after `dvc add`, before the git commit: .dvc files changed but uncommitted.
        real_git = DvcDatasetStore._git

        def git_dies_on_commit(self: DvcDatasetStore, *args: str, check: bool = True) -> str:
            if args[0] == "commit":
                raise Crash("commit")
            return real_git(self, *args, check=check)

        monkeypatch.setattr(DvcDatasetStore, "_git", git_dies_on_commit)
    else:
        monkeypatch.setattr(DvcDatasetStore, crash_in, boom)
    with pytest.raises(Crash):
        store.commit(frames={"training": new}, message="v2")
    monkeypatch.undo()

    v2 = store.commit(frames={"training": new}, message="v2, re-run")
    assert v2.version_id == "dataset-v0002"
    assert [v.version_id for v in store.list_versions()] == ["dataset-v0001", "dataset-v0002"]
    repo = Path(store.repo_path)
    assert _git(repo, "status", "--porcelain") == ""
    assert len(_git(repo, "log", "--format=%H").split()) == 3  # set-up, v1, v2: no leftovers
    assert {v1.md5, v2.md5} <= _remote_objects(tmp_path / "remote")
    restored = store.restore(version_id="dataset-v0002", dest=tmp_path / "v2.parquet")
    assert _md5(restored) == v2.md5


def test_concurrent_commits_are_serialised(store: DvcDatasetStore, tmp_path: Path) -> None:
    """Two writers at once (threads here; the file lock works across processes alike)."""
    frames = [_frame(6), _frame(7)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        versions = list(
            pool.map(lambda f: store.commit(frames={"training": f}, message="race"), frames)
        )
    assert sorted(v.version_id for v in versions) == ["dataset-v0001", "dataset-v0002"]
    assert store.list_versions() == sorted(versions, key=lambda v: v.version_id)
    for version, frame in zip(versions, frames, strict=True):
        pd.testing.assert_frame_equal(store.load(version_id=version.version_id), frame)
    assert _git(Path(store.repo_path), "status", "--porcelain") == ""


def test_empty_frames_round_trip(store: DvcDatasetStore) -> None:
    empty = _frame(4).iloc[0:0]
    version = store.commit(frames={"training": _frame(4), "human_holdout": empty}, message="e")
    loaded = store.load(version_id=version.version_id, name="human_holdout")
    assert loaded.empty and list(loaded.columns) == list(empty.columns)
    # Dtypes survive (an empty categorical loses its category list: Parquet stores none).
    assert loaded.dtypes.astype(str).to_dict() == empty.dtypes.astype(str).to_dict()


def test_rejects_bad_frame_sets(store: DvcDatasetStore) -> None:
    with pytest.raises(ValueError, match="training"):
        store.commit(frames={"edge_cases": _frame(3)}, message="no training frame")
    with pytest.raises(ValueError, match="invalid frame name"):
        store.commit(frames={"training": _frame(3), "../x": _frame(3)}, message="bad name")
