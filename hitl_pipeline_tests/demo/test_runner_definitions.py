"""Loading the definitions does not depend on Dagster instances that came and went."""

import gc

import dagster as dg

from hitl_pipeline.demo.runner import load_definitions
from hitl_pipeline.internals import bind_defs_state_storage


def test_definitions_load_after_an_earlier_instance_was_collected(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    (tmp_path / "dagster").mkdir()
    # an instance entered earlier (as execute_in_process does) leaves its state storage
    # in Dagster's context variable; then it is garbage-collected
    (tmp_path / "earlier").mkdir()
    earlier = dg.DagsterInstance.local_temp(str(tmp_path / "earlier"))
    with bind_defs_state_storage(earlier.defs_state_storage):
        del earlier
        gc.collect()
        live = dg.DagsterInstance.get()

        defs = load_definitions(live)

        # resolving later, outside the load, must not read the dead reference either
        assert {j.name for j in defs.resolve_all_job_defs()} >= {
            "score_batch_job",
            "retrain_job",
        }
        assert defs.resolve_sensor_def("landing_sensor").name == "landing_sensor"
