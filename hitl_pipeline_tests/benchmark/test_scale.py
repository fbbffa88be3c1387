"""``hitl-pipeline benchmark-scale`` end to end on a small size: scale.json and its fields."""

import json

import pytest

from hitl_pipeline.benchmark.scale import parse_sizes
from hitl_pipeline.cli import main as cli

REQUIRED = ("rows", "seconds", "rows_per_second", "peak_rss_mb", "bare_predict_rows_per_second")


def test_benchmark_scale_writes_every_required_figure(tmp_path, capsys):
    out = tmp_path / "scale"
    code = cli(["benchmark-scale", "--rows", "20000", "--out", str(out), "--chunk-rows", "6000"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "20,000" in printed and "scale.json" in printed

    report = json.loads((out / "scale.json").read_text(encoding="utf-8"))
    (size,) = report["sizes"]
    for key in REQUIRED:
        assert key in size, key
    assert size["rows"] == 20_000  # the demo stream's rows are all valid
    assert size["seconds"] > 0 and size["rows_per_second"] == pytest.approx(
        20_000 / size["seconds"], rel=0.01
    )
    assert size["bare_predict_rows_per_second"] > 0
    # the baseline is the fastest bare pass: the one interleaved with scoring, or after
    assert size["bare_predict_seconds"] == min(
        size["bare_predict_seconds_interleaved"], size["bare_predict_seconds_after"]
    )
    assert size["cpu_seconds"] > 0 and size["bare_predict_cpu_seconds"] > 0
    assert size["cpu_ratio_to_bare"] == pytest.approx(
        size["bare_predict_cpu_seconds"] / size["cpu_seconds"], abs=0.02
    )
    assert set(size["stage_cpu_seconds"]) == set(size["stage_seconds"])
    assert 100 < size["peak_rss_mb"] < 3000
    assert set(size["stage_seconds"]) == {"ingest", "inference", "monitoring", "selection"}
    # the steps did their work: a drift sample, a full review queue, every row routed
    assert size["drift_sample_rows"] == 20_000  # below the default sample of 50,000
    assert size["to_review"] == size["review_queue_rows"] == 100
    assert size["routing_candidates"] == 20_000  # up to max_candidates, every row kept
    # each row either goes to review or is auto-accepted as confident or over capacity
    reasons = size["reasons"]
    assert reasons["confident"] + reasons.get("over_capacity", 0) + size["to_review"] == 20_000
    settings = report["settings"]
    assert settings["chunk_rows"] == 6000
    assert settings["drift_sample_rows"] == 50_000 and settings["review_capacity"] == 100
    # the Parquet files are removed unless --keep-files
    assert not list((out / "rows-20000").glob("*.parquet"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100000,1e6, 10_000_000", [100_000, 1_000_000, 10_000_000]), ("5", [5])],
)
def test_sizes_are_parsed(text, expected):
    assert parse_sizes(text) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "a lot"], "--rows: 'a lot' is not a whole number"),
        (["--rows", "0"], "--rows: sizes must be >= 1"),
        (["--rows", ","], "--rows: give at least one size"),
        (["--rows", "10", "--chunk-rows", "0"], "--chunk-rows must be >= 1"),
    ],
)
def test_bad_options_are_named(tmp_path, capsys, argv, message):
    assert cli(["benchmark-scale", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "scale.json").exists()
