"""How the Label Studio token is bound: never as plain config that the Dagster UI shows.

The UI renders what the code server sends it, the repository snapshot, resource config
included. These tests inspect that snapshot; they touch no server.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value

from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.resources.label_studio_server import ensure_credentials
from hitl_pipeline.settings import Settings

TOKEN = "token-that-must-stay-hidden-0123"


def _snapshot(settings: Settings) -> str:
    """The repository snapshot the UI gets, serialised."""
    repo = dg.Definitions(resources=build_resources(settings)).get_repository_def()
    return serialize_value(RepositorySnap.from_def(repo))


@pytest.mark.faults
def test_a_token_from_the_environment_is_bound_as_an_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HITL_LABEL_STUDIO_API_KEY", TOKEN)
    settings = Settings.from_env()
    snapshot = _snapshot(settings)
    assert TOKEN not in snapshot
    assert "HITL_LABEL_STUDIO_API_KEY" in snapshot  # the UI shows the variable's name
    # and Dagster resolves it when the resource is initialised
    with dg.build_resources({"label_studio": build_resources(settings)["label_studio"]}) as built:
        assert built.label_studio.api_key == TOKEN


@pytest.mark.faults
def test_the_local_token_stays_in_the_credentials_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HITL_LABEL_STUDIO_API_KEY", raising=False)
    settings = Settings.from_env()
    credentials = ensure_credentials(settings.label_studio_data)  # as the server's start does
    snapshot = _snapshot(settings)
    assert credentials.token not in snapshot and credentials.password not in snapshot
    assert str(settings.label_studio_credentials_file) in snapshot
