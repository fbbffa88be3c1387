"""Training: reproducible, better than chance, evaluated per class; params round-trip."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from hitl_pipeline.core.training import (
    ModelFactoryError,
    TrainingParams,
    build_pipeline,
    evaluate_model,
    model_factory_version,
    sample_weights,
    train_model,
)
from hitl_pipeline.core.types import BatchSchema, FeatureSpec
from hitl_pipeline_tests.fixtures.text_data import posts

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


def test_a_half_life_halves_a_human_label_per_period_of_age():
    newest = pd.Timestamp("2026-01-05", tz="UTC")
    frame = pd.DataFrame(
        {
            "label_source": ["seed", "human", "human", "human", "human"],
            "labelled_at": [
                pd.NaT,
                newest,
                newest - pd.Timedelta(days=2),
                newest - pd.Timedelta(days=4),
                pd.NaT,
            ],
        }
    )
    params = TrainingParams(human_weight=8.0, half_life_days=2.0)

    assert sample_weights(frame, params).tolist() == [1.0, 8.0, 4.0, 2.0, 8.0]
    assert sample_weights(frame, TrainingParams(human_weight=8.0)).tolist() == [1.0] + [8.0] * 4
    # only the decay variant decays; it comes last and names its half-life
    names = [name for name, _, _ in params.variants()]
    assert names[-1] == "half-life 2 days"
    assert [v.half_life_days for _, v, _ in params.variants()][:-1] == [None] * (len(names) - 1)
    with pytest.raises(ValueError, match="half_life_days must be > 0"):
        TrainingParams(half_life_days=0.0)


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


def _concept_changed(*, new_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seed rows, 400 older human labels (day 0) that still follow the seed's concept and
    ``new_rows`` newest ones (day 10) that follow a new one; and selection rows of the new
    concept."""
    flipped = {"a": "b", "b": "c", "c": "a"}
    day0 = pd.Timestamp("2026-01-01", tz="UTC")
    old = make_frame(400, seed=seed).assign(label_source="human", labelled_at=day0)
    new = make_frame(new_rows, seed=seed + 2)
    new = new.assign(
        label=new["label"].map(flipped),
        label_source="human",
        labelled_at=day0 + pd.Timedelta(days=10),
    )
    old["item_id"] = old["item_id"] + "-old"
    new["item_id"] = new["item_id"] + "-new"
    frame = pd.concat([TRAIN.assign(label_source="seed"), old, new], ignore_index=True)
    probe = make_frame(300, seed=seed + 4)
    return frame, probe.assign(label=probe["label"].map(flipped))


def test_a_decay_variant_forgets_older_human_labels_when_the_selection_rows_say_so():
    # only decayed weights let the newest labels lead
    frame, select = _concept_changed(new_rows=400, seed=31)
    params = TrainingParams(compare_weight=None, window_days=None, half_life_days=2.0, **QUICK)

    result = train_model(frame, SCHEMA, params, select_on=select)

    assert result.metrics["half_life_days_used"] == 2.0
    accuracies = {k: v for k, v in result.metrics.items() if k.startswith("select.accuracy")}
    assert set(accuracies) == {"select.accuracy.w8", "select.accuracy.halflife2d"}
    assert accuracies["select.accuracy.halflife2d"] > accuracies["select.accuracy.w8"] + 0.2


def test_a_seed_window_keeps_the_seed_and_forgets_older_human_labels():
    # the seed plus the newest labels follows the new concept
    frame, select = _concept_changed(new_rows=200, seed=41)
    params = TrainingParams(
        compare_weight=None, window_days=None, seed_window_days=(2.0,), human_weight=8.0, **QUICK
    )

    result = train_model(frame, SCHEMA, params, select_on=select)

    assert [name for name, _, _ in params.variants()] == ["weight 8", "seed and last 2 days"]
    assert result.metrics["window_days_used"] == 2.0
    assert result.metrics["window_keeps_seed"] == 1.0
    assert result.metrics["train_rows"] == len(TRAIN) + 200  # seed kept, day 0 dropped
    accuracies = {k: v for k, v in result.metrics.items() if k.startswith("select.accuracy")}
    assert accuracies["select.accuracy.seedlast2d"] > accuracies["select.accuracy.w8"] + 0.2


def test_extra_windows_are_variants_of_their_own_and_settings_parse_from_text():
    params = TrainingParams(window_days=2.0, extra_window_days=("4", "2", "8"))

    assert params.extra_window_days == (4.0, 2.0, 8.0)
    names = [name for name, _, _ in params.variants()]
    assert names == ["weight 8", "weight 1", "last 2 days", "last 4 days", "last 8 days"]
    # MLflow hands a tuple back as its text
    assert TrainingParams.from_dict({"seed_window_days": "(4.0, 8.0)"}).seed_window_days == (
        4.0,
        8.0,
    )
    with pytest.raises(ValueError, match="seed_window_days must all be > 0"):
        TrainingParams(seed_window_days=(0.0,))


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


# --- text columns and the user's own model -------------------------------------------
TEXT_SCHEMA = BatchSchema(
    features=(
        FeatureSpec("text", "text"),
        FeatureSpec("account_age", "numeric"),
        FeatureSpec("source", "categorical"),
    ),
    classes=("ok", "toxic", "spam"),
)
USER = "hitl_pipeline_tests.fixtures.user_model:"


def test_mixed_text_and_tabular_default_is_tfidf_and_a_linear_model():
    train, test = posts(600, seed=1), posts(300, seed=2)
    test.loc[test.index[:5], "text"] = None  # missing text reads as an empty post

    result = train_model(train, TEXT_SCHEMA, TrainingParams())

    model = result.model
    assert isinstance(model.named_steps["classifier"], LogisticRegression)
    preprocess = model.named_steps["preprocess"]
    assert [name for name, _, _ in preprocess.transformers] == [
        "numeric",
        "categorical",
        "text_text",
    ]
    assert evaluate_model(model, test, TEXT_SCHEMA)["accuracy"] > 0.9
    # a vocabulary the model never saw leaves it guessing the majority class
    drifted = posts(300, seed=3, drifted=True)
    assert evaluate_model(model, drifted, TEXT_SCHEMA)["accuracy"] < 0.75


def test_auto_estimator_stays_gradient_boosting_for_tabular_schemas():
    assert TrainingParams().resolved_estimator(SCHEMA) == "hist_gradient_boosting"
    assert TrainingParams().resolved_estimator(TEXT_SCHEMA) == "logistic_regression"
    model = build_pipeline(SCHEMA, TrainingParams())
    assert type(model.named_steps["classifier"]).__name__ == "HistGradientBoostingClassifier"


def test_gradient_boosting_on_text_is_refused_with_the_setting_to_change():
    with pytest.raises(ValueError, match="set the training parameter estimator to auto"):
        build_pipeline(TEXT_SCHEMA, TrainingParams(estimator="hist_gradient_boosting"))


def test_user_factory_model_is_fitted_with_its_own_classes():
    train, test = posts(600, seed=1), posts(300, seed=2)
    params = TrainingParams(model_factory=USER + "make_model")

    result = train_model(train, TEXT_SCHEMA, params)

    assert type(result.model.named_steps["features"].transformers_[1][1]).__name__ == "TextStats"
    assert sorted(result.model.classes_) == ["ok", "spam", "toxic"]
    assert evaluate_model(result.model, test, TEXT_SCHEMA)["accuracy"] > 0.9
    assert result.params["model_factory"] == USER + "make_model"
    assert model_factory_version(USER + "make_model").startswith("sha256:")


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("no_such_package.models:make", "cannot import module 'no_such_package.models'"),
        (USER + "missing", "has no attribute 'missing'"),
        (USER + "NOT_A_FUNCTION", "'NOT_A_FUNCTION' is not callable (of type int)"),
        (USER + "make_raising", "calling it raised RuntimeError: no GPU found"),
        (USER + "make_without_proba", "returned a Pipeline without predict_proba"),
        (USER + "make_fitted", "returned an already fitted LogisticRegression"),
        (
            USER + "make_integer_labels",
            "classes_ are ['0', '1', '2'] but the labels were ['ok', 'spam', 'toxic']",
        ),
    ],
)
def test_a_bad_factory_is_refused_naming_the_problem_and_the_setting(factory, expected):
    params = TrainingParams(model_factory=factory)

    with pytest.raises(ModelFactoryError) as caught:
        train_model(posts(200, seed=4), TEXT_SCHEMA, params)

    message = str(caught.value)
    assert message.startswith(f"model_factory {factory!r}: ")
    assert expected in message
    assert "params.yaml" in message and "run config" in message


@pytest.mark.parametrize("spec", ["make_model", "a.b", "pkg.mod:", "pkg.mod:f:g", "1pkg:f"])
def test_a_factory_setting_of_the_wrong_form_is_refused_at_once(spec):
    with pytest.raises(ValueError, match=r"is not of the form 'package\.module:function'"):
        TrainingParams.from_dict({"model_factory": spec})


def test_factory_setting_round_trips_as_mlflow_returns_it():
    params = TrainingParams(model_factory=USER + "make_model", text_ngram_max=1)
    as_text = {k: str(v) for k, v in params.to_dict().items()}

    assert TrainingParams.from_dict(as_text) == params
    assert TrainingParams.from_dict({"model_factory": "None"}).model_factory is None
