"""Versioned training data in a dedicated git + DVC repository.

Each dataset version is one git commit in that repository, tagged ``dataset-vNNNN``,
whose ``data/<name>.parquet.dvc`` files pin the content hashes of the Parquet files; the
bytes themselves live in the DVC cache and are pushed to the DVC remote (a local folder
by default, any DVC remote URL such as ``s3://bucket/prefix`` by configuration).

The commit message carries machine-readable trailers (``Dataset-Version``,
``Dataset-File: <path> md5:<md5> rows:<n>``) so that listing versions is one ``git``
call and needs neither DVC nor the data.

The DVC Python API is used in-process: one ``dvc`` CLI call costs more than a second of
start-up, the in-process calls take tens of milliseconds on small files.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.recovery import DVC, GIT, Fix
from hitl_pipeline.core.types import ITEM_ID, DatasetVersion
from hitl_pipeline.faults import fault_point
from hitl_pipeline.resources.errors import require_writable

logger = logging.getLogger(__name__)

TAG_PREFIX = "dataset-v"
PRIMARY_FRAME = "training"
DATA_DIR = "data"
GIT_USER_NAME = "hitl-pipeline"
GIT_USER_EMAIL = "hitl-pipeline@localhost"

_TRAILER_VERSION = "Dataset-Version"
_TRAILER_FILE = "Dataset-File"
_FILE_TRAILER_RE = re.compile(
    rf"^{_TRAILER_FILE}: (?P<path>\S+) md5:(?P<md5>[0-9a-f]{{32}}) rows:(?P<rows>\d+)$"
)
_VERSION_TRAILER_RE = re.compile(rf"^{_TRAILER_VERSION}: (?P<version>{TAG_PREFIX}\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_LOCK_FILE = ".hitl.lock"  # in the repository root, git-ignored
_PUSHED_FILE = "hitl-pushed-tags"  # in .git/: which tags reached the remote
# Variables that would point our git calls at another repository (e.g. inside a git hook).
_GIT_ENV_BLOCKLIST = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
)
_CHUNK = 1 << 20


class DatasetIntegrityError(RuntimeError):
    """Restored bytes do not match the content hash recorded for the version."""


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise a frame to Parquet deterministically.

    Same content gives the same bytes: the index is dropped, rows are put in ``item_id``
    order when that column exists (so that a merge producing the same rows in another order
    is not a new version), and the writer options are fixed. Parquet written by pyarrow has
    no timestamps; the embedded pandas metadata keeps dtypes round-tripping.

    Args:
        frame: The frame to serialise.

    Returns:
        The Parquet file content.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    canonical = frame
    if ITEM_ID in canonical.columns:
        canonical = canonical.sort_values(ITEM_ID, kind="mergesort")
    canonical = canonical.reset_index(drop=True)
    table = pa.Table.from_pandas(canonical, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="zstd",
        compression_level=3,
        version="2.6",
        use_dictionary=True,
        write_statistics=True,
        data_page_size=1 << 20,
        row_group_size=1 << 20,
    )
    return buffer.getvalue()


class DvcDatasetStore(dg.ConfigurableResource):
    """Dataset versions in a git + DVC repository, pushed to a DVC remote.

    The repository is created on the first ``commit``; reads never create anything. All
    writes hold an exclusive file lock, so several processes (Dagster run workers, the CLI)
    can share one repository.
    """

    repo_path: str = Field(description="Folder of the git + DVC repository holding the data.")
    remote_url: str = Field(
        description="DVC remote: a local folder (default set-up) or a URL such as s3://b/p."
    )
    remote_name: str = Field(default="storage", description="Name of the DVC remote.")

    # --- public API ------------------------------------------------------------------
    def check(self) -> None:
        """Fail early, naming the folder and its setting, if the repository or a local
        remote cannot be written (a remote URL is reached by ``dvc push`` itself).

        Raises:
            StoreUnavailable: A folder cannot be created or written.
        """
        folders = [("dataset repository", Path(self.repo_path), "HITL_HOME")]
        if "://" not in self.remote_url:
            folders.append(("DVC remote", Path(self._remote()), "HITL_DVC_REMOTE"))
        for what, folder, variable in folders:
            require_writable(folder, what=what, setting=variable)

    def commit(self, *, frames: Mapping[str, pd.DataFrame], message: str) -> DatasetVersion:
        """Store the frames as a new dataset version, or return the latest if unchanged.

        Args:
            frames: Frame name -> frame; written as ``data/<name>.parquet``. Must contain
                ``"training"``, which the returned version describes.
            message: What changed, for the commit message.

        Returns:
            The new version, or the latest one when every file is byte-identical to it.
        """
        if PRIMARY_FRAME not in frames:
            raise ValueError(f"frames must contain {PRIMARY_FRAME!r}, got {sorted(frames)}")
        for name in frames:
            if not _NAME_RE.match(name):
                raise ValueError(f"invalid frame name {name!r}: use letters, digits, _ and -")

        # Serialise before taking the lock: it is the slow, pure part.
        payloads = {
            self._data_path(name): frame_to_parquet_bytes(frame) for name, frame in frames.items()
        }
        rows = {self._data_path(name): len(frame) for name, frame in frames.items()}
        md5s = {path: hashlib.md5(data).hexdigest() for path, data in payloads.items()}

        self._ensure_repo()
        with self._lock(exclusive=True):
            self._recover()
            versions = self.list_versions()
            latest = versions[-1] if versions else None
            if latest is not None and dict(latest.files) == md5s:
                logger.info("dataset unchanged, keeping %s", latest.version_id)
                return latest
            version_id = self._next_version_id(versions)
            return self._write_version(version_id, payloads, rows, message)

    def latest(self) -> DatasetVersion | None:
        """The newest dataset version, or None when nothing was committed yet."""
        versions = self.list_versions()
        return versions[-1] if versions else None

    def list_versions(self) -> list[DatasetVersion]:
        """Every dataset version, oldest first."""
        if not (self._root() / ".git").exists():
            return []
        out = self._git(
            "for-each-ref",
            "--format=%(refname:short)%00%(objectname)%00%(*objectname)%00%(contents)%1e",
            f"refs/tags/{TAG_PREFIX}*",
        )
        versions = []
        for record in out.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            tag, obj, peeled, body = record.split("\x00", 3)
            if not re.fullmatch(rf"{TAG_PREFIX}\d+", tag):
                continue
            version = _parse_version(tag, peeled or obj, body)
            if version is not None:
                versions.append(version)
        return sorted(versions, key=lambda v: _version_number(v.version_id))

    def get(self, *, version_id: str) -> DatasetVersion:
        """One dataset version by id (e.g. ``dataset-v0003``); KeyError if unknown."""
        for version in self.list_versions():
            if version.version_id == version_id:
                return version
        raise KeyError(f"unknown dataset version {version_id!r} in {self._root()}")

    def load(self, *, version_id: str, name: str = PRIMARY_FRAME) -> pd.DataFrame:
        """Read one frame of a version through DVC (local cache first, then the remote).

        Args:
            version_id: The dataset version.
            name: The frame name within the version.

        Returns:
            The frame as committed (index reset, rows in canonical order).
        """
        buffer = io.BytesIO()
        self._copy_verified(version_id=version_id, name=name, out=buffer)
        buffer.seek(0)
        return pd.read_parquet(buffer)

    def restore(self, *, version_id: str, dest: Path, name: str = PRIMARY_FRAME) -> Path:
        """Write a byte-identical copy of one file of a version.

        Works from a fresh ``git clone`` of the dataset repository with only the DVC remote
        available: the bytes come from the local DVC cache if present, else the remote.

        Args:
            version_id: The dataset version.
            dest: Target file, or an existing folder (then ``<name>.parquet`` inside it).
            name: The frame name within the version.

        Returns:
            The path written.

        Raises:
            DatasetIntegrityError: The bytes do not hash to the md5 in the version's
                ``.dvc`` file (nothing is left at ``dest`` then).
        """
        target = Path(dest)
        if target.is_dir():
            target = target / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as fh:
                self._copy_verified(version_id=version_id, name=name, out=fh)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    # --- reading ---------------------------------------------------------------------
    def _copy_verified(self, *, version_id: str, name: str, out: Any) -> None:
        """Stream one file of a version into ``out``, checking its md5 on the way."""
        import dvc.api

        version = self.get(version_id=version_id)
        path = self._data_path(name)
        if path not in version.files:
            raise KeyError(f"{version_id} has no {path!r}; it holds {sorted(version.files)}")
        # The .dvc file at that commit is the authority on the content hash.
        expected = _md5_from_dvc_file(self._git("show", f"{version.git_rev}:{path}.dvc"))
        digest = hashlib.md5()
        with (
            self._lock(exclusive=False),
            dvc.api.open(
                path,
                repo=str(self._root()),
                rev=version.git_rev,
                remote=self.remote_name,
                mode="rb",
                config=self._dvc_remote_config(),
            ) as fh,
        ):
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise DatasetIntegrityError(
                f"{version_id}:{path} hashes to {digest.hexdigest()}, expected {expected}"
            )

    # --- writing ---------------------------------------------------------------------
    def _write_version(
        self,
        version_id: str,
        payloads: Mapping[str, bytes],
        rows: Mapping[str, int],
        message: str,
    ) -> DatasetVersion:
        from dvc.repo import Repo

        root = self._root()
        (root / DATA_DIR).mkdir(exist_ok=True)
        # A frame dropped from this version must not linger in the next commit.
        for stale in (root / DATA_DIR).glob("*.parquet.dvc"):
            data_path = f"{DATA_DIR}/{stale.name.removesuffix('.dvc')}"
            if data_path not in payloads:
                stale.unlink()
                (root / data_path).unlink(missing_ok=True)
        for path, data in payloads.items():
            _write_if_changed(root / path, data)
        fault_point("dataset.files_written")

        with Repo(str(root)) as repo:
            repo.scm_context.quiet = True  # we stage and commit ourselves
            repo.add([str(root / path) for path in payloads])
        fault_point("dataset.dvc_added")

        files = {
            path: _md5_from_dvc_file((root / f"{path}.dvc").read_text(encoding="utf-8"))
            for path in payloads
        }
        self._git("add", "-A", "--", DATA_DIR)
        self._git("commit", "-q", "-m", _commit_message(version_id, message, files, rows))
        self._make_tag(version_id)
        self._push([version_id])
        primary = self._data_path(PRIMARY_FRAME)
        return DatasetVersion(
            version_id=version_id,
            git_rev=self._git("rev-parse", "HEAD").strip(),
            md5=files[primary],
            rows=rows[primary],
            path=primary,
            files=files,
        )

    def _make_tag(self, version_id: str) -> None:
        self._git("tag", version_id, "HEAD")

    def _push(self, tags: list[str]) -> None:
        """Push the data of the given tags to the remote and remember that it is there."""
        from dvc.repo import Repo

        with Repo(str(self._root()), config=self._dvc_remote_config()) as repo:
            repo.push(revs=tags, workspace=False, remote=self.remote_name)
        pushed = self._pushed_tags()
        with self._pushed_file().open("a", encoding="utf-8") as fh:
            fh.writelines(f"{tag}\n" for tag in tags if tag not in pushed)

    def _recover(self) -> list[Fix]:
        """Finish or discard what a crashed ``commit`` left behind (lock held).

        Uncommitted ``.dvc`` changes are discarded (the caller rewrites the data anyway);
        a data commit that lost its tag gets it; tags whose data never reached the remote
        are pushed; data files that no longer match their committed ``.dvc`` files are
        checked out again.

        Returns:
            What was fixed.
        """
        fixes = []
        dirty = self._git("status", "--porcelain", "--", DATA_DIR).strip()
        if dirty:
            logger.warning("discarding uncommitted dataset changes left by an earlier crash")
            self._git("reset", "-q", "--hard", "HEAD")
            self._git("clean", "-q", "-f", "-d", "--", DATA_DIR)
            changed = ", ".join(line[3:] for line in dirty.splitlines())
            fixes.append(
                Fix(GIT, DATA_DIR, "discarded uncommitted changes", f"a crashed commit: {changed}")
            )
        head_message = self._git("log", "-1", "--format=%B", "HEAD", check=False)
        for line in head_message.splitlines():
            match = _VERSION_TRAILER_RE.match(line.strip())
            if match and not self._git("tag", "--list", match["version"]).strip():
                logger.warning("tagging %s, which an earlier crash left untagged", match["version"])
                self._make_tag(match["version"])
                fixes.append(
                    Fix(GIT, match["version"], "tagged", "a crash left its data commit untagged")
                )
        tags = [v.version_id for v in self.list_versions()]
        unpushed = [tag for tag in tags if tag not in self._pushed_tags()]
        if unpushed:
            logger.warning("pushing dataset versions an earlier crash left unpushed: %s", unpushed)
            self._push(unpushed)
            fixes.append(
                Fix(DVC, ", ".join(unpushed), "pushed to the remote", "a crash came before")
            )
        return fixes + self._restore_outputs()

    def _ensure_repo(self) -> None:
        """Create the repository on first use and keep its DVC remote in line with config."""
        from dvc.repo import Repo

        root = self._root()
        root.mkdir(parents=True, exist_ok=True)
        with self._lock(exclusive=True):
            created = not (root / ".git").exists()
            if created:
                self._git("init", "-q", "-b", "main")
                # Marker present from the start: a missing one means a clone (see _pushed_tags).
                self._pushed_file().touch()
            # Our own identity: CI machines may have no global git config at all.
            for key, value in (
                ("user.name", GIT_USER_NAME),
                ("user.email", GIT_USER_EMAIL),
                ("commit.gpgsign", "false"),
                ("tag.gpgsign", "false"),
            ):
                self._git("config", key, value)
            gitignore = root / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text(f"/{_LOCK_FILE}\n", encoding="utf-8")
            if not (root / ".dvc").exists():
                Repo.init(str(root)).close()
            # The remote goes into the committed config before any data commit: dvc.api
            # reads an old revision with the config of that revision (checked with DVC 3.67).
            remote = self._remote()
            with Repo(str(root)) as repo:
                conf = repo.config.read("repo")
                current = conf.get("remote", {}).get(self.remote_name, {}).get("url")
                wanted_core = {"remote": self.remote_name, "analytics": False}
                core = conf.get("core", {})
                if current != remote or any(core.get(k) != v for k, v in wanted_core.items()):
                    with repo.config.edit("repo") as edit:
                        edit["remote"].setdefault(self.remote_name, {})["url"] = remote
                        edit["core"].update(wanted_core)
            setup_files = [
                f
                for f in (".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
                if (root / f).exists()
            ]
            self._git("add", "--", *setup_files)
            # Only these paths: a crashed data commit may have left .dvc files staged.
            if self._git("diff", "--cached", "--name-only", "--", *setup_files).strip():
                message = f"Configure DVC remote {self.remote_name}"
                self._git("commit", "-q", "-m", message, "--", *setup_files)

    # --- recovery --------------------------------------------------------------------
    def recover(self) -> list[Fix]:
        """Repair what a killed ``commit`` left in the repository, as ``commit`` does first.

        Creates nothing: a missing repository has nothing to repair. When a commit holds
        the lock, nothing is done (that commit recovers before it writes).

        Returns:
            What was fixed (see ``_recover``).
        """
        if not (self._root() / ".git").exists():
            return []
        with self._try_lock() as locked:
            return self._recover() if locked else []

    def _restore_outputs(self) -> list[Fix]:
        """Check out again (``dvc checkout --force``) each data file that is missing or
        whose bytes differ from the md5 in its committed ``.dvc`` file (what ``dvc status``
        reports as deleted or modified), from the cache or else the remote; lock held.

        A crash between writing a data file and committing its ``.dvc`` file leaves the
        workspace ahead of git; ``dvc.api`` reads by revision and never notices, but
        ``dvc status`` does, and an unchanged next commit would keep the stray bytes.
        """
        from dvc.exceptions import CheckoutError
        from dvc.repo import Repo

        root = self._root()
        stale: dict[Path, str] = {}
        for dvc_file in sorted((root / DATA_DIR).glob("*.parquet.dvc")):
            expected = _md5_from_dvc_file(dvc_file.read_text(encoding="utf-8"))
            data = dvc_file.with_suffix("")
            if not data.exists():
                stale[dvc_file] = "missing"
            elif _file_md5(data) != expected:
                stale[dvc_file] = "modified"
        if not stale:
            return []
        targets = [str(path) for path in stale]
        with Repo(str(root), config=self._dvc_remote_config()) as repo:
            try:
                repo.checkout(targets=targets, force=True)
            except CheckoutError:  # the cache lacks the object
                logger.warning("dataset cache incomplete, pulling %s from the remote", targets)
                repo.pull(targets=targets, remote=self.remote_name, force=True)
        fixes = []
        for dvc_file, state in stale.items():
            data = dvc_file.with_suffix("")
            expected = _md5_from_dvc_file(dvc_file.read_text(encoding="utf-8"))
            if not data.exists() or _file_md5(data) != expected:
                raise DatasetIntegrityError(f"{data} could not be restored to md5 {expected}")
            logger.warning("restored %s (%s) to its committed version", data, state)
            fixes.append(
                Fix(
                    DVC,
                    str(data.relative_to(root)),
                    f"restored to the committed version (md5 {expected})",
                    f"{state} in the workspace, as a crash during a commit leaves it",
                )
            )
        return fixes

    @contextmanager
    def _try_lock(self) -> Iterator[bool]:
        """The exclusive lock if it is free at once: yields whether it was taken."""
        with (self._root() / _LOCK_FILE).open("a", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # --- helpers ---------------------------------------------------------------------
    def _root(self) -> Path:
        return Path(self.repo_path).expanduser().resolve()

    def _remote(self) -> str:
        if "://" in self.remote_url:
            return self.remote_url
        # Absolute, so that the committed config also works from a clone elsewhere.
        return str(Path(self.remote_url).expanduser().resolve())

    def _dvc_remote_config(self) -> dict[str, Any]:
        # Reads go to the configured remote whatever the config at that revision said.
        return {
            "core": {"remote": self.remote_name},
            "remote": {self.remote_name: {"url": self._remote()}},
        }

    @staticmethod
    def _data_path(name: str) -> str:
        return f"{DATA_DIR}/{name}.parquet"

    def _pushed_file(self) -> Path:
        return self._root() / ".git" / _PUSHED_FILE

    def _pushed_tags(self) -> set[str]:
        marker = self._pushed_file()
        if not marker.exists():
            # A clone: its tags came from a repository that had pushed them.
            tags = [v.version_id for v in self.list_versions()]
            marker.write_text("".join(f"{t}\n" for t in tags), encoding="utf-8")
            return set(tags)
        return set(marker.read_text(encoding="utf-8").split())

    @staticmethod
    def _next_version_id(versions: list[DatasetVersion]) -> str:
        number = max((_version_number(v.version_id) for v in versions), default=0) + 1
        return f"{TAG_PREFIX}{number:04d}"

    @contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        root = self._root()
        if not root.exists():
            yield
            return
        with (root / _LOCK_FILE).open("a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _git(self, *args: str, check: bool = True) -> str:
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_BLOCKLIST}
        env["GIT_TERMINAL_PROMPT"] = "0"
        result = subprocess.run(
            ["git", *args],
            cwd=self._root(),
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"git {' '.join(args)} failed in {self._root()}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout


def _commit_message(
    version_id: str, message: str, files: Mapping[str, str], rows: Mapping[str, int]
) -> str:
    # User text never forges a trailer line.
    body = "\n".join(
        f" {line}" if line.startswith("Dataset-") else line for line in message.strip().splitlines()
    )
    trailers = [f"{_TRAILER_VERSION}: {version_id}"] + [
        f"{_TRAILER_FILE}: {path} md5:{md5} rows:{rows[path]}"
        for path, md5 in sorted(files.items())
    ]
    return f"{version_id}: {body or 'dataset update'}\n\n" + "\n".join(trailers) + "\n"


def _parse_version(tag: str, commit: str, body: str) -> DatasetVersion | None:
    files: dict[str, str] = {}
    rows: dict[str, int] = {}
    for line in body.splitlines():
        match = _FILE_TRAILER_RE.match(line.strip())
        if match:
            files[match["path"]] = match["md5"]
            rows[match["path"]] = int(match["rows"])
    primary = f"{DATA_DIR}/{PRIMARY_FRAME}.parquet"
    if primary not in files:
        logger.warning("tag %s is not a dataset commit of ours, ignored", tag)
        return None
    return DatasetVersion(
        version_id=tag,
        git_rev=commit,
        md5=files[primary],
        rows=rows[primary],
        path=primary,
        files=files,
    )


def _version_number(version_id: str) -> int:
    return int(version_id.removeprefix(TAG_PREFIX))


def _md5_from_dvc_file(text: str) -> str:
    import yaml

    outs = (yaml.safe_load(text) or {}).get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise DatasetIntegrityError(f"unexpected .dvc file content: {text!r}")
    return str(outs[0]["md5"])


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_if_changed(path: Path, data: bytes) -> None:
    # Leaving identical files untouched lets DVC reuse its hash cache (keyed on mtime).
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
