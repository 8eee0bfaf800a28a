"""Distribution drift, diversity and bias statistics: pure, Dagster-free logic behind the drift asset checks.

* :mod:`~synqa_dagster.stats.probes` — per-row probes (length, sentiment, formality, politeness, intent,
  embedding density) over a list of texts.
* :mod:`~synqa_dagster.stats.tests` — two-sample KS / chi-squared with effect sizes, Benjamini–Hochberg, verdicts.
* :mod:`~synqa_dagster.stats.diversity` — mode-collapse metrics (pairwise distance, distinct-n, cluster entropy).
* :mod:`~synqa_dagster.stats.bias` — identity-term rates, intent coverage, politeness skew.
* :mod:`~synqa_dagster.stats.plots` — real-vs-synthetic histograms as PNG bytes.
* :mod:`~synqa_dagster.stats.config` — :class:`DriftConfig`, the thresholds (calibrated in ``tests/stats``).
"""

from synqa_dagster.stats.config import DriftConfig

__all__ = ["DriftConfig"]
