"""A batch in chunks: the same scores, drift sample and routing as the whole batch."""

import functools

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from hitl_pipeline.core.chunks import (
    BottomK,
    ParquetSink,
    bottom_k,
    frame_chunks,
    parquet_chunks,
    parquet_rows,
    write_chunks,
)
from hitl_pipeline.core.drift import DriftPolicy, compute_drift, drift_sample
from hitl_pipeline.core.inference import ScoreSummary, score_batch, score_chunks
from hitl_pipeline.core.loop import escalation_scores, route_batch
from hitl_pipeline.core.ood import fit_ood_detector
from hitl_pipeline.core.routing import BatchRouter, RoutingPolicy, route_predictions
from hitl_pipeline.core.streaming import route_file, score_file, validate_chunks
from hitl_pipeline.core.training import TrainingParams, train_model
from hitl_pipeline.core.types import LABEL, REASONS, ROUTE, ROUTE_REVIEW
from hitl_pipeline.demo.stream import DEMO_SCHEMA, DriftingStream

SCHEMA = DEMO_SCHEMA


@pytest.fixture(scope="module")
def world():
    """A small champion, the previous one, an OOD detector and two demo batches."""
    stream = DriftingStream(rows_per_batch=400, seed_train_rows=600)
    train, _ = stream.seed_sets()
    with threadpool_limits(1):
        champion = train_model(train, SCHEMA, TrainingParams(max_iter=30)).model
        previous = train_model(train.iloc[:300], SCHEMA, TrainingParams(max_iter=10)).model
        detector = fit_ood_detector(train, SCHEMA)
    batches = [stream.batch(i).drop(columns=[LABEL]) for i in (1, 3)]
    return champion, previous, detector, batches


def _extra(world):
    champion, previous, detector, _ = world
    return functools.partial(_escalate, champion=champion, previous=previous, detector=detector)


def _escalate(scores, rows, *, champion, previous, detector):
    return escalation_scores(
        scores, rows, SCHEMA, champion=champion, previous=previous, ood=detector
    )


def _chunks(frame, chunk_rows):
    """(first row, chunk) pairs."""
    return zip(range(0, len(frame), chunk_rows), frame_chunks(frame, chunk_rows), strict=True)


def _whole(world, batch):
    champion = world[0]
    scores = score_batch(champion, batch, SCHEMA, model_version="7")
    return _extra(world)(scores, batch.reset_index(drop=True))


@pytest.mark.parametrize("chunk_rows", [7, 400])
def test_chunked_scoring_equals_whole_frame_scoring(world, chunk_rows):
    batch = world[3][1]
    whole = _whole(world, batch)
    summary = ScoreSummary()
    with threadpool_limits(1):
        chunked = pd.concat(
            [
                summary.add(s)
                for s in score_chunks(
                    world[0],
                    frame_chunks(batch, chunk_rows),
                    SCHEMA,
                    model_version="7",
                    extra=_extra(world),
                )
            ],
            ignore_index=True,
        )
    pd.testing.assert_frame_equal(chunked, whole)
    assert {"disagreement", "ood_score"} <= set(chunked.columns)
    assert summary.rows == len(batch)
    assert summary.mean_confidence == pytest.approx(whole["confidence"].mean())
    assert summary.predicted == whole["predicted_label"].value_counts().to_dict()


@pytest.mark.parametrize("drift", [False, True])
@pytest.mark.parametrize(
    "policy",
    [
        RoutingPolicy(),
        RoutingPolicy(audit_in_capacity=False, fill_capacity=False, review_capacity=30),
        RoutingPolicy(explore_share=0.2, review_rules=("monthly_spend > 150",)),
    ],
    ids=["defaults", "audit-on-top", "explore-and-rules"],
)
def test_router_over_chunks_routes_as_the_whole_batch(world, policy, drift):
    scores = _whole(world, world[3][1])
    whole = route_predictions(
        scores, policy, drift=drift, schema=SCHEMA, drifted_columns=("channel", "usage_hours")
    )
    router = BatchRouter(policy, drift=drift, total_rows=len(scores))
    for chunk in frame_chunks(scores, 23):
        router.add(chunk)
    plan = router.plan(schema=SCHEMA, drifted_columns=("channel", "usage_hours"))
    routed = pd.concat(
        [plan.apply(c, first_row=start) for start, c in _chunks(scores, 23)], ignore_index=True
    )
    pd.testing.assert_frame_equal(routed, whole)
    assert plan.candidates == len(scores)  # a small batch keeps every row
    assert plan.to_review == int((whole[ROUTE] == ROUTE_REVIEW).sum())


def test_router_keeps_a_bounded_candidate_set_and_fills_the_capacity(world):
    scores = pd.concat([_whole(world, b) for b in world[3]], ignore_index=True)
    policy = RoutingPolicy(review_capacity=40, max_candidates=60)
    router = BatchRouter(policy, total_rows=len(scores))
    for chunk in frame_chunks(scores, 50):
        router.add(chunk)
        # the most urgent pool, the most urgent others, the two samples: at most 4 sets
        assert router.candidates <= 60 + 60 + 40 + 40
    plan = router.plan(schema=SCHEMA)
    routed = pd.concat(
        [plan.apply(c, first_row=start) for start, c in _chunks(scores, 50)], ignore_index=True
    )
    whole = route_predictions(scores, policy, schema=SCHEMA)
    reviewed = routed[routed[ROUTE] == ROUTE_REVIEW]
    assert len(reviewed) == 40 == int((whole[ROUTE] == ROUTE_REVIEW).sum())
    assert reviewed["item_id"].is_unique
    # the audit is a keyed-hash sample: the same items as routing the batch whole
    audited = routed[routed[REASONS].str.contains("audit")]["item_id"].tolist()
    assert audited == whole[whole[REASONS].str.contains("audit")]["item_id"].tolist()
    # ranked picks come from the most urgent triggered items
    picked = routed[routed[REASONS] == "low_confidence"]
    assert len(picked) > 0
    assert picked["priority"].min() >= np.quantile(routed["priority"], 0.5)


def test_files_from_landing_to_decisions_match_the_whole_frame_path(world, tmp_path):
    champion = world[0]
    raw = world[3][1].copy()
    raw.loc[5, "monthly_spend"] = -3.0  # below the declared minimum: quarantined
    landing = tmp_path / "landing.parquet"
    write_chunks(frame_chunks(raw, 100), landing)

    ingest = validate_chunks(
        parquet_chunks(landing, 64),
        SCHEMA,
        valid_path=tmp_path / "valid.parquet",
        quarantine_path=tmp_path / "quarantine.parquet",
    )
    assert (ingest.valid_rows, ingest.quarantined_rows) == (399, 1)
    assert ingest.quarantine_file is not None and parquet_rows(ingest.quarantine_file) == 1
    with threadpool_limits(1):
        summary = score_file(
            champion,
            tmp_path / "valid.parquet",
            tmp_path / "pred.parquet",
            SCHEMA,
            model_version="7",
            extra=_extra(world),
            chunk_rows=64,
        )
    routed = route_file(
        tmp_path / "pred.parquet",
        tmp_path / "decisions.parquet",
        RoutingPolicy(),
        SCHEMA,
        threshold=0.8,
        chunk_rows=64,
    )

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    scores = _whole(world, valid)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pred.parquet"), scores)
    whole = route_batch(scores, RoutingPolicy(), SCHEMA, threshold=0.8)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "decisions.parquet"), whole)
    pd.testing.assert_frame_equal(
        routed.review, whole[whole[ROUTE] == ROUTE_REVIEW].reset_index(drop=True)
    )
    assert summary.rows == 399
    assert sum(routed.reasons.values()) == whole[REASONS].str.split(";").explode().size


def test_parquet_sink_is_atomic(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), ParquetSink(target) as sink:
        sink.write(pd.DataFrame({"a": [1, 2]}))
        raise RuntimeError("stage failed half-way")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    assert write_chunks(frame_chunks(pd.DataFrame({"a": range(10)}), 3), target) == 10
    assert [len(c) for c in parquet_chunks(target, 4)] == [4, 4, 2]


def test_bottom_k_sample_does_not_depend_on_chunking():
    frame = pd.DataFrame({"item_id": [f"x{i}" for i in range(500)], "v": range(500)})
    samples = []
    for chunk_rows in (1, 64, 500):
        sample, seen = drift_sample(frame_chunks(frame, chunk_rows), 50, id_column="item_id")
        assert seen == 500
        samples.append(sample)
    assert len(samples[0]) == 50
    pd.testing.assert_frame_equal(samples[0], samples[1])
    pd.testing.assert_frame_equal(samples[0], samples[2])
    assert samples[0]["v"].is_monotonic_increasing  # original order kept
    everything, _ = drift_sample(frame_chunks(frame, 64), 1000, id_column="item_id")
    pd.testing.assert_frame_equal(everything, frame)
    assert BottomK(3).frame().empty


@pytest.mark.parametrize("chunk_rows", [1, 7, 40, 300])
def test_bottom_k_over_chunks_equals_bottom_k_of_the_whole_batch_with_ties(chunk_rows):
    # few distinct keys: the sample's largest key is tied across chunks, where a chunk's
    # rows are dropped before they are kept unless their key can still enter
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 12, size=300).astype("float64")
    ties = np.asarray([f"t{i:03d}" for i in rng.permutation(300)], dtype=object)
    frame = pd.DataFrame({"v": range(300)})
    keeper = BottomK(25)
    for start in range(0, 300, chunk_rows):
        part = slice(start, start + chunk_rows)
        keeper.add(frame.iloc[part], keys[part], ties[part])
    assert keeper.rows_seen == 300
    expected = frame.iloc[bottom_k(keys, ties, 25)].reset_index(drop=True)
    pd.testing.assert_frame_equal(keeper.frame(), expected)


def test_drift_on_a_sample_states_its_size(world):
    champion, _, _, batches = world
    stream = DriftingStream(seed_train_rows=600)
    reference, _ = stream.seed_sets()
    current = score_batch(champion, batches[1], SCHEMA, model_version="7")
    policy = DriftPolicy(sample_rows=150)
    summary, _ = compute_drift(reference, current, SCHEMA, policy=policy)
    assert (summary.reference_rows, summary.current_rows) == (150, 150)
    full, _ = compute_drift(reference, current, SCHEMA)
    assert (full.reference_rows, full.current_rows) == (600, 400)
    # the batch drifted (channel mix, usage): a sample of 150 rows still sees it
    assert summary.dataset_drift and full.dataset_drift
    with pytest.raises(ValueError, match="sample_rows"):
        DriftPolicy(sample_rows=0)


@pytest.mark.parametrize(
    ("id_chunks", "repeated"),
    [
        ([["a", "b"], ["c"]], set()),
        ([["a", "b"], ["c", "a"]], {"a"}),  # across chunks
        ([["x", "x"], []], {"x"}),  # within one chunk
        ([[17.0, "18"], ["17"]], {"17"}),  # canonical ids: 17.0 is the item "17"
    ],
)
def test_repeated_id_hashes_finds_ids_seen_twice_anywhere(id_chunks, repeated):
    from hitl_pipeline.core.streaming import repeated_id_hashes

    hashes = repeated_id_hashes(pd.Series(chunk, dtype=object) for chunk in id_chunks)
    expected = pd.util.hash_array(pd.Series(sorted(repeated), dtype=object).to_numpy(object))
    assert sorted(hashes.tolist()) == sorted(expected.tolist())
