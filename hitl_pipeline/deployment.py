"""Where a loop's stores live when they are not embedded: one PostgreSQL server for all three.

``HITL_POSTGRES_URL=postgresql://user@host:5432`` (plus ``HITL_DB_PREFIX``, default
``hitl``) puts the Dagster instance (runs, event log, schedules), MLflow's tracking store
and model registry, and the local Label Studio's database on that server, in the databases
``<prefix>_dagster``, ``<prefix>_mlflow`` and ``<prefix>_labelstudio``. The code that uses
the stores is the same as on the embedded SQLite files; only the addresses change.

Passwords never go into ``HITL_POSTGRES_URL`` (nor, through it, into ``dagster.yaml`` or
resource configuration that the Dagster UI shows): every client here (psycopg2 under
Dagster and MLflow, psycopg under Label Studio) reads libpq's own ``PGPASSWORD`` or
``~/.pgpass``.

Everything here is pure except :func:`create_databases` and :func:`write_instance_config`,
which are only called on purpose; importing the module touches nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from hitl_pipeline.settings import Settings

POSTGRES_URL_VARIABLE = "HITL_POSTGRES_URL"
DB_PREFIX_VARIABLE = "HITL_DB_PREFIX"
DEFAULT_DB_PREFIX = "hitl"
DEFAULT_PORT = 5432
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the pipeline's environment
# does not have; psycopg2 comes with dagster-postgres.
SQLALCHEMY_DRIVER = "postgresql+psycopg2"
_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
# PostgreSQL identifiers are cut at 63 bytes; the prefix stays well short of that.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
_DATABASE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

STORES = ("dagster", "mlflow", "labelstudio")


class DeploymentConfigError(ValueError):
    """A deployment setting is malformed; the message names the variable that fixes it."""


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server, without a password (libpq's PGPASSWORD / ~/.pgpass supply it)."""

    host: str
    port: int = DEFAULT_PORT
    user: str = "postgres"

    def sqlalchemy_url(self, database: str) -> str:
        """The URL of ``database`` for SQLAlchemy users (Dagster, MLflow)."""
        return f"{SQLALCHEMY_DRIVER}://{quote(self.user)}@{self.host}:{self.port}/{database}"

    def libpq_dsn(self, database: str) -> str:
        """The URL of ``database`` for psycopg2 itself."""
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{database}"

    @property
    def display(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class PostgresDeployment:
    """The three stores of one loop on one PostgreSQL server."""

    server: PostgresServer
    prefix: str = DEFAULT_DB_PREFIX

    def database(self, store: str) -> str:
        """The database of ``store`` (one of :data:`STORES`)."""
        if store not in STORES:
            raise ValueError(f"unknown store {store!r}; one of {', '.join(STORES)}")
        return f"{self.prefix}_{store}"

    @property
    def databases(self) -> tuple[str, ...]:
        return tuple(self.database(store) for store in STORES)

    @property
    def dagster_url(self) -> str:
        return self.server.sqlalchemy_url(self.database("dagster"))

    @property
    def mlflow_uri(self) -> str:
        """MLflow's tracking and registry URI."""
        return self.server.sqlalchemy_url(self.database("mlflow"))

    @property
    def label_studio_database(self) -> str:
        return self.database("labelstudio")

    def dagster_instance_config(self) -> dict[str, Any]:
        """The ``dagster.yaml`` of the loop's instance on this server (see module doc).

        ``INSTANCE_DEFAULTS`` and the storage; the run monitoring and the pools' default
        limit are added by ``demo.runner.use_home``, which checks them on every instance
        file.
        """
        return {**INSTANCE_DEFAULTS, "storage": {"postgres": self.dagster_storage_config()}}

    def dagster_storage_config(self) -> dict[str, Any]:
        """The ``storage: postgres:`` block: run, event-log and schedule storage."""
        return {
            "postgres_db": {
                "username": self.server.user,
                "hostname": self.server.host,
                "port": self.server.port,
                "db_name": self.database("dagster"),
                "scheme": SQLALCHEMY_DRIVER,
            }
        }

    def environment(self) -> dict[str, str]:
        """The variables that select this deployment, for ``export`` in a shell."""
        return {
            POSTGRES_URL_VARIABLE: self.server.display,
            DB_PREFIX_VARIABLE: self.prefix,
        }


# Every new instance file of the loop, embedded or on Postgres: no telemetry, no
# first-visit dialog over the UI (nux), and one run at a time (on a small machine parallel
# runs only slow each other down, and the loop's stages read as a sequence in the UI).
INSTANCE_DEFAULTS: dict[str, Any] = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
    "concurrency": {"runs": {"max_concurrent_runs": 1}},
}


def label_studio_env(server: PostgresServer, database: str) -> dict[str, str]:
    """The variables that put a Label Studio server (1.23) on ``database``.

    ``DJANGO_DB=default`` selects its PostgreSQL settings, read from ``POSTGRE_*``. The
    password is left empty: Django then passes none, and libpq reads PGPASSWORD or
    ~/.pgpass (Label Studio's own default would be the literal "postgres").
    """
    return {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": database,
        "POSTGRE_USER": server.user,
        "POSTGRE_PASSWORD": "",
        "POSTGRE_HOST": server.host,
        "POSTGRE_PORT": str(server.port),
    }


def with_installed_driver(uri: str) -> str:
    """``uri`` with a bare ``postgresql://`` or ``postgres://`` scheme made psycopg2's.

    SQLAlchemy 2.1 would pick psycopg 3 for the bare scheme; other URIs are returned as
    they are.
    """
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"{SQLALCHEMY_DRIVER}://{rest}"
    return uri


def parse_postgres_url(url: str, *, variable: str = POSTGRES_URL_VARIABLE) -> PostgresServer:
    """Parse ``postgresql://user@host[:port]`` (a trailing ``/`` or database is ignored).

    Args:
        url: the server's URL.
        variable: the setting it came from, named in errors.

    Raises:
        DeploymentConfigError: not a PostgreSQL URL, no host, a bad port, or a password
            in it (use PGPASSWORD or ~/.pgpass, so that it is never written to a file).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise DeploymentConfigError(f"{variable}={url!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in _SCHEMES:
        raise DeploymentConfigError(
            f"{variable}={url!r} is not a PostgreSQL URL: expected "
            "postgresql://USER@HOST:PORT, e.g. postgresql://postgres@127.0.0.1:5432"
        )
    if not parts.hostname:
        raise DeploymentConfigError(
            f"{variable}={url!r} names no host: expected postgresql://USER@HOST:PORT"
        )
    if parts.password:
        raise DeploymentConfigError(
            f"{variable} holds a password: remove it from the URL and give it to libpq as "
            "PGPASSWORD or in ~/.pgpass, so that dagster.yaml and the Dagster UI never show it"
        )
    if parts.query:
        raise DeploymentConfigError(
            f"{variable}={url!r} has query parameters, which are not supported here: "
            "expected postgresql://USER@HOST:PORT"
        )
    return PostgresServer(
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        user=unquote(parts.username) if parts.username else "postgres",
    )


def check_prefix(prefix: str, *, variable: str = DB_PREFIX_VARIABLE) -> str:
    """``prefix`` if it makes valid, unquoted PostgreSQL database names, else an error."""
    if not _PREFIX_RE.match(prefix):
        raise DeploymentConfigError(
            f"{variable}={prefix!r} is not a usable database prefix: lower-case letters, "
            "digits and underscores, starting with a letter, at most 30 characters"
        )
    return prefix


def postgres_from_env(environ: Mapping[str, str] | None = None) -> PostgresDeployment | None:
    """The deployment that ``HITL_POSTGRES_URL`` / ``HITL_DB_PREFIX`` select; None: embedded."""
    env = os.environ if environ is None else environ
    url = env.get(POSTGRES_URL_VARIABLE, "").strip()
    if not url:
        return None
    prefix = env.get(DB_PREFIX_VARIABLE, "").strip() or DEFAULT_DB_PREFIX
    return PostgresDeployment(server=parse_postgres_url(url), prefix=check_prefix(prefix))


# --- side effects, on purpose only -----------------------------------------------------------
def connect(server: PostgresServer, database: str = "postgres", *, timeout_s: int = 5) -> Any:
    """An autocommit psycopg2 connection to ``database`` on ``server``.

    Raises:
        DeploymentConfigError: the server cannot be reached or refuses the login.
    """
    import psycopg2

    try:
        connection = psycopg2.connect(server.libpq_dsn(database), connect_timeout=timeout_s)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeploymentConfigError(
            f"PostgreSQL at {server.display} (database {database}) cannot be used: {first}; "
            f"start it, or fix {POSTGRES_URL_VARIABLE} (and PGPASSWORD or ~/.pgpass)"
        ) from exc
    connection.autocommit = True
    return connection


@contextmanager
def advisory_lock(server: PostgresServer, name: str) -> Iterator[None]:
    """Hold the server-wide advisory lock ``name`` (in the ``postgres`` database).

    Processes on any machine that take the same name wait for each other; the server
    releases the lock if its holder dies.
    """
    import hashlib

    digest = hashlib.sha256(f"hitl-pipeline:{name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    connection = connect(server)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield
    finally:
        connection.close()  # ends the session, and with it the lock


def database_comment(server: PostgresServer, database: str) -> str | None:
    """The comment on ``database`` (None: no such database, or no comment)."""
    with closing(connect(server)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (database,),
        )
        row = cursor.fetchone()
        return None if row is None else row[0]


def set_database_comment(server: PostgresServer, database: str, comment: str) -> None:
    from psycopg2 import sql

    connection = connect(server)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(database)),
                (comment,),
            )
    finally:
        connection.close()


def database_exists(server: PostgresServer, database: str) -> bool:
    with closing(connect(server)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return cursor.fetchone() is not None


def create_database(server: PostgresServer, database: str, *, template: str | None = None) -> bool:
    """Create ``database`` (copying ``template`` if given) unless it exists; True if created.

    Another process creating it at the same moment counts as already there.
    """
    import psycopg2
    from psycopg2 import sql

    for name in (database, template):
        if name is not None and not _DATABASE_RE.match(name):
            raise DeploymentConfigError(f"{name!r} is not a usable database name")
    connection = connect(server)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is not None:
                return False
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
            if template is not None:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            try:
                cursor.execute(statement)
            except psycopg2.errors.DuplicateDatabase:
                return False
            return True
    finally:
        connection.close()


def create_databases(deployment: PostgresDeployment) -> list[str]:
    """Create the deployment's databases that are missing; returns those created.

    Label Studio's database is left out: the local server creates it from its migrated
    template on its first start (see ``resources.label_studio_server``).
    """
    created = []
    for store in ("dagster", "mlflow"):
        name = deployment.database(store)
        if create_database(deployment.server, name):
            created.append(name)
    return created


def drop_databases(server: PostgresServer, databases: Iterable[str]) -> None:
    """Drop ``databases`` if they exist, ending their open connections first."""
    from psycopg2 import sql

    connection = connect(server)
    try:
        with connection.cursor() as cursor:
            for name in databases:
                if not _DATABASE_RE.match(name):
                    raise DeploymentConfigError(f"{name!r} is not a usable database name")
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    finally:
        connection.close()


def write_instance_config(dagster_home: Path, deployment: PostgresDeployment) -> Path:
    """Write ``<dagster_home>/dagster.yaml`` for the deployment, unless it is there already.

    An existing file with a Postgres storage is kept (so this is safe to call on every
    start, and a storage section of one's own overrides this one); a file that keeps the
    instance in SQLite is an error rather than silently overwritten, since it holds the
    runs of another instance.

    Raises:
        DeploymentConfigError: the existing file keeps the instance elsewhere.
    """
    import yaml

    path = Path(dagster_home) / "dagster.yaml"
    if path.is_file():
        try:
            current = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DeploymentConfigError(f"{path} is not valid YAML ({exc})") from exc
        storage = current.get("storage") if isinstance(current, dict) else None
        # A Postgres storage of the user's own (another database, a secret from an
        # environment variable) is an override and stays.
        if isinstance(storage, dict) and "postgres" in storage:
            return path
        raise DeploymentConfigError(
            f"{path} keeps the Dagster instance in {storage or 'the default SQLite files'}, "
            f"not in database {deployment.database('dagster')} on {deployment.server.display} "
            f"as {POSTGRES_URL_VARIABLE} asks: use another HITL_HOME, remove the file (its "
            f"runs stay in the old files), or unset {POSTGRES_URL_VARIABLE}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by hitl-pipeline for HITL_POSTGRES_URL: the instance's runs, event log and\n"
        "# schedules live in PostgreSQL. Edit freely; it is never overwritten.\n"
    )
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(
        header + yaml.safe_dump(deployment.dagster_instance_config(), sort_keys=False),
        encoding="utf-8",
    )
    os.replace(partial, path)
    return path


def bring_up(settings: Settings, *, log: Callable[[str], None] = print) -> dict[str, str]:
    """Create and set up the stores of a PostgreSQL deployment; safe to repeat.

    Creates the missing databases, migrates MLflow's schema, writes the Dagster
    instance's ``dagster.yaml`` and creates its tables, and (for the local Label Studio)
    migrates its template database once and copies it into ``<prefix>_labelstudio``.

    Args:
        settings: the loop's settings, with ``postgres`` set.
        log: one line per step, with its wall time.

    Returns:
        The environment a shell exports to use the deployment.

    Raises:
        DeploymentConfigError: no PostgreSQL deployment configured, or the server cannot
            be used.
    """
    import time

    deployment = settings.postgres
    if deployment is None:
        raise DeploymentConfigError(
            f"no PostgreSQL deployment: set {POSTGRES_URL_VARIABLE} (or pass --postgres URL)"
        )
    started = time.monotonic()
    created = create_databases(deployment)
    for name in deployment.databases[:2]:
        state = "created" if name in created else "exists"
        log(f"database {name} on {deployment.server.display}: {state}")

    from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource

    t0 = time.monotonic()
    MlflowRegistryResource(
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_location=settings.mlflow_artifacts.as_uri(),
    ).check()  # creates the tracking and registry schema on first use
    log(f"MLflow store {_display(settings.mlflow_tracking_uri)}: ready ({_s(t0)})")

    import dagster as dg

    from hitl_pipeline.demo.runner import use_home

    t0 = time.monotonic()
    use_home(settings)
    with dg.DagsterInstance.get() as instance:  # creates run, event-log, schedule tables
        instance.get_runs_count()
    log(f"Dagster instance {settings.dagster_home / 'dagster.yaml'}: ready ({_s(t0)})")

    if settings.label_studio_is_local:
        from hitl_pipeline.resources.label_studio_server import (
            PostgresDatabase,
            ensure_postgres_database,
        )

        t0 = time.monotonic()
        made = ensure_postgres_database(
            PostgresDatabase(server=deployment.server, name=deployment.label_studio_database)
        )
        state = "created from the migrated template" if made else "exists"
        log(f"database {deployment.label_studio_database}: {state} ({_s(t0)})")
    log(f"all stores ready in {_s(started)}")
    return {
        "HITL_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        **deployment.environment(),
    }


def _s(since: float) -> str:
    import time

    return f"{time.monotonic() - since:.1f} s"


def _display(uri: str) -> str:
    return uri.replace(f"{SQLALCHEMY_DRIVER}://", "postgresql://")
