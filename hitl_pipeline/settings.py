"""Where a loop keeps its state and which outside services it talks to.

Everything a loop owns (Dagster instance, MLflow store, DVC repository and remote, Label
Studio data, landing folder, reports) lives under one folder, ``HITL_HOME``, so two loops
(or a test and a demo) can run side by side. Each outside endpoint can be swapped for a
shared deployment through an environment variable; see the README's configuration table.

The environment is read only when :meth:`Settings.from_env` is called (when Dagster loads
the definitions or when the CLI starts), never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hitl_pipeline.deployment import PostgresDeployment, postgres_from_env, with_installed_driver

DEFAULT_HOME = ".hitl"
DEFAULT_LABEL_STUDIO_PORT = 8080
# The local Label Studio's admin; its password and API token are generated on the first
# start of the server and kept, owner-only, in label_studio_credentials_file.
DEFAULT_LABEL_STUDIO_USER = "admin@hitl.local"
# Where the UIs are reached (the demo starts them on these ports); only used for links.
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"
DEFAULT_EXECUTOR = "multiprocess"
DEFAULT_CELERY_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_CELERY_BACKEND = "rpc://"
DEFAULT_CELERY_QUEUE = "dagster"  # dagster-celery's own default queue
# The general review project in Label Studio (the other tiers are named after it)
DEFAULT_LABEL_STUDIO_PROJECT = "hitl-pipeline: review"


@dataclass(frozen=True)
class Settings:
    """Resolved locations and endpoints of one loop."""

    home: Path
    label_studio_url: str
    # HITL_LABEL_STUDIO_API_KEY / _PASSWORD when set; None: the local server's credentials
    # file (read by whoever needs them, so that resolving settings never creates it).
    label_studio_api_key: str | None = field(repr=False)
    label_studio_password: str | None = field(repr=False)
    label_studio_is_local: bool  # True when we manage the server ourselves
    label_studio_port: int
    mlflow_tracking_uri: str
    dvc_remote: str
    review_overlap_share: float = 0.2  # share of tasks that a second reviewer also answers
    # HITL_REVIEWERS: e-mails whose annotations count as labels; empty: every account
    # except the API token's own (see core.intake)
    reviewers: tuple[str, ...] = ()
    # HITL_MLFLOW_UI_URL / HITL_DAGSTER_UI_URL: the UIs' addresses, for the links between
    # them (asset metadata -> MLflow run, MLflow run -> Dagster run)
    mlflow_ui_url: str = DEFAULT_MLFLOW_UI_URL
    dagster_ui_url: str = DEFAULT_DAGSTER_UI_URL
    # HITL_EXECUTOR: how a run's steps execute (defs/executor.py checks the value);
    # HITL_CELERY_BROKER / _BACKEND: where the Celery executor and its workers meet
    executor: str = DEFAULT_EXECUTOR
    celery_broker: str = DEFAULT_CELERY_BROKER
    celery_backend: str = DEFAULT_CELERY_BACKEND
    # HITL_CELERY_QUEUE: the queue this loop's steps go to (loops sharing a broker differ)
    celery_queue: str = DEFAULT_CELERY_QUEUE
    # HITL_LABEL_STUDIO_PROJECT: this loop's review project (loops sharing a server differ)
    label_studio_project: str = DEFAULT_LABEL_STUDIO_PROJECT
    # HITL_POSTGRES_URL (+ HITL_DB_PREFIX): the Dagster instance, MLflow and the local Label
    # Studio keep their state in PostgreSQL (see hitl_pipeline.deployment); None: embedded
    postgres: PostgresDeployment | None = None
    # HITL_RUN_CONFIG: the run config every run a sensor or the schedule starts takes
    # (defs/run_config.py); None: run_config.yaml under HITL_HOME, when it exists
    run_config_path: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Resolve settings from ``HITL_*`` environment variables, with embedded defaults.

        Raises:
            hitl_pipeline.deployment.DeploymentConfigError: ``HITL_POSTGRES_URL`` or
                ``HITL_DB_PREFIX`` is malformed.
        """
        env = os.environ if environ is None else environ
        postgres = postgres_from_env(env)
        home = Path(env.get("HITL_HOME", DEFAULT_HOME)).expanduser().resolve()
        port = int(env.get("HITL_LABEL_STUDIO_PORT", DEFAULT_LABEL_STUDIO_PORT))
        external_ls = env.get("HITL_LABEL_STUDIO_URL")
        return cls(
            home=home,
            label_studio_url=(external_ls or f"http://127.0.0.1:{port}").rstrip("/"),
            label_studio_api_key=env.get("HITL_LABEL_STUDIO_API_KEY") or None,
            label_studio_password=env.get("HITL_LABEL_STUDIO_PASSWORD") or None,
            label_studio_is_local=not external_ls,
            label_studio_port=port,
            mlflow_tracking_uri=with_installed_driver(env.get("HITL_MLFLOW_TRACKING_URI", ""))
            or (postgres.mlflow_uri if postgres else f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"),
            dvc_remote=env.get("HITL_DVC_REMOTE", str(home / "dvc-remote")),
            review_overlap_share=float(env.get("HITL_REVIEW_OVERLAP", "0.2")),
            reviewers=tuple(
                e.strip() for e in env.get("HITL_REVIEWERS", "").split(",") if e.strip()
            ),
            mlflow_ui_url=env.get("HITL_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL).rstrip("/"),
            dagster_ui_url=env.get("HITL_DAGSTER_UI_URL", DEFAULT_DAGSTER_UI_URL).rstrip("/"),
            executor=(env.get("HITL_EXECUTOR") or DEFAULT_EXECUTOR).strip().lower(),
            celery_broker=env.get("HITL_CELERY_BROKER") or DEFAULT_CELERY_BROKER,
            celery_backend=env.get("HITL_CELERY_BACKEND") or DEFAULT_CELERY_BACKEND,
            celery_queue=env.get("HITL_CELERY_QUEUE") or DEFAULT_CELERY_QUEUE,
            label_studio_project=env.get("HITL_LABEL_STUDIO_PROJECT")
            or DEFAULT_LABEL_STUDIO_PROJECT,
            postgres=postgres,
            run_config_path=Path(env["HITL_RUN_CONFIG"]).expanduser().resolve()
            if env.get("HITL_RUN_CONFIG")
            else None,
        )

    # --- folders under HITL_HOME -----------------------------------------------------
    @property
    def run_config_file(self) -> Path:
        """The loop's run-config file (it need not exist)."""
        return self.run_config_path or self.home / "run_config.yaml"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def dataset_repo(self) -> Path:
        return self.home / "dataset-repo"

    @property
    def label_studio_data(self) -> Path:
        return self.home / "labelstudio"

    @property
    def label_studio_credentials_file(self) -> Path:
        """The local server's admin login and API token (owner-only; written on its start)."""
        return self.label_studio_data / "credentials.json"

    @property
    def landing(self) -> Path:
        """Production batches arrive here, one file per day: ``YYYY-MM-DD.parquet|csv``."""
        return self.home / "landing"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def labels(self) -> Path:
        """The ledger of every annotation pulled from Label Studio."""
        return self.home / "labels"

    @property
    def seed(self) -> Path:
        """The initial labelled data (``train.parquet``, ``holdout.parquet``)."""
        return self.home / "seed"

    @property
    def schema_path(self) -> Path:
        return self.home / "config" / "schema.json"

    @property
    def demo(self) -> Path:
        """Demo-only state: the stream's ground truth for simulated reviewers."""
        return self.home / "demo"
