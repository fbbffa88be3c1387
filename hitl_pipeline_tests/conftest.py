"""Shared fixtures: one real Label Studio server per test session, and generic helpers.

The server is started from a migrated template (built once, cached under
``~/.cache/hitl-pipeline``), on a free port, with a token made up for this session: the
template holds no user, so any credentials work on a fresh copy.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.label_studio_server import (
    LocalLabelStudio,
    ensure_template,
    free_port,
    prepare_data_dir,
)


@pytest.fixture(autouse=True)
def _no_defs_state_storage_from_an_earlier_test() -> Iterator[None]:
    """Each test starts with no "defs state" storage bound.

    Entering a Dagster instance binds its defs-state storage in a context variable that
    Dagster's definitions loader reads; an instance a test entered and never left keeps
    it bound after the instance is garbage-collected, and every later load of the
    definitions in the process then fails with "Attempted to resolve undefined
    DagsterInstance weakref" (seen in full runs, in whichever tests came after). The
    project's definitions keep no defs state; a test that enters an instance binds its
    own storage on top, and whatever it leaves bound is undone when it ends.
    """
    from hitl_pipeline.internals import bind_defs_state_storage

    with bind_defs_state_storage(None):
        yield


@dataclass(frozen=True)
class LabelStudioUnderTest:
    """The session's Label Studio: where it answers and with which admin token."""

    url: str
    token: str
    data_dir: Path
    server: LocalLabelStudio
    startup_s: float


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioUnderTest]:
    """A real Label Studio on 127.0.0.1, started once per session and stopped at the end."""
    template = ensure_template()
    data_dir = prepare_data_dir(tmp_path_factory.mktemp("labelstudio") / "data", template)
    server = LocalLabelStudio(
        data_dir=data_dir,
        port=free_port(),
        username="admin@tests.hitl.local",
        password=secrets.token_hex(8),
        token="test-" + secrets.token_hex(16),
    )
    status = server.start(wait_timeout=300)
    try:
        yield LabelStudioUnderTest(
            url=server.url,
            token=server.token,
            data_dir=data_dir,
            server=server,
            startup_s=status.startup_s or 0.0,
        )
    finally:
        server.stop()


@pytest.fixture
def project_title(request: pytest.FixtureRequest) -> str:
    """A Label Studio project title of this test's own, so tests never share a queue."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).removeprefix("test_")[:38]
    return f"t {name} {uuid.uuid4().hex[:8]}"  # Label Studio allows 50 characters


@pytest.fixture
def label_studio_resource(
    label_studio: LabelStudioUnderTest, project_title: str
) -> LabelStudioResource:
    """The pipeline's resource, bound to the session server and this test's project."""
    return LabelStudioResource(
        url=label_studio.url, api_key=label_studio.token, project_title=project_title
    )
