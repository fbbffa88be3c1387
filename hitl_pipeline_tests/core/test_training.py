"""Training: reproducible, better than chance, evaluated per class; params round-trip."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.training import (
    TrainingParams,
    build_pipeline,
    evaluate_model,
    sample_weights,
    train_model,
)
from hitl_pipeline.core.types import BatchSchema, FeatureSpec

SCHEMA = BatchSchema(
    features=(
        FeatureSpec("x", "numeric"),
        FeatureSpec("y", "numeric", nullable=True),
        FeatureSpec("colour", "categorical", categories=("red", "green", "blue")),
    ),
    classes=("a", "b", "c"),
)
ESTIMATORS = ["hist_gradient_boosting", "logistic_regression"]
# fewer boosting rounds than the default keep the tests quick; the behaviour is the same
QUICK = {"max_iter": 60}


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """Three classes set by x (and colour for class c), with 10% label noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 3, size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x < 1, "a", np.where((x < 2) | (colour == "red"), "b", "c"))
    noisy = rng.random(n) < 0.1
    label[noisy] = rng.choice(["a", "b", "c"], size=noisy.sum())
    y = rng.normal(size=n)
    y[rng.random(n) < 0.1] = np.nan  # nulls must not break training
    return pd.DataFrame(
        {
            "item_id": [f"r{seed}-{k:04d}" for k in range(n)],
            "x": x,
            "y": y,
            "colour": colour,
            "label": label,
        }
    )


TRAIN = make_frame(600, seed=1)
TEST = make_frame(300, seed=2)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_same_data_in_any_order_gives_identical_predictions(estimator):
    params = TrainingParams(estimator=estimator, **QUICK)

    one = train_model(TRAIN, SCHEMA, params).model
    two = train_model(TRAIN.sample(frac=1.0, random_state=3), SCHEMA, params).model

    np.testing.assert_array_equal(
        one.predict_proba(TEST[SCHEMA.feature_names]), two.predict_proba(TEST[SCHEMA.feature_names])
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_much_better_than_chance(estimator):
    result = train_model(TRAIN, SCHEMA, TrainingParams(estimator=estimator, **QUICK))

    metrics = evaluate_model(result.model, TEST, SCHEMA)

    # chance is 1/3; the noise-free rule scores ~0.93 on this data
    assert metrics["accuracy"] > 0.8
    assert metrics["macro_f1"] > 0.75
    assert result.metrics["train_rows"] == 600
    assert result.params["estimator"] == estimator


def test_evaluation_figures_on_a_known_case():
    class Echo:
        """Predicts the colour's first letter: a fake with known errors."""

        classes_ = np.array(["a", "b", "c"])

        def predict(self, features: pd.DataFrame) -> np.ndarray:
            return features["colour"].map({"red": "a", "green": "b", "blue": "c"}).to_numpy()

    frame = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5"],
            "x": 0.0,
            "y": 0.0,
            "colour": ["red", "red", "green", "blue", "blue"],
            "label": ["a", "b", "b", "c", None],  # the unlabelled row is ignored
        }
    )

    metrics = evaluate_model(Echo(), frame, SCHEMA)

    assert metrics["n_rows"] == 4
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["recall__a"] == 1.0
    assert metrics["recall__b"] == 0.5
    assert metrics["recall__c"] == 1.0
    # per-class F1: a 2/3, b 2/3, c 1
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_evaluation_of_no_rows():
    metrics = evaluate_model(object(), TEST.iloc[0:0], SCHEMA)

    assert metrics["n_rows"] == 0
    assert np.isnan(metrics["accuracy"])


def test_unknown_category_at_prediction_time_is_ignored():
    model = train_model(TRAIN, SCHEMA, TrainingParams(**QUICK)).model

    proba = model.predict_proba(TEST[SCHEMA.feature_names].assign(colour="purple"))

    assert proba.shape == (300, 3)


def test_human_rows_weigh_more():
    frame = pd.DataFrame({"label_source": ["seed", "human", None]})

    assert sample_weights(frame, TrainingParams(human_weight=5.0)).tolist() == [1.0, 5.0, 1.0]
    assert (
        sample_weights(frame.drop(columns="label_source"), TrainingParams()).tolist() == [1.0] * 3
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_human_weight_lets_few_corrections_outvote_stale_seed_labels(estimator):
    # the seed labels say "a" for blue items with x < 1 (about 70 rows); 30 human rows
    # say that segment is now "c"
    segment = (TEST["x"] < 1) & (TEST["colour"] == "blue")
    human = TEST[segment].head(30)
    human = human.assign(label="c", label_source="human", item_id=human["item_id"] + "-h")
    frame = pd.concat([TRAIN.assign(label_source="seed"), human], ignore_index=True)
    fresh = make_frame(3000, seed=9)
    probe = fresh[(fresh["x"] < 1) & (fresh["colour"] == "blue")][SCHEMA.feature_names]

    def share_c(weight: float) -> float:
        model = train_model(frame, SCHEMA, TrainingParams(estimator=estimator, human_weight=weight))
        return float((model.model.predict(probe) == "c").mean())

    assert share_c(20.0) > share_c(1.0) + 0.2


def test_the_human_weight_is_chosen_on_the_selection_rows():
    # 30 human rows relabel blue x < 1 as "c"; whether that is right, only the selection
    # rows (labels the model does not train on) can say
    segment = (TEST["x"] < 1) & (TEST["colour"] == "blue")
    human = TEST[segment].head(30)
    human = human.assign(label="c", label_source="human", item_id=human["item_id"] + "-h")
    frame = pd.concat([TRAIN.assign(label_source="seed"), human], ignore_index=True)
    fresh = make_frame(600, seed=11)
    fresh = fresh[(fresh["x"] < 1) & (fresh["colour"] == "blue")]
    params = TrainingParams(human_weight=20.0, compare_weight=1.0, **QUICK)

    moved = train_model(frame, SCHEMA, params, select_on=fresh.assign(label="c"))
    stayed = train_model(frame, SCHEMA, params, select_on=fresh.assign(label="a"))
    plain = train_model(frame, SCHEMA, params)

    assert moved.metrics["human_weight_used"] == 20.0
    assert stayed.metrics["human_weight_used"] == 1.0
    accuracies = {k: v for k, v in stayed.metrics.items() if k.startswith("select.accuracy")}
    assert accuracies["select.accuracy.w1"] > accuracies["select.accuracy.w20"]
    assert "human_weight_used" not in plain.metrics  # no selection rows: no comparison
    probe = fresh[SCHEMA.feature_names]
    assert (stayed.model.predict(probe) == "a").mean() > (moved.model.predict(probe) == "a").mean()


def test_a_window_variant_forgets_stale_labels_when_the_selection_rows_say_so():
    # the concept of the whole space changed: seed labels are wrong everywhere, the last
    # few "days" of human labels are right; only a model that forgets the seed follows
    rng = np.random.default_rng(5)
    flipped = {"a": "b", "b": "c", "c": "a"}
    stamps = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 3, size=400), unit="D"
    )
    fresh = make_frame(400, seed=21)
    human = fresh.assign(
        label=fresh["label"].map(flipped),
        label_source="human",
        labelled_at=stamps,
        item_id=fresh["item_id"] + "-h",
    )
    frame = pd.concat([TRAIN.assign(label_source="seed"), human], ignore_index=True)
    probe = make_frame(300, seed=23)
    select = probe.assign(label=probe["label"].map(flipped))
    params = TrainingParams(human_weight=2.0, compare_weight=None, window_days=7.0, **QUICK)

    result = train_model(frame, SCHEMA, params, select_on=select)
    no_window = train_model(frame, SCHEMA, replace(params, window_days=None), select_on=select)

    assert result.metrics["window_days_used"] == 7.0
    assert result.metrics["train_rows"] == 400  # the seed rows were dropped
    assert set(result.metrics) >= {
        "select.accuracy.w2",
        "select.accuracy.last7d",
    }
    assert evaluate_model(result.model, select, SCHEMA)["accuracy"] > (
        evaluate_model(no_window.model, select, SCHEMA)["accuracy"] + 0.2
    )


def test_a_window_with_too_few_rows_is_not_tried():
    human = TEST.head(20).assign(
        label_source="human",
        labelled_at=pd.Timestamp("2026-01-01", tz="UTC"),
        item_id=TEST["item_id"].head(20) + "-h",
    )
    frame = pd.concat([TRAIN.assign(label_source="seed"), human], ignore_index=True)
    params = TrainingParams(compare_weight=None, window_days=7.0, min_window_rows=50, **QUICK)

    result = train_model(frame, SCHEMA, params, select_on=TEST.tail(50))

    assert result.metrics["window_days_used"] == 0.0
    assert [k for k in result.metrics if k.startswith("select.accuracy")] == ["select.accuracy.w8"]


def test_params_round_trip_and_refuse_unknown_keys():
    params = TrainingParams(estimator="logistic_regression", seed=3, c=0.5)

    assert TrainingParams.from_dict(params.to_dict()) == params
    # MLflow hands parameters back as strings
    assert TrainingParams.from_dict({"seed": "4", "learning_rate": "0.1"}) == TrainingParams(
        seed=4, learning_rate=0.1
    )
    assert TrainingParams.from_dict({"compare_weight": "None"}).compare_weight is None
    assert TrainingParams.from_dict({"compare_weight": "2"}).compare_weight == 2.0
    with pytest.raises(ValueError, match="unknown training parameter"):
        TrainingParams.from_dict({"depth": 3})
    with pytest.raises(ValueError, match="unknown estimator"):
        TrainingParams.from_dict({"estimator": "svm"})


def test_pipeline_uses_only_sklearn_classes():
    pipeline = build_pipeline(SCHEMA, TrainingParams())

    modules = {type(step).__module__.split(".")[0] for _, step in pipeline.steps}
    modules |= {
        type(t).__module__.split(".")[0]
        for _, t, _ in pipeline.named_steps["preprocess"].transformers
    }
    assert modules == {"sklearn"}


def test_training_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        train_model(TRAIN.assign(label="a"), SCHEMA, TrainingParams())
