# The two commands a newcomer runs: `make demo` and `make test`.
# Everything they need is installed here, from locked versions, into folders inside the clone.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
LS_VENV := .labelstudio-venv
# The embedded stack runs offline: no telemetry from MLflow.
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup test demo repro lint ui-check demo-postgres

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode compiled at install: every Dagster run worker, step process and CLI call then
# starts from .pyc files (a fresh `import hitl_pipeline.definitions` took 6.0 s without
# them, 2.3 s with them, on a 2-core machine where PYTHONDONTWRITEBYTECODE was set).
.venv/.synced: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

# Label Studio's server pins clash with the pipeline's (Django, pytz, pyarrow): own environment.
$(LS_VENV)/.installed: tools/labelstudio-requirements.txt $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LS_VENV)
	VIRTUAL_ENV=$(LS_VENV) $(UV) pip install --quiet --compile-bytecode --require-hashes -r tools/labelstudio-requirements.txt
	touch $@

setup: .venv/.synced $(LS_VENV)/.installed

test: setup
	.venv/bin/pytest

demo: setup
	.venv/bin/hitl-pipeline demo

# The demo with every store on a PostgreSQL server: `hitl-pipeline up` creates the
# databases <DB_PREFIX>_dagster, _mlflow and _labelstudio (safe to repeat), then the demo
# runs against them, its state outside PostgreSQL under HITL_HOME (default .hitl-postgres).
POSTGRES_URL ?=
DB_PREFIX ?= hitl
POSTGRES_HOME ?= .hitl-postgres
demo-postgres: setup
	@test -n "$(POSTGRES_URL)" || { echo "usage: make demo-postgres POSTGRES_URL=postgresql://USER@HOST:PORT [DB_PREFIX=hitl]" >&2; exit 2; }
	HITL_HOME=$(POSTGRES_HOME) .venv/bin/hitl-pipeline up --postgres "$(POSTGRES_URL)" --prefix "$(DB_PREFIX)"
	HITL_HOME=$(POSTGRES_HOME) HITL_POSTGRES_URL="$(POSTGRES_URL)" HITL_DB_PREFIX="$(DB_PREFIX)" .venv/bin/hitl-pipeline demo

# Reproduce a candidate from a restored dataset version (see data/README.md).
repro: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro

lint: setup
	.venv/bin/ruff check hitl_pipeline hitl_pipeline_tests
	.venv/bin/ruff format --check hitl_pipeline hitl_pipeline_tests
	.venv/bin/mypy hitl_pipeline

# The demo driven in a real browser: screenshots of the three UIs in ui-check/, with the
# time to each UI and to the first retrained champion. Needs Debian's chromium package.
ui-check: setup
	$(UV) sync --frozen --compile-bytecode --group ui
	.venv/bin/python tools/ui_check.py --out ui-check
