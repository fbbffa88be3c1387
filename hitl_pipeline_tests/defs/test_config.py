"""The launchpad's config classes are the loop's settings dataclasses, field for field.

Touches no outside system: the classes are built and compared, and one asset with a
generated config class runs in process.
"""

import dataclasses

import dagster as dg
import pytest

from hitl_pipeline.benchmark.config import OP_SECTIONS, BenchmarkConfig, overrides_from_run_config
from hitl_pipeline.core.drift import DriftPolicy
from hitl_pipeline.core.gate import GatePolicy
from hitl_pipeline.core.loop import DatasetPolicy, LoopSettings
from hitl_pipeline.core.loop_health import AuditPolicy
from hitl_pipeline.core.routing import RoutingPolicy
from hitl_pipeline.core.training import TrainingParams
from hitl_pipeline.defs.config import config_class
from hitl_pipeline.defs.s03_monitoring import DriftConfig
from hitl_pipeline.defs.s04_selection import RoutingConfig
from hitl_pipeline.defs.s06_feedback import AuditConfig
from hitl_pipeline.defs.s07_dataset import DatasetConfig
from hitl_pipeline.defs.s08_training import GateConfig, TrainingConfig

PAIRS = [
    # (launchpad class, settings dataclass, the wiring's own extra fields)
    (RoutingConfig, RoutingPolicy, {"use_fitted_threshold", "drift_response", "output_every_row"}),
    (TrainingConfig, TrainingParams, set()),
    (GateConfig, GatePolicy, set()),
    (DatasetConfig, DatasetPolicy, set()),
    (DriftConfig, DriftPolicy, set()),
    (AuditConfig, AuditPolicy, set()),
]


@pytest.mark.parametrize(("config", "settings", "extra"), PAIRS)
def test_every_setting_is_a_launchpad_field_with_the_same_default(config, settings, extra):
    names = {f.name for f in dataclasses.fields(settings)}

    assert set(config.model_fields) - extra == names
    # the defaults of the run config are exactly the dataclass's
    assert config().to_settings() == settings()


def test_a_launchpad_value_reaches_the_settings_with_its_type():
    gate = GateConfig(prove_on=["human_holdout"], tolerance=0.05, recent_days=None)

    policy = gate.to_settings()

    assert policy.prove_on == ("human_holdout",)
    assert policy.tolerance == 0.05
    assert policy.recent_days is None


def test_a_bad_value_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="tolerance"):
        GateConfig(tolerance=-1.0).to_settings()


def test_a_generated_config_runs_in_a_real_materialization():
    Config = config_class(DatasetPolicy, "DatasetConfigUnderTest")

    @dg.asset
    def split(config: Config) -> float:
        return config.to_settings().selection_fraction

    result = dg.materialize(
        [split], run_config={"ops": {"split": {"config": {"selection_fraction": 0.3}}}}
    )

    assert result.output_for_node("split") == 0.3


def test_the_benchmark_replays_the_pipeline_defaults():
    assert BenchmarkConfig(data="x.csv", target="y").settings == LoopSettings()


def test_the_run_config_sections_are_the_ops_that_hold_those_settings():
    from hitl_pipeline.definitions import defs

    loaded = defs()
    ops = {name for job in loaded.resolve_all_job_defs() for name in job.graph.node_dict}
    assert set(OP_SECTIONS) <= ops
    run_config = {
        "ops": {
            "review_queue": {"config": {"review_capacity": 50, "drift_response": True}},
            "candidate_model_passes_gate": {"config": {"prove_on": ["human_holdout"]}},
            "labeling_tasks": {"config": {"expert_classes": ["x"]}},
        }
    }

    overrides = overrides_from_run_config(run_config)
    settings = LoopSettings().with_overrides(overrides)

    assert overrides == {"routing.review_capacity": 50, "gate.prove_on": ("human_holdout",)}
    assert settings.routing.review_capacity == 50
    assert settings.gate.prove_on == ("human_holdout",)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("gate.min_eval_rows", "20", 20),  # strings from the command line take the type
        ("training.window_days", "7", 7.0),
        ("training.window_days", "none", None),
        ("routing.fill_capacity", "false", False),
        ("gate.prove_on", "human_holdout,holdout", ("human_holdout", "holdout")),
    ],
)
def test_overrides_are_typed_like_the_field(key, value, expected):
    section, name = key.split(".")

    settings = LoopSettings().with_overrides({key: value})

    assert getattr(getattr(settings, section), name) == expected


def test_an_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match=r"gate\.no_such_field"):
        LoopSettings().with_overrides({"gate.no_such_field": 1})
