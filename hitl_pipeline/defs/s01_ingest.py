"""Ingest: a production batch from the landing folder, validated against the schema.

The batch is read and validated ``chunk_rows`` rows at a time (``ProductionSource``) and
its valid rows are passed on as a Parquet file (``ParquetBatch``), never as one frame.
"""

import dagster as dg
import numpy as np

from hitl_pipeline.core.chunks import ParquetBatch
from hitl_pipeline.core.streaming import repeated_id_hashes, validate_chunks
from hitl_pipeline.core.types import BatchSchemaError
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.production import BatchNotFound, ProductionSource


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s01_ingest", kinds={"parquet"})
def production_batch(
    context: dg.AssetExecutionContext, production: ProductionSource
) -> dg.Output[ParquetBatch]:
    """The day's production rows that passed the declared schema.

    Rows with fixable problems are quarantined with their reasons; a batch that cannot be
    used at all fails the run with every problem named and leaves every store untouched.
    """
    partition = context.partition_key
    try:
        batch_file = production.batch_file(partition_key=partition)
    except (BatchNotFound, ValueError) as exc:  # no file, two files
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    staged = production.staging_file(name=f"production_batch-{partition}")
    try:
        schema = production.schema()
        ingest = validate_chunks(
            production.read_chunks(partition_key=partition),
            schema,
            repeated_ids=_repeated_ids(production, partition, schema.id_column),
            valid_path=staged,
            quarantine_path=production.quarantine_file(partition_key=partition),
        )
    except BatchSchemaError as exc:
        raise dg.Failure(
            description=f"batch {batch_file.path.name} rejected: " + "; ".join(exc.problems),
            metadata={"file": dg.MetadataValue.path(str(batch_file.path))},
            allow_retries=False,
        ) from exc
    except ValueError as exc:  # unreadable file
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    metadata: dict[str, dg.RawMetadataValue] = {
        "rows": ingest.valid_rows,
        "quarantined_rows": ingest.quarantined_rows,
        "source_file": dg.MetadataValue.path(str(batch_file.path)),
        "fingerprint": batch_file.fingerprint,
        "chunk_rows": production.chunk_rows,
    }
    if ingest.quarantine_file is not None:
        metadata["quarantine"] = dg.MetadataValue.path(str(ingest.quarantine_file))
        metadata["quarantine_reasons"] = dg.MetadataValue.md(
            "| quarantine_reason | count |\n|:--|--:|\n"
            + "\n".join(f"| {r} | {n} |" for r, n in ingest.quarantine_reasons.items())
        )
    return dg.Output(ParquetBatch.of(staged), metadata=metadata)


def _repeated_ids(
    production: ProductionSource, partition: str, id_column: str
) -> np.ndarray | None:
    """Hashes of the ids the batch holds more than once, from its id column alone (a
    duplicate in a later chunk is caught too); None when the column cannot be read, which
    the validation then names."""
    try:
        ids = production.read_chunks(partition_key=partition, columns=[id_column])
        return repeated_id_hashes(chunk[id_column] for chunk in ids)
    except (ValueError, KeyError):
        return None
