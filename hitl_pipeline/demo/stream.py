"""The project's own drifting production stream, for the demo and the tests.

A customer-outcome classifier: from account features, predict whether a customer will
``retain``, ``upgrade``, ``downgrade`` or ``churn`` next month. Labels are drawn from a
softmax over hand-written class scores, so classes overlap (no model can be perfect)
and are imbalanced (about half the customers simply stay).

From batch ``drift_at_batch`` on, the world changes abruptly, the way a product launch
changes it:

- covariate shift: usage goes up (the new app makes it easy), spend rises, satisfaction
  dips a little;
- prevalence change: the ``app`` channel goes from a few percent of the customers to
  over a third;
- concept change, in that part of the space only: for app customers heavy usage now
  comes with churn rather than upgrades (the app drains them), and many calls to
  support mean a downgrade rather than churn. Elsewhere the old rules still hold.

A model fitted on the seed data has seen a few app customers that behaved like
everyone else, so it is confidently wrong on the new ones; a few hundred labels from
the new regime are enough to learn the app segment's rules.

With ``drift="concept"`` only the last of these happens, and everywhere: the customers
look exactly as before (same distributions, same channel mix), but from
``drift_at_batch`` on every customer follows the new rules. No input drift check can
see it; only labels can, which is what the audit of auto-accepted items is for.

Everything is a function of the seed and the batch index: ``batch(3)`` is the same
whichever batches were drawn before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from hitl_pipeline.core.types import ITEM_ID, LABEL, BatchSchema, FeatureSpec

CLASSES = ("retain", "upgrade", "downgrade", "churn")
PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("web", "store", "phone", "app")
EVENT_TIME = "event_time"

DEMO_SCHEMA = BatchSchema(
    features=(
        FeatureSpec("tenure_months", "numeric", min_value=0.0, max_value=240.0),
        FeatureSpec("monthly_spend", "numeric", min_value=0.0, max_value=2000.0),
        FeatureSpec("support_calls", "numeric", min_value=0.0, max_value=60.0),
        FeatureSpec("usage_hours", "numeric", min_value=0.0, max_value=744.0),
        # survey answer: often not given, hence nullable
        FeatureSpec("satisfaction", "numeric", nullable=True, min_value=0.0, max_value=10.0),
        FeatureSpec("plan", "categorical", categories=PLANS),
        FeatureSpec("region", "categorical", categories=REGIONS),
        FeatureSpec("channel", "categorical", categories=CHANNELS),
    ),
    classes=CLASSES,
    time_column=EVENT_TIME,
)

_PLAN_SHARE = (0.5, 0.35, 0.15)
_REGION_SHARE = (0.3, 0.3, 0.2, 0.2)
_CHANNEL_SHARE = {"before": (0.47, 0.30, 0.19, 0.04), "after": (0.30, 0.20, 0.12, 0.38)}
_PLAN_SPEND = {"basic": 30.0, "standard": 60.0, "premium": 120.0}
StreamDrift = Literal["mixed", "concept"]
STREAM_DRIFTS: tuple[StreamDrift, ...] = ("mixed", "concept")


@dataclass(frozen=True)
class DriftingStream:
    """A deterministic, abruptly drifting stream of labelled customer rows.

    Attributes:
        seed: Fixes every draw.
        rows_per_batch: Rows in each production batch.
        drift_at_batch: First batch index of the new regime (batches before it, and the
            seed sets, follow the old one).
        seed_train_rows: Rows of the initial labelled training set.
        seed_holdout_rows: Rows of the fixed held-out set (old regime).
        noise: Softmax temperature of the labels; higher means more class overlap.
        missing_satisfaction: Share of rows whose survey answer is missing.
        start: Start of batch 0's period; batch ``i`` covers
            ``[start + i * period, start + (i + 1) * period)``, the seed sets the period
            before batch 0.
        period: Time covered by one batch.
        drift: What changes at ``drift_at_batch``: ``"mixed"`` (the product launch:
            covariate shift, prevalence change and new rules for app customers) or
            ``"concept"`` (the inputs keep their distribution; every customer follows
            the new rules).
    """

    seed: int = 7
    rows_per_batch: int = 400
    drift_at_batch: int = 2
    seed_train_rows: int = 2000
    seed_holdout_rows: int = 600
    noise: float = 0.12
    missing_satisfaction: float = 0.08
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    period: timedelta = timedelta(days=7)
    drift: StreamDrift = "mixed"

    def __post_init__(self) -> None:
        if self.drift not in STREAM_DRIFTS:
            raise ValueError(f"drift must be one of {STREAM_DRIFTS}, got {self.drift!r}")

    def is_drifted(self, index: int) -> bool:
        """Whether batch ``index`` follows the new regime."""
        return index >= self.drift_at_batch

    def seed_sets(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The initial labelled data, from the old regime.

        Returns:
            ``(train, holdout)``: ids ``train-00000...`` and ``holdout-00000...``, the
            features, ``event_time`` (in the period before batch 0) and ``label``.
        """
        train = self._draw(
            rng=np.random.default_rng([self.seed, 1_000_001]),
            rows=self.seed_train_rows,
            drifted=False,
            prefix="train",
            period_start=self.start - self.period,
        )
        holdout = self._draw(
            rng=np.random.default_rng([self.seed, 1_000_002]),
            rows=self.seed_holdout_rows,
            drifted=False,
            prefix="holdout",
            period_start=self.start - self.period,
        )
        return train, holdout

    def batch(self, index: int) -> pd.DataFrame:
        """One production batch, with its true labels.

        Args:
            index: Batch number (>= 0).

        Returns:
            ``rows_per_batch`` rows: ``item_id`` (``b003-00017``, unique across the
            stream), the features, ``event_time`` and ``label``.
        """
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        return self._draw(
            rng=np.random.default_rng([self.seed, index]),
            rows=self.rows_per_batch,
            drifted=self.is_drifted(index),
            prefix=f"b{index:03d}",
            period_start=self.start + index * self.period,
        )

    # --- generation -------------------------------------------------------------------
    def _draw(
        self,
        *,
        rng: np.random.Generator,
        rows: int,
        drifted: bool,
        prefix: str,
        period_start: datetime,
    ) -> pd.DataFrame:
        moved = drifted and self.drift == "mixed"  # do the inputs move?
        regime = "after" if moved else "before"
        plan = rng.choice(PLANS, size=rows, p=_PLAN_SHARE)
        region = rng.choice(REGIONS, size=rows, p=_REGION_SHARE)
        channel = rng.choice(CHANNELS, size=rows, p=_CHANNEL_SHARE[regime])
        is_app = channel == "app"

        tenure = np.clip(rng.gamma(2.0, 14.0, size=rows), 0.0, 240.0)
        base_spend = np.vectorize(_PLAN_SPEND.get)(plan)
        spend = base_spend * rng.lognormal(0.0, 0.35, size=rows) * (1.25 if moved else 1.0)
        usage_mean = 40.0 + 12.0 * (plan == "premium") + (18.0 if moved else 0.0)
        usage = np.clip(rng.normal(usage_mean, 16.0, size=rows), 0.0, 744.0)
        satisfaction = np.clip(
            rng.normal(6.8 - (0.5 if moved else 0.0), 1.6, size=rows)
            - 0.02 * np.maximum(spend - base_spend, 0.0),
            0.0,
            10.0,
        )
        # calls come from dissatisfaction, plus a little at random
        calls = rng.poisson(np.clip(0.6 + 0.55 * (7.0 - satisfaction), 0.2, None)).astype(float)
        calls = np.clip(calls, 0.0, 60.0)

        scores = _class_scores(
            tenure=tenure,
            spend=spend,
            base_spend=base_spend,
            calls=calls,
            usage=usage,
            satisfaction=satisfaction,
            plan=plan,
            region=region,
            new_rules=(is_app | (self.drift == "concept")) & drifted,
        )
        gumbel = rng.gumbel(size=scores.shape)
        label = np.asarray(CLASSES)[np.argmax(scores / self.noise + gumbel, axis=1)]

        # the survey answer goes missing after the label is drawn: it still drove the
        # outcome, the model just cannot see it
        shown_satisfaction = np.round(satisfaction, 1)
        shown_satisfaction[rng.random(rows) < self.missing_satisfaction] = np.nan
        seconds = np.sort(rng.uniform(0.0, self.period.total_seconds(), size=rows))
        times = pd.Timestamp(period_start) + pd.to_timedelta(np.floor(seconds), unit="s")

        return pd.DataFrame(
            {
                ITEM_ID: [f"{prefix}-{i:05d}" for i in range(rows)],
                "tenure_months": np.round(tenure, 1),
                "monthly_spend": np.round(spend, 2),
                "support_calls": calls,
                "usage_hours": np.round(usage, 1),
                "satisfaction": shown_satisfaction,
                "plan": plan.astype(object),
                "region": region.astype(object),
                "channel": channel.astype(object),
                EVENT_TIME: times,
                LABEL: label.astype(object),
            }
        )


def _class_scores(
    *,
    tenure: np.ndarray,
    spend: np.ndarray,
    base_spend: np.ndarray,
    calls: np.ndarray,
    usage: np.ndarray,
    satisfaction: np.ndarray,
    plan: np.ndarray,
    region: np.ndarray,
    new_rules: np.ndarray,
) -> np.ndarray:
    """Unnormalised class scores, columns in ``CLASSES`` order."""
    premium = (plan == "premium").astype(float)
    basic = (plan == "basic").astype(float)
    overspend = np.log(spend / base_spend)
    retain = 0.1 + 0.012 * np.minimum(tenure, 60.0) + 0.15 * (region == "north")
    upgrade = 0.045 * (usage - 45.0) + 0.35 * (satisfaction - 6.5) - 1.6 * premium + 0.4 * basic
    downgrade = 2.2 * overspend - 0.03 * (usage - 40.0) - 1.2 * basic - 0.2
    churn = 0.55 * (calls - 2.0) - 0.45 * (satisfaction - 6.0) - 0.02 * (tenure - 24.0) - 0.3

    # new regime (app customers only, or everyone in the concept-only stream): heavy use
    # drives them away, and support calls end in a cheaper plan rather than in leaving
    app_upgrade = -0.03 * (usage - 45.0) + 0.2 * (satisfaction - 6.5) - 1.0
    app_churn = 0.05 * (usage - 50.0) - 0.3 * (satisfaction - 6.0) - 0.2
    app_downgrade = 0.6 * (calls - 2.0) + 1.2 * overspend - 0.2
    upgrade = np.where(new_rules, app_upgrade, upgrade)
    churn = np.where(new_rules, app_churn, churn)
    downgrade = np.where(new_rules, app_downgrade, downgrade)
    return np.column_stack([retain, upgrade, downgrade, churn])
