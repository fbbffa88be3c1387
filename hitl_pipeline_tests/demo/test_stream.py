"""The demo stream: deterministic, valid against its own schema, and really drifting."""

import pandas as pd
import pytest

from hitl_pipeline.core.datasets import merge_labelled
from hitl_pipeline.core.schema import schema_from_dict, schema_to_dict, validate_batch
from hitl_pipeline.core.training import TrainingParams, evaluate_model, train_model
from hitl_pipeline.demo.stream import CLASSES, DEMO_SCHEMA, EVENT_TIME, DriftingStream

STREAM = DriftingStream()


def test_same_seed_same_rows_whatever_was_drawn_before():
    other = DriftingStream()
    other.batch(5)  # drawing another batch first must not change batch 3

    pd.testing.assert_frame_equal(STREAM.batch(3), other.batch(3))
    for mine, theirs in zip(STREAM.seed_sets(), other.seed_sets(), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


def test_another_seed_gives_other_rows():
    assert not STREAM.batch(1).equals(DriftingStream(seed=8).batch(1))


def test_ids_are_unique_across_the_stream_and_times_fall_in_the_batch_period():
    train, holdout = STREAM.seed_sets()
    batches = [STREAM.batch(i) for i in range(4)]
    ids = pd.concat([train["item_id"], holdout["item_id"], *[b["item_id"] for b in batches]])

    assert ids.is_unique
    assert batches[3]["item_id"].iloc[17] == "b003-00017"
    for i, batch in enumerate(batches):
        start = STREAM.start + i * STREAM.period
        assert batch[EVENT_TIME].between(start, start + STREAM.period, inclusive="left").all()
    assert (train[EVENT_TIME] < STREAM.start).all()


@pytest.mark.parametrize("index", [0, 1, 2, 6])
def test_batches_pass_their_schema_untouched(index):
    batch = STREAM.batch(index)

    result = validate_batch(batch, DEMO_SCHEMA)

    assert result.quarantined.empty
    assert len(result.valid) == STREAM.rows_per_batch
    assert set(batch["label"]) <= set(CLASSES)


def test_demo_schema_round_trips():
    assert schema_from_dict(schema_to_dict(DEMO_SCHEMA)) == DEMO_SCHEMA


def test_classes_are_imbalanced_but_all_present():
    train, _ = STREAM.seed_sets()

    shares = train["label"].value_counts(normalize=True)

    assert set(shares.index) == set(CLASSES)
    assert shares.max() > 0.4 > 0.05 < shares.min()


def test_covariate_and_prevalence_shift_at_the_drift_batch():
    before = pd.concat([STREAM.batch(0), STREAM.batch(1)])
    after = pd.concat([STREAM.batch(2), STREAM.batch(3)])

    assert after["usage_hours"].mean() > before["usage_hours"].mean() + 10
    assert (before["channel"] == "app").mean() < 0.1
    assert (after["channel"] == "app").mean() > 0.3


def test_concept_change_breaks_an_unretrained_model_where_it_happened():
    train, holdout = STREAM.seed_sets()
    model = train_model(train, DEMO_SCHEMA, TrainingParams()).model
    after = pd.concat([STREAM.batch(i) for i in (2, 3, 4)])
    app = after["channel"] == "app"

    def accuracy(frame: pd.DataFrame) -> float:
        return evaluate_model(model, frame, DEMO_SCHEMA)["accuracy"]

    assert 0.8 < accuracy(holdout) < 0.95  # good, not perfect: classes overlap
    assert accuracy(after) < 0.7  # the drop the loop has to win back
    assert accuracy(after[app]) < 0.5  # where the rules changed
    assert accuracy(after[~app]) > 0.75  # elsewhere the old rules hold


def test_a_few_hundred_new_labels_win_most_of_it_back():
    train, holdout = STREAM.seed_sets()
    new_labels = pd.concat([STREAM.batch(i).sample(150, random_state=0) for i in (2, 3)]).assign(
        label_source="human"
    )
    retrained = train_model(
        merge_labelled(train, new_labels, DEMO_SCHEMA), DEMO_SCHEMA, TrainingParams()
    ).model
    after = pd.concat([STREAM.batch(i) for i in (4, 5, 6)])

    assert evaluate_model(retrained, after, DEMO_SCHEMA)["accuracy"] > 0.78
    # and it has not forgotten the old regime
    assert evaluate_model(retrained, holdout, DEMO_SCHEMA)["accuracy"] > 0.8
