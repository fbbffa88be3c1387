"""Named fault points: where the fault suite kills or breaks a step on purpose.

A step that writes shared state calls :func:`fault_point` at the moments where a crash
would hurt most (between two task chunks of a push, after the DVC data is written but
before the git commit, between registering a model and recording its gate decision...).
In normal operation the call reads one environment variable and returns.

``HITL_FAULT=<point>[:<mode>][@<n>]`` arms one point in the processes that see it:

- ``kill`` (default): the process ends at once with exit status 137, as under
  ``kill -9``: no ``finally`` block, no exception handler, no atexit hook runs.
- ``raise``: :class:`InjectedFault` is raised (an ordinary crash the code may catch).

``@n`` fires on the n-th pass through the point in that process (default the first).
Several faults can be armed at once, separated by commas.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter

ENV_VAR = "HITL_FAULT"
KILL_EXIT_STATUS = 137  # what a shell reports for a process ended by SIGKILL

_passes: Counter[str] = Counter()
_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised at an armed fault point in ``raise`` mode."""


def parse_faults(spec: str) -> dict[str, tuple[str, int]]:
    """``"a.b:raise@2,c"`` -> ``{"a.b": ("raise", 2), "c": ("kill", 1)}``."""
    armed: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        head, _, nth = part.partition("@")
        point, _, mode = head.partition(":")
        mode = mode or "kill"
        if mode not in ("kill", "raise"):
            raise ValueError(f"{ENV_VAR}: unknown mode {mode!r} in {part!r} (kill or raise)")
        armed[point] = (mode, int(nth) if nth else 1)
    return armed


def fault_point(point: str) -> None:
    """Kill or break the process here if ``HITL_FAULT`` arms this point."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    armed = parse_faults(spec).get(point)
    if armed is None:
        return
    mode, nth = armed
    with _lock:
        _passes[point] += 1
        if _passes[point] != nth:
            return
    if mode == "raise":
        raise InjectedFault(f"fault injected at {point} ({ENV_VAR}={spec})")
    sys.stderr.write(f"fault injected at {point}: killing process {os.getpid()}\n")
    sys.stderr.flush()
    os._exit(KILL_EXIT_STATUS)


def reset_passes() -> None:
    """Forget how often each point was passed (tests that arm faults in-process)."""
    with _lock:
        _passes.clear()
