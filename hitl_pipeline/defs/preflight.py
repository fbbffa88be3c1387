"""Store checks a step runs before its first write, reported as a plain step failure."""

from collections.abc import Callable

import dagster as dg

from hitl_pipeline.resources.mlflow_registry import StoreUnavailable


def require_stores(*checks: Callable[[], None]) -> None:
    """Run each store's check; the first store that cannot be used fails the step with
    its own message (which names the store and the variable that points at it)."""
    try:
        for check in checks:
            check()
    except StoreUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc
