"""The moderation stream: deterministic, valid, drifting half way, and a class that appears."""

import pandas as pd
import pytest

from hitl_pipeline.cli import main
from hitl_pipeline.core.schema import validate_batch
from hitl_pipeline.demo.stream import (
    MODERATION_CLASSES,
    MODERATION_SCHEMA,
    NEW_CLASS,
    POST_TIME,
    ModerationStream,
    moderation_frame,
)

STREAM = ModerationStream(new_class_at=4)


def _words(frame: pd.DataFrame) -> set[str]:
    return set(" ".join(frame["text"]).split())


def test_same_seed_same_posts_whatever_was_drawn_before():
    other = ModerationStream(new_class_at=4)
    other.batch(6)

    pd.testing.assert_frame_equal(STREAM.batch(2), other.batch(2))
    assert not STREAM.batch(2).equals(ModerationStream(seed=8).batch(2))


@pytest.mark.parametrize(
    ("index", "classes"),
    [
        (0, set(MODERATION_CLASSES)),
        (3, set(MODERATION_CLASSES)),
        (4, {*MODERATION_CLASSES, NEW_CLASS}),
        (7, {*MODERATION_CLASSES, NEW_CLASS}),
    ],
)
def test_the_new_class_appears_at_its_batch_and_batches_pass_their_schema(index, classes):
    batch = STREAM.batch(index)
    result = validate_batch(batch, MODERATION_SCHEMA)

    assert result.quarantined.empty
    assert set(batch["label"]) == classes
    assert set(STREAM.classes_at(index)) == classes


def test_writers_switch_spellings_at_the_drift_and_ordinary_words_become_slang():
    before = pd.concat([STREAM.batch(i) for i in range(STREAM.drift_at_batch)])
    after = pd.concat([STREAM.batch(i) for i in range(STREAM.drift_at_batch, 6)])

    new_words = _words(after) - _words(before)
    assert {"cl0wn", "fr33", "stfu"} <= new_words
    assert {"clown", "numbskull"} & _words(after) == set()
    # "npc" was a gaming word of ordinary posts; after the drift it insults
    npc_before = before[before["text"].str.contains(r"\bnpc\b")]["label"]
    npc_after = after[after["text"].str.contains(r"\bnpc\b")]["label"]
    assert npc_before.value_counts().idxmax() == "ok"
    assert npc_after.value_counts().idxmax() == "toxic"


def test_seed_sets_hold_old_spellings_and_no_new_class():
    train, holdout = STREAM.seed_sets()

    assert set(train["label"]) == set(MODERATION_CLASSES)
    assert "cl0wn" not in _words(train)
    assert (train[POST_TIME] < STREAM.start).all() and len(holdout) == STREAM.seed_holdout_rows


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"new_class_at": 0}, "new_class_at must be a batch index >= 1"), ({"confusion": 2}, "")],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message or "confusion"):
        ModerationStream(**kwargs)


def test_demo_data_writes_the_stream_as_one_time_ordered_file(tmp_path, capsys):
    out = tmp_path / "posts.parquet"

    assert (
        main(
            [
                "demo-data",
                "moderation",
                "--out",
                str(out),
                "--batches",
                "4",
                "--rows-per-batch",
                "50",
                "--seed-rows",
                "100",
                "--new-class-at",
                "3",
            ]
        )
        == 0
    )

    frame = pd.read_parquet(out)
    expected = moderation_frame(batches=4, rows_per_batch=50, seed_rows=100, new_class_at=3)
    pd.testing.assert_frame_equal(frame, expected)
    assert len(frame) == 300 and frame[POST_TIME].is_monotonic_increasing
    assert NEW_CLASS in set(frame["label"].iloc[200:])
    assert NEW_CLASS not in set(frame["label"].iloc[:200])
    assert "--text-columns text" in capsys.readouterr().out


def test_demo_data_refuses_an_unknown_file_type(tmp_path, capsys):
    assert main(["demo-data", "moderation", "--out", str(tmp_path / "posts.json")]) == 2
    assert "write a .parquet or a .csv file" in capsys.readouterr().err


def test_declaring_the_new_class_appends_it_to_the_schema_file_once(tmp_path):
    from hitl_pipeline.core.schema import load_schema, save_schema
    from hitl_pipeline.demo.stream import declare_classes

    path = tmp_path / "schema.json"
    save_schema(MODERATION_SCHEMA, path)

    assert declare_classes(path, STREAM.classes_at(3)) == ()
    assert declare_classes(path, STREAM.classes_at(4)) == (NEW_CLASS,)
    assert declare_classes(path, STREAM.classes_at(5)) == ()
    # a class is never removed, whatever a batch holds
    assert declare_classes(path, ("ok",)) == ()
    assert load_schema(path).classes == (*MODERATION_CLASSES, NEW_CLASS)


@pytest.mark.parametrize(
    ("kind", "new_class_at", "message"),
    [
        ("tabular", 3, "--new-class-at needs --stream moderation"),
        ("images", None, "unknown demo stream 'images'"),
        ("moderation", 0, "new_class_at must be a batch index >= 1"),
    ],
)
def test_bad_demo_stream_options_are_named(kind, new_class_at, message):
    from hitl_pipeline.demo.stream import demo_stream

    with pytest.raises(ValueError, match=message):
        demo_stream(kind, new_class_at=new_class_at)


def test_demo_refuses_a_new_class_on_the_tabular_stream_before_starting(capsys):
    assert main(["demo", "--no-ui", "--new-class-at", "2"]) == 2
    assert "--new-class-at needs --stream moderation" in capsys.readouterr().err


def test_the_new_class_starts_small_then_spreads():
    shares = [(STREAM.batch(i)["label"] == NEW_CLASS).mean() for i in (4, 5, 6)]
    assert 0.005 < shares[0] < 0.05
    assert shares[1] == pytest.approx(0.12, abs=0.04) and shares[2] == pytest.approx(0.12, abs=0.04)
