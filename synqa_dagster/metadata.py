"""Metadata helpers shared by every asset: row counts, a markdown preview, the versions that made the rows."""


from typing import Any, Sequence

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 5
PREVIEW_CHARS = 120


def preview_markdown(frame: pd.DataFrame, columns: Sequence[str], rows: int = PREVIEW_ROWS) -> str:
    """A small markdown table of the first rows; cell text is truncated and escaped so rows render as text."""
    cols = [c for c in columns if c in frame.columns]
    if frame.empty or not cols:
        return "_no rows_"
    head = frame[cols].head(rows).copy()
    for col in cols:
        head[col] = head[col].map(_cell)
    return head.to_markdown(index=False)


def _cell(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    text = " ".join(text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    # Hostile rows are data: HTML becomes entities and markdown syntax is escaped, so the UI shows them literally.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in ("\\", "|", "`", "*", "_", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return text


def table_metadata(
    frame: pd.DataFrame,
    preview_columns: Sequence[str],
    seconds: float,
    **extra: Any,
) -> dict[str, Any]:
    """Standard metadata: ``dagster/row_count``, a preview, the wall time, plus ``extra`` (hashes, counts)."""
    meta: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(int(len(frame))),
        "preview": dg.MetadataValue.md(preview_markdown(frame, preview_columns)),
        "seconds": dg.MetadataValue.float(round(float(seconds), 3)),
    }
    for key, value in extra.items():
        if isinstance(value, dg.MetadataValue):
            meta[key] = value
        elif isinstance(value, bool):
            meta[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            meta[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            meta[key] = dg.MetadataValue.float(round(value, 4))
        elif isinstance(value, (dict, list)):
            meta[key] = dg.MetadataValue.json(value)
        else:
            meta[key] = dg.MetadataValue.text(str(value))
    return meta


def batch_asset_settings(recipe, gates, partitions, group: str) -> tuple[dict[str, str], dict]:
    """The versions every per-batch asset reports, and the ``@asset`` settings they share: group, partitions,
    ``code_version`` = ``<recipe hash>.<gate config hash>``, the Parquet IO manager and the owner."""
    versions = {"recipe_hash": recipe.content_hash(), "gate_config_hash": gates.content_hash()}
    common = dict(
        group_name=group,
        partitions_def=partitions,
        code_version=f"{versions['recipe_hash']}.{versions['gate_config_hash']}",
        io_manager_key="parquet_io_manager",
        owners=["team:synqa"],
    )
    return versions, common
