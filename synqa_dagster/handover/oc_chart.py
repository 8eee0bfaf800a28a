"""Operating characteristic (OC) curves of a batch's review plans as a deterministic PNG (``oc_curves.png``).

One curve per distinct plan (sample size n, acceptance number Ac, rejection number Re): the probability that a
slice (lot) is accepted as a function of its defect rate, binomial like
:func:`synqa_dagster.review.sampling.acceptance_probability` (a lot is accepted with fewer than Re defects:
:func:`~synqa_dagster.review.sampling.lot_acceptance_probability`). The AQL of an ISO plan is a vertical dashed
line, P = 0.10 a horizontal dotted line, and each curve's LQ10 (the defect rate accepted only 10% of the time)
is marked on it. Drawn like :mod:`.funnel_chart`: matplotlib's Agg canvas (no display, no pyplot state), fixed
size and dpi, no ``Software``/date metadata, labels as plain text (mathtext off) -- the same plans give the same
bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from synqa_dagster.review.sampling import limiting_quality, lot_acceptance_probability

FIGSIZE = (8.0, 4.8)
DPI = 100
POINTS = 201
#: Line colours and styles, cycled in plan order (colour-blind-safe Okabe-Ito palette; styles tell them apart in grey).
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
STYLES = ("-", "--", "-.", ":")
GUIDE_COLOR = "#7f7f7f"


def _plan(curve: Any) -> tuple[str, int, int, int]:
    get = curve.get if isinstance(curve, dict) else lambda k: getattr(curve, k)
    return str(get("label")), int(get("sample_size")), int(get("acceptance_number")), int(get("rejection_number"))


def oc_axis_limit(curves: Sequence[Any], max_rate: float = 0.20) -> float:
    """The x-axis maximum (a defect rate): ``max_rate``, or a little beyond the largest LQ10 when that is larger
    (capped at 1)."""
    lq = [limiting_quality(n, re - 1, 0.10) for _, n, _, re in map(_plan, curves)]
    return min(1.0, max([max_rate] + [x * 1.1 for x in lq]))


def oc_figure(curves: Sequence[Any], title: str, aql: float | None = None, max_rate: float = 0.20) -> Any:
    """The OC curves as a matplotlib ``Figure`` (Agg canvas).

    Args:
        curves: one entry per distinct plan, with ``label``, ``sample_size``, ``acceptance_number`` and
            ``rejection_number`` (attributes or dict keys), drawn in the given order.
        title: chart title (plain text).
        aql: the AQL as a defect rate (0.01 for AQL 1.0), drawn as a vertical line; None for zero-acceptance plans.
        max_rate: the x axis runs to this defect rate at least (see :func:`oc_axis_limit`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plans = [_plan(c) for c in curves]
    limit = oc_axis_limit(curves, max_rate)
    xs = [limit * i / (POINTS - 1) for i in range(POINTS)]
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.90, bottom=0.12)
    for i, (label, n, ac, re) in enumerate(plans):
        color, style = COLORS[i % len(COLORS)], STYLES[(i // len(COLORS)) % len(STYLES)]
        ys = [lot_acceptance_probability(n, ac, re, x) for x in xs]
        lq10 = limiting_quality(n, re - 1, 0.10)
        ax.plot([100 * x for x in xs], ys, color=color, linestyle=style, linewidth=1.6,
                label=f"{label} (LQ10 {100 * lq10:.1f}%)")
        ax.plot([100 * lq10], [0.10], marker="o", markersize=4, color=color, linestyle="none")
    ax.axhline(0.10, color=GUIDE_COLOR, linestyle=":", linewidth=1.0)
    ax.text(100 * limit, 0.115, "P(accept) = 0.10: LQ10", ha="right", va="bottom", fontsize=7, color=GUIDE_COLOR,
            parse_math=False)
    if aql is not None and 0 < aql <= limit:
        ax.axvline(100 * aql, color=GUIDE_COLOR, linestyle="--", linewidth=1.0)
        ax.text(100 * aql, 0.02, f" AQL {100 * aql:g}%", ha="left", va="bottom", fontsize=7, color=GUIDE_COLOR,
                parse_math=False)
    ax.set_xlim(0, 100 * limit)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("defect rate of the slice (% defective rows)", fontsize=8)
    ax.set_ylabel("P(slice accepted)", fontsize=8)
    ax.tick_params(labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if plans:
        legend = ax.legend(fontsize=7, loc="upper right", frameon=False)
        for text in legend.get_texts():
            text.set_parse_math(False)
    else:
        ax.text(0.5, 0.5, "no plans", transform=ax.transAxes, ha="center", va="center", fontsize=9)
    ax.set_title(str(title), fontsize=10, parse_math=False)
    return fig


def oc_curves_png(curves: Sequence[Any], title: str, aql: float | None = None, max_rate: float = 0.20) -> bytes:
    """The OC curves (:func:`oc_figure`) as PNG bytes, identical for identical inputs (fixed size/dpi, no metadata)."""
    fig = oc_figure(curves, title, aql, max_rate)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def programme_oc_png(programme: Any, title: str) -> bytes:
    """``oc_curves.png`` of a batch: the curves of a :class:`~synqa_dagster.handover.card.ReviewProgrammeFacts`
    (one per distinct plan, AQL marked for an ISO plan)."""
    aql = None if programme.aql is None else programme.aql / 100
    return oc_curves_png(programme.oc_curves, title, aql=aql)


__all__ = ["oc_axis_limit", "oc_curves_png", "oc_figure", "programme_oc_png"]
