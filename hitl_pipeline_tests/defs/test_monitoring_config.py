"""The drift check's launchpad config mirrors ``core.drift.DriftPolicy``: same fields,
same defaults, and turning it back into the policy keeps every value."""

import dataclasses

import pytest

from hitl_pipeline.core.drift import DriftPolicy
from hitl_pipeline.defs.s03_monitoring import DriftConfig


def test_config_fields_and_defaults_are_the_policys():
    policy = {f.name: f.default for f in dataclasses.fields(DriftPolicy)}
    config = {name: field.default for name, field in DriftConfig.model_fields.items()}

    assert config == policy


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"num_method": "psi", "num_threshold": 0.25, "drift_share": 0.3},
        {"num_method": None, "cat_method": None, "num_threshold": None, "cat_threshold": None},
        {"distance_min_rows": 500},
    ],
)
def test_config_becomes_the_policy(values):
    assert DriftConfig(**values).to_settings() == DriftPolicy(**values)


def test_impossible_config_is_refused_by_the_policy():
    with pytest.raises(ValueError, match="drift_share"):
        DriftConfig(drift_share=0.0).to_settings()


def test_the_drift_check_is_judged_per_batch_partition():
    """Without its own partitions the check's result is stored without a partition while
    Dagster plans it for the batch: the batch's check then stays planned ("running")."""
    from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
    from hitl_pipeline.defs.s03_monitoring import NO_DRIFT_CHECK, drift_report

    (spec,) = drift_report.check_specs

    assert spec.name == NO_DRIFT_CHECK
    assert spec.partitions_def == BATCH_PARTITIONS
