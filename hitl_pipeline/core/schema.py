"""Validate a production batch against the declared schema.

Two levels of failure, because they call for different actions:

- batch-level problems (a missing column, a column that is wholly of the wrong type, no
  rows, too many bad rows) mean the batch cannot be used at all: ``BatchSchemaError``;
- row-level problems (unknown category, null where not allowed, unparseable number, out
  of range, duplicate id, a list or dict where text is declared) quarantine that row
  with a readable reason, so nothing is silently dropped and the rest of the batch
  flows on.

Text columns (``kind="text"``) take any string; a stray number or boolean becomes its
text, and a text column with no string at all is a batch-level error (a wrong column
mapping, not a few odd posts).

Parsing (strings to numbers, ids to text) is done here by hand because it has to tell
"unparseable" from "null"; the declarative row checks (nulls, ranges, categories,
uniqueness) are a pandera schema run lazily, which reports every failing cell with its
row index in one pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from hitl_pipeline.core.types import BatchSchema, BatchSchemaError, FeatureSpec, ValidatedBatch

QUARANTINE_REASON = "quarantine_reason"
SCHEMA_FORMAT_VERSION = 1

# How many offending values a batch-level message quotes: enough to recognise the
# problem, short enough to read in the Dagster UI.
_EXAMPLES = 3


# --- canonical values ----------------------------------------------------------------
def canonical_text(value: Any) -> str | None:
    """The canonical text of an id or category value; None for a missing value.

    Integral floats lose their ``.0`` because CSV readers turn an integer column with a
    gap into floats, and ``17.0`` must still be the item ``"17"``.

    Args:
        value: Any scalar read from a batch.

    Returns:
        The value as ``str``, or None when it is null.
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _to_text(series: pd.Series) -> pd.Series:
    return series.map(canonical_text).astype(object)


def _to_number(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse to float64; also return the mask of non-null values that did not parse."""
    if pd.api.types.is_bool_dtype(series):
        # booleans are not measurements; treat them as text so they fail to parse
        series = series.astype(object).astype(str)
    if pd.api.types.is_numeric_dtype(series):
        parsed = series.astype("float64")
    else:
        text = series.map(lambda v: v.strip() if isinstance(v, str) else v)
        text = text.replace("", np.nan)
        parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    # inf is no measurement either; a declared range cannot catch it when unbounded
    parsed = parsed.where(~np.isinf(parsed), np.nan)
    unparseable = series.notna() & parsed.isna()
    if not pd.api.types.is_numeric_dtype(series):
        unparseable &= series.map(lambda v: not (isinstance(v, str) and v.strip() == ""))
    return parsed, unparseable


def _free_text(value: Any) -> tuple[str | None, bool]:
    """One value of a text column: its text (None when null) and whether it is usable.

    Strings are text as they are (an empty post is still a post); a stray number or
    boolean becomes its canonical text, because a short post such as ``42`` reaches us
    as a number whenever a reader guessed the type; containers (lists, dicts, arrays)
    are no text at all.
    """
    if isinstance(value, str):
        return value, True
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace"), True
    if value is None:
        return None, True
    if isinstance(value, int | float | bool | np.generic):
        return canonical_text(value), True
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None, True
    return None, False


def _to_free_text(series: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Text values, the mask of values that cannot be text, and the mask of real strings."""
    pairs = [_free_text(v) for v in series.tolist()]
    values = pd.Series([p[0] for p in pairs], index=series.index, dtype=object)
    unusable = pd.Series([not p[1] for p in pairs], index=series.index, dtype=bool)
    strings = series.map(lambda v: isinstance(v, str | bytes)).astype(bool)
    return values, unusable, strings


def _examples(values: pd.Series) -> str:
    shown = [repr(v) for v in values.drop_duplicates().head(_EXAMPLES)]
    return ", ".join(shown)


# --- validation ----------------------------------------------------------------------
def _pandera_schema(schema: BatchSchema) -> pa.DataFrameSchema:
    """Row checks on the already parsed frame.

    Each check's ``error`` is a key that ``_row_message`` turns into a sentence; pandera
    reports it as the failure case's ``check``.
    """
    columns: dict[str, pa.Column] = {
        schema.id_column: pa.Column(
            object,
            nullable=False,
            unique=True,
            # the first occurrence is the item; later ones are the duplicates
            report_duplicates="exclude_first",
        )
    }
    for spec in schema.features:
        checks: list[pa.Check] = []
        if spec.kind == "numeric":
            if spec.min_value is not None:
                checks.append(pa.Check.ge(spec.min_value, error="min_value"))
            if spec.max_value is not None:
                checks.append(pa.Check.le(spec.max_value, error="max_value"))
            columns[spec.name] = pa.Column("float64", checks=checks, nullable=spec.nullable)
        else:
            if spec.categories:
                checks.append(pa.Check.isin(list(spec.categories), error="category"))
            columns[spec.name] = pa.Column(object, checks=checks, nullable=spec.nullable)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _row_message(schema: BatchSchema, column: str, check: str, value: Any) -> str:
    if column == schema.id_column:
        if check == "not_nullable":
            return f"missing {column}"
        return f"duplicate {column} {value!r}"
    spec = next(f for f in schema.features if f.name == column)
    if check == "not_nullable":
        return f"{column}: missing value (column is not nullable)"
    if check == "category":
        return f"{column}: unknown category {value!r} (declared: {', '.join(spec.categories)})"
    if check == "min_value":
        return f"{column}: {value!r} is below the declared minimum {spec.min_value!r}"
    if check == "max_value":
        return f"{column}: {value!r} is above the declared maximum {spec.max_value!r}"
    return f"{column}: failed {check} with {value!r}"


def validate_batch(
    frame: pd.DataFrame,
    schema: BatchSchema,
    *,
    max_quarantine_share: float = 0.5,
) -> ValidatedBatch:
    """Split a raw batch into valid rows (canonical dtypes) and quarantined rows.

    Args:
        frame: The batch as read from the landing folder; any dtypes.
        schema: The declared schema.
        max_quarantine_share: Above this share of bad rows the whole batch is rejected,
            because a batch that is mostly broken points at an upstream fault that
            quarantining row by row would only hide.

    Returns:
        ``ValidatedBatch`` whose ``valid`` frame has float64 numerics, ``str``
        categoricals and a ``str`` id (extra columns kept untouched, index reset), and
        whose ``quarantined`` frame holds the original values of the bad rows plus a
        ``quarantine_reason`` (every problem of the row, joined with "; ").

    Raises:
        BatchSchemaError: When the batch as a whole cannot be used.
    """
    raw = frame.reset_index(drop=True)
    problems: list[str] = []

    if schema.id_column not in raw.columns:
        problems.append(f"missing id column {schema.id_column!r}")
    missing = [f.name for f in schema.features if f.name not in raw.columns]
    if missing:
        problems.append("missing column(s): " + ", ".join(repr(m) for m in missing))
    if schema.time_column is not None and schema.time_column not in raw.columns:
        problems.append(f"missing time column {schema.time_column!r}")
    if raw.empty:
        problems.append("the batch has no rows")
    if problems:
        raise BatchSchemaError(problems)

    parsed = raw.copy()
    # per row, (column position, message): a row's reasons read in column order
    # whether they come from parsing or from the pandera checks
    reasons: dict[int, list[tuple[int, str]]] = {}
    unparseable_cells: set[tuple[int, str]] = set()
    position = {name: i for i, name in enumerate([schema.id_column, *schema.feature_names])}
    position[str(schema.time_column)] = len(position)

    def add(row: int, column: str, message: str) -> None:
        reasons.setdefault(row, []).append((position.get(column, len(position)), message))

    parsed[schema.id_column] = _to_text(raw[schema.id_column])

    for spec in schema.features:
        column = raw[spec.name]
        if spec.kind == "numeric":
            values, bad = _to_number(column)
            if bad.any() and values.isna().all():
                problems.append(
                    f"column {spec.name!r} should be numeric but none of its values "
                    f"parses as a number (e.g. {_examples(column[bad])})"
                )
                continue
            for row in np.flatnonzero(bad.to_numpy()):
                message = f"{spec.name}: cannot parse {column.iloc[row]!r} as a number"
                add(int(row), spec.name, message)
                unparseable_cells.add((int(row), spec.name))
        elif spec.kind == "text":
            values, unusable, strings = _to_free_text(column)
            present = values.notna() | unusable
            if present.any() and not strings.any():
                problems.append(
                    f"column {spec.name!r} is declared text but none of its values is a "
                    f"string (e.g. {_examples(column[present])}); declare it "
                    f"'numeric' or 'categorical' in the schema file, or fix the upstream "
                    f"export"
                )
                continue
            for row in np.flatnonzero(unusable.to_numpy()):
                value = column.iloc[row]
                message = f"{spec.name}: a {type(value).__name__} is not text"
                add(int(row), spec.name, message)
                unparseable_cells.add((int(row), spec.name))
        else:
            values = _to_text(column)
            present = values.notna()
            known = values[present].isin(spec.categories)
            if spec.categories and present.any() and not known.any():
                problems.append(
                    f"column {spec.name!r} holds none of its declared categories "
                    f"(saw {_examples(values[present])})"
                )
                continue
        if not spec.nullable and values.isna().all():
            problems.append(f"column {spec.name!r} is entirely null but is not nullable")
        parsed[spec.name] = values

    if schema.time_column is not None:
        column = raw[schema.time_column]
        times = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
        for row in np.flatnonzero(times.isna().to_numpy()):
            value = column.iloc[row]
            message = (
                f"{schema.time_column}: missing time"
                if pd.isna(value)
                else f"{schema.time_column}: cannot parse {value!r} as a time"
            )
            add(int(row), schema.time_column, message)
        parsed[schema.time_column] = times

    if problems:
        raise BatchSchemaError(problems)

    try:
        _pandera_schema(schema).validate(parsed, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases[cases["index"].notna()]
        for case in cases.itertuples(index=False):
            row = int(case.index)
            if case.check == "not_nullable" and (row, case.column) in unparseable_cells:
                continue  # already reported as unparseable, which says more
            column = str(case.column)
            add(row, column, _row_message(schema, column, str(case.check), case.failure_case))

    messages = {row: "; ".join(m for _, m in sorted(found)) for row, found in reasons.items()}
    bad_rows = sorted(messages)
    share = len(bad_rows) / len(raw)
    if share > max_quarantine_share:
        sample = messages[bad_rows[0]]
        raise BatchSchemaError(
            [
                f"{len(bad_rows)} of {len(raw)} rows ({share:.0%}) failed validation, more "
                f"than the allowed {max_quarantine_share:.0%} (first: row {bad_rows[0]}: "
                f"{sample})"
            ]
        )

    is_bad = np.zeros(len(raw), dtype=bool)
    is_bad[bad_rows] = True
    quarantined = raw.loc[is_bad].copy()
    quarantined[QUARANTINE_REASON] = [messages[row] for row in bad_rows]
    valid = parsed.loc[~is_bad].reset_index(drop=True)
    return ValidatedBatch(valid=valid, quarantined=quarantined.reset_index(drop=True))


# --- the declared schema as one JSON file --------------------------------------------
_FEATURE_KEYS = {"name", "kind", "categories", "nullable", "min_value", "max_value"}
_SCHEMA_KEYS = {"format_version", "features", "classes", "id_column", "target", "time_column"}


def schema_to_dict(schema: BatchSchema) -> dict[str, Any]:
    """A JSON-ready dict of the schema (inverse of ``schema_from_dict``).

    Args:
        schema: The schema to describe.

    Returns:
        Plain dicts, lists, strings and numbers.
    """
    return {
        "format_version": SCHEMA_FORMAT_VERSION,
        "id_column": schema.id_column,
        "target": schema.target,
        "time_column": schema.time_column,
        "classes": list(schema.classes),
        "features": [
            {
                "name": f.name,
                "kind": f.kind,
                "categories": list(f.categories),
                "nullable": f.nullable,
                "min_value": f.min_value,
                "max_value": f.max_value,
            }
            for f in schema.features
        ],
    }


def _number_or_none(value: Any, where: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        problems.append(f"{where} must be a number or null, got {value!r}")
        return None
    return float(value)


def schema_from_dict(d: Mapping[str, Any]) -> BatchSchema:
    """Build and validate a schema from its dict form.

    Args:
        d: As produced by ``schema_to_dict`` (``format_version`` may be omitted).

    Returns:
        The schema.

    Raises:
        ValueError: Listing every problem found (unknown keys, bad kinds, duplicate
            names, empty classes, min above max...).
    """
    problems: list[str] = []
    unknown = set(d) - _SCHEMA_KEYS
    if unknown:
        problems.append(f"unknown schema key(s): {', '.join(sorted(unknown))}")
    version = d.get("format_version", SCHEMA_FORMAT_VERSION)
    if version != SCHEMA_FORMAT_VERSION:
        problems.append(
            f"unsupported format_version {version!r} (expected {SCHEMA_FORMAT_VERSION})"
        )

    classes = d.get("classes")
    if not isinstance(classes, list | tuple) or not classes:
        problems.append("classes must be a non-empty list")
        classes = []
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        problems.append("classes must be unique")

    features: list[FeatureSpec] = []
    raw_features = d.get("features")
    if not isinstance(raw_features, list | tuple) or not raw_features:
        problems.append("features must be a non-empty list")
        raw_features = []
    for i, raw in enumerate(raw_features):
        if not isinstance(raw, Mapping):
            problems.append(f"features[{i}] must be an object")
            continue
        name = raw.get("name")
        where = f"feature {name!r}" if isinstance(name, str) else f"features[{i}]"
        extra = set(raw) - _FEATURE_KEYS
        if extra:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: name must be a non-empty string")
            continue
        kind = raw.get("kind")
        if kind not in ("numeric", "categorical", "text"):
            problems.append(
                f"{where}: kind must be 'numeric', 'categorical' or 'text', got {kind!r}"
            )
            continue
        categories = tuple(str(c) for c in raw.get("categories") or ())
        if len(set(categories)) != len(categories):
            problems.append(f"{where}: categories must be unique")
        if categories and kind in ("numeric", "text"):
            problems.append(f"{where}: a {kind} feature cannot declare categories")
        low = _number_or_none(raw.get("min_value"), f"{where}: min_value", problems)
        high = _number_or_none(raw.get("max_value"), f"{where}: max_value", problems)
        if kind in ("categorical", "text") and (low is not None or high is not None):
            problems.append(f"{where}: a {kind} feature cannot declare a range")
        if low is not None and high is not None and low > high:
            problems.append(f"{where}: min_value {low} is above max_value {high}")
        nullable = raw.get("nullable", False)
        if not isinstance(nullable, bool):
            problems.append(f"{where}: nullable must be true or false")
        features.append(
            FeatureSpec(
                name=name,
                kind=kind,
                categories=categories,
                nullable=bool(nullable),
                min_value=low,
                max_value=high,
            )
        )

    names = [f.name for f in features]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"duplicate feature name(s): {', '.join(duplicates)}")
    id_column = d.get("id_column", "item_id")
    target = d.get("target", "label")
    time_column = d.get("time_column")
    for key, value in (("id_column", id_column), ("target", target)):
        if not isinstance(value, str) or not value:
            problems.append(f"{key} must be a non-empty string")
    if time_column is not None and (not isinstance(time_column, str) or not time_column):
        problems.append("time_column must be a non-empty string or null")
    reserved = {id_column, target, time_column} & set(names)
    if reserved:
        problems.append(f"feature name(s) clash with id/target/time: {', '.join(sorted(reserved))}")
    if problems:
        raise ValueError("invalid schema: " + "; ".join(problems))
    return BatchSchema(
        features=tuple(features),
        classes=tuple(classes),
        id_column=id_column,
        target=target,
        time_column=time_column,
    )


def save_schema(schema: BatchSchema, path: Path | str) -> None:
    """Write the schema as indented UTF-8 JSON.

    Args:
        schema: The schema.
        path: The file to write (its folder must exist).
    """
    text = json.dumps(schema_to_dict(schema), indent=2, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")


def load_schema(path: Path | str) -> BatchSchema:
    """Read and validate a schema file written by ``save_schema`` (or by hand).

    Args:
        path: The JSON file.

    Returns:
        The schema.

    Raises:
        ValueError: When the file is not valid JSON or not a valid schema.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid schema file {path}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"invalid schema file {path}: the top level must be an object")
    return schema_from_dict(data)
