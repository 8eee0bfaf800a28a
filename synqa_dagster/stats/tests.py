"""Two-sample tests with effect sizes, Benjamini–Hochberg across probes, and the per-probe verdict.

At large n any difference becomes "significant", so a probe fails only when its **effect size exceeds the
configured threshold and** its BH-adjusted p-value is below ``alpha`` (the p-value is the evidence that the
effect is not noise; the effect size says whether it matters). Numeric probes use the two-sample KS statistic
D; categorical probes use chi-squared on the 2×K table (rare categories pooled) with total variation distance or
Cramér's V.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

OTHER = "(other)"
REPORT_COLUMNS = ("probe", "test", "n_batch", "n_reference", "statistic", "p", "p_adjusted", "effect_name", "effect", "threshold", "failed")


def ks_test(batch: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Two-sample Kolmogorov–Smirnov: ``statistic`` (D, also the effect size) and ``p``."""
    a = np.asarray(batch, dtype=float)
    b = np.asarray(reference, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return {"statistic": 0.0, "p": 1.0}
    res = stats.ks_2samp(a, b)
    return {"statistic": float(res.statistic), "p": float(res.pvalue)}


def pooled_counts(batch: Sequence[str], reference: Sequence[str], min_expected: float = 5.0) -> pd.DataFrame:
    """2×K counts (columns ``batch``, ``reference``, index = category), pooling rare categories into ``(other)``.

    Every category whose expected batch count under the null (``n_batch`` × its share of all rows) is below
    ``min_expected`` is pooled; frequent categories are never absorbed, so a category the batch suddenly
    over-produces stays visible (the pooled cell may then sit below ``min_expected``).
    """
    table = pd.DataFrame(
        {"batch": pd.Series(list(batch), dtype=object).value_counts(), "reference": pd.Series(list(reference), dtype=object).value_counts()}
    ).fillna(0)
    n_b, total = table["batch"].sum(), table.values.sum()
    if total == 0 or n_b == 0:
        return table
    expected = n_b * table.sum(axis=1) / total
    order = expected.sort_values(kind="stable").index
    pooled = [cat for cat in order if expected[cat] < min_expected]
    if pooled:
        other = table.loc[pooled].sum()
        table = table.drop(index=pooled)
        table.loc[OTHER] = other
    return table


def chi2_test(batch: Sequence[str], reference: Sequence[str], min_expected: float = 5.0) -> dict[str, float]:
    """Chi-squared test of homogeneity on the pooled 2×K table.

    Returns ``statistic``, ``p``, ``dof``, ``cramers_v`` (√(χ²/N)), ``tvd`` (½ Σ |p_batch − p_reference|) and
    ``categories`` (K after pooling). With fewer than two categories left the test is not informative: p = 1.
    """
    table = pooled_counts(batch, reference, min_expected)
    n_b, n_r = table["batch"].sum() if len(table) else 0, table["reference"].sum() if len(table) else 0
    if len(table) < 2 or n_b == 0 or n_r == 0:
        return {"statistic": 0.0, "p": 1.0, "dof": 0, "cramers_v": 0.0, "tvd": 0.0, "categories": int(len(table))}
    observed = table[["batch", "reference"]].to_numpy(dtype=float).T
    observed = observed[:, observed.sum(axis=0) > 0]
    chi2, p, dof, _ = stats.chi2_contingency(observed, correction=False)
    total = observed.sum()
    tvd = 0.5 * float(np.abs(observed[0] / n_b - observed[1] / n_r).sum())
    return {
        "statistic": float(chi2),
        "p": float(p),
        "dof": int(dof),
        "cramers_v": float(np.sqrt(chi2 / total)),
        "tvd": tvd,
        "categories": int(observed.shape[1]),
    }


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (step-up, monotone, capped at 1), in input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class DriftReport:
    """Per-probe results of one batch vs the reference.

    Attributes:
        table: one row per probe with :data:`REPORT_COLUMNS`.
        alpha: the BH false discovery rate used.
    """

    table: pd.DataFrame
    alpha: float
    notes: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[str]:
        """Names of the probes that failed (effect > threshold and BH-adjusted p < alpha)."""
        return self.table.loc[self.table["failed"], "probe"].tolist()

    @property
    def passed(self) -> bool:
        return not self.failing


def compare_probes(
    batch,
    reference,
    thresholds: Mapping[str, float],
    alpha: float = 0.05,
    categorical_effect: str = "tvd",
    min_expected: float = 5.0,
) -> DriftReport:
    """Test every probe in ``thresholds`` present on both sides (:class:`~synqa_dagster.stats.probes.Probes`)."""
    rows = []
    for probe, threshold in thresholds.items():
        if probe in batch.numeric.columns and probe in reference.numeric.columns:
            res = ks_test(batch.numeric[probe], reference.numeric[probe])
            rows.append(dict(probe=probe, test="ks", statistic=res["statistic"], p=res["p"], effect_name="ks_d", effect=res["statistic"]))
        elif probe in batch.categorical.columns and probe in reference.categorical.columns:
            res = chi2_test(batch.categorical[probe], reference.categorical[probe], min_expected)
            rows.append(
                dict(probe=probe, test="chi2", statistic=res["statistic"], p=res["p"], effect_name=categorical_effect,
                     effect=res[categorical_effect], dof=res["dof"], categories=res["categories"], tvd=res["tvd"], cramers_v=res["cramers_v"])
            )
        else:
            continue
        rows[-1].update(threshold=float(threshold), n_batch=len(batch), n_reference=len(reference))
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=list(REPORT_COLUMNS))
        return DriftReport(table.astype({"failed": bool}), alpha, ["no probe could be tested"])
    table["p_adjusted"] = benjamini_hochberg(table["p"].to_numpy())
    table["failed"] = (table["effect"] > table["threshold"]) & (table["p_adjusted"] < alpha)
    extra = [c for c in table.columns if c not in REPORT_COLUMNS]
    return DriftReport(table[list(REPORT_COLUMNS) + extra], alpha)
