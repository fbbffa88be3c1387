"""The project's definitions without its sensors and schedule: a code location for the
backfill test, whose daemon must only launch the backfill's runs (the landing sensor
would score the same batches again; the annotation sensor would pull labels on its own).

Jobs, assets, checks, resources and the executor are the project's own, loaded exactly
as ``hitl_pipeline.definitions`` loads them.
"""

from __future__ import annotations

import dagster as dg

# the module, not its `defs`: a second definitions object here would make two
import hitl_pipeline.definitions as project


@dg.definitions
def defs() -> dg.Definitions:
    full = project.defs()
    return dg.Definitions(
        assets=full.assets,
        asset_checks=full.asset_checks,
        jobs=full.jobs,
        resources=full.resources,
        executor=full.executor,
    )
