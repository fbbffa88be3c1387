"""Store checks a step runs before its first write, reported as a plain step failure."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from hitl_pipeline.resources.errors import StoreUnavailable


@contextmanager
def store_failures() -> Iterator[None]:
    """A store that cannot be used fails the step with the store's own message (which
    names the store and the setting that points at it), not a stack of wrapped errors."""
    try:
        yield
    except StoreUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc


def require_stores(*checks: Callable[[], None]) -> None:
    """Run each store's check before the step writes anything; the first store that
    cannot be used fails the step (see :func:`store_failures`)."""
    with store_failures():
        for check in checks:
            check()
