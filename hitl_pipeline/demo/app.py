"""``hitl-pipeline demo``: services up, bootstrap, then the weekly cycles.

With the UI (what ``make demo`` runs): Label Studio, the MLflow UI and ``dagster dev``
(web server + daemon) start on 127.0.0.1, a batch lands when the loop has finished with the
last one (``--pace ready``; ``--pace clock`` lands one every ``--interval`` seconds), the
simulated reviewers answer in Label Studio, and Dagster's own sensors close the loop.
Headless (``--no-ui``): the cycles run through real Dagster runs in this process and a
JSON summary is written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from hitl_pipeline.demo.narrator import (
    Narrator,
    NarratorThread,
    quiet_third_party,
    wait_until_answering,
)
from hitl_pipeline.demo.pacing import Pacer
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer
from hitl_pipeline.demo.runner import (
    DemoOptions,
    HeadlessLoop,
    land_batch,
    load_definitions,
    partition_for,
    prepare_home,
    read_truth,
    run_headless,
    tell,
    use_home,
)
from hitl_pipeline.resources.label_studio_server import LabelStudioServerError, PostgresDatabase
from hitl_pipeline.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGSTER_PORT = 3000
MLFLOW_PORT = 5000
# how long a UI may take to answer before the demo says so (the Dagster web server took
# about 35 s on a loaded 2-core machine)
UI_TIMEOUT_S = 180.0


def answer_while_reachable(pool: ReviewerPool, truth: Mapping[str, str]) -> int:
    """The simulated reviewers' answers, or 0 with a clear line when Label Studio does not
    answer (stopped or restarting): the demo keeps the loop running and tries again on
    its next turn instead of ending with a traceback."""
    try:
        return pool.answer_open_tasks(truth=truth)
    except httpx.TransportError as exc:
        print(
            f"{time.strftime('%H:%M:%S')} Label Studio at {pool.url} does not answer "
            f"({exc}); the simulated reviewers try again in a few seconds "
            "(`hitl-pipeline labelstudio start` starts it again)",
            file=sys.stderr,
        )
        return 0


def reviewer_pool(settings: Settings, options: DemoOptions) -> ReviewerPool:
    """Three simulated annotators and an adjudicator, so agreement, adjudication and
    annotator quality have something to find: one careful, one careless, one biased
    toward the majority class (``retain``, or ``ok`` for posts); ``reviewer_error_rate``
    scales them all."""
    rate = options.reviewer_error_rate
    return ReviewerPool(
        url=settings.label_studio_url,
        api_key=admin_token(settings),
        project_title=settings.label_studio_project,  # HITL_LABEL_STUDIO_PROJECT's queues
        reviewers=[
            SimulatedReviewer(email="ada@hitl.local", error_rate=rate * 0.5, seed=1),
            SimulatedReviewer(email="grace@hitl.local", error_rate=min(1.0, rate * 4), seed=2),
            SimulatedReviewer(
                email="linus@hitl.local",
                error_rate=min(1.0, rate * 2),
                bias_toward="ok" if options.stream == "moderation" else "retain",
                seed=3,
            ),
        ],
        adjudicators=[SimulatedReviewer(email="hopper@hitl.local", error_rate=rate * 0.25, seed=4)],
        data_dir=settings.label_studio_data if settings.label_studio_is_local else None,
        postgres=PostgresDatabase(
            server=settings.postgres.server, name=settings.postgres.label_studio_database
        )
        if settings.label_studio_is_local and settings.postgres is not None
        else None,
    )


def admin_token(settings: Settings) -> str:
    """The Label Studio admin's API token: HITL_LABEL_STUDIO_API_KEY, else the local
    server's credentials file (written when the server was first started)."""
    if settings.label_studio_api_key:
        return settings.label_studio_api_key
    if settings.label_studio_is_local:
        from hitl_pipeline.cli import _local_label_studio

        credentials = _local_label_studio(settings).credentials()
        if credentials is not None:
            return credentials.token
    raise LabelStudioServerError(
        f"no Label Studio API token: set HITL_LABEL_STUDIO_API_KEY, or start the local "
        f"server (`hitl-pipeline labelstudio start` writes "
        f"{settings.label_studio_credentials_file})"
    )


def count_simulated_reviewers(
    pool: ReviewerPool, environ: MutableMapping[str, str] | None = None
) -> None:
    """Make the simulated reviewers count when a reviewer list (``HITL_REVIEWERS``) is
    configured: they join it for this process and the Dagster it starts. Unset, every
    account except the pipeline's service account counts already."""
    env = os.environ if environ is None else environ
    listed = [e.strip() for e in env.get("HITL_REVIEWERS", "").split(",") if e.strip()]
    if listed:
        simulated = [r.email for r in (*pool.reviewers, *pool.adjudicators)]
        env["HITL_REVIEWERS"] = ",".join(dict.fromkeys([*listed, *simulated]))


def ensure_label_studio(settings: Settings) -> bool:
    """Start the local Label Studio when no external one is configured.

    Returns:
        True when this call started it (so the caller may stop it again).
    """
    if not settings.label_studio_is_local:
        return False
    from hitl_pipeline.cli import _local_label_studio

    server = _local_label_studio(settings)
    if server.status().running:
        return False
    print(
        f"starting Label Studio on {settings.label_studio_url} "
        f"(data in {settings.label_studio_data})"
    )
    status = server.start()  # raises with a clear message (busy port, ...) when it cannot
    print(f"Label Studio ready at {status.url}")
    return True


def _login(settings: Settings) -> str:
    """Where the Label Studio login is written: never the password itself."""
    if not settings.label_studio_is_local:
        return "your own account"
    from hitl_pipeline.settings import DEFAULT_LABEL_STUDIO_USER

    if settings.label_studio_password:
        return f"login {DEFAULT_LABEL_STUDIO_USER}, password from HITL_LABEL_STUDIO_PASSWORD"
    return (
        f"login {DEFAULT_LABEL_STUDIO_USER}, password in "
        f"{settings.label_studio_credentials_file}, owner-only"
    )


def stop_label_studio(settings: Settings) -> None:
    from hitl_pipeline.cli import _local_label_studio

    _local_label_studio(settings).stop()


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    ui: bool,
    summary_path: Path | None,
    batch_interval_s: float,
    pace: str = "ready",
) -> int:
    use_home(settings)
    quiet_third_party()
    try:
        started_ls = ensure_label_studio(settings)
    except LabelStudioServerError as exc:
        print(f"cannot start Label Studio: {exc}", file=sys.stderr)
        return 1
    pool = reviewer_pool(settings, options)
    count_simulated_reviewers(pool)
    try:
        if not ui:
            summary = run_headless(
                settings, options, answer_tasks=lambda truth: pool.answer_open_tasks(truth=truth)
            )
            _write_summary(summary, summary_path or settings.home / "demo-summary.json")
            return 0
        return _run_with_ui(settings, options, pool, batch_interval_s, pace)
    finally:
        if started_ls and not ui:
            stop_label_studio(settings)
            print(
                "Label Studio stopped; `hitl-pipeline labelstudio start` serves the same data again"
            )


def _write_summary(summary: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    print(f"summary written to {path}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _spawn(
    name: str, command: list[str], env: Mapping[str, str], log_dir: Path
) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{name}.log").open("ab")
    print(f"starting {name}: logs in {log_dir / (name + '.log')}")
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # a demo started in the background inherits an ignored SIGINT, and `dagster dev`
        # would then ignore the Ctrl-C (and SIGTERM) meant to stop it
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_on_signals() -> None:
    """Ctrl-C, and SIGTERM from a script or a service manager, stop the demo the same way
    (its UIs too), even when it was started in the background with SIGINT ignored."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def _run_with_ui(
    settings: Settings, options: DemoOptions, pool: ReviewerPool, interval: float, pace: str
) -> int:
    for port, what in ((DAGSTER_PORT, "Dagster UI"), (MLFLOW_PORT, "MLflow UI")):
        if not _port_free(port):
            print(
                f"port {port} for the {what} is busy: stop what uses it and run again",
                file=sys.stderr,
            )
            return 1
    _stop_on_signals()
    stream = prepare_home(settings, options)
    instance = dg.DagsterInstance.get()
    defs = load_definitions(instance)
    resources = defs.resources or {}
    narrator = Narrator(instance, queue_status=resources["label_studio"].queue_status)
    loop = HeadlessLoop(settings, defs, instance, after_run=lambda _: tell(narrator))
    env = {
        **os.environ,
        "HITL_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        # One process per run, not one per step: on a small machine each step process
        # would pay the imports again (`hitl-pipeline timings` shows the difference).
        "HITL_EXECUTOR": os.environ.get("HITL_EXECUTOR") or "in_process",
    }
    logs = settings.home / "logs"
    # The tracking store's schema first: the MLflow UI and the bootstrap run would
    # otherwise both migrate a fresh SQLite file at once, and one of them fails.
    resources["registry"].check()
    # The UIs start while the first champion trains: both take about a minute.
    processes = _start_uis(settings, env, logs)
    narration = NarratorThread(narrator)
    try:
        if resources["registry"].champion() is None:
            print("bootstrap: training the first champion from the seed data (a Dagster run)")
            loop.run_job("retrain_job", trigger="bootstrap")
        # the experiment in the "Model training" view (MLflow 3 opens its GenAI view otherwise)
        mlflow_page = resources["registry"].experiment_link() or f"http://127.0.0.1:{MLFLOW_PORT}"
        if not _announce_uis(settings, processes, mlflow_page=mlflow_page, logs=logs):
            return 1
        pacer = Pacer(
            instance,
            pending_tasks=lambda: resources["label_studio"].queue_status().pending_tasks,
            min_interval_s=interval,
        )
        print(
            (
                "A batch lands when the loop has finished with the last one"
                + (f" (at least {interval:.0f} s apart)" if interval else "")
                if pace == "ready"
                else f"A batch lands every {interval:.0f} s"
            )
            + "; simulated reviewers answer open tasks; each step of the loop is one line "
            "below. Ctrl-C stops.\n"
        )
        narration.start()
        cycle = 1
        while True:
            if cycle <= options.cycles and pacer.waiting_for(ready=pace == "ready") is None:
                partition = partition_for(cycle, stream)
                land_batch(settings, stream, cycle)
                pacer.landed(partition)
                print(
                    f"{time.strftime('%H:%M:%S')} cycle {cycle}: batch {partition} "
                    f"dropped in {settings.landing}; the landing sensor picks it up"
                )
                cycle += 1
            if (settings.demo / "truth.parquet").is_file():
                answered = answer_while_reachable(pool, read_truth(settings))
                pacer.answered(answered)
                if answered:
                    print(
                        f"{time.strftime('%H:%M:%S')} simulated reviewers submitted "
                        f"{answered} answers in Label Studio"
                    )
            if any(p.poll() is not None for p in processes.values()):
                print(
                    "a service stopped unexpectedly; see the logs in " + str(logs), file=sys.stderr
                )
                return 1
            time.sleep(5)
    except KeyboardInterrupt:
        print(
            "\nstopping the Dagster and MLflow UIs (Label Studio keeps running: "
            "`hitl-pipeline labelstudio stop`)"
        )
        return 0
    finally:
        # A second Ctrl-C must not leave the UIs running half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if narration.is_alive():
            narration.stop()
        _stop_all(processes)


def _start_uis(
    settings: Settings, env: Mapping[str, str], logs: Path
) -> dict[str, subprocess.Popen]:
    """The MLflow UI and ``dagster dev`` (web server and daemon), in the background."""
    bin_dir = Path(sys.executable).parent
    return {
        "mlflow-ui": _spawn(
            "mlflow-ui",
            [
                str(bin_dir / "mlflow"),
                "ui",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(MLFLOW_PORT),
                "--workers",
                "1",  # the default 4 workers cost a core on a small machine
            ],
            env,
            logs,
        ),
        "dagster-dev": _spawn(
            "dagster-dev",
            [
                str(bin_dir / "dagster"),
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(DAGSTER_PORT),
            ],
            env,
            logs,
        ),
    }


def _announce_uis(
    settings: Settings,
    processes: Mapping[str, subprocess.Popen],
    *,
    mlflow_page: str,
    logs: Path,
) -> bool:
    """Print each UI's address once it answers; False if one of our UIs stopped."""
    dagster_url = f"http://127.0.0.1:{DAGSTER_PORT}"
    uis = (
        # (what, probe, address shown, what to look at, our process or None)
        (
            "Label Studio",
            f"{settings.label_studio_url.rstrip('/')}/health",
            settings.label_studio_url,
            _login(settings),
            None,
        ),
        (
            "MLflow UI",
            f"http://127.0.0.1:{MLFLOW_PORT}/health",
            mlflow_page,
            "runs, registry, champion alias",
            "mlflow-ui",
        ),
        (
            "Dagster UI",
            f"{dagster_url}/server_info",
            dagster_url,
            "asset graph, runs, sensors, checks",
            "dagster-dev",
        ),
    )
    print("\nOpen (each as soon as it answers):")
    for what, probe, url, hint, name in uis:
        process = processes.get(name) if name else None
        log_file = logs / f"{name}.log" if name else None
        answered = wait_until_answering(
            probe, what=what, timeout_s=UI_TIMEOUT_S, alive=_alive(process)
        )
        if answered:
            print(f"  {what:<14} {url}  ({hint})")
        elif process is not None and process.poll() is not None:
            print(f"  the {what} stopped; see {log_file}", file=sys.stderr)
            return False
        else:
            where = f"; see {log_file}" if log_file else ""
            print(f"  the {what} did not answer at {url} within {UI_TIMEOUT_S:.0f} s{where}")
    return True


def _alive(process: subprocess.Popen | None) -> Callable[[], bool]:
    """Whether the process behind a UI still runs (a UI we did not start: always)."""
    return lambda: process is None or process.poll() is None


def _stop_all(processes: Mapping[str, subprocess.Popen]) -> None:
    for process in processes.values():
        _stop(process)
