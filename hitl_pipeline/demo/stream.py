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

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from hitl_pipeline.core.schema import load_schema, save_schema
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

    @property
    def schema(self) -> BatchSchema:
        """The schema of the stream's batches."""
        return DEMO_SCHEMA

    def is_drifted(self, index: int) -> bool:
        """Whether batch ``index`` follows the new regime."""
        return index >= self.drift_at_batch

    def classes_at(self, index: int) -> tuple[str, ...]:
        """The classes batch ``index`` may hold: always the same four."""
        return CLASSES

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


# --- the moderation stream: short posts, text classes, new spellings half way ------------
MODERATION_CLASSES = ("ok", "toxic", "spam", "threat")
# A policy category: items the model calls a threat always go to a person, and to the
# expert queue (the demo's routing and tier policies name it).
POLICY_CLASSES = ("threat",)
NEW_CLASS = "scam"  # the abuse pattern that did not exist when the loop started
POST_TIME = "t"
POST_TEXT = "text"
POST_CHANNELS = ("forum", "chat", "comments", "dm")

MODERATION_SCHEMA = BatchSchema(
    features=(
        FeatureSpec(POST_TEXT, "text"),
        FeatureSpec("channel", "categorical", categories=POST_CHANNELS),
        FeatureSpec("links", "numeric", min_value=0.0, max_value=50.0),
    ),
    classes=MODERATION_CLASSES,
    time_column=POST_TIME,
)

# Placeholder words only: realistic in shape, harmless in content (no real slurs).
_OLD, _NEW = "before", "after"
_VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "insult": {
        _OLD: ("clown", "numbskull", "dimwit", "loser", "muppet", "goober", "bozo"),
        # new spellings and slang: the seed model has never seen them
        _NEW: ("cl0wn", "numbsk*ll", "d1mwit", "l0s3r", "npc", "mid", "bozo"),
    },
    "insult_verb": {
        _OLD: ("shut up", "get lost", "nobody asked", "go away"),
        _NEW: ("stfu", "ratio", "nobody asked fr", "touch grass"),
    },
    "promo": {
        _OLD: ("free", "discount", "winner", "offer", "promo code", "cheap"),
        _NEW: ("fr33", "d1scount", "w1nner", "0ffer", "link in bio", "drop"),
    },
    "promo_call": {
        _OLD: ("click here", "visit our site", "buy now", "limited time"),
        _NEW: ("cl1ck the link", "DM me", "tap the link", "dont miss out"),
    },
    "menace": {
        _OLD: ("watch your back", "you will regret this", "I know where you live"),
        _NEW: ("catch you lacking", "ur gonna regret it", "i know ur address"),
    },
    "scam_hook": {
        _OLD: ("verify your account", "your parcel is held", "claim your refund"),
        _NEW: ("verify your account", "your parcel is held", "claim your refund"),
    },
    "scam_ask": {
        _OLD: ("send a gift card", "wire the fee", "share the code we texted"),
        _NEW: ("send a gift card", "wire the fee", "share the code we texted"),
    },
    # Before the drift "npc", "mid" and "DM me" are ordinary words of ordinary posts;
    # after it they are slang of insults and spam: the same word, another class.
    "topic": {
        _OLD: (
            "the match",
            "this recipe",
            "the update",
            "the new phone",
            "my exam",
            "the npc quest",
            "the mid season patch",
            "DM me for the notes",
            "the weekend trip",
            "the band",
        ),
        _NEW: (
            "the match",
            "this recipe",
            "the update",
            "the new phone",
            "my exam",
            "the weekend trip",
            "the band",
            "the new map",
            "the finale",
        ),
    },
    "opinion": {
        _OLD: ("was great", "looks fine", "is a bit slow", "made my day", "is free this week"),
        _NEW: ("slaps", "lowkey great", "is kinda slow", "made my day", "is free this week"),
    },
}
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "ok": (
        "{topic} {opinion}",
        "anyone else think {topic} {opinion}?",
        "thanks for sharing, {topic} {opinion}",
        "honestly {topic} {opinion} and I am here for it",
    ),
    "toxic": (
        "you are such a {insult}, {insult_verb}",
        "{insult_verb}, {insult}",
        "only a {insult} would say {topic} {opinion}",
        "what a {insult} take, {insult_verb}",
    ),
    "spam": (
        "{promo} {promo} {promo_call}",
        "{promo_call} for a {promo} on {topic}",
        "{promo}!!! {promo_call} {promo_call}",
        "best {promo} of the year {promo_call}",
    ),
    "threat": (
        "{menace}, {insult}",
        "say that again about {topic} and {menace}",
        "{menace}. {menace}",
        "keep posting and {menace}",
    ),
    NEW_CLASS: (
        "{scam_hook}: {scam_ask} today",
        "hello dear user, {scam_hook}, {scam_ask}",
        "{scam_hook} or it will be closed, {scam_ask}",
        "good news, {scam_hook}: {scam_ask} to receive it",
    ),
}
_PRIORS = {"ok": 0.58, "toxic": 0.18, "spam": 0.15, "threat": 0.09}
# a new pattern starts small, then spreads: its share of the posts in its first batch,
# and in the later ones
_NEW_CLASS_SHARES = (0.02, 0.12)
_CHANNEL_BY_CLASS = {
    "ok": (0.4, 0.3, 0.25, 0.05),
    "toxic": (0.3, 0.35, 0.3, 0.05),
    "spam": (0.15, 0.15, 0.5, 0.2),
    "threat": (0.2, 0.3, 0.2, 0.3),
    NEW_CLASS: (0.05, 0.1, 0.15, 0.7),
}
_LINK_RATE = {"ok": 0.2, "toxic": 0.05, "spam": 1.8, "threat": 0.05, NEW_CLASS: 1.2}


@dataclass(frozen=True)
class ModerationStream:
    """A deterministic stream of short posts to moderate, with a drift half way.

    Classes ``ok``, ``toxic``, ``spam`` and ``threat`` (a policy category). From
    ``drift_at_batch`` on, writers switch to new spellings and slang (vocabulary drift),
    and a few ordinary words become slang of insults and spam (concept drift: the same
    word, another class). With ``new_class_at``, a class that did not exist, ``scam``,
    appears from that batch on, small at first as a new pattern is (2% of the posts in its
    first batch, 12% from then on); ``classes_at`` says which classes a batch's schema
    must declare.

    Attributes:
        seed: Fixes every draw.
        rows_per_batch: Posts in each production batch.
        drift_at_batch: First batch index of the new spellings.
        new_class_at: First batch index with the new class, or None for never.
        seed_train_rows: Posts of the initial labelled training set.
        seed_holdout_rows: Posts of the fixed held-out set.
        confusion: Share of posts that borrow a phrase of another class (class overlap).
        start: Start of batch 0's period (as ``DriftingStream``).
        period: Time covered by one batch.
    """

    seed: int = 7
    rows_per_batch: int = 400
    drift_at_batch: int = 3
    new_class_at: int | None = None
    seed_train_rows: int = 2000
    seed_holdout_rows: int = 600
    confusion: float = 0.08
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    period: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if self.new_class_at is not None and self.new_class_at < 1:
            raise ValueError(
                f"new_class_at must be a batch index >= 1 (the seed data predate it), "
                f"got {self.new_class_at}"
            )
        if not 0.0 <= self.confusion <= 1.0:
            raise ValueError(f"confusion must be in [0, 1], got {self.confusion}")

    @property
    def schema(self) -> BatchSchema:
        """The schema the loop starts with (before any new class)."""
        return MODERATION_SCHEMA

    def is_drifted(self, index: int) -> bool:
        """Whether batch ``index`` uses the new spellings."""
        return index >= self.drift_at_batch

    def classes_at(self, index: int) -> tuple[str, ...]:
        """The classes batch ``index`` may hold (the schema's classes from then on)."""
        if self.new_class_at is not None and index >= self.new_class_at:
            return (*MODERATION_CLASSES, NEW_CLASS)
        return MODERATION_CLASSES

    def seed_sets(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The initial labelled posts (old spellings, no new class): ``(train, holdout)``."""
        before = self.start - self.period
        train = self._draw(
            np.random.default_rng([self.seed, 2_000_001]),
            self.seed_train_rows,
            drifted=False,
            classes=MODERATION_CLASSES,
            prefix="train",
            period_start=before,
        )
        holdout = self._draw(
            np.random.default_rng([self.seed, 2_000_002]),
            self.seed_holdout_rows,
            drifted=False,
            classes=MODERATION_CLASSES,
            prefix="holdout",
            period_start=before,
        )
        return train, holdout

    def batch(self, index: int) -> pd.DataFrame:
        """One production batch of posts with their true labels.

        Args:
            index: Batch number (>= 0).

        Returns:
            ``rows_per_batch`` rows: ``item_id`` (``p003-00017``), ``text``, ``channel``,
            ``links``, ``t`` and ``label``.
        """
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        return self._draw(
            np.random.default_rng([self.seed, 2_000_100 + index]),
            self.rows_per_batch,
            drifted=self.is_drifted(index),
            classes=self.classes_at(index),
            new_class_share=self._new_class_share(index),
            prefix=f"p{index:03d}",
            period_start=self.start + index * self.period,
        )

    def _new_class_share(self, index: int) -> float:
        if self.new_class_at is None or index < self.new_class_at:
            return 0.0
        return _NEW_CLASS_SHARES[min(index - self.new_class_at, len(_NEW_CLASS_SHARES) - 1)]

    def _draw(
        self,
        rng: np.random.Generator,
        rows: int,
        *,
        drifted: bool,
        classes: tuple[str, ...],
        prefix: str,
        period_start: datetime,
        new_class_share: float = 0.0,
    ) -> pd.DataFrame:
        regime = _NEW if drifted else _OLD
        priors = np.array([_PRIORS.get(c, 0.0) for c in classes])
        if NEW_CLASS in classes:
            priors = priors / priors.sum() * (1.0 - new_class_share)
            priors[classes.index(NEW_CLASS)] = new_class_share
        labels = rng.choice(np.asarray(classes, dtype=object), size=rows, p=priors / priors.sum())
        others = [c for c in _TEMPLATES if c in classes]
        texts, channels, links = [], [], []
        for label in labels:
            text = _fill(rng, rng.choice(_TEMPLATES[label]), regime)
            if rng.random() < self.confusion:
                # a phrase of another class: no model separates the classes perfectly
                other = rng.choice([c for c in others if c != label])
                text = f"{text} {_fill(rng, rng.choice(_TEMPLATES[other]), regime)}"
            texts.append(text)
            channels.append(str(rng.choice(POST_CHANNELS, p=_CHANNEL_BY_CLASS[label])))
            links.append(float(min(rng.poisson(_LINK_RATE[label]), 50)))
        seconds = np.sort(rng.uniform(0.0, self.period.total_seconds(), size=rows))
        times = pd.Timestamp(period_start) + pd.to_timedelta(np.floor(seconds), unit="s")
        return pd.DataFrame(
            {
                ITEM_ID: [f"{prefix}-{i:05d}" for i in range(rows)],
                POST_TEXT: pd.Series(texts, dtype=object),
                "channel": pd.Series(channels, dtype=object),
                "links": np.asarray(links, dtype="float64"),
                POST_TIME: times,
                LABEL: pd.Series([str(v) for v in labels], dtype=object),
            }
        )


def _fill(rng: np.random.Generator, template: str, regime: str) -> str:
    """A template with each ``{slot}`` replaced by a word of that slot's vocabulary."""
    out = template
    while "{" in out:
        head, rest = out.split("{", 1)
        slot, tail = rest.split("}", 1)
        out = head + str(rng.choice(_VOCAB[slot][regime])) + tail
    return out


def moderation_frame(
    *,
    batches: int = 12,
    rows_per_batch: int = 400,
    seed: int = 7,
    drift_at_batch: int | None = None,
    new_class_at: int | None = None,
    seed_rows: int = 2000,
) -> pd.DataFrame:
    """The moderation stream as one time-ordered table, for the benchmark and notebooks.

    The first ``seed_rows`` rows are the seed training posts (before batch 0), then
    ``batches`` production batches of ``rows_per_batch`` posts; the new spellings start
    half way unless ``drift_at_batch`` says otherwise. Replay it with
    ``hitl-pipeline benchmark --data F --target label --time-column t --text-columns text
    --seed-rows SEED_ROWS --batch-rows ROWS_PER_BATCH``.

    Args:
        batches: Production batches after the seed rows.
        rows_per_batch: Posts per batch.
        seed: Fixes every draw (the same as the demo's stream for the same arguments).
        drift_at_batch: First batch with the new spellings; default ``batches // 2``.
        new_class_at: First batch with the new class ``scam``, or None.
        seed_rows: Seed training posts at the start of the table.

    Returns:
        Columns ``item_id``, ``text``, ``channel``, ``links``, ``t`` (UTC) and ``label``.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    stream = ModerationStream(
        seed=seed,
        rows_per_batch=rows_per_batch,
        drift_at_batch=batches // 2 if drift_at_batch is None else drift_at_batch,
        new_class_at=new_class_at,
        seed_train_rows=seed_rows,
    )
    train, _holdout = stream.seed_sets()
    return pd.concat([train, *(stream.batch(i) for i in range(batches))], ignore_index=True)


DemoStreamKind = Literal["tabular", "moderation"]
DEMO_STREAMS: tuple[DemoStreamKind, ...] = ("tabular", "moderation")


def demo_stream(
    kind: str,
    *,
    seed: int = 7,
    rows_per_batch: int = 400,
    drift_at_batch: int = 2,
    drift: StreamDrift = "mixed",
    new_class_at: int | None = None,
) -> DriftingStream | ModerationStream:
    """The demo's stream of one kind.

    Args:
        kind: ``"tabular"`` (customer outcomes, the default) or ``"moderation"`` (posts).
        seed: Fixes every draw.
        rows_per_batch: Rows of each batch.
        drift_at_batch: First drifted batch.
        drift: The tabular stream's kind of drift (``STREAM_DRIFTS``).
        new_class_at: The moderation stream's first batch with the new class ``scam``.

    Raises:
        ValueError: An unknown kind, or a new class asked of the tabular stream.
    """
    if kind == "moderation":
        return ModerationStream(
            seed=seed,
            rows_per_batch=rows_per_batch,
            drift_at_batch=drift_at_batch,
            new_class_at=new_class_at,
        )
    if kind != "tabular":
        raise ValueError(f"unknown demo stream {kind!r}: use one of {DEMO_STREAMS}")
    if new_class_at is not None:
        raise ValueError(
            "--new-class-at needs --stream moderation (the tabular stream's "
            "four classes never change)"
        )
    return DriftingStream(
        seed=seed, rows_per_batch=rows_per_batch, drift_at_batch=drift_at_batch, drift=drift
    )


def declare_classes(schema_path: Path, classes: tuple[str, ...]) -> tuple[str, ...]:
    """Add the classes the schema file lacks (at the end, in order); never remove one.

    What a team does when a new abuse pattern appears: the class is added to the schema
    file, and the next push offers it in every Label Studio project.

    Args:
        schema_path: The loop's schema file.
        classes: The classes the next batch may hold.

    Returns:
        The classes added (empty when the file had them all).
    """
    schema = load_schema(schema_path)
    added = tuple(c for c in classes if c not in schema.classes)
    if added:
        save_schema(replace(schema, classes=(*schema.classes, *added)), schema_path)
    return added


def policy_run_config(kind: str) -> dict[str, Any]:
    """Run config of the demo's policy: for the moderation stream, an item the model calls
    a ``threat`` always goes to a person (``policy_category``), in the expert queue.

    Returns:
        A Dagster run config fragment for ``review_queue`` and ``labeling_tasks`` (empty
        for the tabular stream, which declares no policy).
    """
    if kind != "moderation":
        return {}
    return {
        "ops": {
            "review_queue": {"config": {"review_classes": list(POLICY_CLASSES)}},
            "labeling_tasks": {"config": {"expert_classes": list(POLICY_CLASSES)}},
        }
    }
