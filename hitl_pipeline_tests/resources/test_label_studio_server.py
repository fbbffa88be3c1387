"""The local Label Studio process manager, against real ``label-studio`` processes."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil  # a dependency of dvc
import pytest

from hitl_pipeline.cli import main
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.label_studio_server import (
    DB_FILE,
    LEGACY_PASSWORD,
    LEGACY_TOKEN,
    LabelStudioServerError,
    LocalLabelStudio,
    PortInUseError,
    default_executable,
    ensure_credentials,
    ensure_template,
    free_port,
    port_in_use,
    prepare_data_dir,
    read_credentials,
    shipped_build_info,
)
from hitl_pipeline.settings import Settings


def test_stop_and_status_when_nothing_runs_are_fine(tmp_path: Path) -> None:
    server = LocalLabelStudio(data_dir=tmp_path / "ls", port=free_port())
    assert server.status().running is False
    stopped = server.stop()
    assert stopped.running is False and stopped.pid is None


def test_stale_pid_file_is_not_taken_for_a_running_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "ls"
    data_dir.mkdir()
    # our own pid: alive, but not a label-studio serving this data dir
    (data_dir / "label-studio.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")
    server = LocalLabelStudio(data_dir=data_dir, port=free_port())
    assert server.status().running is False
    assert server.stop().running is False  # and it did not signal us
    assert not (data_dir / "label-studio.pid").exists()


def test_token_must_fit_label_studio() -> None:
    with pytest.raises(ValueError, match="6 to 40"):
        LocalLabelStudio(data_dir=Path("x"), token="abc")


def test_busy_port_is_refused_with_the_port_and_a_way_out(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        server = LocalLabelStudio(data_dir=tmp_path / "ls", port=port)
        with pytest.raises(PortInUseError) as info:
            server.start(wait_timeout=5)
    message = str(info.value)
    assert f"port {port}" in message and "another port" in message
    assert server.status().running is False
    assert not (tmp_path / "ls" / DB_FILE).exists()  # refused before touching anything


@pytest.mark.labelstudio
def test_template_copy_holds_a_database_but_no_secret_and_is_never_overwritten(
    tmp_path: Path,
) -> None:
    template = ensure_template()
    assert ensure_template() == template  # cached: no second migration
    dest = prepare_data_dir(tmp_path / "copy", template)
    assert (dest / DB_FILE).stat().st_size > 100_000
    assert not (dest / ".env").exists()  # each copy makes its own secret key
    (dest / DB_FILE).write_bytes(b"annotations someone cares about")
    prepare_data_dir(dest, template)
    assert (dest / DB_FILE).read_bytes() == b"annotations someone cares about"


@pytest.mark.labelstudio
def test_start_is_idempotent_and_status_reports_ready(label_studio) -> None:
    server = label_studio.server
    before = server.status()
    assert before.running and before.ready and before.url == label_studio.url
    again = server.start()
    assert again.running and "already running" in again.message
    assert again.pid == before.pid
    # the API answers with the session's token (where it listens: the test below)
    whoami = httpx.get(
        f"{server.url}/api/current-user/whoami",
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30,
    )
    assert whoami.json()["email"] == "admin@tests.hitl.local"
    assert label_studio.startup_s < 120


def _listening_sockets(port: int) -> list[tuple[str, int | None]]:
    """(address, pid) of every TCP socket listening on ``port``, IPv4 and IPv6 (the
    kernel's table, not what the server says about itself)."""
    return [
        (conn.laddr.ip, conn.pid)
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    ]


def _other_local_addresses() -> list[str]:
    """This machine's interface addresses other than loopback (IPv6 link-local aside:
    it needs a scope to connect)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for addr in addresses:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(addr.address.split("%")[0])
            if not (ip.is_loopback or ip.is_link_local):
                found.append(str(ip))
    return found


def _accepts(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(3.0)
        return sock.connect_ex((host, port)) == 0


@pytest.mark.labelstudio
def test_server_listens_on_loopback_only(label_studio) -> None:
    server = label_studio.server
    pid = server.status().pid
    assert pid is not None
    listening = _listening_sockets(server.port)
    # exactly one address, 127.0.0.1: no 0.0.0.0, no ::, no interface address
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening
    # and it is the server's socket (its process or the autoreloader child in its group)
    owners = {owner for _, owner in listening}
    assert owners and all(o is not None and os.getpgid(o) == pid for o in owners), owners
    assert _accepts("127.0.0.1", server.port)
    # nothing answers on the machine's other addresses (when it has any)
    for address in _other_local_addresses():
        assert not _accepts(address, server.port), f"reachable on {address}:{server.port}"


@pytest.mark.labelstudio
def test_second_server_on_the_same_port_is_refused(label_studio, tmp_path: Path) -> None:
    other = LocalLabelStudio(data_dir=tmp_path / "other", port=label_studio.server.port)
    with pytest.raises(PortInUseError, match=f"port {label_studio.server.port}"):
        other.start(wait_timeout=5)
    assert label_studio.server.status().ready  # the running one is untouched


@pytest.mark.labelstudio
def test_stop_restart_keeps_data_and_a_changed_token_is_explained(tmp_path: Path) -> None:
    """A full life cycle on a fresh copy: start, stop, restart, wrong credentials."""
    data_dir = tmp_path / "ls"  # no database yet: start() fills it from the template
    server = LocalLabelStudio(data_dir=data_dir, port=free_port(), token="first-token-123456")
    try:
        # two callers at once (a demo and a CLI): one starts it, the other finds it running
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: server.start(wait_timeout=300), range(2)))
        started = next(s for s in both if s.startup_s is not None)
        assert sorted(s.message.split()[0] for s in both) == ["already", "started"]
        assert both[0].pid == both[1].pid
        assert started.ready and started.startup_s is not None
        assert (data_dir / "label-studio.log").exists()
        created = httpx.post(
            f"{server.url}/api/projects/",
            json={"title": "survives restarts"},
            headers={"Authorization": f"Token {server.token}"},
            timeout=30,
        )
        assert created.status_code == 201
        pid = started.pid
        stopped = server.stop()
        assert not stopped.running and not server.status().running
        # the process is gone (an unreaped zombie of this test process would still have a
        # /proc entry, so the port is the honest witness) and the port is free again
        assert pid is not None
        deadline = time.monotonic() + 15
        while port_in_use(server.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not port_in_use(server.port)
        assert not (data_dir / "label-studio.pid").exists()

        other_token = LocalLabelStudio(
            data_dir=data_dir, port=server.port, token="second-token-12345"
        )
        with pytest.raises(LabelStudioServerError, match="rejects the configured token"):
            other_token.start(wait_timeout=300)
        # it is up (with the first token) and still holds the project
        projects = httpx.get(
            f"{server.url}/api/projects/",
            headers={"Authorization": f"Token {server.token}"},
            timeout=30,
        ).json()
        assert [p["title"] for p in projects["results"]] == ["survives restarts"]
    finally:
        server.stop()
    assert not server.status().running


# --- secrets: credentials, permissions, what the server and the CLI give away -------------
def _group_or_other_access(folder: Path) -> list[str]:
    """Paths under ``folder`` (itself included) that group or others may use at all."""
    paths = [folder, *folder.rglob("*")]
    return [
        f"{path} {oct(path.lstat().st_mode & 0o777)}"
        for path in paths
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]


@pytest.mark.faults
def test_credentials_are_random_per_data_dir_kept_and_owner_only(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path / "a" / "labelstudio")
    other = ensure_credentials(tmp_path / "b" / "labelstudio")
    assert first.token != other.token and first.password != other.password
    assert LEGACY_TOKEN not in (first.token, other.token)
    assert 5 < len(first.token) <= 40  # what Label Studio accepts
    assert ensure_credentials(tmp_path / "a" / "labelstudio") == first  # read, not remade
    assert read_credentials(tmp_path / "a" / "labelstudio" / "credentials.json") == first
    assert first.token not in repr(first) and first.password not in repr(first)
    assert _group_or_other_access(tmp_path / "a" / "labelstudio") == []


def test_a_data_dir_seeded_by_an_older_version_keeps_its_credentials(tmp_path: Path) -> None:
    """Label Studio seeds the admin on a data dir's first start only: a data dir made
    before credentials were generated still accepts the old fixed ones, so those are what
    gets written down."""
    data_dir = tmp_path / "labelstudio"
    data_dir.mkdir()
    (data_dir / DB_FILE).write_bytes(b"seeded by an older version")
    read_only = LocalLabelStudio(data_dir=data_dir).credentials()
    assert read_only is not None and read_only.token == LEGACY_TOKEN
    assert not (data_dir / "credentials.json").exists()
    stored = ensure_credentials(data_dir)
    assert (stored.token, stored.password) == (LEGACY_TOKEN, LEGACY_PASSWORD)
    assert read_credentials(data_dir / "credentials.json") == stored


def test_settings_name_the_credentials_file_without_creating_it(tmp_path: Path) -> None:
    settings = Settings.from_env({"HITL_HOME": str(tmp_path / "home")})
    assert settings.label_studio_api_key is None and settings.label_studio_password is None
    assert settings.label_studio_credentials_file.parent == settings.label_studio_data
    assert not (tmp_path / "home").exists()
    overridden = Settings.from_env(
        {
            "HITL_HOME": str(tmp_path / "home"),
            "HITL_LABEL_STUDIO_API_KEY": "token-from-the-environment",
            "HITL_LABEL_STUDIO_PASSWORD": "password-from-the-environment",
        }
    )
    assert overridden.label_studio_api_key == "token-from-the-environment"
    assert "from-the-environment" not in repr(overridden)
    server = LocalLabelStudio(
        data_dir=overridden.label_studio_data,
        password=overridden.label_studio_password,
        token=overridden.label_studio_api_key,
    )
    given = server.credentials(create=True)
    assert given is not None and given.token == "token-from-the-environment"
    assert not (tmp_path / "home").exists()  # given both, nothing is written


@pytest.mark.faults
def test_a_template_copy_is_owner_only_even_from_a_world_readable_template(
    tmp_path: Path,
) -> None:
    """Templates built by older versions (and anything copied with default permissions)
    were readable by everyone, API tokens in the SQLite file included."""
    template = tmp_path / "template"
    (template / "media" / "upload").mkdir(parents=True)
    (template / DB_FILE).write_bytes(b"api tokens live here")
    (template / "media" / "upload" / "f.txt").write_text("x", encoding="utf-8")
    for path in [template, *template.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    dest = prepare_data_dir(tmp_path / "home" / "labelstudio", template)
    assert (dest / DB_FILE).read_bytes() == b"api tokens live here"
    assert _group_or_other_access(dest) == []


def _repository_head(path: Path) -> str | None:
    """HEAD of the git repository holding ``path``, if any."""
    result = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def started_by_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """``hitl-pipeline labelstudio start`` on a fresh home, as a person runs it; stopped
    at the end of the module. Yields the settings and what the command printed."""
    home = tmp_path_factory.mktemp("cli") / ".hitl"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HITL_HOME", str(home))
        env.setenv("HITL_LABEL_STUDIO_PORT", str(free_port()))
        for name in ("URL", "API_KEY", "PASSWORD"):
            env.delenv(f"HITL_LABEL_STUDIO_{name}", raising=False)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["labelstudio", "start"])
        try:
            assert code == 0, printed.getvalue()
            yield Settings.from_env(), printed.getvalue()
        finally:
            with contextlib.redirect_stdout(io.StringIO()):
                main(["labelstudio", "stop"])


@pytest.mark.labelstudio
@pytest.mark.faults
def test_labelstudio_start_says_where_the_credentials_are_never_what(started_by_cli) -> None:
    settings, printed = started_by_cli
    credentials = read_credentials(settings.label_studio_credentials_file)
    assert credentials is not None
    for secret in (credentials.password, credentials.token, LEGACY_PASSWORD, LEGACY_TOKEN):
        assert secret not in printed
    assert "admin@hitl.local" in printed
    assert str(settings.label_studio_credentials_file) in printed
    assert "HITL_LABEL_STUDIO_PASSWORD" in printed


@pytest.mark.labelstudio
@pytest.mark.faults
def test_a_started_data_dir_is_owner_only(started_by_cli) -> None:
    """The SQLite file holds every API token; the credentials file, the admin's password."""
    settings, _ = started_by_cli
    data_dir = settings.label_studio_data
    assert (data_dir / DB_FILE).exists() and settings.label_studio_credentials_file.exists()
    assert (data_dir / ".env").exists()  # the secret key the server wrote itself
    assert _group_or_other_access(data_dir) == []


@pytest.mark.labelstudio
@pytest.mark.faults
def test_api_version_does_not_report_this_repository_commit(started_by_cli) -> None:
    """Label Studio runs `git describe` from its package folder, here inside this clone
    (``.labelstudio-venv``), and serves the commit on the unauthenticated /api/version."""
    settings, _ = started_by_cli
    response = httpx.get(f"{settings.label_studio_url}/api/version", timeout=30)
    assert response.status_code == 200
    assert response.json()["release"]  # it does answer with its own version
    # the backend's entries are the ones Label Studio fills from git: they hold only a
    # version, or Label Studio's own build as its package shipped it (the frontend's
    # entries carry that build too), never a commit found where the server runs
    body = response.json()
    backend = body["label-studio-os-backend"]
    shipped = shipped_build_info(default_executable())
    assert set(backend) == {"version"} or (shipped is not None and backend == shipped)
    commit = body.get("backend", {}).get("commit", "none")
    assert commit == "none" or (shipped is not None and shipped["commit"].startswith(commit))
    head = _repository_head(default_executable().parent)
    if head is not None:  # installed inside this clone, as `make` does: not even its hash
        assert head not in response.text and head[:7] not in response.text


@pytest.mark.labelstudio
def test_the_resource_reads_the_token_from_the_credentials_file(started_by_cli) -> None:
    settings, _ = started_by_cli
    from_file = LabelStudioResource(
        url=settings.label_studio_url,
        credentials_file=str(settings.label_studio_credentials_file),
    )
    assert from_file.is_available()
    missing = LabelStudioResource(
        url=settings.label_studio_url,
        credentials_file=str(settings.label_studio_credentials_file.with_name("none.json")),
    )
    assert not missing.is_available()


def _fake_install(root: Path, content: str, *, shipped: str) -> tuple[Path, Path]:
    """A Label Studio environment whose ``version_.py`` holds ``content`` while RECORD
    lists the hash of ``shipped``; the file is hard-linked to a stand-in installer cache."""
    import base64
    import hashlib

    site = root / "lib" / "python3.11" / "site-packages"
    (site / "label_studio" / "core").mkdir(parents=True)
    dist = site / "label_studio-1.23.2.dist-info"
    dist.mkdir()
    digest = base64.urlsafe_b64encode(hashlib.sha256(shipped.encode()).digest())
    (dist / "RECORD").write_text(
        f"label_studio/core/version_.py,sha256={digest.rstrip(b'=').decode()},{len(shipped)}\n",
        encoding="utf-8",
    )
    cached = root / "installer-cache-version_.py"
    cached.write_text(content, encoding="utf-8")
    installed = site / "label_studio" / "core" / "version_.py"
    os.link(cached, installed)
    (root / "bin").mkdir()
    return root / "bin" / "label-studio", cached


SHIPPED = 'info = {"version": "1.23.2", "commit": "df96d79183156e55", "branch": ""}\n'


@pytest.mark.parametrize(
    ("content", "rewritten"),
    [
        (SHIPPED, False),  # Label Studio's own build info, as installed: kept
        ('info = {"version": "1.23.2", "commit": "0123abcd"}\n', True),  # a start wrote it
    ],
)
def test_a_rewritten_version_cache_is_replaced_not_edited_through_its_hard_links(
    tmp_path: Path, content: str, rewritten: bool
) -> None:
    from hitl_pipeline.resources.label_studio_server import _forget_cached_commit

    executable, cached = _fake_install(tmp_path, content, shipped=SHIPPED)
    _forget_cached_commit(executable)
    installed = tmp_path / "lib/python3.11/site-packages/label_studio/core/version_.py"
    assert cached.read_text(encoding="utf-8") == content  # the cache is never touched
    if rewritten:
        assert installed.read_text(encoding="utf-8") == 'info = {"version": "1.23.2"}\n'
        assert shipped_build_info(executable) is None
    else:
        assert installed.samefile(cached)
        assert shipped_build_info(executable) == {
            "version": "1.23.2",
            "commit": "df96d79183156e55",
            "branch": "",
        }
