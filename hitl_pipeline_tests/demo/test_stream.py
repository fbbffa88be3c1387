"""The demo stream: deterministic, valid against its own schema, and really drifting."""

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.datasets import merge_labelled
from hitl_pipeline.core.drift import compute_drift
from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.loop_health import audit_verdict
from hitl_pipeline.core.schema import schema_from_dict, schema_to_dict, validate_batch
from hitl_pipeline.core.training import TrainingParams, evaluate_model, train_model
from hitl_pipeline.core.types import CONFIDENCE, PARTITION, PREDICTED_LABEL
from hitl_pipeline.demo.stream import (
    CLASSES,
    DEMO_SCHEMA,
    EVENT_TIME,
    STREAM_DRIFTS,
    DriftingStream,
)

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


# --- the concept-only stream: the inputs stay, the labelling rule changes ---------------
CONCEPT = DriftingStream(drift="concept")


def test_concept_stream_draws_the_inputs_of_an_undrifted_stream():
    undrifted = DriftingStream(drift_at_batch=1_000)
    for index in (0, 2, 5):
        mine, theirs = CONCEPT.batch(index), undrifted.batch(index)
        pd.testing.assert_frame_equal(mine.drop(columns=["label"]), theirs.drop(columns=["label"]))
    # before the change the labels are the same too; after it a large share differs
    assert CONCEPT.batch(1)["label"].equals(undrifted.batch(1)["label"])
    assert (CONCEPT.batch(3)["label"] != undrifted.batch(3)["label"]).mean() > 0.3


def test_unknown_stream_drift_is_refused():
    with pytest.raises(ValueError, match="drift must be one of"):
        DriftingStream(drift="gradual")


@pytest.mark.parametrize(
    ("drift", "alarms"),
    [
        ("mixed", [False, False, True, True]),  # alarms on the first drifted batch
        ("concept", [False, False, False, False]),  # nothing an input check can see
    ],
)
def test_the_data_drift_alarm_per_batch(drift, alarms):
    stream = DriftingStream(drift=drift)
    train, _ = stream.seed_sets()

    got = [compute_drift(train, stream.batch(i), DEMO_SCHEMA)[0].dataset_drift for i in range(4)]

    assert got == alarms


def _audit_annotations(stream: DriftingStream, batches: range, *, audited: int) -> pd.DataFrame:
    """Score each batch with a model fitted before the change, auto-accept the 90% most
    confident predictions (the rest went to review), and answer a uniform audit sample
    of the auto-accepted ones from the ground truth, as the audit's reviewers would."""
    train, _ = stream.seed_sets()
    model = train_model(train, DEMO_SCHEMA, TrainingParams()).model
    rows = []
    for index in batches:
        batch = stream.batch(index)
        scored = score_batch(model, batch, DEMO_SCHEMA, model_version="1")
        auto = scored.nlargest(int(0.9 * len(scored)), CONFIDENCE).index
        sample = np.random.default_rng([stream.seed, index]).choice(auto, audited, replace=False)
        rows.append(
            pd.DataFrame(
                {
                    "label": batch.loc[sample, "label"].to_numpy(),
                    PREDICTED_LABEL: scored.loc[sample, PREDICTED_LABEL].to_numpy(),
                    PARTITION: f"batch-{index:02d}",
                    "reasons": [("audit",)] * audited,
                    "tier": "general",
                    "was_cancelled": False,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("seed", [7, 11])
def test_the_audit_alarm_fires_soon_after_the_concept_change(seed):
    stream = DriftingStream(drift="concept", seed=seed, drift_at_batch=3)
    annotations = _audit_annotations(stream, range(6), audited=40)

    alarms = [
        audit_verdict(annotations[annotations[PARTITION] <= f"batch-{i:02d}"]).alert
        for i in range(6)
    ]

    assert alarms[:3] == [False, False, False]  # the old rules: the audit holds
    assert alarms[3] or alarms[4]  # within two batches of the change


@pytest.mark.parametrize("drift", STREAM_DRIFTS)
def test_the_demo_command_offers_every_stream_drift(drift):
    from hitl_pipeline.cli import build_parser

    args = build_parser().parse_args(["demo", "--stream-drift", drift])

    assert args.stream_drift == drift
    assert build_parser().parse_args(["demo"]).stream_drift == "mixed"
