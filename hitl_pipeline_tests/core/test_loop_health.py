"""Loop health figures: known tables, and None when there is nothing to measure."""

import pandas as pd
import pytest

from hitl_pipeline.core.loop_health import audit_pass_rate, correction_rate, label_counts


def annotations(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["label", "predicted_label", "was_cancelled", "reasons"])


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], None),
        ([("a", "a", False, ())], 0.0),
        ([("a", "b", False, ()), ("a", "a", False, ())], 0.5),
        # cancelled and unlabelled annotations are not measured
        ([("a", "b", False, ()), (None, "a", True, ()), ("b", "a", True, ())], 1.0),
        ([(None, "a", True, ())], None),
        # no prediction to compare with
        ([("a", None, False, ())], None),
    ],
)
def test_correction_rate(rows, expected):
    assert correction_rate(annotations(rows)) == expected


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("a", "a", False, ("low_confidence",))], None),  # no audit at all
        ([("a", "a", False, ("audit",)), ("a", "b", False, ("low_confidence",))], 1.0),
        ([("a", "a", False, ("audit",)), ("b", "a", False, ("low_confidence", "audit"))], 0.5),
        ([("a", "a", False, "audit"), ("b", "a", False, "confident;audit")], 0.5),  # string form
        ([("a", "b", True, ("audit",))], None),  # cancelled audit
    ],
)
def test_audit_pass_rate(rows, expected):
    assert audit_pass_rate(annotations(rows)) == expected


def test_label_counts():
    frame = pd.DataFrame({"label": ["b", "a", "b", None, "zeta"]})

    assert label_counts(frame, classes=("a", "b", "c")) == {"a": 1, "b": 2, "c": 0, "zeta": 1}
    assert label_counts(frame["label"]) == {"a": 1, "b": 2, "zeta": 1}
    assert label_counts(pd.Series([None], dtype=object)) is None
