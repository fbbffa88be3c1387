"""The loop's own run config: one YAML file whose settings every automatic run takes.

Sensors and the schedule start runs without a person at the launchpad, so a team's
choices (a policy category that always goes to people, a gate margin, a user's model
factory) must live somewhere they read. That is ``$HITL_HOME/run_config.yaml`` (or the
file ``HITL_RUN_CONFIG`` names): a Dagster run config whose ``ops`` sections are the
launchpad's (``review_queue``, ``candidate_model``, ``passes_gate`` ...). Each run a
sensor or the schedule requests gets the sections of its own job's steps, under the
job's own settings (the drift response's larger capacity stays on).

Read when a sensor ticks, never at import; a malformed file fails the tick with a
message naming the file, so no run starts with settings nobody chose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hitl_pipeline.settings import Settings


class RunConfigFileError(ValueError):
    """The loop's run-config file cannot be used."""


def load_run_config(path: Path) -> dict[str, Any]:
    """The file's run config; empty when there is no file.

    Raises:
        RunConfigFileError: Not YAML, not a mapping, or holding more than ``ops``.
    """
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RunConfigFileError(f"{path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping) or set(loaded) - {"ops"}:
        raise RunConfigFileError(
            f"{path} must be a Dagster run config with one top-level key, ops (as in the "
            "launchpad: ops: {review_queue: {config: {...}}}); set HITL_RUN_CONFIG to "
            "another file or fix this one"
        )
    ops = loaded.get("ops") or {}
    if not isinstance(ops, Mapping) or not all(isinstance(v, Mapping) for v in ops.values()):
        raise RunConfigFileError(f"{path}: each entry under ops must be a mapping")
    return {"ops": {str(k): dict(v) for k, v in ops.items()}}


def merged(*configs: Mapping[str, Any]) -> dict[str, Any]:
    """Run configs merged key by key; a later one wins on a conflicting value."""
    out: dict[str, Any] = {}
    for config in configs:
        for key, value in config.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def for_steps(config: Mapping[str, Any], steps: Iterable[str]) -> dict[str, Any]:
    """The ``ops`` sections of ``config`` for these steps (Dagster refuses the others)."""
    wanted = set(steps)
    ops = {k: v for k, v in (config.get("ops") or {}).items() if k in wanted}
    return {"ops": ops} if ops else {}


def request_config(
    steps: Iterable[str],
    job_config: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The run config of a run a sensor or the schedule requests for a job.

    Args:
        steps: The job's asset (step) names.
        job_config: The job's own run config (a run config given with a request replaces
            it, so it is merged back in, over the file's).
        settings: Where the file is; default: the environment's.
    """
    settings = settings or Settings.from_env()
    loop = load_run_config(settings.run_config_file)
    return merged(for_steps(loop, steps), job_config or {})
