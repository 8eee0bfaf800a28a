"""``DriftConfig``: thresholds and severities of the drift, diversity and bias checks (pydantic v2, strict).

Defaults are calibrated in ``tests/stats/test_calibration.py`` on real data (BANKING77 train vs test must pass at
realistic batch sizes; SST-2, GSM8K and a uniformly polite/long rewrite of BANKING77 must fail); the figures are
in ``docs/measurements/drift.md``. A probe threshold of ``null`` disables that probe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["ERROR", "WARN"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NumericThresholds(_Strict):
    """Effect-size thresholds (two-sample KS statistic D, in [0, 1]) for the numeric probes; null disables one.

    Attributes:
        chars / tokens: length in characters and in word tokens.
        sentiment: VADER compound score.
        formality: share of formal-writing markers met (capitalised start, final punctuation, no slang...).
        politeness: polite markers minus rude markers per row.
        nn_distance: embedding density, mean cosine distance to the k nearest reference rows.
    """

    chars: float | None = Field(0.2, ge=0, le=1)
    tokens: float | None = Field(0.2, ge=0, le=1)
    sentiment: float | None = Field(0.2, ge=0, le=1)
    formality: float | None = Field(0.2, ge=0, le=1)
    politeness: float | None = Field(0.2, ge=0, le=1)
    nn_distance: float | None = Field(0.2, ge=0, le=1)


class CategoricalThresholds(_Strict):
    """Effect-size thresholds (total variation distance or Cramér's V, see ``categorical_effect``); null disables.

    Attributes:
        intent: intent distribution (only when both sides carry an ``intent`` column).
        tone: politeness register per row: polite / neutral / rude.
    """

    intent: float | None = Field(0.35, ge=0, le=1)
    tone: float | None = Field(0.2, ge=0, le=1)


class Severities(_Strict):
    """Severity of each check when it fails (ERROR on a blocking check stops ``accepted_dataset``)."""

    drift: Severity = "ERROR"
    diversity: Severity = "ERROR"
    identity_terms: Severity = "WARN"
    coverage: Severity = "WARN"
    politeness: Severity = "WARN"


class DiversityConfig(_Strict):
    """Mode-collapse thresholds: a batch fails when a metric falls below ``ratio × reference`` value.

    The reference value is the mean over ``reference_draws`` reference subsamples of the batch's size, so
    size-dependent metrics (distinct-n, entropy) compare like with like.

    Attributes:
        min_pairwise_distance_ratio: mean pairwise cosine distance, batch / reference.
        min_distinct_ratio: distinct-n (unique n-grams / n-grams), batch / reference.
        min_cluster_entropy_ratio: normalised entropy of k-means cluster assignments, batch / reference.
        distinct_n: n of distinct-n.
        clusters: k of the k-means clustering fit on the reference embeddings.
        reference_draws: reference subsamples averaged for the reference values.
    """

    min_pairwise_distance_ratio: float = Field(0.85, ge=0)
    min_distinct_ratio: float = Field(0.6, ge=0)
    min_cluster_entropy_ratio: float = Field(0.7, ge=0)
    distinct_n: int = Field(2, ge=1, le=5)
    clusters: int = Field(16, ge=2)
    reference_draws: int = Field(5, ge=1)


class BiasConfig(_Strict):
    """Bias screening thresholds.

    Attributes:
        identity_max_rate_diff: an identity category fails when |batch rate − reference rate| exceeds this and
            its BH-adjusted two-proportion p-value is below ``alpha``.
        coverage_min_rows: an intent the batch targeted needs at least this many accepted rows.
        coverage_scope: ``batch`` = intents present in ``generated_candidates``; ``reference`` = every intent of
            the reference sample.
        max_politeness_skew: the polite-row share may exceed the reference's by at most this much.
    """

    identity_max_rate_diff: float = Field(0.05, ge=0, le=1)
    coverage_min_rows: int = Field(1, ge=0)
    coverage_scope: Literal["batch", "reference"] = "batch"
    max_politeness_skew: float = Field(0.25, ge=0, le=1)


class DriftConfig(_Strict):
    """Configuration of the ``reference_corpus`` asset and the drift / diversity / bias checks.

    Attributes:
        reference_path: the real-data baseline (JSONL/CSV/Parquet with ``text`` and optional ``label``,
            ``taxonomy_version``, ``locale``, ids), relative to the project root.
        reference_taxonomy_dir: taxonomies used to validate and map reference labels to the batch's version.
        reference_min_chars / reference_max_chars: text length bounds validated on the reference.
        text_column: the synthetic column compared with the reference text (``instruction`` = the customer turn,
            the like-for-like counterpart of a customer message; falls back to ``text`` when absent).
        alpha: false discovery rate (Benjamini–Hochberg) across the probes of one check.
        min_rows: fewer surviving rows than this and the checks pass with ``verdict: too_few_rows``.
        numeric / categorical: per-probe effect-size thresholds.
        categorical_effect: which effect size gates categorical probes (``tvd`` or ``cramers_v``).
        min_expected: categories with fewer expected batch rows are pooled into ``(other)`` for chi-squared.
        knn: neighbours for the embedding-density probe.
        histogram_bins: bins of the real-vs-synthetic histograms.
        write_plots: also write each histogram PNG next to the batch's table through the store.
        severities / diversity / bias: see those models.
        seed: random seed of every sampled quantity (k-means, reference subsamples).
    """

    reference_path: str = "data/demo/reference_customers.jsonl"
    reference_taxonomy_dir: str = "data/demo/taxonomy"
    reference_min_chars: int = Field(1, ge=1)
    reference_max_chars: int = Field(5000, ge=1)
    text_column: str = "instruction"
    alpha: float = Field(0.05, gt=0, lt=1)
    min_rows: int = Field(20, ge=2)
    numeric: NumericThresholds = Field(default_factory=NumericThresholds)
    categorical: CategoricalThresholds = Field(default_factory=CategoricalThresholds)
    categorical_effect: Literal["tvd", "cramers_v"] = "tvd"
    min_expected: float = Field(5.0, gt=0)
    knn: int = Field(5, ge=1)
    histogram_bins: int = Field(30, ge=5)
    write_plots: bool = True
    severities: Severities = Field(default_factory=Severities)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    bias: BiasConfig = Field(default_factory=BiasConfig)
    seed: int = 0

    def thresholds(self) -> dict[str, float]:
        """Enabled probes and their effect-size thresholds (numeric first, then categorical)."""
        out = {k: v for k, v in self.numeric.model_dump().items() if v is not None}
        out.update({k: v for k, v in self.categorical.model_dump().items() if v is not None})
        return out
