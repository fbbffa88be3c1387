"""The benchmark on text: schema inference of text columns, and a replay of a small
synthetic text stream whose vocabulary shifts (with the drift check, so Evidently's text
drift runs inside the loop step)."""

from pathlib import Path

import pandas as pd
import pytest

from hitl_pipeline.benchmark.cli import add_arguments, config_from_args
from hitl_pipeline.benchmark.config import BenchmarkConfig
from hitl_pipeline.benchmark.replay import run_benchmark
from hitl_pipeline.benchmark.stream import infer_schema
from hitl_pipeline_tests.fixtures.text_data import posts


def _frame() -> pd.DataFrame:
    frame = posts(120, seed=1).drop(columns=["item_id"])
    frame["tag"] = ["a long but repeated tag value here"] * 120  # long, never varied
    return frame.reset_index(names="item_id").astype({"item_id": str})


@pytest.mark.parametrize(
    ("text_columns", "expected"),
    [
        (None, {"text": "text", "account_age": "numeric", "source": "categorical"}),
        (("text",), {"text": "text", "account_age": "numeric", "source": "categorical"}),
        (("text", "source"), {"text": "text", "source": "text"}),
        ((), {"text": "categorical", "account_age": "numeric"}),
    ],
    ids=["inferred", "named", "two-named", "none"],
)
def test_text_columns_named_or_inferred(text_columns, expected):
    schema, typed = infer_schema(_frame(), target="label", text_columns=text_columns)

    kinds = {f.name: f.kind for f in schema.features}
    assert {k: kinds[k] for k in expected} == expected
    assert kinds["tag"] == ("text" if text_columns and "tag" in text_columns else "categorical")
    assert typed["text"].map(type).eq(str).all()


def test_a_text_column_that_is_not_there_is_named():
    with pytest.raises(ValueError, match=r"--text-columns names column\(s\) not among the"):
        infer_schema(_frame(), target="label", text_columns=("body",))


def test_text_columns_flag_is_parsed():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", "x.csv", "--target", "label", "--seed-rows", "1", "--batch-rows", "1"]
    args = parser.parse_args([*base, "--text-columns", "text, title"])
    args.drop = ""

    assert config_from_args(args).text_columns == ("text", "title")
    args.text_columns = ""
    assert config_from_args(args).text_columns == ()
    args.text_columns = None
    assert config_from_args(args).text_columns is None


def test_a_text_stream_replays_and_retraining_recovers_from_the_vocabulary_shift(tmp_path):
    before = posts(700, seed=1)
    after = posts(600, seed=2, drifted=True)
    stream = pd.concat([before, after], ignore_index=True).drop(columns=["item_id"])
    stream["t"] = range(len(stream))
    path = tmp_path / "posts.parquet"
    stream.to_parquet(path, index=False)
    config = BenchmarkConfig(
        data=path,
        target="label",
        time_column="t",
        text_columns=("text",),
        seed_rows=500,
        batch_rows=200,
        budgets=(0.1,),
        strategies=("none", "default"),
        repeats=1,
        out=tmp_path / "out",
        progress=False,
    )

    result = run_benchmark(config)

    per_batch = result.per_batch
    drifted = per_batch[per_batch["batch"] >= 1]  # batch 0 is the last undrifted one
    assert drifted.groupby("strategy")["data_drift_alarm"].all().all()
    mean = per_batch.groupby("strategy")["accuracy"].mean()
    # the new words leave the first model near the majority class; labels recover it
    assert mean["default"] > mean["none"] + 0.05
    assert Path(config.out, "summary.md").exists()
