"""The funnel as a picture and as a report: seeds → generated → each gate (kept / dropped) → accepted.

Both take the table of :func:`synqa_dagster.funnel.funnel_table` (one row per gate with ``stage, rows_in, kept,
dropped, pass_rate, dropped_by``, then an ``accepted`` row whose ``rows_in`` is the candidate count) and an
optional seed count. The PNG is drawn on matplotlib's Agg canvas (no display, no pyplot state) with a fixed
size and dpi and no ``Software``/date metadata, so the same table gives the same bytes. Stage names and drop
categories are drawn as plain text (mathtext off) and escaped in markdown.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from synqa_dagster.handover.markdown import md_escape, md_table

FIGSIZE = (9.0, 4.5)
#: Room right of the longest bar, as a share of it (the axis runs to the data, not to the labels).
AXIS_MARGIN = 0.05
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


def funnel_axis_limit(table: pd.DataFrame, seeds: int | None = None) -> float:
    """The x-axis maximum of the chart: the longest bar (the candidate count, or the seed count when larger) plus
    :data:`AXIS_MARGIN` (the annotations sit right of the axes, so the axis needs no room for them)."""
    gates, candidates, accepted = _stages(table)
    longest = max([candidates, accepted, int(seeds or 0)] + [int(r.kept) + int(r.dropped) for r in gates.itertuples()] + [1])
    return float(longest) * (1.0 + AXIS_MARGIN)


def funnel_figure(table: pd.DataFrame, title: str, seeds: int | None = None, source_label: str = "generated") -> Any:
    """The funnel as a matplotlib ``Figure`` (Agg canvas): one horizontal bar per stage, kept (green) and dropped
    (red) stacked; each bar's counts are written right of the axes, so the axis runs to
    :func:`funnel_axis_limit` (the data plus a small margin).

    Args:
        table: output of :func:`synqa_dagster.funnel.funnel_table`.
        title: chart title (drawn as plain text).
        seeds: seed rows the candidates were generated from; adds a leading grey ``seeds`` bar when given.
        source_label: what the candidates are: ``generated`` (a synqa batch) or ``audited`` (``synqa audit``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    gates, candidates, accepted = _stages(table)
    label = str(source_label)
    bars: list[tuple[str, int, int, str]] = []  # label, kept, dropped, annotation
    if seeds is not None:
        bars.append(("seeds", int(seeds), 0, f"{int(seeds)} seeds"))
    bars.append((label, candidates, 0, f"{candidates} {label}"))
    for row in gates.itertuples():
        kept, dropped, seen = int(row.kept), int(row.dropped), int(row.rows_in)
        bars.append((str(row.stage), kept, dropped, f"{kept} kept, {dropped} dropped ({_rate(kept, seen)} pass)"))
    bars.append(("accepted", accepted, 0, f"{accepted} of {candidates} accepted ({_rate(accepted, candidates)})"))

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.14, right=0.64, top=0.88, bottom=0.16)
    y = list(range(len(bars)))[::-1]
    beside = ax.get_yaxis_transform()  # x in axes units (1.0 = the right end of the axis), y in data units
    for yi, (name, kept, dropped, note) in zip(y, bars):
        color = COUNT_COLOR if name in ("seeds", label) and not dropped else KEPT_COLOR
        ax.barh(yi, kept, color=color, height=0.6)
        if dropped:
            ax.barh(yi, dropped, left=kept, color=DROPPED_COLOR, height=0.6)
        ax.text(1.02, yi, note, transform=beside, va="center", ha="left", fontsize=8, parse_math=False, clip_on=False)
    ax.set_yticks(y)
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    for tick in ax.get_yticklabels():
        tick.set_parse_math(False)
    ax.set_xlim(0, funnel_axis_limit(table, seeds))
    ax.set_xlabel("rows", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.legend(handles=[Patch(color=KEPT_COLOR, label="kept"), Patch(color=DROPPED_COLOR, label="dropped")],
               fontsize=7, loc="lower right", frameon=False, ncol=2)
    ax.set_title(str(title), fontsize=10, parse_math=False)
    return fig


def funnel_chart_png(table: pd.DataFrame, title: str, seeds: int | None = None, source_label: str = "generated") -> bytes:
    """The funnel (:func:`funnel_figure`) as PNG bytes, identical for identical inputs (fixed size/dpi, no metadata)."""
    fig = funnel_figure(table, title, seeds, source_label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def funnel_report_markdown(table: pd.DataFrame, seeds: int | None = None, source_label: str = "generated") -> str:
    """The funnel as markdown: a headline (seeds → generated → accepted, accept rate) and one table row per stage
    (rows in, kept, dropped, pass rate, drops by category). Every cell taken from the table is escaped.
    ``source_label`` names the candidates (``generated`` for a synqa batch, ``audited`` for ``synqa audit``)."""
    gates, candidates, accepted = _stages(table)
    label = md_escape(source_label)
    head = [f"{int(seeds)} seeds"] if seeds is not None else []
    head += [f"{candidates} {label}", f"{accepted} accepted ({_rate(accepted, candidates)} accept rate)"]
    rows: list[list[str]] = []
    if seeds is not None:
        rows.append(["seeds", "", str(int(seeds)), "", "", ""])
    rows.append([label, "", str(candidates), "", "", ""])
    for row in gates.itertuples():
        rows.append([
            md_escape(row.stage), str(int(row.rows_in)), str(int(row.kept)), str(int(row.dropped)),
            _rate(int(row.kept), int(row.rows_in)), md_escape(row.dropped_by),
        ])
    rows.append(["**accepted**", str(candidates), f"**{accepted}**", str(candidates - accepted), _rate(accepted, candidates), ""])
    table_md = md_table(["stage", "rows in", "kept", "dropped", "pass rate", "dropped by (category count)"], rows,
                        align="lrrrrl", escape=False)
    return "**" + " → ".join(head) + "**\n\n" + table_md + "\n"
