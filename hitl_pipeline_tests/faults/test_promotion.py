"""Fault suite: overlapping retrains and the compare-and-set promotion.

Real Dagster runs of the training, gate and deployment assets, on real MLflow (SQLite)
and DVC stores under ``tmp_path``; only ``training_dataset`` is replaced by an asset that
returns a version committed here (the labelling stages are not under test). Two runs are
interleaved deterministically: run A stops after its gate has judged (an event, not a
sleep), run B trains, is gated and promotes, then A goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from hitl_pipeline.core.types import DatasetVersion, ModelRef
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.resources.mlflow_registry import (
    TAG_GATE_CHAMPION,
    MlflowRegistryResource,
    PromotionRefused,
)
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.faults.retrain import prepare_home, retrain, run_config

pytestmark = pytest.mark.faults


@pytest.fixture
def loop(tmp_path, monkeypatch) -> Iterator[tuple[dict[str, Any], dict[str, DatasetVersion]]]:
    """Resources bound to a fresh home, and two committed dataset versions."""
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env()
    versions = prepare_home(settings)
    yield build_resources(settings), versions


def _retrain(
    resources: dict[str, Any], version: DatasetVersion, config: dict[str, Any]
) -> dg.ExecuteInProcessResult:
    return retrain(resources, version, config)


def _candidate(result: dg.ExecuteInProcessResult) -> ModelRef:
    return result.output_for_node("candidate_model")


class _PausedAfterGate:
    """Holds run A (the thread named "run-a") right after its gate decision is recorded,
    until run B has finished: the window in which the tester's two runs overlapped."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gated = threading.Event()
        self.go_on = threading.Event()
        original = MlflowRegistryResource.log_gate_decision

        def log_then_wait(registry: MlflowRegistryResource, **kwargs: Any) -> None:
            original(registry, **kwargs)
            if threading.current_thread().name == "run-a":
                self.gated.set()
                assert self.go_on.wait(timeout=600), "run B never finished"

        monkeypatch.setattr(MlflowRegistryResource, "log_gate_decision", log_then_wait)


def _interleave(
    monkeypatch: pytest.MonkeyPatch,
    run_a: Any,
    run_b: Any,
) -> tuple[dg.ExecuteInProcessResult, dg.ExecuteInProcessResult]:
    pause = _PausedAfterGate(monkeypatch)
    results: dict[str, dg.ExecuteInProcessResult] = {}
    thread = threading.Thread(target=lambda: results.update(a=run_a()), name="run-a")
    thread.start()
    try:
        assert pause.gated.wait(timeout=600), "run A never reached its gate"
        results["b"] = run_b()
    finally:
        pause.go_on.set()
        thread.join(timeout=600)
    return results["a"], results["b"]


def test_overlapping_retrains_never_promote_the_other_runs_model(loop, monkeypatch):
    """The tester's case: A's champion step promoted B's candidate. Now A promotes only
    its own candidate, and only if the champion is still the one its gate judged."""
    resources, versions = loop
    registry = resources["registry"]
    bootstrap = _retrain(resources, versions["clean"], run_config(0))
    assert bootstrap.success
    first = registry.champion()
    assert first is not None and first.version == _candidate(bootstrap).version

    run_a, run_b = _interleave(
        monkeypatch,
        lambda: _retrain(resources, versions["clean"], run_config(1)),
        lambda: _retrain(resources, versions["clean"], run_config(2)),
    )
    a, b = _candidate(run_a), _candidate(run_b)
    assert a.version != b.version
    assert run_b.success  # B was gated against the first champion and promoted
    # A's gate judged A against the first champion; B serves now: A is refused, and
    # nothing A did moved the alias to anything else
    assert not run_a.success
    failure = next(e for e in run_a.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "champion_model"
    assert "champion moved since the gate judged version " + a.version in str(
        failure.event_specific_data.error.message
    )
    champion = registry.champion()
    assert champion is not None and champion.version == b.version
    assert registry.get_version(version=a.version).tags[TAG_GATE_CHAMPION] == first.version


def test_a_run_promotes_its_own_candidate_when_the_other_fails_its_gate(loop, monkeypatch):
    """B's candidate (trained on 60% flipped labels, strict gate) fails its gate while A
    waits; A then promotes its own candidate, not whatever B stored last."""
    resources, versions = loop
    registry = resources["registry"]
    assert _retrain(resources, versions["clean"], run_config(0)).success

    run_a, run_b = _interleave(
        monkeypatch,
        lambda: _retrain(resources, versions["clean"], run_config(1)),
        lambda: _retrain(resources, versions["flipped"], run_config(2, lenient=False)),
    )
    assert run_a.success
    b = _candidate(run_b)
    assert registry.get_version(version=b.version).tags["gate.promote"] == "false"
    assert not run_b.asset_materializations_for_node("champion_model")
    champion = registry.champion()
    assert champion is not None and champion.version == _candidate(run_a).version
    promoted = run_a.asset_materializations_for_node("champion_model")[0]
    assert promoted.metadata["champion_version"].value == _candidate(run_a).version


@pytest.mark.parametrize(
    ("gate_tags", "serving_changes", "refusal"),
    [
        ({}, False, "has no gate decision"),  # registered, never judged (a killed run)
        ({"gate.promote": "false"}, False, "failed its gate"),
        ({"gate.promote": "true"}, True, "champion moved since the gate judged"),
    ],
)
def test_promotion_refuses_what_its_gate_did_not_pass(loop, gate_tags, serving_changes, refusal):
    resources, versions = loop
    registry = resources["registry"]
    assert _retrain(resources, versions["clean"], run_config(0)).success
    judged_against = registry.champion()
    second = _retrain(resources, versions["clean"], run_config(1))
    assert second.success
    # a third version, registered by hand with the given gate record
    third = registry.log_candidate(
        model=registry.load_model(ref=_candidate(second)),
        params={},
        metrics={},
        tags={},
        dataset=versions["clean"],
    )
    client = registry._client()
    for key, value in {**gate_tags, TAG_GATE_CHAMPION: judged_against.version}.items():
        client.set_model_version_tag(registry.model_name, third.version, key, value)
    serving = registry.champion()
    if not serving_changes:
        # the champion is what the gate saw, so only the gate record can refuse
        registry.rollback(to_version=judged_against.version, reason="test", actor="test")
    with pytest.raises(PromotionRefused, match=refusal):
        registry.promote_gated(ref=third)
    after = registry.champion()
    assert after is not None
    assert after.version == (serving.version if serving_changes else judged_against.version)
