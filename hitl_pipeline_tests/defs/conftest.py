"""Fixtures of the sensor tests: the project's real definitions and one daemon tick."""

from __future__ import annotations

import dagster as dg
import pytest


@pytest.fixture(scope="module")
def definitions(tmp_path_factory):
    """The project's real definitions (loading them touches no service)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HITL_HOME", str(tmp_path_factory.mktemp("home")))
        from hitl_pipeline.definitions import defs

        yield defs()


@pytest.fixture
def tick(definitions):
    """Evaluate one sensor tick as the daemon would, against the real definitions."""

    def evaluate(sensor, cursor=None, instance=None, **resources):
        context = dg.build_sensor_context(
            cursor=cursor, instance=instance, resources=resources, definitions=definitions
        )
        return sensor.evaluate_tick(context)

    return evaluate
