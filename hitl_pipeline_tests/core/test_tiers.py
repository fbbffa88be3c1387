"""Tier assignment from a declarative policy, as a table."""

import pandas as pd
import pytest

from hitl_pipeline.core.tiers import FeatureRule, TierPolicy, assign_tiers

ROUTED = pd.DataFrame(
    {
        "predicted_label": ["fraud", "ok", "ok", "ok", "ok", "ok"],
        "reasons": [
            "low_confidence",
            "audit",
            "low_confidence;policy_category",
            "drift_sample",
            "low_confidence",
            "out_of_distribution;audit",
        ],
        "amount": [10.0, 20.0, 30.0, 9000.0, None, 1.0],
        "plan": ["basic", "gold", "basic", "basic", "gold", "basic"],
    }
)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # default: the routing stage's policy_category and out_of_distribution reasons
        (TierPolicy(), ["general", "general", "expert", "general", "general", "expert"]),
        (
            TierPolicy(expert_reasons=("policy_category",)),
            [*["general"] * 2, "expert", *["general"] * 3],
        ),
        (TierPolicy(expert_reasons=()), ["general"] * 6),
        (TierPolicy(expert_classes=("fraud",), expert_reasons=()), ["expert"] + ["general"] * 5),
        (
            TierPolicy(expert_reasons=(), expert_rules=(FeatureRule.parse("amount > 5000"),)),
            ["general", "general", "general", "expert", "general", "general"],  # null: no match
        ),
        (
            TierPolicy(expert_reasons=(), expert_rules=(FeatureRule.parse('plan in ["gold"]'),)),
            ["general", "expert", "general", "general", "expert", "general"],
        ),
        (
            TierPolicy(
                expert_classes=("fraud",), expert_rules=(FeatureRule.parse("plan == gold"),)
            ),
            ["expert", "expert", "expert", "general", "expert", "expert"],
        ),
    ],
)
def test_assign_tiers(policy, expected) -> None:
    assert assign_tiers(ROUTED, policy).tolist() == expected


@pytest.mark.parametrize("text", ["amount >", "amount ~ 3", ""])
def test_bad_rules_are_refused(text) -> None:
    with pytest.raises(ValueError):
        FeatureRule.parse(text)


def test_rule_on_a_missing_column_says_which() -> None:
    with pytest.raises(ValueError, match="nope"):
        assign_tiers(ROUTED, TierPolicy(expert_rules=(FeatureRule.parse("nope > 1"),)))


# --- the cap on experts for unfamiliarity alone -----------------------------------------
UNFAMILIAR = pd.DataFrame(
    {
        "predicted_label": ["ok", "ok", "threat", "ok", "ok", "ok", "ok", "ok"],
        "reasons": [
            "out_of_distribution",
            "out_of_distribution;low_confidence",
            "out_of_distribution;policy_category",
            "out_of_distribution",
            "low_confidence",
            "audit",
            "out_of_distribution",
            "out_of_distribution",
        ],
        "ood_score": [0.991, 0.999, 0.995, 1.0, 0.4, 0.2, 0.993, 0.992],
        "route": ["review"] * 8,
    }
)


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        # 8 reviewed: a quarter is 2 unfamiliar-only items, the two highest ood_score
        # (rows 3 and 1); the policy category item (row 2) is never capped
        (
            0.25,
            ["general", "expert", "expert", "expert", "general", "general", "general", "general"],
        ),
        (
            0.0,
            ["general", "general", "expert", "general", "general", "general", "general", "general"],
        ),
        (None, ["expert", "expert", "expert", "expert", "general", "general", "expert", "expert"]),
        (1.0, ["expert", "expert", "expert", "expert", "general", "general", "expert", "expert"]),
    ],
)
def test_unfamiliar_items_go_to_experts_up_to_the_cap(share, expected) -> None:
    policy = TierPolicy(expert_classes=("threat",), max_unfamiliar_share=share)
    assert assign_tiers(UNFAMILIAR, policy).tolist() == expected


def test_the_cap_counts_reviewed_items_only() -> None:
    # 4 reviewed: room for 1, the most unfamiliar reviewed item (row 3); the
    # auto-accepted rows 6 and 7 take none of it
    routed = UNFAMILIAR.assign(route=["review"] * 4 + ["auto_accept"] * 4, ood_score=0.991)
    routed.loc[[3, 6, 7], "ood_score"] = [0.995, 1.0, 1.0]
    tiers = assign_tiers(routed, TierPolicy(max_unfamiliar_share=0.25)).tolist()
    assert [i for i, tier in enumerate(tiers) if tier == "expert"] == [2, 3]


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_cap_outside_zero_to_one_is_refused(share) -> None:
    with pytest.raises(ValueError, match="max_unfamiliar_share"):
        TierPolicy(max_unfamiliar_share=share)
