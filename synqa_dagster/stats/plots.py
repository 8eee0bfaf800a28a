"""Real-vs-synthetic histograms as PNG bytes (matplotlib's Agg canvas: no display, thread-safe, no pyplot)."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np


def histogram_png(
    batch: Sequence[float],
    reference: Sequence[float],
    probe: str,
    bins: int = 30,
    subtitle: str = "",
    dpi: int = 72,
) -> bytes:
    """Overlaid density histograms of one numeric probe (reference vs batch) on shared bins, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a = np.asarray(batch, dtype=float)
    b = np.asarray(reference, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    both = np.concatenate([a, b]) if len(a) + len(b) else np.zeros(1)
    lo, hi = float(np.min(both)), float(np.max(both))
    if probe in ("chars", "tokens") and hi > 0:  # lengths are long-tailed: clip the view at the 99th percentile
        hi = float(np.percentile(both, 99)) or hi
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig = Figure(figsize=(4.8, 2.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(np.clip(b, edges[0], edges[-1]), bins=edges, density=True, alpha=0.5, label=f"reference (n={len(b)})", color="tab:blue")
    ax.hist(np.clip(a, edges[0], edges[-1]), bins=edges, density=True, alpha=0.5, label=f"batch (n={len(a)})", color="tab:orange")
    ax.set_title(f"{probe}" + (f" — {subtitle}" if subtitle else ""), fontsize=9)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str = "") -> str:
    """A markdown image with the PNG inlined as a data URI (Dagster renders it in the metadata panel)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def markdown_image_b64(png_base64: str, alt: str = "") -> str:
    """:func:`markdown_image` of a PNG already base64-encoded (as stored in the findings table)."""
    return f"![{alt}](data:image/png;base64,{png_base64})"
