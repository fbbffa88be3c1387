"""``hitl_pipeline.trail``: an item's routing decisions read from the kept tables (only
its rows and the trail's columns), on a real ``LocalStore`` in a temporary folder."""

import pandas as pd
import pyarrow.parquet as pq

from hitl_pipeline.core.chunks import ParquetSink
from hitl_pipeline.core.trail import item_trail
from hitl_pipeline.core.types import ITEM_ID, ROUTE
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.trail import DECISION_COLUMNS, item_decisions


def decisions(ids, *, route="auto_accept") -> pd.DataFrame:
    return pd.DataFrame(
        {
            ITEM_ID: ids,
            "tenure_months": [1.0] * len(ids),  # a feature: not read for the trail
            "predicted_label": ["retain"] * len(ids),
            "confidence": [0.9] * len(ids),
            "model_version": ["3"] * len(ids),
            ROUTE: [route] * len(ids),
            "reasons": ["confident"] * len(ids),
            "tier": ["general"] * len(ids),
        }
    )


def test_only_the_items_rows_and_the_trails_columns_are_read(tmp_path):
    store = LocalStore(home=str(tmp_path))
    # a batch in three row groups, the item in the second
    with ParquetSink(store.table_path(kind="decisions", name="2024-01-01")) as sink:
        sink.write(decisions([f"a{i}" for i in range(5)]))
        sink.write(decisions(["a5", "17", "a7"], route="review"))
        sink.write(decisions([f"a{i}" for i in range(8, 12)]))
    # a batch without it, and an old one whose ids were stored as numbers
    store.write_table(kind="decisions", name="2024-01-02", frame=decisions(["x", "y"]))
    store.write_table(kind="decisions", name="2024-01-03", frame=decisions([16, 17, 18]))

    found = item_decisions("17", local_store=store)

    assert list(found["table"]) == ["2024-01-01", "2024-01-03"]
    assert list(found[ROUTE]) == ["review", "auto_accept"]
    assert list(found[ITEM_ID].astype(str)) == ["17", "17"]
    assert set(found.columns) == {*DECISION_COLUMNS, "table"}  # no feature column
    lines = item_trail("17", decisions=found, ledger=pd.DataFrame(), datasets=[], models=[])
    assert sum(line.startswith("  routing [") for line in lines) == 2
    assert pq.ParquetFile(store.table_path(kind="decisions", name="2024-01-01")).num_row_groups == 3


def test_an_item_no_batch_holds_has_no_decisions(tmp_path):
    store = LocalStore(home=str(tmp_path))
    assert item_decisions("17", local_store=store).empty  # no decisions folder yet
    store.write_table(kind="decisions", name="2024-01-02", frame=decisions(["x", "y"]))
    assert item_decisions("17", local_store=store).empty
