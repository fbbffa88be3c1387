"""Scoring: probability columns in schema order, and the uncertainty figures."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from hitl_pipeline.core.inference import batch_confidence, score_batch, uncertainty
from hitl_pipeline.core.types import BatchSchema, FeatureSpec

SCHEMA = BatchSchema(
    features=(FeatureSpec("x", "numeric"), FeatureSpec("colour", "categorical")),
    classes=("cat", "dog", "fox"),
)


class FixedModel:
    """Returns the given probabilities whatever the input (a stand-in for a pipeline)."""

    def __init__(self, classes: list[str], proba: list[list[float]]) -> None:
        self.classes_ = np.array(classes)
        self._proba = np.array(proba)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        assert list(features.columns) == ["x", "colour"]
        return self._proba[: len(features)]


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"item_id": [f"i{k}" for k in range(n)], "x": np.arange(n, dtype=float), "colour": "red"}
    )


@pytest.mark.parametrize(
    ("model_classes", "proba", "expected_row"),
    [
        # all classes, in schema order
        (["cat", "dog", "fox"], [0.7, 0.2, 0.1], {"cat": 0.7, "dog": 0.2, "fox": 0.1}),
        # model orders classes differently: columns still follow the schema
        (["fox", "cat", "dog"], [0.1, 0.7, 0.2], {"cat": 0.7, "dog": 0.2, "fox": 0.1}),
        # model never saw "fox": it gets 0
        (["cat", "dog"], [0.4, 0.6], {"cat": 0.4, "dog": 0.6, "fox": 0.0}),
    ],
)
def test_probability_columns_follow_the_schema(model_classes, proba, expected_row):
    scored = score_batch(FixedModel(model_classes, [proba]), frame(1), SCHEMA, model_version="7")

    got = {c: scored[f"proba__{c}"].iloc[0] for c in SCHEMA.classes}
    assert got == pytest.approx(expected_row)
    assert scored["predicted_label"].iloc[0] == max(expected_row, key=expected_row.get)


@pytest.mark.parametrize(
    ("proba", "predicted", "confidence", "margin", "entropy"),
    [
        ([1.0, 0.0, 0.0], 0, 1.0, 1.0, 0.0),
        ([1 / 3, 1 / 3, 1 / 3], 0, 1 / 3, 0.0, 1.0),  # a tie goes to the first class
        ([0.5, 0.5, 0.0], 0, 0.5, 0.0, math.log(2) / math.log(3)),
        ([0.1, 0.3, 0.6], 2, 0.6, 0.3, None),
    ],
)
def test_uncertainty_figures(proba, predicted, confidence, margin, entropy):
    p = np.array([proba])
    if entropy is None:
        entropy = -sum(v * math.log(v) for v in proba) / math.log(3)

    got_pred, got_conf, got_margin, got_entropy = uncertainty(p)

    assert got_pred[0] == predicted
    assert got_conf[0] == pytest.approx(confidence)
    assert got_margin[0] == pytest.approx(margin)
    assert got_entropy[0] == pytest.approx(entropy)


def test_output_columns_and_metadata():
    model = FixedModel(["cat", "dog", "fox"], [[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    batch = frame(2).assign(extra="ignored")
    batch.index = [10, 20]

    scored = score_batch(model, batch, SCHEMA, model_version="3")

    assert list(scored.columns) == [
        "item_id",
        "x",
        "colour",
        "proba__cat",
        "proba__dog",
        "proba__fox",
        "predicted_label",
        "confidence",
        "margin",
        "entropy",
        "model_version",
    ]
    assert scored["predicted_label"].tolist() == ["dog", "cat"]
    assert scored["model_version"].tolist() == ["3", "3"]
    assert list(scored.index) == [0, 1]


def test_model_class_outside_the_schema_is_an_error():
    with pytest.raises(ValueError, match="not in the schema: wolf"):
        score_batch(FixedModel(["cat", "wolf"], [[0.5, 0.5]]), frame(1), SCHEMA, model_version="1")


def test_empty_batch_scores_to_an_empty_frame():
    scored = score_batch(FixedModel(["cat", "dog", "fox"], []), frame(0), SCHEMA, model_version="1")

    assert scored.empty
    assert "entropy" in scored.columns


def test_a_real_model_trained_on_two_of_three_classes():
    x = pd.DataFrame({"x": [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]})
    model = LogisticRegression().fit(x, ["cat"] * 3 + ["fox"] * 3)
    schema = BatchSchema(features=(FeatureSpec("x", "numeric"),), classes=SCHEMA.classes)
    batch = pd.DataFrame({"item_id": ["a", "b"], "x": [0.5, 11.5]})

    scored = score_batch(model, batch, schema, model_version="1")

    assert scored["predicted_label"].tolist() == ["cat", "fox"]
    assert scored["proba__dog"].tolist() == [0.0, 0.0]
    sums = scored[["proba__cat", "proba__dog", "proba__fox"]].sum(axis=1)
    assert sums.to_numpy() == pytest.approx([1.0, 1.0])
    assert scored["entropy"].between(0.0, 1.0).all()


@pytest.mark.parametrize("chunk_rows", [1, 3, 50])
def test_batch_confidence_over_chunks_is_score_batchs_confidence(chunk_rows):
    x = pd.DataFrame({"x": np.linspace(0.0, 12.0, 17)})
    model = LogisticRegression().fit(x, (["cat"] * 6 + ["dog"] * 5 + ["fox"] * 6))
    schema = BatchSchema(features=(FeatureSpec("x", "numeric"),), classes=SCHEMA.classes)
    batch = pd.DataFrame({"item_id": [f"i{k}" for k in range(17)], "x": x["x"] + 0.3})
    chunks = (batch.iloc[s : s + chunk_rows][["x"]] for s in range(0, 17, chunk_rows))

    got = batch_confidence(model, chunks, schema)

    expected = score_batch(model, batch, schema, model_version="1")["confidence"].to_numpy()
    np.testing.assert_array_equal(got, expected)
    assert batch_confidence(model, [], schema).shape == (0,)
