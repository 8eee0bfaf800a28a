"""The funnel as a picture and as a report: seeds → generated → each gate (kept / dropped) → accepted.

Both take the table of :func:`synqa_dagster.funnel.funnel_table` (one row per gate with ``stage, rows_in, kept,
dropped, pass_rate, dropped_by``, then an ``accepted`` row whose ``rows_in`` is the candidate count) and an
optional seed count. The PNG is drawn on matplotlib's Agg canvas (no display, no pyplot state) with a fixed
size and dpi and no ``Software``/date metadata, so the same table gives the same bytes. Stage names and drop
categories are drawn as plain text (mathtext off) and escaped in markdown.
"""

from __future__ import annotations

import io

import pandas as pd

from synqa_dagster.handover.markdown import md_escape, md_table

FIGSIZE = (8.0, 4.5)
DPI = 100
KEPT_COLOR = "#2ca02c"
DROPPED_COLOR = "#d62728"
COUNT_COLOR = "#7f7f7f"


def _stages(table: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """(gate rows, candidates, accepted) from a :func:`~synqa_dagster.funnel.funnel_table` table."""
    if table.empty or str(table["stage"].iloc[-1]) != "accepted":
        raise ValueError("expected a funnel_table(...) table ending with the 'accepted' row")
    last = table.iloc[-1]
    return table.iloc[:-1].reset_index(drop=True), int(last["rows_in"]), int(last["kept"])


def _rate(kept: int, seen: int) -> str:
    return f"{kept / seen:.1%}" if seen else "n/a"


def funnel_chart_png(table: pd.DataFrame, title: str, seeds: int | None = None) -> bytes:
    """The funnel as PNG bytes: one horizontal bar per stage, kept (green) and dropped (red) stacked.

    Args:
        table: output of :func:`synqa_dagster.funnel.funnel_table`.
        title: chart title (drawn as plain text).
        seeds: seed rows the candidates were generated from; adds a leading grey ``seeds`` bar when given.

    Returns:
        PNG bytes, identical for identical inputs (fixed size/dpi, no metadata).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gates, candidates, accepted = _stages(table)
    bars: list[tuple[str, int, int, str]] = []  # label, kept, dropped, annotation
    if seeds is not None:
        bars.append(("seeds", int(seeds), 0, f"{int(seeds)} seeds"))
    bars.append(("generated", candidates, 0, f"{candidates} generated"))
    for row in gates.itertuples():
        kept, dropped, seen = int(row.kept), int(row.dropped), int(row.rows_in)
        bars.append((str(row.stage), kept, dropped, f"{kept} kept, {dropped} dropped ({_rate(kept, seen)} pass)"))
    bars.append(("accepted", accepted, 0, f"{accepted} of {candidates} accepted ({_rate(accepted, candidates)})"))

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = list(range(len(bars)))[::-1]
    width = max([k + d for _, k, d, _ in bars] + [1])
    for yi, (label, kept, dropped, note) in zip(y, bars):
        color = COUNT_COLOR if label in ("seeds", "generated") else KEPT_COLOR
        ax.barh(yi, kept, color=color, height=0.6)
        if dropped:
            ax.barh(yi, dropped, left=kept, color=DROPPED_COLOR, height=0.6)
        ax.text(width * 1.02, yi, note, va="center", fontsize=8, parse_math=False)
    ax.set_yticks(y)
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    for tick in ax.get_yticklabels():
        tick.set_parse_math(False)
    ax.set_xlim(0, width * 1.75)
    ax.set_xlabel("rows", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=KEPT_COLOR, label="kept"), Patch(color=DROPPED_COLOR, label="dropped")],
              fontsize=7, loc="lower right", frameon=False)
    ax.set_title(str(title), fontsize=10, parse_math=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def funnel_report_markdown(table: pd.DataFrame, seeds: int | None = None) -> str:
    """The funnel as markdown: a headline (seeds → generated → accepted, accept rate) and one table row per stage
    (rows in, kept, dropped, pass rate, drops by category). Every cell taken from the table is escaped."""
    gates, candidates, accepted = _stages(table)
    head = [f"{int(seeds)} seeds"] if seeds is not None else []
    head += [f"{candidates} generated", f"{accepted} accepted ({_rate(accepted, candidates)} accept rate)"]
    rows: list[list[str]] = []
    if seeds is not None:
        rows.append(["seeds", "", str(int(seeds)), "", "", ""])
    rows.append(["generated", "", str(candidates), "", "", ""])
    for row in gates.itertuples():
        rows.append([
            md_escape(row.stage), str(int(row.rows_in)), str(int(row.kept)), str(int(row.dropped)),
            _rate(int(row.kept), int(row.rows_in)), md_escape(row.dropped_by),
        ])
    rows.append(["**accepted**", str(candidates), f"**{accepted}**", str(candidates - accepted), _rate(accepted, candidates), ""])
    table_md = md_table(["stage", "rows in", "kept", "dropped", "pass rate", "dropped by (category count)"], rows,
                        align="lrrrrl", escape=False)
    return "**" + " → ".join(head) + "**\n\n" + table_md + "\n"
