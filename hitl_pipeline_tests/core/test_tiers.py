"""Tier assignment from a declarative policy, as a table."""

import pandas as pd
import pytest

from hitl_pipeline.core.tiers import FeatureRule, TierPolicy, assign_tiers

ROUTED = pd.DataFrame(
    {
        "predicted_label": ["fraud", "ok", "ok", "ok", "ok"],
        "reasons": [
            "low_confidence",
            "audit",
            "low_confidence;policy_category",
            "drift_sample",
            "low_confidence",
        ],
        "amount": [10.0, 20.0, 30.0, 9000.0, None],
        "plan": ["basic", "gold", "basic", "basic", "gold"],
    }
)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # default: only the routing stage's policy_category reason needs an expert
        (TierPolicy(), ["general", "general", "expert", "general", "general"]),
        (TierPolicy(expert_reasons=()), ["general"] * 5),
        (TierPolicy(expert_classes=("fraud",), expert_reasons=()), ["expert"] + ["general"] * 4),
        (
            TierPolicy(expert_reasons=(), expert_rules=(FeatureRule.parse("amount > 5000"),)),
            ["general", "general", "general", "expert", "general"],  # a null never matches
        ),
        (
            TierPolicy(expert_reasons=(), expert_rules=(FeatureRule.parse('plan in ["gold"]'),)),
            ["general", "expert", "general", "general", "expert"],
        ),
        (
            TierPolicy(
                expert_classes=("fraud",), expert_rules=(FeatureRule.parse("plan == gold"),)
            ),
            ["expert", "expert", "expert", "general", "expert"],
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
