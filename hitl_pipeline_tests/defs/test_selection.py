"""review_queue reads the threshold ``routing_threshold`` fitted for its champion only.

Touches no outside service: a LocalStore in a temporary folder.
"""

import pandas as pd

from hitl_pipeline.defs.s04_selection import (
    THRESHOLD_KIND,
    THRESHOLD_NAME,
    RoutingConfig,
    fitted_threshold,
)
from hitl_pipeline.resources.local_store import LocalStore


def test_fitted_threshold_applies_to_its_model_version_only(tmp_path):
    store = LocalStore(home=str(tmp_path))
    assert fitted_threshold(store, "3") is None  # nothing fitted yet

    store.write_table(
        kind=THRESHOLD_KIND,
        name=THRESHOLD_NAME,
        frame=pd.DataFrame([{"model_version": "3", "threshold": 0.82}]),
    )

    assert fitted_threshold(store, "3") == 0.82
    assert fitted_threshold(store, "4") is None  # a newer champion: not fitted for it


def test_config_builds_the_policy_with_every_trigger_setting():
    config = RoutingConfig(review_classes=["churn"], review_rules=["monthly_spend > 1500"])

    policy = config.to_settings(confidence_threshold=0.6)

    assert policy.confidence_threshold == 0.6
    assert policy.review_classes == ("churn",)
    assert policy.review_rules == ("monthly_spend > 1500",)
    assert config.to_settings().confidence_threshold == config.confidence_threshold
