"""The funnel: candidates → kept/dropped per gate → accepted, as a table and markdown (Dagster-free)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def funnel_table(candidates: int, gate_tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per gate, in funnel order: rows in, kept, dropped, pass rate and the top drop categories.

    ``gate_tables`` maps gate name -> that gate's decision table (with a boolean ``kept`` column).
    """
    rows = []
    for gate, table in gate_tables.items():
        kept = int(table["kept"].sum())
        dropped = int(len(table) - kept)
        categories = table.loc[~table["kept"], "reject_category"].value_counts()
        rows.append(
            {
                "stage": gate,
                "rows_in": int(len(table)),
                "kept": kept,
                "dropped": dropped,
                "pass_rate": round(kept / len(table), 4) if len(table) else 1.0,
                "dropped_by": ", ".join(f"{k} {v}" for k, v in categories.items()) or "-",
            }
        )
    frame = pd.DataFrame(rows, columns=["stage", "rows_in", "kept", "dropped", "pass_rate", "dropped_by"])
    accepted = int(frame["kept"].iloc[-1]) if len(frame) else candidates
    total = pd.DataFrame(
        [{"stage": "accepted", "rows_in": candidates, "kept": accepted, "dropped": candidates - accepted,
          "pass_rate": round(accepted / candidates, 4) if candidates else 0.0, "dropped_by": "-"}]
    )
    return pd.concat([frame, total], ignore_index=True)


def funnel_markdown(candidates: int, table: pd.DataFrame) -> str:
    """The funnel as markdown, headed by the candidate count and the overall accept rate."""
    accepted = int(table["kept"].iloc[-1])
    rate = accepted / candidates if candidates else 0.0
    return f"**{candidates} candidates → {accepted} accepted ({rate:.1%})**\n\n" + table.to_markdown(index=False)
