"""The loop step's pure parts: which rows serve which purpose, and the routed union.

Data expectations in the Made-With-ML sense: the rows that judge a model (the gate's
human holdout, the edge cases) are never trained on, and the rows that choose the
training variant are not the rows that judge it.
"""

import numpy as np
import pandas as pd
import pytest

from hitl_pipeline.core.gate import EDGE_CASES, HOLDOUT, HUMAN_HOLDOUT, GatePolicy
from hitl_pipeline.core.loop import (
    SELECTION,
    TRAINING,
    DatasetPolicy,
    assemble_dataset,
    drift_reference,
    judge_challenger,
    reviewed_items,
    train_challenger,
)
from hitl_pipeline.core.training import TrainingParams
from hitl_pipeline.core.types import ITEM_ID, LABEL_SOURCE, LABELLED_AT, BatchSchema, FeatureSpec

SCHEMA = BatchSchema(
    features=(FeatureSpec("x", "numeric"), FeatureSpec("colour", "categorical")),
    classes=("a", "b"),
)


def rows(n: int, prefix: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            ITEM_ID: [f"{prefix}{i:04d}" for i in range(n)],
            "x": x,
            "colour": rng.choice(["red", "blue"], size=n),
            "label": np.where(x > 0, "a", "b"),
        }
    )


def human(n: int, seed: int = 1) -> pd.DataFrame:
    frame = rows(n, "h", seed)
    days = pd.to_timedelta(np.arange(n) % 10, unit="D")
    return frame.assign(
        **{LABEL_SOURCE: "human", LABELLED_AT: pd.Timestamp("2026-01-01", tz="UTC") + days}
    )


@pytest.fixture(scope="module")
def frames():
    flagged = [f"h{i:04d}" for i in range(0, 400, 25)]  # 16 edge cases
    return assemble_dataset(
        rows(300, "s", 0),
        rows(100, "f", 2),
        human(400),
        SCHEMA,
        DatasetPolicy(),
        edge_case_ids=flagged,
    )


def ids(frame: pd.DataFrame) -> set[str]:
    return set(frame[ITEM_ID].astype(str))


def test_the_gates_rows_are_never_trained_on(frames):
    assert not ids(frames[HUMAN_HOLDOUT]) & ids(frames[TRAINING])
    assert not ids(frames[HOLDOUT]) & ids(frames[TRAINING])


def test_edge_cases_are_kept_out_of_training_and_of_the_other_evaluation_sets(frames):
    edge = ids(frames[EDGE_CASES])

    assert len(edge) == 16
    assert not edge & ids(frames[TRAINING])
    assert not edge & ids(frames[HUMAN_HOLDOUT])
    assert not edge & ids(frames[SELECTION])


def test_the_selection_rows_are_training_rows_apart_from_the_gates(frames):
    selection = ids(frames[SELECTION])

    assert selection <= ids(frames[TRAINING])  # refitted into the chosen variant
    assert not selection & ids(frames[HUMAN_HOLDOUT])
    # the shares are what the policy says, up to a hash split's binomial spread (4 sd)
    policy, human_rows = DatasetPolicy(), 400 - 16

    def about(got: int, share: float, n: int) -> bool:
        return abs(got - share * n) < 4 * (n * share * (1 - share)) ** 0.5

    assert about(len(frames[HUMAN_HOLDOUT]), policy.human_holdout_fraction, human_rows)
    rest = human_rows - len(frames[HUMAN_HOLDOUT])
    assert about(len(selection), policy.selection_fraction, rest)


def test_every_human_label_lands_in_exactly_one_place(frames):
    places = [ids(frames[n]) for n in (HUMAN_HOLDOUT, EDGE_CASES)]
    trained = ids(frames[TRAINING]) - ids(frames[SELECTION])
    human_ids = {f"h{i:04d}" for i in range(400)}
    parts = [p & human_ids for p in (*places, trained, ids(frames[SELECTION]))]

    assert sum(len(p) for p in parts) == 400
    assert set().union(*parts) == human_ids


def test_a_label_stays_on_its_side_when_more_labels_arrive():
    policy = DatasetPolicy()
    before = assemble_dataset(rows(50, "s", 0), rows(20, "f", 2), human(200), SCHEMA, policy)
    after = assemble_dataset(rows(50, "s", 0), rows(20, "f", 2), human(400), SCHEMA, policy)

    assert ids(before[HUMAN_HOLDOUT]) <= ids(after[HUMAN_HOLDOUT])
    assert ids(before[SELECTION]) <= ids(after[SELECTION])


def test_the_gate_fills_first_and_a_trained_on_label_never_joins_it():
    policy = DatasetPolicy()  # a start share until the gate has its rows
    batches = human(400).assign(partition=[f"{i // 20:05d}" for i in range(400)])
    first = assemble_dataset(rows(50, "s", 0), rows(20, "f", 2), batches.head(60), SCHEMA, policy)
    later = assemble_dataset(rows(50, "s", 0), rows(20, "f", 2), batches, SCHEMA, policy)

    # three batches of 20 at the start share give the gate its rows sooner
    assert len(first[HUMAN_HOLDOUT]) > 60 * policy.human_holdout_fraction + 10
    assert not (ids(first[TRAINING]) - ids(rows(50, "s", 0))) & ids(later[HUMAN_HOLDOUT])
    later_share = len(later[HUMAN_HOLDOUT]) / 400
    assert later_share < (policy.start_holdout_fraction + policy.human_holdout_fraction) / 2


def test_the_gate_says_what_its_evidence_was(frames):
    quick = TrainingParams(estimator="logistic_regression")
    challenger = train_challenger(frames, SCHEMA, quick)
    champion = train_challenger({TRAINING: frames[TRAINING].head(200)}, SCHEMA, quick)
    policy = GatePolicy(min_eval_rows=10, min_slice_rows=10, min_edge_cases=5)

    decision = judge_challenger(
        frames, SCHEMA, challenger=challenger.model, champion=champion.model, policy=policy
    )

    note = decision.reasons[-1]
    assert "16 edge cases" in note
    assert f"chosen on {len(frames[SELECTION])} other human rows" in note
    assert "select_rows" in challenger.metrics  # the variants were compared


def test_the_routed_union_keeps_the_first_runs_order_and_each_item_once():
    first = pd.DataFrame(
        {
            ITEM_ID: ["a", "b", "c"],
            "route": ["review", "auto_accept", "review"],
            "reasons": ["low_confidence", "confident", "audit"],
        }
    )
    second = pd.DataFrame(
        {
            ITEM_ID: ["c", "b", "d"],
            "route": ["review", "review", "review"],
            "reasons": ["drift_sample", "drift_sample", "low_confidence"],
        }
    )

    union = reviewed_items(first, second)

    assert list(union.index) == ["a", "c", "b", "d"]
    # an item keeps the reasons of the first run that sent it (its task's)
    assert union.tolist() == ["low_confidence", "audit", "drift_sample", "low_confidence"]
    assert list(reviewed_items(first).index) == ["a", "c"]


def test_the_drift_reference_is_the_seed_part_of_the_training_rows(frames):
    reference = drift_reference(frames[TRAINING])

    assert len(reference) == 300
    assert (reference[LABEL_SOURCE] != "human").all()
    # without seed rows (or without provenance) the whole frame is the reference
    only_human = frames[TRAINING][frames[TRAINING][LABEL_SOURCE] == "human"]
    assert len(drift_reference(only_human)) == len(only_human)
    assert len(drift_reference(rows(10, "x", 4))) == 10
