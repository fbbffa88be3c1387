"""The partitioning every per-batch asset shares."""

import dagster as dg

# One production batch per day. The start date only bounds which dates are valid
# partitions; batches older than it are rejected by the landing sensor with a message.
BATCH_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2025-01-01")
