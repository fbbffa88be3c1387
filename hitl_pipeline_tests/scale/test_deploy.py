"""deploy/: what can be checked without a cluster (there is no Kubernetes nor Docker
engine here) is checked against the locked libraries themselves.

- ``deploy/dagster.yaml`` loads against Dagster's instance schema; its run launcher
  against dagster-k8s's K8sRunLauncher schema; ``deploy/k8s-executor.yaml`` against the
  k8s_job_executor's.
- The Helm values name the same image, code location, port, volumes and pools as the
  Dockerfile and ``dagster.yaml``.
- The image's command, run here with the repository on the path, serves the definitions
  (a real code server, asked for its jobs through Dagster's CLI).
- MLflow's server arguments parse with the locked mlflow; Label Studio's variables are
  ones the locked Label Studio reads.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hitl_pipeline import internals
from hitl_pipeline.defs.executor import executor_for
from hitl_pipeline.deployment import PostgresDeployment, parse_postgres_url
from hitl_pipeline.resources.label_studio_server import free_port
from hitl_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
HITL_HOME_IN_CLUSTER = "/var/lib/hitl"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _dockerfile() -> dict[str, Any]:
    """The Dockerfile's CMD (exec form), EXPOSEd port and RUN lines."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    (cmd,) = [json.loads(line.removeprefix("CMD")) for line in lines if line.startswith("CMD")]
    (port,) = [int(line.split()[1]) for line in lines if line.startswith("EXPOSE")]
    copies = [shlex.split(line)[1:-1] for line in lines if line.startswith("COPY ")]
    runs = [line.removeprefix("RUN").strip() for line in lines if line.startswith("RUN")]
    return {"cmd": cmd, "port": port, "copies": [s for c in copies for s in c], "runs": runs}


def _helm_deployment() -> dict[str, Any]:
    (deployment,) = _yaml(DEPLOY / "helm" / "values.yaml")["dagster-user-deployments"][
        "deployments"
    ]
    return deployment


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- dagster.yaml --------------------------------------------------------------------
def test_dagster_yaml_loads_against_the_instance_schema(tmp_path):
    (tmp_path / "dagster.yaml").write_text(
        (DEPLOY / "dagster.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    config = internals.validate_instance_folder(str(tmp_path))
    assert set(config["storage"]) == {"postgres"}
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {
        "env": "DAGSTER_PG_PASSWORD"
    }
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_monitoring"]["enabled"] is True
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_the_run_launcher_config_validates_against_dagster_k8s():
    from dagster_k8s import K8sRunLauncher

    launcher = _yaml(DEPLOY / "dagster.yaml")["run_launcher"]
    module = importlib.import_module(launcher["module"])
    assert getattr(module, launcher["class"]) is K8sRunLauncher
    schema = K8sRunLauncher.config_type()
    assert internals.dagster_config_errors(schema, launcher["config"]) == []
    # the check can fail: a misspelt key is named
    broken = {**launcher["config"], "volume_mount": []}
    assert any("volume_mount" in e for e in internals.dagster_config_errors(schema, broken))
    # the shared HITL_HOME volume is where the pipeline's settings put it
    (mount,) = launcher["config"]["volume_mounts"]
    assert mount["mountPath"] == HITL_HOME_IN_CLUSTER
    assert "HITL_EXECUTOR=k8s" in launcher["config"]["env_vars"]


def test_the_k8s_executor_config_validates_and_names_real_steps(tmp_path):
    from dagster_k8s import k8s_job_executor

    config = _yaml(DEPLOY / "k8s-executor.yaml")["execution"]["config"]
    schema = k8s_job_executor.config_schema.config_type
    assert internals.dagster_config_errors(schema, config) == []
    assert internals.dagster_config_errors(schema, {**config, "max_concurent": 2})

    settings = Settings.from_env({"HITL_HOME": str(tmp_path), "HITL_EXECUTOR": "k8s"})
    assert executor_for(settings) is k8s_job_executor
    import hitl_pipeline.definitions as project

    steps = {
        node.name
        for job in project.defs().get_repository_def().get_all_jobs()
        for node in job.graph.nodes
    }
    assert set(config["per_step_k8s_config"]) <= steps


# --- Helm values and the image ---------------------------------------------------------
def test_helm_values_name_the_image_code_location_and_instance_of_deploy():
    values = _yaml(DEPLOY / "helm" / "values.yaml")
    deployment = _helm_deployment()
    image = _dockerfile()
    # the chart runs `dagster api grpc -h 0.0.0.0 -p <port> <args>`: the image's command
    cmd = image["cmd"]
    assert cmd[:3] == ["dagster", "api", "grpc"]
    options = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    grpc_args = [a for k, v in options.items() if k not in ("-h", "-p") for a in (k, v)]
    assert deployment["dagsterApiGrpcArgs"] == grpc_args == ["-m", "hitl_pipeline.definitions"]
    assert deployment["port"] == image["port"] == int(cmd[cmd.index("-p") + 1])
    # the module is the code location pyproject names for `dagster dev`
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'module_name = "hitl_pipeline.definitions"' in pyproject
    # one image everywhere: the code server, and the MLflow server
    reference = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    mlflow = next(d for d in yaml.safe_load_all((DEPLOY / "mlflow" / "mlflow.yaml").read_text()))
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert container["image"] == reference
    assert f"-t {reference}" in (DEPLOY / "README.md").read_text(encoding="utf-8")
    # the env of the code server (and of every run it launches) is valid for the project
    env = {e["name"]: e["value"] for e in deployment["env"]}
    settings = Settings.from_env(env)
    assert str(settings.home) == HITL_HOME_IN_CLUSTER
    assert executor_for(settings).name == "k8s"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    # the chart's instance is deploy/dagster.yaml's: launcher keys, volumes, pools
    instance = _yaml(DEPLOY / "dagster.yaml")
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    from dagster_k8s import K8sRunLauncher

    known = set(K8sRunLauncher.config_type())
    assert {_snake(key) for key in launcher} <= known, {_snake(k) for k in launcher} - known
    assert launcher["volumes"] == instance["run_launcher"]["config"]["volumes"]
    assert launcher["volumeMounts"] == instance["run_launcher"]["config"]["volume_mounts"]
    assert deployment["volumeMounts"] == launcher["volumeMounts"]
    assert values["additionalInstanceConfig"]["concurrency"] == instance["concurrency"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is instance["run_monitoring"]["enabled"] is True
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlDatabase"] == PostgresDeployment(
        server=parse_postgres_url("postgresql://hitl@postgres"), prefix="hitl"
    ).database("dagster")


def test_the_dockerfile_installs_the_locked_environment_with_the_makefiles_uv():
    image = _dockerfile()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (uv_version,) = re.findall(r"^UV_VERSION := (\S+)$", makefile, flags=re.M)
    assert any(f"uv=={uv_version}" in run for run in image["runs"])
    syncs = [run for run in image["runs"] if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs)
    assert {"pyproject.toml", "uv.lock", "hitl_pipeline"} <= set(image["copies"])
    # the build context keeps what the COPY lines need (and only that)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert set(image["copies"]) <= kept


def test_the_images_command_serves_the_definitions(tmp_path):
    """The Dockerfile's CMD, run here (host and port local), answers as a code server
    with the project's jobs, the k8s executor chosen by the cluster's settings."""
    cmd = _dockerfile()["cmd"]
    port = free_port()
    args = list(cmd)
    args[args.index("-h") + 1] = "127.0.0.1"
    args[args.index("-p") + 1] = str(port)
    env = {
        **os.environ,
        "HITL_HOME": str(tmp_path / "hitl"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "HITL_EXECUTOR": "k8s",
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    server = subprocess.Popen(
        [str(BIN / args[0]), *args[1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        listed = None
        for _ in range(90):
            if server.poll() is not None:
                break
            probe = subprocess.run(
                [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if probe.returncode == 0:
                listed = subprocess.run(
                    [str(BIN / "dagster"), "job", "list", "--grpc-port", str(port)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                break
            subprocess.run(["sleep", "2"], check=True)
        assert server.poll() is None, "the code server exited: " + (
            server.stdout.read().decode(errors="replace")[-3000:] if server.stdout else ""
        )
        assert listed is not None, "the code server never answered its health check"
        assert listed.returncode == 0, listed.stderr[-3000:]
        for job in ("score_batch_job", "drift_review_job", "collect_labels_job", "retrain_job"):
            assert job in listed.stdout, listed.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    assert server.poll() is not None


# --- MLflow and Label Studio -----------------------------------------------------------
def test_the_mlflow_server_arguments_parse_with_the_locked_mlflow():
    from mlflow.cli import server as mlflow_server

    mlflow = next(d for d in yaml.safe_load_all((DEPLOY / "mlflow" / "mlflow.yaml").read_text()))
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow"] and container["args"][0] == "server"
    context = mlflow_server.make_context("mlflow server", list(container["args"][1:]))
    params = context.params
    store = parse_postgres_url(params["backend_store_uri"])  # no password in the URI
    assert store.user == "hitl" and params["backend_store_uri"].endswith("/hitl_mlflow")
    assert {"name": "PGPASSWORD"}.items() <= container["env"][0].items()
    # artifacts where the pipeline's runs write them, on the shared volume
    settings = Settings.from_env({"HITL_HOME": HITL_HOME_IN_CLUSTER})
    assert params["default_artifact_root"] == settings.mlflow_artifacts.as_uri()
    assert container["volumeMounts"][0]["mountPath"] == HITL_HOME_IN_CLUSTER
    with pytest.raises(Exception, match="no-such-option"):
        mlflow_server.make_context("mlflow server", ["--no-such-option", "x"])


def _label_studio_sources() -> str:
    packages = sorted((ROOT / ".labelstudio-venv" / "lib").glob("python3*/site-packages"))
    if not packages:
        pytest.fail(
            "Label Studio's environment (.labelstudio-venv) is missing: `make setup` "
            "installs it from tools/labelstudio-requirements.txt",
            pytrace=False,
        )
    root = packages[0] / "label_studio"
    files = [root / "server.py", *sorted((root / "core" / "settings").glob("*.py"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def test_label_studio_env_names_only_settings_the_locked_label_studio_reads():
    sources = _label_studio_sources()
    lines = (DEPLOY / "labelstudio" / "labelstudio.env").read_text(encoding="utf-8")
    env = dict(
        line.split("=", 1)
        for line in lines.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    for name in env:
        bare = name.removeprefix("LABEL_STUDIO_")
        assert f"'{name}'" in sources or f"'{bare}'" in sources, f"Label Studio never reads {name}"
    assert "'NO_SUCH_SETTING'" not in sources  # the lookup can fail
    assert env["DJANGO_DB"] == "default" and "POSTGRE_PASSWORD" not in env
    assert env["POSTGRE_NAME"] == PostgresDeployment(
        server=parse_postgres_url("postgresql://hitl@postgres"), prefix="hitl"
    ).database("labelstudio")
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
