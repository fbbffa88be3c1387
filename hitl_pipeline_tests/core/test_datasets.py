"""Label resolution, the hash holdout and the canonical merged dataset."""

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from hitl_pipeline.core.datasets import (
    edge_case_items,
    merge_labelled,
    resolve_labels,
    split_holdout,
    split_out_of_schema,
)
from hitl_pipeline.core.types import BatchSchema, FeatureSpec

SCHEMA = BatchSchema(
    features=(FeatureSpec("x", "numeric"), FeatureSpec("colour", "categorical")),
    classes=("a", "b", "c"),
)
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def annotation(
    item: str,
    label: str | None,
    annotator: str,
    minute: int,
    *,
    annotation_id: int | None = None,
    cancelled: bool = False,
    x: float = 1.0,
) -> dict:
    at = T0 + timedelta(minutes=minute)
    return {
        "item_id": item,
        "task_id": 1,
        "annotation_id": annotation_id if annotation_id is not None else minute,
        "label": label,
        "annotator": annotator,
        "completed_at": at,
        "updated_at": at,
        "was_cancelled": cancelled,
        "predicted_label": "a",
        "model_version": "1",
        "partition": "2026-03-01",
        "features": {"x": x, "colour": "red"},
        "reasons": ("low_confidence",),
    }


@pytest.mark.parametrize(
    ("votes", "expected_label", "expected_by", "expected_n", "expected_annotators"),
    [
        ([("b", "ann", 1)], "b", "single", 1, "ann"),
        ([("b", "ann", 1), ("b", "bob", 2), ("c", "cat", 3)], "b", "majority", 3, "ann;bob;cat"),
        ([("b", "ann", 1), ("b", "bob", 2)], "b", "majority", 2, "ann;bob"),
        # tie: the most recent of the tied labels wins, whatever the row order
        ([("c", "bob", 5), ("b", "ann", 1)], "c", "latest", 2, "ann;bob"),
        ([("c", "bob", 1), ("b", "ann", 5)], "b", "latest", 2, "ann;bob"),
        # an annotator who answered twice has one vote: their latest
        ([("b", "ann", 1), ("c", "ann", 2)], "c", "single", 1, "ann"),
    ],
)
def test_resolution_of_votes(votes, expected_label, expected_by, expected_n, expected_annotators):
    rows = [annotation("i1", label, who, minute) for label, who, minute in votes]

    labels = resolve_labels(pd.DataFrame(rows))

    assert len(labels) == 1
    row = labels.iloc[0]
    assert (row["label"], row["decided_by"], row["n_annotations"]) == (
        expected_label,
        expected_by,
        expected_n,
    )
    assert row["annotators"] == expected_annotators
    assert row["label_source"] == "human"


def test_cancelled_and_unlabelled_annotations_are_ignored():
    rows = [
        annotation("i1", "b", "ann", 1),
        annotation("i1", None, "bob", 2, cancelled=True),
        annotation("i2", None, "bob", 3, cancelled=True),
    ]

    labels = resolve_labels(pd.DataFrame(rows))

    assert labels["item_id"].tolist() == ["i1"]
    assert labels["n_annotations"].tolist() == [1]


def test_an_annotation_pulled_twice_counts_once_with_its_latest_edit():
    first = annotation("i1", "b", "ann", 1, annotation_id=7)
    edited = {**first, "label": "c", "updated_at": T0 + timedelta(hours=1)}

    labels = resolve_labels(pd.DataFrame([edited, first]))

    assert labels[["label", "n_annotations"]].values.tolist() == [["c", 1]]


def test_resolved_rows_carry_features_and_provenance():
    rows = [annotation("i2", "a", "ann", 1, x=2.5), annotation("i1", "b", "bob", 4, x=7.0)]

    labels = resolve_labels(pd.DataFrame(rows))

    assert labels["item_id"].tolist() == ["i1", "i2"]
    assert labels["x"].tolist() == [7.0, 2.5]
    assert labels["colour"].tolist() == ["red", "red"]
    assert labels["labelled_at"].tolist() == [T0 + timedelta(minutes=4), T0 + timedelta(minutes=1)]
    assert labels["partition"].tolist() == ["2026-03-01", "2026-03-01"]


def test_no_annotations_give_an_empty_frame_with_the_columns():
    labels = resolve_labels(pd.DataFrame([annotation("i1", None, "a", 1, cancelled=True)]))

    assert labels.empty
    assert {"item_id", "label", "label_source", "n_annotations", "decided_by"} <= set(labels)


# --- holdout ---------------------------------------------------------------------------
def ids_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"item-{k}" for k in range(n)], "v": range(n)})


def test_holdout_is_stable_per_item_and_near_the_fraction():
    frame = ids_frame(4000)

    holdout, rest = split_holdout(frame, fraction=0.25, salt="s1")
    holdout_of_subset, _ = split_holdout(frame.iloc[::-3], fraction=0.25, salt="s1")

    assert len(holdout) + len(rest) == 4000
    assert not set(holdout["item_id"]) & set(rest["item_id"])
    assert 0.22 < len(holdout) / 4000 < 0.28
    # an item lands on the same side whatever else is in the frame
    assert set(holdout_of_subset["item_id"]) == set(holdout["item_id"]) & set(
        frame.iloc[::-3]["item_id"]
    )


@pytest.mark.parametrize(("fraction", "expected_holdout"), [(0.0, 0), (1.0, 100)])
def test_holdout_extremes(fraction, expected_holdout):
    holdout, rest = split_holdout(ids_frame(100), fraction=fraction, salt="s")

    assert (len(holdout), len(rest)) == (expected_holdout, 100 - expected_holdout)


def test_salt_changes_the_split():
    a, _ = split_holdout(ids_frame(500), fraction=0.5, salt="one")
    b, _ = split_holdout(ids_frame(500), fraction=0.5, salt="two")

    assert set(a["item_id"]) != set(b["item_id"])


def batches_frame(batches: int, per_batch: int, prefix: str = "item") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"{prefix}-{k}" for k in range(batches * per_batch)],
            "partition": [f"{k // per_batch:05d}" for k in range(batches * per_batch)],
        }
    )


def test_start_share_fills_the_holdout_then_falls_to_the_fraction():
    frame = batches_frame(40, 20)
    at_start, _ = split_holdout(frame, fraction=0.6, salt="s")
    plain, _ = split_holdout(frame, fraction=0.1, salt="s")
    first_three = sorted(set(frame.partition))[:3]
    rows = int(at_start.partition.isin(first_three).sum())  # held by the first three at 0.6

    holdout, _ = split_holdout(frame, fraction=0.1, salt="s", start_fraction=0.6, start_rows=rows)

    # the first three batches at the start share (the fourth's predecessors hold exactly
    # start_rows: it is past the start), the plain fraction from then on
    expected = set(at_start.loc[at_start.partition.isin(first_three), "item_id"]) | set(
        plain.loc[~plain.partition.isin(first_three), "item_id"]
    )
    assert set(holdout["item_id"]) == expected


def test_new_labels_only_move_rows_out_of_the_start_holdout():
    frame = batches_frame(10, 10)
    before, _ = split_holdout(frame, fraction=0.1, salt="s", start_fraction=0.5, start_rows=20)
    late = batches_frame(1, 60, prefix="late")  # late labels of the first batch
    grown = pd.concat([frame, late], ignore_index=True)

    after, _ = split_holdout(grown, fraction=0.1, salt="s", start_fraction=0.5, start_rows=20)

    old_after = set(after["item_id"]) - set(late["item_id"])
    assert old_after <= set(before["item_id"])  # no trained-on row joins the holdout
    assert old_after < set(before["item_id"])  # the filled holdout let some go to training


def test_rows_without_a_partition_get_the_plain_fraction():
    frame = ids_frame(400).assign(partition=None)

    holdout, _ = split_holdout(frame, fraction=0.1, salt="s", start_fraction=0.9, start_rows=10**6)
    plain, _ = split_holdout(frame, fraction=0.1, salt="s")

    assert len(holdout) and set(holdout["item_id"]) == set(plain["item_id"])


def test_start_share_below_the_fraction_is_refused():
    with pytest.raises(ValueError, match="start_fraction"):
        split_holdout(ids_frame(10), fraction=0.3, salt="s", start_fraction=0.2, start_rows=5)


# --- merge -----------------------------------------------------------------------------
def labelled(rows: list[tuple], source: str | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["item_id", "x", "colour", "label", "labelled_at"])
    frame["labelled_at"] = pd.to_datetime(frame["labelled_at"], utc=True)
    if source is not None:
        frame["label_source"] = source
    return frame


SEED = labelled([("s2", 1.0, "red", "a", None), ("s1", 2, "blue", "b", None)])


@pytest.mark.parametrize(
    ("base", "new", "expected_label", "expected_source"),
    [
        # a human label overrides a seed label, and a seed label never overrides a human one
        (
            labelled([("k", 1, "r", "a", None)]),
            labelled([("k", 1, "r", "b", T0)], "human"),
            "b",
            "human",
        ),
        (
            labelled([("k", 1, "r", "b", T0)], "human"),
            labelled([("k", 1, "r", "a", None)]),
            "b",
            "human",
        ),
        # the newer human label wins, from either side
        (
            labelled([("k", 1, "r", "a", T0)], "human"),
            labelled([("k", 1, "r", "b", T0 + timedelta(days=1))], "human"),
            "b",
            "human",
        ),
        (
            labelled([("k", 1, "r", "a", T0 + timedelta(days=1))], "human"),
            labelled([("k", 1, "r", "b", T0)], "human"),
            "a",
            "human",
        ),
        # same source, same time: the new rows win
        (labelled([("k", 1, "r", "a", None)]), labelled([("k", 1, "r", "c", None)]), "c", "seed"),
    ],
)
def test_merge_precedence(base, new, expected_label, expected_source):
    merged = merge_labelled(base, new, SCHEMA)

    assert merged[["label", "label_source"]].values.tolist() == [[expected_label, expected_source]]


def test_merge_is_sorted_with_fixed_columns_and_dtypes():
    new = labelled([("h1", "3.5", "red", "c", T0)], "human").assign(unrelated=1)

    merged = merge_labelled(SEED, new, SCHEMA)

    assert merged["item_id"].tolist() == ["h1", "s1", "s2"]
    assert list(merged.columns) == [
        "item_id",
        "x",
        "colour",
        "label",
        "label_source",
        "labelled_at",
        "annotators",
        "n_annotations",
        "decided_by",
        "partition",
    ]
    assert merged["x"].dtype == "float64"
    assert merged["x"].tolist() == [3.5, 2.0, 1.0]
    assert str(merged["labelled_at"].dtype) == "datetime64[ns, UTC]"
    assert merged["n_annotations"].dtype == "int64"
    assert merged["label_source"].tolist() == ["human", "seed", "seed"]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_identical_content_gives_identical_bytes():
    human = resolve_labels(
        pd.DataFrame([annotation("h1", "b", "ann", 1), annotation("h2", "c", "bob", 2)])
    )
    shuffled_seed = SEED.iloc[::-1].reset_index(drop=True)

    one = merge_labelled(SEED, human, SCHEMA)
    two = merge_labelled(shuffled_seed, human.iloc[::-1], SCHEMA)
    # merging in two steps gives the same dataset as merging at once
    three = merge_labelled(merge_labelled(SEED, human.iloc[:1], SCHEMA), human.iloc[1:], SCHEMA)

    assert parquet_bytes(one) == parquet_bytes(two) == parquet_bytes(three)


def test_rows_without_label_are_dropped():
    base = labelled([("k1", 1, "r", "a", None), ("k2", 1, "r", None, None)])

    merged = merge_labelled(base, base.iloc[0:0], SCHEMA)

    assert merged["item_id"].tolist() == ["k1"]


# --- adjudication, out-of-schema labels, edge cases -------------------------------------------
def tiered(item, label, annotator, minute, tier, **kw) -> dict:
    return {**annotation(item, label, annotator, minute, **kw), "tier": tier}


@pytest.mark.parametrize(
    ("rows", "expected_label", "expected_by", "expected_n"),
    [
        # a tie between two reviewers, then the adjudicator decides (even against recency)
        (
            [
                ("b", "ann", 1, "general"),
                ("c", "bob", 2, "general"),
                ("b", "eve", 3, "adjudication"),
            ],
            "b",
            "adjudicated",
            3,
        ),
        # the adjudicated label wins over a majority too
        (
            [
                ("b", "ann", 1, "general"),
                ("b", "bob", 2, "general"),
                ("c", "cat", 3, "general"),
                ("c", "eve", 4, "adjudication"),
            ],
            "c",
            "adjudicated",
            4,
        ),
        # an adjudicator who also rated keeps both roles; the latest ruling wins
        (
            [
                ("b", "eve", 1, "general"),
                ("c", "bob", 2, "general"),
                ("c", "eve", 3, "adjudication"),
                ("a", "eve", 4, "adjudication"),
            ],
            "a",
            "adjudicated",
            3,
        ),
        # without a ruling: the old rules
        ([("b", "ann", 1, "general"), ("c", "bob", 2, "expert")], "c", "latest", 2),
    ],
)
def test_adjudicated_label_wins(rows, expected_label, expected_by, expected_n):
    frame = pd.DataFrame([tiered("i1", lab, who, m, tier) for lab, who, m, tier in rows])
    (row,) = resolve_labels(frame).to_dict("records")
    assert (row["label"], row["decided_by"], row["n_annotations"]) == (
        expected_label,
        expected_by,
        expected_n,
    )


def test_labels_outside_the_schema_are_set_aside_not_lost():
    frame = pd.DataFrame(
        [
            annotation("i1", "a", "ann", 1),
            annotation("i2", "zebra", "ann", 2),
            annotation("i3", None, "ann", 3, cancelled=True),
        ]
    )
    usable, rejected = split_out_of_schema(frame, SCHEMA.classes)
    assert usable["item_id"].tolist() == ["i1", "i3"]  # the skip is a skip, not a bad label
    assert rejected["item_id"].tolist() == ["i2"]
    assert "schema" in rejected["reject_reason"].iloc[0]
    assert len(usable) + len(rejected) == len(frame)
    assert resolve_labels(usable)["item_id"].tolist() == ["i1"]


def test_edge_case_items_follow_the_latest_answer():
    rows = [
        {**annotation("i1", "a", "ann", 1), "flags": ("edge case",)},
        {**annotation("i2", "b", "ann", 2), "flags": ()},
        {**annotation("i3", "b", "ann", 3), "flags": ("edge case",)},
        # annotation 3 edited later: the flag was removed
        {**annotation("i3", "b", "ann", 4, annotation_id=3), "flags": ()},
    ]
    rows[3]["updated_at"] = rows[2]["updated_at"] + timedelta(minutes=5)
    assert edge_case_items(pd.DataFrame(rows)) == ["i1"]
    assert edge_case_items(pd.DataFrame(rows[:1]).drop(columns="flags")) == []
