"""Fixtures of the ``postgres`` tests: the real PostgreSQL server, and fresh databases.

The server is ``HITL_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432``,
what CI and the developers' machines run). It is checked once per session; when it does
not answer every test of the marker fails with that message, never skips. Each test gets
databases of its own under a random prefix, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

from hitl_pipeline.deployment import (
    DeploymentConfigError,
    PostgresDeployment,
    PostgresServer,
    connect,
    create_databases,
    drop_databases,
    parse_postgres_url,
)

TEST_URL_VARIABLE = "HITL_TEST_POSTGRES_URL"
DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server of the tests; fails every test using it when it is down."""
    url = os.environ.get(TEST_URL_VARIABLE) or DEFAULT_TEST_URL
    server = parse_postgres_url(url, variable=TEST_URL_VARIABLE)
    try:
        connect(server, timeout_s=5).close()
    except DeploymentConfigError as exc:
        problem = str(exc).split(": ", 1)[-1]
    else:
        return server
    pytest.fail(
        f"PostgreSQL is not reachable at {server.display}: start it or run without "
        f"-m postgres (or point {TEST_URL_VARIABLE} at one). ({problem})",
        pytrace=False,
    )


def databases_with_prefix(server: PostgresServer, prefix: str) -> list[str]:
    """Every database on ``server`` whose name starts with ``<prefix>_``."""
    with closing(connect(server)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
            (f"{prefix}_",),
        )
        return [row[0] for row in cursor.fetchall()]


@contextmanager
def fresh_deployment(server: PostgresServer) -> Iterator[PostgresDeployment]:
    """A deployment under a random prefix, its Dagster and MLflow databases created, and
    every database of the prefix dropped afterwards. The Label Studio template database
    stays: like the SQLite template in ``~/.cache``, it is a cache of a migration, shared
    by every loop on the server, and holds no data."""
    deployment = PostgresDeployment(server=server, prefix=f"t{uuid.uuid4().hex[:12]}")
    create_databases(deployment)
    try:
        yield deployment
    finally:
        drop_databases(server, databases_with_prefix(server, deployment.prefix))


@pytest.fixture
def postgres_deployment(postgres_server: PostgresServer) -> Iterator[PostgresDeployment]:
    """A deployment with databases of this test's own (see :func:`fresh_deployment`)."""
    with fresh_deployment(postgres_server) as deployment:
        yield deployment
