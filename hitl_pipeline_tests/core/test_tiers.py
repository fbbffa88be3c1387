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
