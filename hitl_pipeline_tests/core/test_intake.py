"""Strict annotation intake: which annotations may decide a label (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from hitl_pipeline.core.intake import (
    EMPTY_RESULT,
    MULTIPLE_CHOICES,
    NOT_A_REVIEWER,
    QUARANTINE_REASON,
    REASONS,
    SERVICE_ACCOUNT,
    UNKNOWN_CONTROL,
    UNKNOWN_LABEL,
    IntakePolicy,
    classify,
    quarantine_reason,
    reason_counts,
    split_quarantined,
)

CLASSES = ("cat", "dog")
ADMIN = "admin@hitl.local"
LISTED = IntakePolicy.build(
    CLASSES, reviewers=["Ada@hitl.local ", "grace@hitl.local", ADMIN], service_accounts=[ADMIN]
)
OPEN = IntakePolicy.build(CLASSES, service_accounts=[ADMIN])


@pytest.mark.parametrize(
    ("policy", "annotator", "label", "cancelled", "problem", "expected"),
    [
        # a listed reviewer's single class of the schema: admitted
        (LISTED, "ada@hitl.local", "cat", False, "", ""),
        # e-mails compare case-insensitively, trimmed (the list said "Ada@hitl.local ")
        (LISTED, "ADA@hitl.local", "dog", False, "", ""),
        # a reviewer's skip: admitted as a skip (it never becomes a label either)
        (LISTED, "grace@hitl.local", None, True, "", ""),
        # the service account never counts, even when listed as a reviewer
        (LISTED, ADMIN, "cat", False, "", SERVICE_ACCOUNT),
        (OPEN, ADMIN, "cat", False, "", SERVICE_ACCOUNT),
        # ...and its skips are not a reviewer's skips
        (OPEN, ADMIN, None, True, "", SERVICE_ACCOUNT),
        # an account with a token but not on the list
        (LISTED, "someone@else.org", "cat", False, "", NOT_A_REVIEWER),
        # no list: every account except the service account counts
        (OPEN, "someone@else.org", "cat", False, "", ""),
        # an annotation nobody can be named for never counts
        (OPEN, "", "cat", False, "", NOT_A_REVIEWER),
        # what parsing found wrong with the answer is the reason
        (LISTED, "ada@hitl.local", None, False, MULTIPLE_CHOICES, MULTIPLE_CHOICES),
        (LISTED, "ada@hitl.local", None, False, EMPTY_RESULT, EMPTY_RESULT),
        (LISTED, "ada@hitl.local", "cat", False, UNKNOWN_CONTROL, UNKNOWN_CONTROL),
        (LISTED, "ada@hitl.local", "cat", False, UNKNOWN_LABEL, UNKNOWN_LABEL),
        # a problem this version does not know is still a problem, never a label
        (LISTED, "ada@hitl.local", "cat", False, "from_the_future", UNKNOWN_CONTROL),
        # submitted without a class, with no recorded problem (an old ledger row)
        (LISTED, "ada@hitl.local", None, False, "", EMPTY_RESULT),
        # one class, but not the schema's
        (LISTED, "ada@hitl.local", "zebra", False, "", UNKNOWN_LABEL),
        # the account is judged before the answer: the admin's bad answer is the admin's
        (LISTED, ADMIN, None, False, MULTIPLE_CHOICES, SERVICE_ACCOUNT),
        (LISTED, "someone@else.org", "zebra", False, "", NOT_A_REVIEWER),
    ],
)
def test_quarantine_reason(policy, annotator, label, cancelled, problem, expected) -> None:
    assert (
        quarantine_reason(
            annotator=annotator,
            label=label,
            was_cancelled=cancelled,
            answer_problem=problem,
            policy=policy,
        )
        == expected
    )


def _ledger(rows: list[tuple[int, str, str | None, bool, str]]) -> pd.DataFrame:
    at = datetime(2026, 11, 2, tzinfo=UTC)
    return pd.DataFrame(
        [
            {
                "annotation_id": aid,
                "item_id": f"i{aid}",
                "annotator": who,
                "label": label,
                "was_cancelled": cancelled,
                "answer_problem": problem,
                "completed_at": at,
                "updated_at": at,
            }
            for aid, who, label, cancelled, problem in rows
        ]
    )


def test_split_keeps_every_row_and_counts_each_reason() -> None:
    ledger = _ledger(
        [
            (1, "ada@hitl.local", "cat", False, ""),
            (2, ADMIN, "dog", False, ""),
            (3, "ada@hitl.local", None, False, MULTIPLE_CHOICES),
            (4, "grace@hitl.local", None, True, ""),
            (5, "mallory@x.org", "cat", False, ""),
            (6, "grace@hitl.local", "zebra", False, ""),
        ]
    )
    admitted, quarantined = split_quarantined(ledger, LISTED)
    assert sorted(admitted["annotation_id"]) == [1, 4]
    assert (admitted[QUARANTINE_REASON] == "").all()
    assert dict(zip(quarantined["annotation_id"], quarantined[QUARANTINE_REASON], strict=True)) == {
        2: SERVICE_ACCOUNT,
        3: MULTIPLE_CHOICES,
        5: NOT_A_REVIEWER,
        6: UNKNOWN_LABEL,
    }
    counts = reason_counts(quarantined)
    assert list(counts) == list(REASONS)  # every reason listed, zeros too
    assert counts[SERVICE_ACCOUNT] == 1 and counts[EMPTY_RESULT] == 0
    assert sum(counts.values()) == len(quarantined) == len(ledger) - len(admitted)


def test_a_fix_re_admits_without_losing_anything() -> None:
    ledger = _ledger([(1, "newcomer@hitl.local", "cat", False, "")])
    assert classify(ledger, LISTED).tolist() == [NOT_A_REVIEWER]
    fixed = IntakePolicy.build(
        CLASSES, reviewers=[*LISTED.reviewers, "newcomer@hitl.local"], service_accounts=[ADMIN]
    )
    assert classify(ledger, fixed).tolist() == [""]


def test_a_ledger_from_before_strict_intake_is_judged_on_account_and_schema() -> None:
    old = _ledger([(1, ADMIN, "cat", False, ""), (2, "ada@hitl.local", "cat", False, "")])
    old = old.drop(columns=["answer_problem"])
    assert classify(old, LISTED).tolist() == [SERVICE_ACCOUNT, ""]
    assert classify(old.iloc[0:0], LISTED).empty
