"""The loop's own files under HITL_HOME: seed data, the annotation ledger, reports.

Not an outside system, but kept behind a resource like one so that assets never build
paths themselves and tests can point a loop at a temporary folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import dagster as dg
import pandas as pd

from hitl_pipeline.core.intake import QUARANTINE_REASON
from hitl_pipeline.core.types import Annotation

_LEDGER = "annotations.parquet"
_PUSHED = "labels/pushed"  # one table per batch: the items pushed and their tier
_ANNOTATION_COLUMNS = [f.name for f in fields(Annotation)]


def annotations_to_frame(annotations: list[Annotation]) -> pd.DataFrame:
    """Annotations as a frame with one row each (features kept as a dict column)."""
    rows = [asdict(a) for a in annotations]
    frame = pd.DataFrame(rows, columns=_ANNOTATION_COLUMNS)
    for column in ("completed_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


class LocalStore(dg.ConfigurableResource):
    """Seed data, the ledger of pulled annotations and the HTML reports of one loop."""

    home: str

    @property
    def _home(self) -> Path:
        return Path(self.home)

    # --- seed -----------------------------------------------------------------------
    def read_seed(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The initial labelled training rows and the fixed held-out set."""
        seed = self._home / "seed"
        train, holdout = seed / "train.parquet", seed / "holdout.parquet"
        if not (train.is_file() and holdout.is_file()):
            raise FileNotFoundError(
                f"no seed data in {seed}: put the initial labelled rows in train.parquet and "
                "a held-out set in holdout.parquet (the demo writes both)"
            )
        return pd.read_parquet(train), pd.read_parquet(holdout)

    # --- annotation ledger ----------------------------------------------------------
    def read_ledger(self, *, include_quarantined: bool = False) -> pd.DataFrame:
        """The annotations pulled so far, one row per annotation id.

        Args:
            include_quarantined: also the annotations ``core.intake`` quarantined (with
                their ``quarantine_reason``); by default only admitted ones, so no
                reader can turn a quarantined answer into a label or an edge case.
        """
        path = self._home / "labels" / _LEDGER
        if not path.is_file():
            return annotations_to_frame([]).assign(**{QUARANTINE_REASON: pd.Series(dtype=object)})
        frame = pd.read_parquet(path)
        # a ledger written before intake was strict: nothing was quarantined yet
        reasons = frame.get(QUARANTINE_REASON, pd.Series("", index=frame.index))
        frame[QUARANTINE_REASON] = reasons.fillna("").astype(str)
        if not include_quarantined:
            frame = frame[frame[QUARANTINE_REASON] == ""].reset_index(drop=True)
        frame["features"] = frame["features"].map(json.loads)
        frame["reasons"] = frame["reasons"].map(lambda r: tuple(json.loads(r)))
        if "flags" in frame:
            frame["flags"] = frame["flags"].map(lambda r: tuple(json.loads(r)))
        return frame

    def write_ledger(self, frame: pd.DataFrame) -> Path:
        """Replace the ledger atomically (a crash leaves the previous ledger intact).

        ``frame`` holds every annotation, quarantined ones included (their
        ``quarantine_reason`` set): the ledger is one file, so a row is never in two
        states at once.
        """
        path = self._home / "labels" / _LEDGER
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = frame.copy()
        stored["features"] = stored["features"].map(lambda f: json.dumps(f, sort_keys=True))
        stored["reasons"] = stored["reasons"].map(lambda r: json.dumps(list(r)))
        if "flags" in stored:
            stored["flags"] = stored["flags"].map(lambda r: json.dumps(list(r)))
        tmp = path.with_suffix(".tmp")
        stored.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    # --- what was pushed -----------------------------------------------------------
    def record_pushed(self, *, name: str, item_ids: Sequence[str], tiers: Sequence[str]) -> Path:
        """Remember which items went to which tier's queue (``name``: the batch, or
        ``adjudication``); earlier records under the same name are kept. Label Studio
        forgets a deleted task; this record is how a pull notices it."""
        frame = pd.DataFrame({"item_id": [str(i) for i in item_ids], "tier": list(tiers)})
        earlier = self.read_table(kind=_PUSHED, name=name)
        if earlier is not None:
            frame = pd.concat([earlier, frame], ignore_index=True)
        frame = frame.drop_duplicates().sort_values(["tier", "item_id"])
        return self.write_table(kind=_PUSHED, name=name, frame=frame.reset_index(drop=True))

    def read_pushed(self) -> dict[str, list[str]]:
        """tier -> every item id recorded as pushed to that tier's queue."""
        table = self.read_tables(kind=_PUSHED)
        if table.empty:
            return {}
        return {
            str(tier): sorted(set(group["item_id"].astype(str)))
            for tier, group in table.groupby("tier")
        }

    # --- reports --------------------------------------------------------------------
    def write_report(self, *, kind: str, name: str, html: str) -> Path:
        """Keep an HTML report as ``reports/<kind>/<name>.html``."""
        path = self._home / "reports" / kind / f"{name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        return path

    def write_chart(self, *, kind: str, name: str, png: bytes) -> Path:
        """Keep a chart as ``reports/<kind>/<name>.png``."""
        path = self._home / "reports" / kind / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return path

    def read_tables(self, *, kind: str) -> pd.DataFrame:
        """Every table kept under ``<kind>/`` (e.g. the routing decisions of each batch),
        stacked, with the file's name in a ``table`` column; empty when there are none."""
        folder = self._home / kind
        paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        frames = [pd.read_parquet(p).assign(table=p.stem) for p in paths]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def table_path(self, *, kind: str, name: str) -> Path:
        """Where ``write_table`` keeps a table (for a stage that writes it in chunks)."""
        path = self._home / kind / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_table(self, *, kind: str, name: str, frame: pd.DataFrame) -> Path:
        """Keep a table (e.g. each batch's routing decisions) as Parquet for later audits."""
        path = self._home / kind / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def read_table(self, *, kind: str, name: str) -> pd.DataFrame | None:
        """A table written by ``write_table``, or None when there is none."""
        path = self._home / kind / f"{name}.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    def table_names(self, *, kind: str) -> list[str]:
        """Names of the tables of one kind, sorted (partition keys sort by date)."""
        folder = self._home / kind
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet"))
