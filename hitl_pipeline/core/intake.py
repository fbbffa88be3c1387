"""Strict annotation intake: which pulled annotations may decide a label, and why not.

An annotation becomes a vote only when a configured reviewer (never the pipeline's own
service account) chose exactly one class of the schema through our interface. Anything
else is quarantined with one reason: kept, counted and reported, never a label. A skip
by a reviewer is neither: it is an answer ("cannot be judged") that labels nothing.

The reasons about the answer itself (``ANSWER_PROBLEMS``) are found where Label Studio's
export is parsed (``resources.label_studio.read_result``) and travel with the annotation;
the reasons about who answered and about the schema are decided here, from the policy
in force, every time the ledger is classified. So a fix (a reviewer added to the list,
a class added to the schema, an answer corrected in Label Studio and pulled again)
re-admits what it fixes, and nothing quarantined was ever thrown away.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.types import LABEL

# Quarantine reasons, in the order they are tested: the first that applies is given.
SERVICE_ACCOUNT = "service_account"  # the pipeline's own API-token user answered
NOT_A_REVIEWER = "not_a_reviewer"  # the account is not among the configured reviewers
UNKNOWN_CONTROL = "unknown_control"  # a result from a control our interface does not have
MULTIPLE_CHOICES = "multiple_choices"  # more than one class chosen
EMPTY_RESULT = "empty_result"  # submitted (not skipped) without choosing a class
UNKNOWN_LABEL = "unknown_label"  # a class (or flag) our interface does not offer
ANSWER_PROBLEMS = (UNKNOWN_CONTROL, MULTIPLE_CHOICES, EMPTY_RESULT, UNKNOWN_LABEL)
REASONS = (SERVICE_ACCOUNT, NOT_A_REVIEWER, *ANSWER_PROBLEMS)

QUARANTINE_REASON = "quarantine_reason"  # ledger column: "" when admitted
ANSWER_PROBLEM = "answer_problem"  # ledger column: what parsing found wrong ("" if nothing)


@dataclass(frozen=True)
class IntakePolicy:
    """Who may label and what a label may be.

    Attributes:
        classes: the schema's classes; any other chosen class is ``unknown_label``.
        reviewers: e-mails of the accounts whose answers count (case-insensitive).
            Empty means every account except the service accounts: a person who joins
            the Label Studio organisation and labels is counted, not ignored.
        service_accounts: e-mails that never count, even when listed as reviewers (the
            user owning the pipeline's API token: its annotations are imports, tests or
            an admin clicking around, not reviews).
    """

    classes: tuple[str, ...]
    reviewers: frozenset[str] = frozenset()
    service_accounts: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        classes: Iterable[str],
        *,
        reviewers: Iterable[str] = (),
        service_accounts: Iterable[str] = (),
    ) -> IntakePolicy:
        """A policy with e-mails normalised (trimmed, lower case; blanks dropped)."""
        return cls(
            classes=tuple(classes),
            reviewers=_emails(reviewers),
            service_accounts=_emails(service_accounts),
        )

    @property
    def open_to_everyone(self) -> bool:
        """True when no reviewer list is configured (every other account counts)."""
        return not self.reviewers


def quarantine_reason(
    *,
    annotator: str,
    label: str | None,
    was_cancelled: bool,
    answer_problem: str,
    policy: IntakePolicy,
) -> str:
    """Why one annotation may not decide a label; ``""`` when it may (or is a skip).

    Args:
        annotator: the account's e-mail as Label Studio names it.
        label: the class chosen (None when none, or when several were).
        was_cancelled: a skip.
        answer_problem: what parsing found wrong with the answer (one of
            ``ANSWER_PROBLEMS``, or ``""``).
        policy: the classes and accounts in force.

    Returns:
        One of ``REASONS``, or ``""``.
    """
    who = (annotator or "").strip().lower()
    if who in policy.service_accounts:
        return SERVICE_ACCOUNT
    if not who or (policy.reviewers and who not in policy.reviewers):
        return NOT_A_REVIEWER
    if was_cancelled:
        return ""  # a reviewer's skip: kept and counted as such, never a label
    if answer_problem:
        return answer_problem if answer_problem in ANSWER_PROBLEMS else UNKNOWN_CONTROL
    if label is None:
        return EMPTY_RESULT
    if canonical_text(label) not in {canonical_text(c) for c in policy.classes}:
        return UNKNOWN_LABEL
    return ""


def classify(annotations: pd.DataFrame, policy: IntakePolicy) -> pd.Series:
    """``quarantine_reason`` of every row of a ledger frame (``""`` = admitted).

    Rows written before answers were checked have no ``answer_problem`` column: only the
    account and the schema are judged for them.
    """
    if annotations.empty:
        return pd.Series([], index=annotations.index, dtype=object, name=QUARANTINE_REASON)
    problems = (
        annotations[ANSWER_PROBLEM].fillna("").astype(str)
        if ANSWER_PROBLEM in annotations
        else pd.Series("", index=annotations.index)
    )
    reasons = [
        quarantine_reason(
            annotator=str(annotator) if pd.notna(annotator) else "",
            label=None if pd.isna(label) else str(label),
            was_cancelled=bool(cancelled),
            answer_problem=problem,
            policy=policy,
        )
        for annotator, label, cancelled, problem in zip(
            annotations["annotator"],
            annotations[LABEL],
            annotations["was_cancelled"],
            problems,
            strict=True,
        )
    ]
    return pd.Series(reasons, index=annotations.index, dtype=object, name=QUARANTINE_REASON)


def split_quarantined(
    annotations: pd.DataFrame, policy: IntakePolicy
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(admitted, quarantined)``: both with a ``quarantine_reason`` column.

    Admitted rows are the reviewers' valid answers and skips; quarantined rows carry
    their reason and must never become labels.
    """
    reasons = classify(annotations, policy)
    marked = annotations.assign(**{QUARANTINE_REASON: reasons})
    bad = reasons != ""
    return marked[~bad], marked[bad]


def reason_counts(quarantined: pd.DataFrame) -> dict[str, int]:
    """Quarantined annotations per reason, every reason listed (zeros included)."""
    counts = (
        quarantined[QUARANTINE_REASON].value_counts().to_dict()
        if QUARANTINE_REASON in quarantined
        else {}
    )
    return {reason: int(counts.get(reason, 0)) for reason in REASONS}


def _emails(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v and v.strip())
