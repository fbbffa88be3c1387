"""Ingest: a production batch from the landing folder, validated against the schema."""

import dagster as dg
import pandas as pd

from hitl_pipeline.core.schema import validate_batch
from hitl_pipeline.core.types import BatchSchemaError
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.production import BatchNotFound, ProductionSource


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s01_ingest", kinds={"pandas"})
def production_batch(
    context: dg.AssetExecutionContext, production: ProductionSource
) -> dg.Output[pd.DataFrame]:
    """The day's production rows that passed the declared schema.

    Rows with fixable problems are quarantined with their reasons; a batch that cannot be
    used at all fails the run with every problem named and leaves every store untouched.
    """
    partition = context.partition_key
    try:
        batch_file = production.batch_file(partition_key=partition)
        raw = production.read_batch(partition_key=partition)
    except (BatchNotFound, ValueError) as exc:  # no file, two files, unreadable file
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    try:
        validated = validate_batch(raw, production.schema())
    except BatchSchemaError as exc:
        raise dg.Failure(
            description=f"batch {batch_file.path.name} rejected: " + "; ".join(exc.problems),
            metadata={"file": dg.MetadataValue.path(str(batch_file.path)), "rows": len(raw)},
            allow_retries=False,
        ) from exc
    quarantine_path = production.write_quarantine(
        partition_key=partition, rows=validated.quarantined
    )
    metadata: dict[str, dg.RawMetadataValue] = {
        "rows": len(validated.valid),
        "quarantined_rows": len(validated.quarantined),
        "source_file": dg.MetadataValue.path(str(batch_file.path)),
        "fingerprint": batch_file.fingerprint,
    }
    if quarantine_path is not None:
        metadata["quarantine"] = dg.MetadataValue.path(str(quarantine_path))
        metadata["quarantine_reasons"] = dg.MetadataValue.md(
            validated.quarantined["quarantine_reason"].value_counts().head(10).to_markdown()
        )
    return dg.Output(validated.valid, metadata=metadata)
