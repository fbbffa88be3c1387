"""What recovery after a crash found and fixed, as plain values.

A killed run leaves state behind in several stores at once: a Dagster run that never
ends, an MLflow run left RUNNING, a registered model version without a gate decision,
DVC outputs that no longer match their ``.dvc`` files. Each fix that puts one of these
right is one :class:`Fix`; ``hitl_pipeline.doctor`` gathers them into a
:class:`DoctorReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Which store a fix touched.
DAGSTER = "dagster"
MLFLOW = "mlflow"  # tracking runs
REGISTRY = "registry"  # MLflow model registry versions
GIT = "git"  # the dataset repository's commits and tags
DVC = "dvc"  # the dataset repository's data files and remote

# Given a Dagster run id: None while that run is in progress (never touch what it wrote),
# else why it no longer is ("FAILURE", "not known to this Dagster instance"...).
RunEnded = Callable[[str], str | None]


@dataclass(frozen=True)
class Fix:
    """One thing put right: in which store, on what, what was done and why."""

    store: str
    object: str
    action: str
    reason: str

    def line(self) -> str:
        return f"[{self.store}] {self.object}: {self.action} ({self.reason})"


@dataclass(frozen=True)
class DoctorReport:
    """Every fix of one recovery pass, and the checks that could not run."""

    fixes: tuple[Fix, ...] = ()
    errors: tuple[str, ...] = ()  # "<check>: <error>"; the other checks still ran

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line: what was fixed, per store, and which checks failed."""
        if not self.fixes and not self.errors:
            return "nothing to fix"
        counts: dict[str, int] = {}
        for fix in self.fixes:
            counts[fix.store] = counts.get(fix.store, 0) + 1
        parts = [f"{n} {store} fix{'es' if n > 1 else ''}" for store, n in counts.items()]
        parts += [f"check failed: {error}" for error in self.errors]
        return "; ".join(parts)

    def lines(self) -> list[str]:
        return [fix.line() for fix in self.fixes] + [f"error: {e}" for e in self.errors]
