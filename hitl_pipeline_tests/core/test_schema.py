"""Batch validation: batch-level rejections, row-level quarantine, canonical dtypes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.schema import (
    QUARANTINE_REASON,
    canonical_text,
    load_schema,
    save_schema,
    schema_from_dict,
    schema_to_dict,
    validate_batch,
)
from hitl_pipeline.core.types import BatchSchema, BatchSchemaError, FeatureSpec

SCHEMA = BatchSchema(
    features=(
        FeatureSpec("amount", "numeric", min_value=0.0, max_value=100.0),
        FeatureSpec("score", "numeric", nullable=True),
        FeatureSpec("colour", "categorical", categories=("red", "green")),
    ),
    classes=("a", "b"),
)


def good_rows(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{k:02d}" for k in range(n)],
            "amount": [float(k) for k in range(n)],
            "score": [0.5] * n,
            "colour": ["red", "green"] * (n // 2),
            "label": ["a"] * n,
            "note": ["extra"] * n,
        }
    )


def with_row(**changes: object) -> pd.DataFrame:
    """Ten good rows with row 0 changed."""
    frame = good_rows().astype(object)
    for column, value in changes.items():
        frame.loc[0, column] = value
    return frame


@pytest.mark.parametrize(
    ("changes", "expected_reason"),
    [
        ({"colour": "blue"}, "colour: unknown category 'blue' (declared: red, green)"),
        ({"amount": None}, "amount: missing value (column is not nullable)"),
        ({"amount": "12,5"}, "amount: cannot parse '12,5' as a number"),
        ({"amount": 250.0}, "amount: 250.0 is above the declared maximum 100.0"),
        ({"amount": -1.0}, "amount: -1.0 is below the declared minimum 0.0"),
        ({"item_id": None}, "missing item_id"),
        ({"item_id": "i01"}, "duplicate item_id 'i01'"),
        (
            {"colour": "blue", "amount": "x"},
            "amount: cannot parse 'x' as a number; colour: unknown category 'blue' "
            "(declared: red, green)",
        ),
    ],
)
def test_bad_row_is_quarantined_with_its_reasons(changes, expected_reason):
    result = validate_batch(with_row(**changes), SCHEMA)

    assert len(result.quarantined) == 1
    assert result.quarantined[QUARANTINE_REASON].iloc[0] == expected_reason
    assert len(result.valid) == 9


def test_duplicate_keeps_the_first_occurrence():
    frame = with_row(item_id="i01")  # row 0 now repeats row 1's id... and comes first

    result = validate_batch(frame, SCHEMA)

    # the first occurrence (row 0) is the item; row 1 is the duplicate
    assert result.quarantined["amount"].tolist() == [1.0]
    assert "i01" in result.valid["item_id"].tolist()


@pytest.mark.parametrize(
    ("frame", "expected_problem"),
    [
        (good_rows().drop(columns=["amount", "colour"]), "missing column(s): 'amount', 'colour'"),
        (good_rows().drop(columns=["item_id"]), "missing id column 'item_id'"),
        (good_rows().iloc[0:0], "the batch has no rows"),
        (
            good_rows().assign(amount="n/a"),
            "column 'amount' should be numeric but none of its values parses as a number "
            "(e.g. 'n/a')",
        ),
        (
            good_rows().assign(colour="RED"),
            "column 'colour' holds none of its declared categories (saw 'RED')",
        ),
        (good_rows().assign(amount=np.nan), "column 'amount' is entirely null but is not nullable"),
    ],
)
def test_unusable_batch_is_rejected_naming_the_column(frame, expected_problem):
    with pytest.raises(BatchSchemaError) as caught:
        validate_batch(frame, SCHEMA)

    assert expected_problem in caught.value.problems


@pytest.mark.parametrize(
    ("bad_rows", "max_share", "rejected"),
    [(5, 0.5, False), (6, 0.5, True), (1, 0.0, True), (9, 0.9, False)],
)
def test_too_many_bad_rows_reject_the_batch(bad_rows, max_share, rejected):
    frame = good_rows().astype(object)
    frame.loc[: bad_rows - 1, "colour"] = "blue"
    frame.loc[bad_rows:, "colour"] = "red"

    if rejected:
        with pytest.raises(BatchSchemaError, match=f"{bad_rows} of 10 rows"):
            validate_batch(frame, SCHEMA, max_quarantine_share=max_share)
    else:
        result = validate_batch(frame, SCHEMA, max_quarantine_share=max_share)
        assert len(result.quarantined) == bad_rows


def test_valid_rows_have_canonical_dtypes_and_keep_extra_columns():
    frame = pd.DataFrame(
        {
            "item_id": [1, 2, 3],  # integers become strings
            "amount": ["1.5", " 2 ", 3],  # text numbers are parsed
            "score": [None, None, None],  # nullable and empty: fine
            "colour": ["red", "green", "red"],
            "label": ["a", "b", "a"],
            "note": ["x", "y", "z"],
        }
    )

    valid = validate_batch(frame, SCHEMA).valid

    assert valid["item_id"].tolist() == ["1", "2", "3"]
    assert valid["amount"].dtype == "float64"
    assert valid["amount"].tolist() == [1.5, 2.0, 3.0]
    assert valid["score"].dtype == "float64"
    assert valid["colour"].map(type).eq(str).all()
    assert valid["note"].tolist() == ["x", "y", "z"]
    assert valid["label"].tolist() == ["a", "b", "a"]


def test_quarantined_rows_keep_their_original_values():
    result = validate_batch(with_row(amount="abc"), SCHEMA)

    assert result.quarantined["amount"].iloc[0] == "abc"
    assert result.quarantined["note"].iloc[0] == "extra"


def test_time_column_is_parsed_and_bad_times_quarantined():
    schema = BatchSchema(features=SCHEMA.features, classes=SCHEMA.classes, time_column="ts")
    frame = good_rows().assign(ts=["2026-01-05T10:00:00Z"] * 9 + ["yesterday"])

    result = validate_batch(frame, schema)

    assert str(result.valid["ts"].dtype) == "datetime64[ns, UTC]"
    assert result.quarantined[QUARANTINE_REASON].tolist() == [
        "ts: cannot parse 'yesterday' as a time"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(17, "17"), (17.0, "17"), (17.5, "17.5"), ("abc", "abc"), (None, None), (np.nan, None)],
)
def test_canonical_text(value, expected):
    assert canonical_text(value) == expected


# --- the schema file -------------------------------------------------------------------
def test_schema_round_trips_through_a_file(tmp_path: Path):
    schema = BatchSchema(features=SCHEMA.features, classes=SCHEMA.classes, time_column="event_time")
    path = tmp_path / "schema.json"

    save_schema(schema, path)

    assert load_schema(path) == schema
    assert json.loads(path.read_text(encoding="utf-8"))["format_version"] == 1


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"classes": []}, "classes must be a non-empty list"),
        ({"surprise": 1}, "unknown schema key(s): surprise"),
        ({"format_version": 99}, "unsupported format_version 99"),
        (
            {"features": [{"name": "x", "kind": "txt"}]},
            "kind must be 'numeric', 'categorical' or 'text', got 'txt'",
        ),
        (
            {"features": [{"name": "t", "kind": "text", "categories": ["a"]}]},
            "a text feature cannot declare categories",
        ),
        (
            {"features": [{"name": "t", "kind": "text", "max_value": 3}]},
            "a text feature cannot declare a range",
        ),
        (
            {"features": [{"name": "x", "kind": "numeric", "min_value": 5, "max_value": 1}]},
            "min_value 5.0 is above max_value 1.0",
        ),
        (
            {"features": [{"name": "x", "kind": "numeric"}, {"name": "x", "kind": "numeric"}]},
            "duplicate feature name(s): x",
        ),
        ({"features": [{"name": "label", "kind": "numeric"}]}, "clash with id/target/time"),
        (
            {"features": [{"name": "c", "kind": "categorical", "min_value": 1}]},
            "a categorical feature cannot declare a range",
        ),
    ],
)
def test_invalid_schema_is_refused_with_the_reason(patch, expected):
    d = {**schema_to_dict(SCHEMA), **patch}

    with pytest.raises(ValueError, match="invalid schema") as caught:
        schema_from_dict(d)

    assert expected in str(caught.value)


def test_load_schema_refuses_broken_json(tmp_path: Path):
    path = tmp_path / "schema.json"
    path.write_text("{not json", encoding="utf-8")

    with pytest.raises(ValueError, match="invalid schema file"):
        load_schema(path)


# --- text columns --------------------------------------------------------------------
TEXT_SCHEMA = BatchSchema(
    features=(
        FeatureSpec("post", "text"),
        FeatureSpec("note", "text", nullable=True),
        FeatureSpec("amount", "numeric", min_value=0.0),
    ),
    classes=("ok", "spam"),
)


def text_rows(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"p{k:02d}" for k in range(n)],
            "post": [f"post number {k} about cats" for k in range(n)],
            "note": ["fine"] * n,
            "amount": [float(k) for k in range(n)],
        }
    ).astype(object)


@pytest.mark.parametrize(
    ("column", "value", "expected_text"),
    [
        ("post", "héllo wörld, ünïcode ✓", "héllo wörld, ünïcode ✓"),
        ("post", "", ""),  # an empty post is still a post
        ("post", 42, "42"),  # a short post a reader typed as a number
        ("post", 17.0, "17"),
        ("post", True, "True"),
        ("post", b"bytes \xc3\xa9", "bytes é"),
        ("note", None, None),  # nullable
        ("note", float("nan"), None),
    ],
)
def test_text_values_are_kept_as_text(column, value, expected_text):
    frame = text_rows()
    frame.at[0, column] = value

    result = validate_batch(frame, TEXT_SCHEMA)

    assert result.quarantined.empty
    assert result.valid.loc[0, column] == expected_text
    assert all(isinstance(v, str) for v in result.valid["post"])


@pytest.mark.parametrize(
    ("column", "value", "expected_reason"),
    [
        ("post", None, "post: missing value (column is not nullable)"),
        ("post", ["a", "list"], "post: a list is not text"),
        ("post", {"a": 1}, "post: a dict is not text"),
        ("note", ["x"], "note: a list is not text"),
    ],
)
def test_bad_text_values_are_quarantined_with_a_reason(column, value, expected_reason):
    frame = text_rows()
    frame.at[0, column] = value

    result = validate_batch(frame, TEXT_SCHEMA)

    assert list(result.quarantined["item_id"]) == ["p00"]
    assert result.quarantined.loc[0, QUARANTINE_REASON] == expected_reason
    assert len(result.valid) == 9


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3, 4], "column 'post' is declared text but none of its values is a string"),
        ([1.5, None, 2.5, 3.0], "declare it 'numeric' or 'categorical' in the schema file"),
        ([None, None, None, None], "column 'post' is entirely null but is not nullable"),
    ],
)
def test_a_text_column_without_text_rejects_the_batch(values, expected):
    frame = text_rows(4)
    frame["post"] = pd.Series(values, dtype=object)

    with pytest.raises(BatchSchemaError) as caught:
        validate_batch(frame, TEXT_SCHEMA)

    assert expected in str(caught.value)


def test_text_schema_round_trips_through_its_file(tmp_path: Path):
    path = tmp_path / "schema.json"
    save_schema(TEXT_SCHEMA, path)

    loaded = load_schema(path)

    assert loaded == TEXT_SCHEMA
    assert loaded.text_features == ["post", "note"]
    assert loaded.numeric_features == ["amount"]
