"""A local Label Studio server process: start, stop, status, and fast data-dir templates.

Label Studio lives in its own virtual environment (its pins clash with ours), so it is
managed here as an outside process, never imported. Used by the CLI
(``hitl-pipeline labelstudio start|stop|status``), the demo and the test fixtures.

Start-up facts this module is built on (checked against Label Studio 1.23.2):

- ``--internal-host`` is the bind address; ``--debug`` stops a busy port from silently
  moving the server to the next port.
- The admin user, its API token and the organisation are created on the first start of
  a data dir from ``LABEL_STUDIO_USERNAME/PASSWORD/USER_TOKEN``; the organisation only
  accepts ``Authorization: Token ...`` if ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN`` was
  true at that moment.
- Migrating a fresh SQLite database is the slow part. A template is therefore migrated
  once with ``label-studio init -q`` *without any user*, and copies of it are started.
  Because the template holds no user, whatever credentials the first start of a copy
  passes become the admin's: any token works with any copy, no token is baked in.
- The server reports a git commit on the unauthenticated ``/api/version``: its
  ``core/version.py`` runs ``git describe`` / ``git show`` from its own package folder,
  which sits inside this repository (``.labelstudio-venv``), and caches what it found in
  ``core/version_.py``. The server is therefore started with ``GIT_DIR`` pointing at no
  repository, and a cache that an earlier start filled with our commit is reset.

On PostgreSQL (``postgres``: a database on a server, see ``hitl_pipeline.deployment``)
the same holds with databases instead of files: a user-less template database is
migrated once per server and Label Studio version (about 30 s on an idle 2-core machine),
and each fresh database is made with ``CREATE DATABASE ... TEMPLATE`` (a second or two),
under a server-wide advisory lock so that concurrent starts wait for one migration.

Credentials: unless the caller passes them, the admin password and API token of a data
dir are generated on its first start and kept in ``<data dir>/credentials.json``, readable
by its owner only, like the whole data dir (its SQLite file holds every API token).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hitl_pipeline.deployment import (
    DeploymentConfigError,
    PostgresServer,
    advisory_lock,
    create_database,
    database_comment,
    database_exists,
    drop_databases,
    label_studio_env,
    set_database_comment,
)

DEFAULT_PORT = 8080
DEFAULT_USERNAME = "admin@hitl.local"
# Data dirs first started before credentials were generated per data dir were seeded with
# these; Label Studio seeds the admin on a data dir's first start only, so such a data dir
# keeps accepting exactly these (see ensure_credentials).
LEGACY_PASSWORD = "hitl-admin-password"
LEGACY_TOKEN = "hitl-local-dev-token-0123456789abcdef"
HOST = "127.0.0.1"

PID_FILE = "label-studio.pid"
LOG_FILE = "label-studio.log"
DB_FILE = "label_studio.sqlite3"
CREDENTIALS_FILE = "credentials.json"
_TEMPLATE_MARKER = ".hitl-template-complete"
# Never copied from a template: each data dir gets its own secret key (it signs sessions
# and JWTs) and its own process bookkeeping.
_NOT_COPIED = frozenset({".env", _TEMPLATE_MARKER, PID_FILE, LOG_FILE, CREDENTIALS_FILE})

# Variables the server reads under a bare name, LABEL_STUDIO_ or HEARTEX_ prefix. Stray
# values from the caller's shell would change where it binds, which database it uses or
# who the admin is (a bare DEBUG='*' even crashes it), so they are removed first.
_SCRUBBED_NAMES = (
    "HOST",
    "PORT",
    "DEBUG",
    "USERNAME",
    "PASSWORD",
    "USER_TOKEN",
    "DJANGO_DB",
    "DATABASE_NAME",
    "BASE_DATA_DIR",
    "POSTGRE_NAME",
    "POSTGRE_USER",
    "POSTGRE_PASSWORD",
    "POSTGRE_HOST",
    "POSTGRE_PORT",
)
_SCRUBBED_PREFIXES = ("", "LABEL_STUDIO_", "HEARTEX_")


class LabelStudioServerError(RuntimeError):
    """The local Label Studio server could not be started or stopped."""


@dataclass(frozen=True)
class PostgresDatabase:
    """Where a local Label Studio keeps its data on PostgreSQL.

    Args:
        server: the PostgreSQL server.
        name: the server's database, created from ``template`` on its first start.
        template: the migrated, user-less template database it is copied from, migrated
            on first use. Default ``hitl_labelstudio_template_<Label Studio version>``:
            one per server and version, shared by every loop on the server like the
            SQLite template in the user's cache (it holds no user and no data).
    """

    server: PostgresServer
    name: str
    template: str | None = None

    def template_name(self, version: str) -> str:
        if self.template:
            return self.template
        suffix = "".join(c if c.isalnum() else "_" for c in version.lower())
        return f"hitl_labelstudio_template_{suffix}"[:63]


class PortInUseError(LabelStudioServerError):
    """The requested port is taken by another process."""


@dataclass(frozen=True)
class Credentials:
    """The admin login and API token of a local Label Studio (never shown in a repr)."""

    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)


def read_credentials(path: Path) -> Credentials | None:
    """The credentials stored at ``path`` (a data dir's ``credentials.json``), if any."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return Credentials(username=raw["username"], password=raw["password"], token=raw["token"])


def ensure_credentials(data_dir: Path, *, username: str = DEFAULT_USERNAME) -> Credentials:
    """The data dir's stored credentials, created on the first call.

    New credentials are random. A data dir that already holds a database but no
    credentials file was first started by an older version with the fixed
    ``LEGACY_PASSWORD`` / ``LEGACY_TOKEN``, and its server accepts only those: they are
    written down instead, so that loops started before keep working.

    The file is written owner-only (0600) inside the owner-only data dir (0700).
    """
    data_dir = Path(data_dir)
    path = data_dir / CREDENTIALS_FILE
    make_private(data_dir)
    existing = read_credentials(path)
    if existing is not None:
        return existing
    if (data_dir / DB_FILE).exists():
        credentials = Credentials(username, LEGACY_PASSWORD, LEGACY_TOKEN)
    else:
        # 40 hex characters: the widest token Label Studio's column holds
        credentials = Credentials(username, secrets.token_urlsafe(18), secrets.token_hex(20))
    _write_private(
        path,
        json.dumps(
            {
                "username": credentials.username,
                "password": credentials.password,
                "token": credentials.token,
            },
            indent=2,
        )
        + "\n",
    )
    return credentials


def make_private(folder: Path) -> None:
    """Create ``folder`` if needed and take group and other access off it and its content.

    The data dir holds the SQLite database with every user's API token and password hash,
    the Django secret key (``.env``) and our ``credentials.json``.
    """
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        mode = path.lstat().st_mode
        if not path.is_symlink() and mode & 0o077:
            path.chmod(mode & 0o7700)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new owner-only file and move it to ``path`` in one step."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover could carry other permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ServerStatus:
    """What is known about a local Label Studio server."""

    running: bool
    pid: int | None
    url: str
    data_dir: Path
    message: str
    ready: bool = False  # the API answered with our token
    startup_s: float | None = None  # wall time of this start, when this call started it
    log_file: Path | None = None


def default_executable() -> Path:
    """The ``label-studio`` of the repository's own Label Studio environment."""
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root / ".labelstudio-venv" / "bin" / "label-studio"


def default_cache_dir() -> Path:
    """Where migrated templates are kept (``$XDG_CACHE_HOME/hitl-pipeline``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hitl-pipeline"


def installed_version(executable: Path | None = None) -> str:
    """Version of the Label Studio installed next to ``executable``, read from its metadata.

    Reading the dist-info name is instant; ``label-studio --version`` boots Django (~5 s).
    """
    exe = executable or default_executable()
    env_root = exe.parent.parent
    for dist in sorted(env_root.glob("lib/python*/site-packages/label_studio-*.dist-info")):
        return dist.name.removeprefix("label_studio-").removesuffix(".dist-info")
    return "unknown"


@dataclass(frozen=True)
class LocalLabelStudio:
    """A Label Studio server on 127.0.0.1 whose state lives in ``data_dir``.

    Args:
        data_dir: SQLite database, media, pid file and log file of this server.
        port: TCP port on 127.0.0.1.
        username: admin e-mail, created on the first start of the data dir.
        password: admin password (for the web UI); None: the data dir's stored one
            (:func:`ensure_credentials`, generated on its first start).
        token: the admin's API token (``Authorization: Token ...``), 6-40 characters;
            None: the data dir's stored one, like ``password``.
        executable: ``label-studio`` to run; defaults to the repository's own environment.
        extra_env: more variables for the server, e.g.
            ``{"LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false"}`` for local webhooks.
        use_template: a data dir without a database is first filled from the migrated
            template (:func:`ensure_template`), which turns a minutes-long first start
            into seconds once the template is cached.
        template_cache_dir: where the template is cached; see :func:`ensure_template`.
        postgres: keep the data in this PostgreSQL database instead of a SQLite file in
            ``data_dir`` (which then holds media, the secret key, pid and log files); a
            missing database is created from the migrated template database.
    """

    data_dir: Path
    port: int = DEFAULT_PORT
    username: str = DEFAULT_USERNAME
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    executable: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    use_template: bool = True
    template_cache_dir: Path | None = None
    postgres: PostgresDatabase | None = None

    def __post_init__(self) -> None:
        # Label Studio silently ignores tokens of 5 characters or fewer, and its token
        # column is 40 characters wide: fail here rather than with a 401 later.
        if self.token is not None and not 5 < len(self.token) <= 40:
            raise ValueError("Label Studio API token must have 6 to 40 characters")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")

    # --- paths and addresses -----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return Path(self.data_dir) / PID_FILE

    @property
    def log_file(self) -> Path:
        return Path(self.data_dir) / LOG_FILE

    @property
    def resolved_executable(self) -> Path:
        return Path(self.executable) if self.executable else default_executable()

    @property
    def credentials_file(self) -> Path:
        return Path(self.data_dir) / CREDENTIALS_FILE

    def credentials(self, *, create: bool = False) -> Credentials | None:
        """The admin's credentials: those passed in, else the data dir's stored ones.

        Args:
            create: write the data dir's credentials file when it is missing (only the
                code that starts the server does); otherwise a missing file gives None,
                or the legacy credentials for a data dir that already holds a database.
        """
        if self.password is not None and self.token is not None:
            return Credentials(self.username, self.password, self.token)
        stored: Credentials | None
        if create:
            stored = ensure_credentials(Path(self.data_dir), username=self.username)
        else:
            stored = read_credentials(self.credentials_file)
            if stored is None and (Path(self.data_dir) / DB_FILE).exists():
                stored = Credentials(self.username, LEGACY_PASSWORD, LEGACY_TOKEN)
        if stored is None:
            return None
        return Credentials(
            self.username,
            self.password if self.password is not None else stored.password,
            self.token if self.token is not None else stored.token,
        )

    # --- public API -------------------------------------------------------------------
    def status(self) -> ServerStatus:
        """Whether our server runs, and whether its API answers with our token."""
        pid = self._our_pid()
        if pid is None:
            return self._status(False, None, "not running")
        credentials = self.credentials()
        api = _probe_api(self.url, credentials.token if credentials else "")
        if api == "ok":
            return self._status(True, pid, f"running at {self.url}", ready=True)
        if api == "unauthorized":
            return self._status(
                True, pid, f"running at {self.url}, but it rejects the configured token"
            )
        return self._status(True, pid, f"starting (pid {pid}); log: {self.log_file}")

    def start(self, wait_timeout: float = 300.0) -> ServerStatus:
        """Start the server detached (it outlives this process) and wait for its API.

        Idempotent: if our server already runs, its status is returned ("already running").

        Args:
            wait_timeout: seconds to wait for the API to answer with our token. A data dir
                made from a template answers in 7-25 s; a fresh one migrates for minutes.

        Returns:
            The status, with ``startup_s`` set when this call started the server.

        Raises:
            PortInUseError: another process listens on the port.
            LabelStudioServerError: the executable is missing, the server died while
                starting, rejects our token, or did not answer within ``wait_timeout``.
        """
        make_private(Path(self.data_dir))
        # Two callers (the demo and a CLI, say) must not both spawn a server on one data
        # dir: the loser would overwrite the pid file with a process that fails to bind.
        with _locked(Path(self.data_dir) / ".start.lock"):
            return self._start_locked(wait_timeout)

    def _start_locked(self, wait_timeout: float) -> ServerStatus:
        current = self.status()
        if current.running:
            if not current.ready:
                current = self._wait_ready(
                    current.pid, time.monotonic(), wait_timeout, self._token()
                )
            return ServerStatus(
                running=True,
                pid=current.pid,
                url=self.url,
                data_dir=Path(self.data_dir),
                message=f"already running at {self.url} (pid {current.pid})",
                ready=True,
                log_file=self.log_file,
            )
        self.pid_file.unlink(missing_ok=True)  # stale: its process is gone

        exe = self.resolved_executable
        if not exe.exists():
            raise LabelStudioServerError(
                f"Label Studio executable not found at {exe}; install it with `make setup` "
                "(it lives in its own virtual environment, .labelstudio-venv)"
            )
        if port_in_use(self.port):
            raise PortInUseError(
                f"port {self.port} on {HOST} is already in use by another process; "
                f"Label Studio was not started. Stop that process or choose another port "
                f"(e.g. --port {self.port + 1}); find free ones with "
                f"`ss -ltn 'sport = :{self.port}'`."
            )

        data_dir = Path(self.data_dir)
        started = time.monotonic()
        # before the template copy: a data dir without a database gets new credentials
        credentials = self.credentials(create=True)
        assert credentials is not None  # created when missing
        if self.postgres is not None:
            try:
                ensure_postgres_database(self.postgres, executable=exe)
            except DeploymentConfigError as exc:  # the server is down or refuses us
                raise LabelStudioServerError(
                    f"Label Studio's database {self.postgres.name} cannot be prepared: {exc}"
                ) from exc
        elif self.use_template and not (data_dir / DB_FILE).exists():
            prepare_data_dir(data_dir, ensure_template(self.template_cache_dir, executable=exe))
        make_private(data_dir)  # also the database of a data dir made by an older version
        _forget_cached_commit(exe)
        args = [
            str(exe),
            "start",
            "--no-browser",
            "--internal-host",
            HOST,
            "--port",
            str(self.port),
            "--debug",
            "--data-dir",
            str(data_dir.resolve()),
        ]
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(log_fd, "a", encoding="utf-8") as log:
            log.write(f"\n=== hitl-pipeline: starting {' '.join(args)}\n")
            log.flush()
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                env=self._child_env(credentials),
                start_new_session=True,  # survives the CLI; Ctrl-C in the shell leaves it
                umask=0o077,  # the database, secret key and uploads it creates stay private
            )
        # The Popen object is dropped on purpose: the server must outlive us. Mark it
        # collected so that Python does not warn about (or wait for) a running child.
        proc.returncode = 0
        _write_private(self.pid_file, f"{proc.pid}\n")
        status = self._wait_ready(proc.pid, started, wait_timeout, credentials.token)
        return ServerStatus(
            running=True,
            pid=proc.pid,
            url=self.url,
            data_dir=data_dir,
            message=f"started at {self.url} (pid {proc.pid}) in {status.startup_s:.1f} s",
            ready=True,
            startup_s=status.startup_s,
            log_file=self.log_file,
        )

    def stop(self, timeout: float = 30.0) -> ServerStatus:
        """Stop our server (SIGTERM, then SIGKILL after ``timeout``). Fine if not running."""
        pid = self._our_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return self._status(False, None, "not running")
        # The server runs in its own session: signal the whole group so that no helper
        # process it may have spawned stays behind.
        _signal_group(pid, signal.SIGTERM)
        # With --debug Django's autoreloader serves from a child process of the same
        # group, which may outlive the parent briefly and keep the port: wait for both.
        if not (_wait_dead(pid, timeout) and _wait_group_gone(pid, timeout)):
            _signal_group(pid, signal.SIGKILL)
            _wait_dead(pid, 10.0)
            _wait_group_gone(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return self._status(False, None, f"stopped (was pid {pid})")

    # --- internals ----------------------------------------------------------------------
    def _status(
        self, running: bool, pid: int | None, message: str, *, ready: bool = False
    ) -> ServerStatus:
        return ServerStatus(
            running=running,
            pid=pid,
            url=self.url,
            data_dir=Path(self.data_dir),
            message=message,
            ready=ready,
            log_file=self.log_file,
        )

    def _token(self) -> str:
        credentials = self.credentials()
        return credentials.token if credentials else ""

    def _child_env(self, credentials: Credentials | None = None) -> dict[str, str]:
        """The server's environment; ``credentials`` seed the admin on a first start."""
        env = dict(os.environ)
        for name in _SCRUBBED_NAMES:
            for prefix in _SCRUBBED_PREFIXES:
                env.pop(prefix + name, None)
        for name in list(env):
            if name.startswith("GIT_"):
                env.pop(name)
        data_dir = str(Path(self.data_dir).resolve())
        if credentials is not None:
            env.update(
                {
                    "LABEL_STUDIO_USERNAME": credentials.username,
                    "LABEL_STUDIO_PASSWORD": credentials.password,
                    "LABEL_STUDIO_USER_TOKEN": credentials.token,
                }
            )
        env.update(
            {
                # Set as well as --data-dir: the CLI parser imports the settings (and
                # creates ~/.local/share/label-studio) before it reads the flag.
                "LABEL_STUDIO_BASE_DATA_DIR": data_dir,
                # Label Studio runs `git describe` from its own package folder, inside
                # this repository, and serves the commit it finds on the unauthenticated
                # /api/version: with GIT_DIR naming no repository, git finds none.
                "GIT_DIR": os.devnull,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                # Offline and quiet: no telemetry, no PyPI version check, no Sentry.
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.postgres is not None:
            env.update(label_studio_env(self.postgres.server, self.postgres.name))
        env.update(self.extra_env)
        return env

    def _our_pid(self) -> int | None:
        """The pid in the pid file, if that process is alive and is our server."""
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        cmdline = _cmdline(pid)
        # Guards against a recycled pid: only a label-studio serving this data dir is ours.
        if cmdline is not None and (
            "label-studio" not in cmdline or str(Path(self.data_dir).resolve()) not in cmdline
        ):
            return None
        return pid

    def _wait_ready(
        self, pid: int | None, started: float, timeout: float, token: str
    ) -> ServerStatus:
        deadline = started + timeout
        while True:
            if pid is not None and not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise LabelStudioServerError(
                    f"Label Studio exited while starting (see {self.log_file}):\n"
                    + _tail(self.log_file)
                )
            api = _probe_api(self.url, token)
            if api == "ok":
                return ServerStatus(
                    running=True,
                    pid=pid,
                    url=self.url,
                    data_dir=Path(self.data_dir),
                    message="ready",
                    ready=True,
                    startup_s=time.monotonic() - started,
                    log_file=self.log_file,
                )
            if api == "unauthorized":
                where = (
                    f"its database {self.postgres.name} on {self.postgres.server.display}"
                    if self.postgres is not None
                    else str(self.data_dir)
                )
                raise LabelStudioServerError(
                    f"Label Studio at {self.url} runs but rejects the configured token: "
                    f"{where} was first started with other credentials (the admin "
                    "and token are created on a database's first start only). Use those, "
                    "or a fresh data dir"
                    + (" and database (drop it to start afresh)." if self.postgres else ".")
                )
            if time.monotonic() > deadline:
                raise LabelStudioServerError(
                    f"Label Studio (pid {pid}) did not answer at {self.url} within "
                    f"{timeout:.0f} s; it may still be migrating its database. Check "
                    f"{self.log_file} and `status`, or `stop` it.\n" + _tail(self.log_file)
                )
            time.sleep(0.5)


# --- templates --------------------------------------------------------------------------
def ensure_template(
    cache_dir: Path | None = None,
    *,
    executable: Path | None = None,
    timeout: float = 900.0,
) -> Path:
    """Return a migrated, user-less Label Studio data dir, building it once if needed.

    Migrating a fresh database is the slow part of a first start. The template is built
    with ``label-studio init -q`` and no user, so copies of it accept any credentials on
    their first start. A file lock makes concurrent callers (pytest workers, a demo and a
    test run) wait for one build instead of racing.

    Args:
        cache_dir: where templates live; defaults to ``~/.cache/hitl-pipeline``.
        executable: ``label-studio`` to migrate with; defaults to the repository's own.
        timeout: seconds allowed for the migration.

    Returns:
        The template directory, e.g. ``~/.cache/hitl-pipeline/labelstudio-template-1.23.2``.
    """
    exe = executable or default_executable()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    template = cache / f"labelstudio-template-{installed_version(exe)}"
    if (template / _TEMPLATE_MARKER).exists():
        return template
    if not exe.exists():
        raise LabelStudioServerError(f"Label Studio executable not found at {exe}")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{template.name}.lock"):
        if (template / _TEMPLATE_MARKER).exists():  # built while we waited
            return template
        building = cache / f"{template.name}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        env = LocalLabelStudio(data_dir=building, executable=exe)._child_env()  # no user
        started = time.monotonic()
        result = subprocess.run(
            [str(exe), "init", "-q", "--data-dir", str(building.resolve())],
            cwd=building,
            env=env,
            umask=0o077,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0 or not (building / DB_FILE).exists():
            shutil.rmtree(building, ignore_errors=True)
            raise LabelStudioServerError(
                "migrating the Label Studio template failed:\n" + result.stdout[-3000:]
            )
        (building / ".env").unlink(missing_ok=True)  # per-copy secret key
        (building / _TEMPLATE_MARKER).write_text(
            f"migrated in {time.monotonic() - started:.1f} s\n", encoding="utf-8"
        )
        shutil.rmtree(template, ignore_errors=True)  # a half-built leftover
        building.rename(template)
        return template


def ensure_postgres_database(
    database: PostgresDatabase, *, executable: Path | None = None, timeout: float = 900.0
) -> bool:
    """Create ``database`` from its migrated template unless it exists; True if created.

    The template database is migrated on first use (``label-studio init -q`` with no user,
    like the SQLite template) and marked complete with a comment on it; a template left
    half-migrated by a killed build has no mark and is built again. Everything happens
    under a server-wide advisory lock, so that concurrent callers (pytest workers, a demo
    and ``hitl-pipeline up``) wait for one build: ``CREATE DATABASE ... TEMPLATE`` also
    needs the template free of other sessions.

    Raises:
        LabelStudioServerError: the migration failed.
        hitl_pipeline.deployment.DeploymentConfigError: the server cannot be used.
    """
    exe = executable or default_executable()
    version = installed_version(exe)
    template = database.template_name(version)
    server = database.server
    with advisory_lock(server, f"labelstudio-template:{template}"):
        if database_exists(server, database.name):
            return False
        if not (database_comment(server, template) or "").startswith(_TEMPLATE_MARKER):
            _migrate_postgres_template(server, template, exe, timeout)
        return create_database(server, database.name, template=template)


def _migrate_postgres_template(
    server: PostgresServer, template: str, exe: Path, timeout: float
) -> None:
    if not exe.exists():
        raise LabelStudioServerError(f"Label Studio executable not found at {exe}")
    drop_databases(server, [template])  # a half-migrated leftover
    create_database(server, template)
    scratch = Path(tempfile.mkdtemp(prefix="hitl-ls-template-"))
    try:
        builder = LocalLabelStudio(
            data_dir=scratch,
            executable=exe,
            postgres=PostgresDatabase(server=server, name=template),
        )
        started = time.monotonic()
        result = subprocess.run(
            [str(exe), "init", "-q", "--data-dir", str(scratch)],
            cwd=scratch,
            env=builder._child_env(),  # no user
            umask=0o077,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        drop_databases(server, [template])
        raise LabelStudioServerError(
            f"migrating the Label Studio template database {template} on {server.display} "
            "failed:\n" + result.stdout[-3000:]
        )
    set_database_comment(
        server,
        template,
        f"{_TEMPLATE_MARKER}: Label Studio {installed_version(exe)}, migrated by "
        f"hitl-pipeline in {time.monotonic() - started:.1f} s",
    )


def prepare_data_dir(dest: Path, template: Path) -> Path:
    """Make ``dest`` a Label Studio data dir by copying a migrated template.

    A ``dest`` that already holds a database is left untouched (never overwrite someone's
    annotations), so this is safe to call before every start.

    Args:
        dest: the data dir to create.
        template: a directory returned by :func:`ensure_template`.

    Returns:
        ``dest``.
    """
    dest = Path(dest)
    if (dest / DB_FILE).exists():
        return dest
    if not (Path(template) / DB_FILE).exists():
        raise FileNotFoundError(f"{template} is not a Label Studio template (no {DB_FILE})")
    shutil.copytree(
        template,
        dest,
        dirs_exist_ok=True,
        ignore=lambda _dir, names: [n for n in names if n in _NOT_COPIED],
    )
    make_private(dest)  # templates built by older versions were world-readable
    return dest


def add_local_user(
    data_dir: Path,
    *,
    email: str,
    password: str,
    token: str,
    executable: Path | None = None,
    postgres: PostgresDatabase | None = None,
) -> None:
    """Create a user with a known API token in a local data dir's organisation.

    Runs ``label-studio init -q`` against the data dir, which works while the server
    runs (about 7 s, it boots Django). Users created through the REST API join no
    organisation as their active one, so they see no projects with their own token. Over
    HTTP, joining through the organisation's invite link is the other supported way (see
    ``hitl_pipeline.demo.reviewers``). The user is created as staff, like the admin.
    A server on PostgreSQL needs its ``postgres`` database here too.
    """
    server = LocalLabelStudio(data_dir=Path(data_dir), executable=executable, postgres=postgres)
    env = server._child_env()
    result = subprocess.run(
        [
            str(server.resolved_executable),
            "init",
            "-q",
            "--data-dir",
            str(Path(data_dir).resolve()),
            "--username",
            email,
            "--password",
            password,
            "--user-token",
            token,
        ],
        cwd=Path(data_dir),
        env=env,
        umask=0o077,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise LabelStudioServerError(
            f"creating Label Studio user {email} failed:\n" + result.stdout[-2000:]
        )


# --- helpers --------------------------------------------------------------------------
def _version_cache(executable: Path) -> tuple[Path, bool] | None:
    """Label Studio's ``core/version_.py`` and whether it is still the file as installed
    (its hash is the one the package's ``RECORD`` lists); None when there is none."""
    env_root = Path(executable).parent.parent
    for record in env_root.glob("lib/python*/site-packages/label_studio-*.dist-info/RECORD"):
        cache = record.parent.parent / "label_studio" / "core" / "version_.py"
        expected = next(
            (
                line.split(",")[1]
                for line in record.read_text(encoding="utf-8").splitlines()
                if line.startswith("label_studio/core/version_.py,")
            ),
            None,
        )
        if expected is None or not cache.is_file():
            return None
        digest = base64.urlsafe_b64encode(hashlib.sha256(cache.read_bytes()).digest())
        return cache, f"sha256={digest.rstrip(b'=').decode()}" == expected
    return None


def shipped_build_info(executable: Path) -> dict[str, str] | None:
    """Label Studio's own build (version, and the commit it was built from) as its package
    ships it in ``core/version_.py``; None when that file was rewritten since install."""
    found = _version_cache(executable)
    if found is None or not found[1]:
        return None
    text = found[0].read_text(encoding="utf-8")
    line = next((ln for ln in text.splitlines() if ln.startswith("info = ")), None)
    if line is None:
        return None
    info = ast.literal_eval(line.removeprefix("info = "))
    return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else None


def _forget_cached_commit(executable: Path) -> None:
    """Reset Label Studio's ``core/version_.py`` if a start that found a repository wrote it.

    Label Studio caches the commit that ``git describe`` found in that file and serves it
    on ``/api/version`` whenever git finds nothing. The file as installed (Label Studio's
    own build commit) is kept; a file that differs was rewritten by the server (before
    starts hid the repository from it) and may hold this repository's commit, so it is
    replaced by one that names only the installed version. The replacement is a new file,
    never an edit in place: installers hard-link package files to their cache, and an
    in-place write would change every later install too.
    """
    found = _version_cache(executable)
    if found is None or found[1]:
        return
    cache = found[0]
    version = installed_version(Path(executable))
    partial = cache.with_name(f".{cache.name}.partial")
    partial.write_text(f"info = {json.dumps({'version': version})}\n", encoding="utf-8")
    os.replace(partial, cache)


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _probe_api(url: str, token: str) -> str:
    """``ok``, ``unauthorized`` or ``down``: one cheap authenticated request."""
    try:
        response = httpx.get(
            f"{url}/api/current-user/whoami",
            headers={"Authorization": f"Token {token}"},
            timeout=5.0,
        )
    except httpx.HTTPError:
        return "down"
    if response.status_code == 200:
        return "ok"
    if response.status_code in (401, 403):
        return "unauthorized"
    return "down"


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own exited child: a zombie still "exists" for kill(0).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # no procfs (macOS): trust the pid file
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of the group has exited (zombies aside) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        members = [p for p in _group_members(pgid) if _pid_alive(p)]
        if not members:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.2)
    return not _pid_alive(pid)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only; imported here so that importing this module stays portable

    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
