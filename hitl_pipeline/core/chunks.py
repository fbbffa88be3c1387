"""Batches in chunks: read Parquet by record batch, write it by row group, keep samples.

A production batch of ten million rows does not fit in memory as one pandas frame with
its scores, so the stages that touch every row (validation, scoring, routing) work on
chunks of ``chunk_rows`` rows read from Parquet, and write their output chunk by chunk.
What must see the whole batch at once only ever sees a bounded part of it: a seeded
sample for drift (``BottomK``), the routing candidates (``core.routing.BatchRouter``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_CHUNK_ROWS = 100_000
READ_BUFFER_BYTES = 1 << 20


def check_chunk_rows(chunk_rows: int) -> int:
    """``chunk_rows`` if it is a usable chunk size.

    Raises:
        ValueError: When it is below 1.
    """
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return int(chunk_rows)


def frame_chunks(
    frame: pd.DataFrame, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Consecutive slices of an in-memory frame (index reset), at least one.

    An empty frame yields itself once, so a consumer still sees the columns.
    """
    chunk_rows = check_chunk_rows(chunk_rows)
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        yield frame
        return
    for start in range(0, len(frame), chunk_rows):
        yield frame.iloc[start : start + chunk_rows].reset_index(drop=True)


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet file, from its footer (nothing else is read)."""
    return int(pq.ParquetFile(path).metadata.num_rows)


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """A Parquet file opened for reading in chunks, in memory bounded by a chunk.

    Arrow's pre-buffering keeps every range it read in a cache for the reader's life:
    reading ten million rows by record batch grew the process by hundreds of MB (1M rows
    of predictions: +340 MB, flat without it), so it is off, with a 1 MiB read buffer.
    """
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)


def parquet_chunks(
    path: str | Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    columns: list[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """A Parquet file as pandas frames of at most ``chunk_rows`` rows, in file order.

    Args:
        path: The file.
        chunk_rows: Rows per frame.
        columns: Read only these columns (None: all).

    Yields:
        Frames with a fresh ``RangeIndex``; one empty frame when the file has no rows.
    """
    chunk_rows = check_chunk_rows(chunk_rows)
    handle = open_parquet(path)
    seen = False
    for batch in handle.iter_batches(batch_size=chunk_rows, columns=columns):
        if batch.num_rows == 0:
            continue
        seen = True
        yield batch.to_pandas()
    if not seen:
        yield handle.schema_arrow.empty_table().to_pandas()


class ParquetSink:
    """Writes frames to one Parquet file, one row group per frame, atomically.

    The file appears under its name only when the sink is closed without an error (a
    reader never sees half a file); the first frame fixes the columns and types, later
    frames are cast to them. Only text columns are dictionary-encoded: numbers (scores,
    features) rarely repeat, and Arrow's attempt at a dictionary for them before falling
    back cost 40% of the writing time of a batch of predictions (and made the file larger).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows = 0
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        """Append a frame's rows."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.path.parent, suffix=".parquet.tmp")
            os.close(fd)
            self._tmp = Path(name)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(
                self._tmp, self._schema, use_dictionary=_dictionary_columns(self._schema)
            )
        else:
            table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)
        self.rows += len(frame)

    def close(self) -> Path:
        """Finish the file and move it into place.

        Raises:
            ValueError: When nothing was written (the columns are unknown).
        """
        if self._writer is None or self._tmp is None:
            raise ValueError(f"nothing was written to {self.path}")
        self._writer.close()
        os.replace(self._tmp, self.path)
        self._writer = None
        return self.path

    def abort(self) -> None:
        """Drop what was written (the target stays as it was)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _dictionary_columns(schema: pa.Schema) -> list[str] | bool:
    """The text columns of ``schema`` (False when there are none)."""
    names = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    return names or False


def write_chunks(frames: Iterable[pd.DataFrame], path: str | Path) -> int:
    """Stream frames into one Parquet file (see ``ParquetSink``); returns the rows written."""
    with ParquetSink(path) as sink:
        for frame in frames:
            sink.write(frame)
    return sink.rows


def bottom_k(
    keys: np.ndarray, ties: np.ndarray, k: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Positions of the ``k`` smallest ``keys`` (ties broken by ``ties``, then position).

    Args:
        keys: Sort keys, ascending.
        ties: Second keys (item ids).
        k: How many.
        mask: Only these positions compete (None: all).

    Returns:
        The chosen positions, ascending (not in key order).
    """
    idx = np.arange(len(keys)) if mask is None else np.flatnonzero(mask)
    if k <= 0:
        return np.zeros(0, dtype=int)
    if len(idx) <= k:
        return idx
    values = keys[idx]
    kth = np.partition(values, k - 1)[k - 1]
    sure = idx[values < kth]
    tied = idx[values == kth]
    need = k - len(sure)
    tied = tied[np.argsort(ties[tied], kind="stable")][:need]
    return np.sort(np.concatenate([sure, tied]))


@dataclass
class BottomK:
    """A seeded sample of fixed size over chunks: the rows with the ``k`` smallest keys.

    With keys from ``core.datasets.stable_uniform`` of the item ids, the sample is the
    same whatever the chunking and order of the rows, and it is every row when the
    batch has at most ``k`` of them (kept in their original order).

    Attributes:
        k: Sample size.
    """

    k: int
    rows_seen: int = 0
    _kept: pd.DataFrame | None = None
    _keys: np.ndarray | None = None
    _ties: np.ndarray | None = None

    def add(self, frame: pd.DataFrame, keys: np.ndarray, ties: np.ndarray) -> None:
        """Offer a chunk's rows with their keys and tie-breaking ids."""
        keys, ties = np.asarray(keys), np.asarray(ties)
        rows = np.arange(len(frame)) + self.rows_seen
        self.rows_seen += len(frame)
        if self._keys is not None and len(self._keys) >= self.k:
            # a full sample: only a row whose key is at most its largest can enter (most
            # rows of a large batch cannot), so the others are never copied
            fits = keys <= self._keys.max()
            frame, keys, ties, rows = frame[fits], keys[fits], ties[fits], rows[fits]
        frame = frame.reset_index(drop=True).assign(_row=rows)
        if self._kept is None:
            kept, all_keys, all_ties = frame, keys, ties
        else:
            kept = pd.concat([self._kept, frame], ignore_index=True)
            all_keys = np.concatenate([self._keys, keys])
            all_ties = np.concatenate([self._ties, ties])
        chosen = bottom_k(all_keys, all_ties, self.k)
        if len(chosen) < len(kept):
            kept = kept.iloc[chosen].reset_index(drop=True)
            all_keys, all_ties = all_keys[chosen], all_ties[chosen]
        self._kept, self._keys, self._ties = kept, all_keys, all_ties

    def frame(self) -> pd.DataFrame:
        """The sample, in the rows' original order (index reset)."""
        if self._kept is None:
            return pd.DataFrame()
        return (
            self._kept.sort_values("_row", kind="stable")
            .drop(columns="_row")
            .reset_index(drop=True)
        )


@dataclass
class ParquetBatch:
    """A batch kept on disk as one Parquet file: passed between stages instead of a frame.

    Attributes:
        path: The file.
        rows: Its rows.
    """

    path: str
    rows: int

    def relocate(self, path: str | Path) -> None:
        """Point at the file's new place after it was moved (by the IO manager).

        In place, because an in-process run hands out the very object the step
        returned: it must not name a file that is gone.
        """
        self.path = str(path)

    @classmethod
    def of(cls, path: str | Path) -> ParquetBatch:
        """The handle of an existing file (rows from its footer)."""
        return cls(path=str(path), rows=parquet_rows(path))

    def __len__(self) -> int:
        return self.rows

    def chunks(
        self, chunk_rows: int = DEFAULT_CHUNK_ROWS, *, columns: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows in frames of at most ``chunk_rows`` (``parquet_chunks``)."""
        return parquet_chunks(self.path, chunk_rows, columns=columns)

    def columns(self) -> list[str]:
        """Column names, from the file's schema."""
        return list(pq.ParquetFile(self.path).schema_arrow.names)

    def first(self, column: str) -> object | None:
        """The first row's value of one column (None when there are no rows)."""
        for chunk in self.chunks(1, columns=[column]):
            return chunk[column].iloc[0] if len(chunk) else None
        return None

    def to_pandas(self) -> pd.DataFrame:
        """The whole batch as one frame: for small batches and tests only."""
        return pd.read_parquet(self.path)


def batch_chunks(
    batch: pd.DataFrame | ParquetBatch,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    columns: list[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Chunks of a batch held either as a frame or as a ``ParquetBatch``."""
    if isinstance(batch, ParquetBatch):
        return batch.chunks(chunk_rows, columns=columns)
    frame = batch if columns is None else batch[[c for c in columns if c in batch.columns]]
    return frame_chunks(frame, chunk_rows)


def as_frame(value: object) -> object:
    """A ``ParquetBatch`` read whole; any other value as it is."""
    return value.to_pandas() if isinstance(value, ParquetBatch) else value
