"""Dagster concurrency pools: steps that write the same shared state run one at a time.

Whatever starts them (the daemon, a backfill, two people in the launchpad, a multiprocess
or Celery executor), steps in one pool never overlap once the instance gives pools a
limit (``concurrency: pools: default_limit: 1`` in ``dagster.yaml``, which the demo and
``hitl-pipeline`` write for a loop's home). Scoring steps are in no pool and run in
parallel across partitions.
"""

LABEL_STUDIO_POOL = "label_studio_tasks"  # pushes of review and adjudication tasks
LABEL_LEDGER_POOL = "label_ledger"  # the ledger of pulled annotations
DATASET_REPO_POOL = "dataset_repo"  # the DVC dataset repository
CHAMPION_ALIAS_POOL = "champion_alias"  # registry aliases and the re-fitted threshold
POOLS = (LABEL_STUDIO_POOL, LABEL_LEDGER_POOL, DATASET_REPO_POOL, CHAMPION_ALIAS_POOL)
