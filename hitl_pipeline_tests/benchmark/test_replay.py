"""The benchmark on a few hundred synthetic rows: outputs exist and figures agree.

Fast (a small logistic regression, two batches, one repeat, no Evidently); the real
figures come from running the benchmark itself on real streams, not from this test.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.benchmark.config import ORACLE_WINDOW_DAYS, BenchmarkConfig
from hitl_pipeline.benchmark.replay import oracle_settings, run_benchmark, run_settings
from hitl_pipeline.benchmark.report import labels_for_gain, pair_with_none, summarise, targets
from hitl_pipeline.benchmark.stream import infer_schema
from hitl_pipeline.core.datasets import split_holdout
from hitl_pipeline.core.gate import GatePolicy
from hitl_pipeline.core.loop import LoopSettings


def drifting_csv(path: Path, n: int = 700, seed: int = 0) -> Path:
    """Two numeric features, one categorical; from row 300 on, half the rows are of a
    new colour that is nearly always "up" (the old colours keep their rule)."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    after = np.arange(n) >= 300
    colour = np.where(
        after & (rng.uniform(size=n) < 0.5), "green", rng.choice(["red", "blue"], size=n)
    )
    flipped = colour == "green"
    score = np.where(flipped, 1.5, x) + 0.3 * z
    frame = pd.DataFrame(
        {
            "t": np.arange(n),  # stored newest first: the time column orders it
            "x": x,
            "z": z,
            "colour": colour,
            "row_id": np.arange(n),
            "y": np.where(score > 0, "up", "down"),
        }
    ).iloc[::-1]
    path = path / "stream.csv"
    frame.to_csv(path, index=False)
    return path


def small_config(data: Path, out: Path, **changes) -> BenchmarkConfig:
    """The small replay these tests share: batches of 200 after 300 seed rows, random,
    least confidence and the default at 10%, one repeat, a logistic regression, no drift
    check and no progress bar; ``changes`` replace any of it."""
    base = {
        "data": data,
        "target": "y",
        "time_column": "t",
        "drop": ("row_id",),
        "seed_rows": 300,
        "batch_rows": 200,
        "budgets": (0.1,),
        "strategies": ("random", "least_confidence", "default"),
        "repeats": 1,
        "out": out,
        "settings": LoopSettings().with_overrides({"training.estimator": "logistic_regression"}),
        "drift_check": False,
        "progress": False,
    }
    return BenchmarkConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    config = small_config(drifting_csv(folder), folder / "out", budgets=(0.05, 0.2))
    return config, run_benchmark(config)


def test_every_output_is_written(result):
    config, res = result
    names = {p.name for p in res.files}
    assert {
        "per_batch.csv",
        "summary.csv",
        "summary.json",
        "summary.md",
        "labels_for_gain.csv",
        "accuracy_by_batch.png",
        "gain_vs_labels.png",
    } <= names
    for path in res.files:
        assert path.stat().st_size > 0
    payload = json.loads((config.out / "summary.json").read_text(encoding="utf-8"))
    assert set(payload["targets"]) >= {
        "vs_least_confidence",
        "vs_random",
        "no_batch_more_than_1pt_below_never_retrained",
    }
    assert set(payload["targets"]["vs_random"]) == {"0.05", "0.2"}
    assert set(payload["settings"]) == {"routing", "training", "gate", "dataset", "drift", "audit"}


def test_per_batch_records_the_alarms_and_promotions_as_booleans(result):
    _, res = result
    per_batch = res.per_batch
    for column in ("data_drift_alarm", "concept_drift_alarm", "promoted", "drift_response"):
        assert per_batch[column].map(type).eq(bool).all(), column
    # no drift check in this run: no alarm, so no drift response
    assert not per_batch["data_drift_alarm"].any()
    # a promotion moves the champion version of the next batch
    for _, run in per_batch.groupby(["strategy", "budget", "repeat"]):
        run = run.sort_values("batch")
        expected = 1 + run["promoted"].astype(int).cumsum().shift(fill_value=0)
        assert run["champion"].tolist() == expected.tolist()
    summary = res.summary
    assert {"strategy", "budget", "accuracy", "gain_share", "worst_vs_none"} <= set(summary)
    # each batch paired with never retraining on the same rows; the rows themselves dropped
    assert "correct" not in per_batch
    assert per_batch["below_never_retrained"].map(type).eq(bool).all()
    none = per_batch[per_batch["strategy"] == "none"]
    assert (none["vs_none"] == 0).all() and not none["below_never_retrained"].any()
    runs = per_batch[per_batch["strategy"] == "default"].groupby(["budget", "repeat"])
    expected = runs["below_never_retrained"].sum().groupby("budget").mean()
    got = summary[summary["strategy"] == "default"].set_index("budget")["batches_below_none"]
    assert got.to_dict() == expected.astype(float).to_dict()


def test_label_counts_are_consistent(result):
    _, res = result
    per_batch = res.per_batch
    # seed 300 rows, then two batches of 200 (the last 100 rows do not fill a batch)
    assert sorted(per_batch["batch"].unique()) == [0, 1]
    none = per_batch[per_batch["strategy"] == "none"]
    oracle = per_batch[per_batch["strategy"] == "oracle"]
    assert none["labels"].sum() == 0
    assert (oracle["labels"] == oracle["rows"]).all()
    for budget, expected in ((0.05, 10), (0.2, 40)):
        for strategy in ("random", "least_confidence", "default"):
            rows = per_batch[(per_batch["strategy"] == strategy) & (per_batch["budget"] == budget)]
            assert rows["labels"].tolist() == [expected, expected]


def test_summary_figures_follow_from_the_per_batch_records(result):
    _, res = result
    summary = res.summary.set_index(["strategy", "budget"])
    per_batch = res.per_batch
    for budget in (0.05, 0.2):
        none = summary.loc[("none", budget), "accuracy"]
        oracle = summary.loc[("oracle", budget), "accuracy"]
        assert summary.loc[("none", budget), "gain_share"] == pytest.approx(0.0)
        assert summary.loc[("oracle", budget), "gain_share"] == pytest.approx(1.0)
        row = summary.loc[("random", budget)]
        mean = per_batch[(per_batch["strategy"] == "random") & (per_batch["budget"] == budget)][
            "accuracy"
        ].mean()
        assert row["accuracy"] == pytest.approx(mean)
        assert row["gain_share"] == pytest.approx((mean - none) / (oracle - none))
    # batch 0 is scored by the seed model whatever the strategy
    first = per_batch[per_batch["batch"] == 0]["accuracy"]
    assert first.nunique() == 1
    # the new segment's rule is learnt only from labels: the oracle wins accuracy back
    assert summary.loc[("oracle", 0.2), "accuracy"] > summary.loc[("none", 0.2), "accuracy"]


def test_targets_judge_the_default_against_the_spread_of_the_repeats():
    def row(strategy, budget, accuracy, std):
        return {
            "strategy": strategy,
            "budget": budget,
            "accuracy": accuracy,
            "accuracy_std": std,
            "gain_share": 0.5,
            "label_share": budget,
            "gain_over_none": 0.04,
            "worst_vs_none": -0.005,
            "batches_below_none": 1.0 if strategy == "random" else 0.0,
        }

    summary = pd.DataFrame(
        [
            row("default", 0.05, 0.750, 0.004),
            row("least_confidence", 0.05, 0.752, 0.001),  # behind by less than 0.004
            row("random", 0.05, 0.740, 0.003),
            row("default", 0.10, 0.760, 0.001),
            row("least_confidence", 0.10, 0.770, 0.002),  # behind by more than 0.002
            row("random", 0.10, 0.755, 0.002),
        ]
    )

    figures = targets(summary)

    assert figures["vs_least_confidence"]["0.05"].startswith("within one std")
    assert figures["vs_least_confidence"]["0.1"].startswith("behind")
    assert figures["vs_random"]["0.1"].startswith("ahead")
    assert figures["at_5pct_above_every_other_strategy"] is False
    assert figures["no_batch_more_than_1pt_below_never_retrained"] is True
    assert figures["no_batch_beyond_noise_more_than_1pt_below_never_retrained"] is True


def test_a_batch_is_below_never_retraining_when_the_drop_is_material_and_not_noise():
    gate = GatePolicy()
    n = 1000

    def record(strategy, correct):
        return {"strategy": strategy, "repeat": 0, "batch": 3, "correct": correct}

    def flips(lost, won):
        # right where never retraining was wrong on ``won`` rows, wrong where it was right
        # on ``lost`` others; never retraining is right on every row but the first 200
        none = np.arange(n) >= 200
        mine = none.copy()
        mine[200 : 200 + lost] = False
        mine[:won] = True
        return none, mine

    none, clear = flips(lost=50, won=0)  # 5 points worse on every row it changed
    _, small = flips(lost=5, won=0)  # worse beyond noise, but by half a point
    _, noisy = flips(lost=100, won=80)  # 2 points worse, in 180 changed rows each way
    records = [
        record("none", none),
        record("a", clear),
        record("b", small),
        record("c", noisy),
        {**record("d", clear), "repeat": 1},  # no never-retrained run of repeat 1
    ]

    paired = {r["strategy"]: r for r in pair_with_none(records, gate)}

    assert all("correct" not in r for r in paired.values())
    assert paired["none"]["vs_none"] == 0 and not paired["none"]["below_never_retrained"]
    assert paired["a"]["vs_none"] == pytest.approx(-0.05)
    assert paired["a"]["below_never_retrained"] and paired["a"]["vs_none_ci_high"] < 0
    assert paired["b"]["vs_none"] == pytest.approx(-0.005)
    assert paired["b"]["vs_none_ci_high"] < 0 and not paired["b"]["below_never_retrained"]
    assert paired["c"]["vs_none"] == pytest.approx(-0.02)
    assert paired["c"]["vs_none_ci_high"] > 0 and not paired["c"]["below_never_retrained"]
    assert "below_never_retrained" not in paired["d"]


def test_the_oracle_compares_a_window_of_its_labels_whatever_the_pipeline_default():
    pipeline = LoopSettings()
    assert pipeline.training.window_days is None  # routed labels alone: no window
    oracle = oracle_settings(pipeline)
    assert oracle.training.window_days == ORACLE_WINDOW_DAYS
    assert [name for name, _, _ in oracle.training.variants()] == [
        "weight 8",
        "weight 1",
        f"last {ORACLE_WINDOW_DAYS:g} days",
    ]
    # everything else is the pipeline's, and a window the settings give is kept
    assert dataclasses.replace(oracle.training, window_days=None) == pipeline.training
    assert (oracle.routing, oracle.gate, oracle.dataset) == (
        pipeline.routing,
        pipeline.gate,
        pipeline.dataset,
    )
    own = pipeline.with_overrides({"training.window_days": "4"})
    assert oracle_settings(own) == own


def test_each_repeat_splits_the_human_labels_anew_and_repeat_0_is_the_pipelines_split():
    pipeline = LoopSettings()
    runs = [run_settings(pipeline, budget=0.05, batch_rows=1000, repeat=r) for r in range(3)]
    assert runs[0].dataset == pipeline.dataset
    assert [run.routing.review_capacity for run in runs] == [50, 50, 50]
    assert [run.gate.seed for run in runs] == [0, 1, 2]
    ids = pd.DataFrame({"item_id": [f"item-{i}" for i in range(2000)]})
    held = [
        set(split_holdout(ids, fraction=0.15, salt=run.dataset.holdout_salt)[0]["item_id"])
        for run in runs
    ]
    assert held[0] == set(
        split_holdout(ids, fraction=0.15, salt=pipeline.dataset.holdout_salt)[0]["item_id"]
    )
    # three different splits of the same labels, each about 15% held out
    assert held[0] != held[1] and held[1] != held[2] and held[0] != held[2]
    assert all(250 <= len(h) <= 350 for h in held)
    # the same repeat gives the same split whatever the strategy or budget
    again = run_settings(pipeline, budget=0.1, batch_rows=1000, repeat=2)
    assert again.dataset.holdout_salt == runs[2].dataset.holdout_salt


def test_labels_for_gain_interpolates_from_zero():
    summary = pd.DataFrame(
        {
            "strategy": ["s", "s"],
            "budget": [0.1, 0.2],
            "label_share": [0.1, 0.2],
            "gain_share": [0.5, 1.0],
        }
    )

    table = labels_for_gain(summary).iloc[0]

    assert table["labels_for_50pct"] == pytest.approx(0.1)
    assert table["labels_for_80pct"] == pytest.approx(0.16)
    assert table["labels_for_90pct"] == pytest.approx(0.18)


def test_schema_inference_types_columns():
    frame = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "n": ["1.5", "2", None],
            "code": ["1", "2", "1"],
            "cat": ["x", "y", None],
            "target": [0, 1, 0],
        }
    )

    schema, typed = infer_schema(frame, target="target")

    kinds = {f.name: f.kind for f in schema.features}
    assert kinds == {"n": "numeric", "code": "categorical", "cat": "categorical"}
    assert schema.classes == ("0", "1")
    assert typed["label"].tolist() == ["0", "1", "0"]


def test_gain_share_spread_is_taken_over_repeats_against_each_repeats_own_baselines():
    def run(strategy, budget, repeat, accuracy):
        return {
            "strategy": strategy,
            "budget": budget,
            "repeat": repeat,
            "batch": 0,
            "accuracy": accuracy,
            "macro_f1": accuracy,
            "labels": 0,
            "rows": 100,
            "promoted": False,
            "below_never_retrained": False,
        }

    per_batch = pd.DataFrame(
        [
            run("none", 0.0, 0, 0.5),
            run("none", 0.0, 1, 0.5),
            run("oracle", 0.0, 0, 0.7),
            run("oracle", 0.0, 1, 0.9),
            run("random", 0.1, 0, 0.6),  # half of repeat 0's gain
            run("random", 0.1, 1, 0.6),  # a quarter of repeat 1's
        ]
    )

    summary = summarise(per_batch, (0.1,)).set_index("strategy")

    assert summary.loc["random", "gain_share"] == pytest.approx(0.1 / 0.3)  # on the means
    assert summary.loc["random", "gain_share_std"] == pytest.approx(np.std([0.5, 0.25], ddof=1))
    assert summary.loc["oracle", "gain_share_std"] == pytest.approx(0.0)


def test_baselines_label_as_many_items_as_the_default_did_in_each_batch(tmp_path):
    # the drift check on: where it alarms, the default answers with the drift response
    # (more labels); random and least confidence then get the same number in that batch
    config = small_config(
        drifting_csv(tmp_path, n=900),
        tmp_path / "out",
        # one drifted column of three is enough here
        settings=LoopSettings().with_overrides(
            {"training.estimator": "logistic_regression", "drift.drift_share": 0.3}
        ),
        drift_check=True,
    )

    per_batch = run_benchmark(config).per_batch

    spend = {
        s: per_batch[per_batch["strategy"] == s].sort_values("batch")["labels"].tolist()
        for s in ("random", "least_confidence", "default")
    }
    default = per_batch[per_batch["strategy"] == "default"].sort_values("batch")
    assert default["drift_response"].any()  # the new colour is a drift the check sees
    assert max(spend["default"]) > 20  # the response reviewed beyond the capacity of 20
    assert spend["random"] == spend["default"]
    assert spend["least_confidence"] == spend["default"]
