"""``DriftConfig``: thresholds and severities of the drift, diversity and bias checks (pydantic v2, strict).

Defaults are calibrated in ``tests/stats/test_calibration.py`` on real data (BANKING77 train vs test must pass at
realistic batch sizes; SST-2, GSM8K and a uniformly polite/long rewrite of BANKING77 must fail); the figures are
in ``docs/measurements/drift.md``. A probe threshold of ``null`` disables that probe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """Mode-collapse thresholds: a metric is below minimum when its ratio falls below ``min_*_ratio``.

    The reference value is the mean over ``reference_draws`` reference subsamples of the batch's size, so
    size-dependent metrics (distinct-n, entropy, near-duplicate mass, template share) compare like with like.
    Ratios are diversity ratios (below 1 = less diverse): ``batch / reference``, and for the two collapse metrics
    ``(1 − batch) / (1 − reference)`` (see :mod:`synqa_dagster.stats.diversity`).

    Calibrated on real data (``docs/measurements/drift.md``, "Diversity: narrow domain vs collapse"): BANKING77
    batches restricted to 1-5 intents reach near-duplicate mass ≤ 0.23 and template share ≤ 0.08 (20-120 rows),
    while their distinct-2 ratio falls to 0.46 and their pairwise-distance ratio to 0.42; a batch of 3 templates
    × slot fills has mass 1.0 and template share ≥ 0.54.

    Attributes:
        min_pairwise_distance_ratio: mean pairwise cosine distance, batch / reference.
        min_distinct_ratio: distinct-n (unique n-grams / n-grams), batch / reference.
        min_cluster_entropy_ratio: normalised entropy of k-means cluster assignments, batch / reference.
        min_near_duplicate_ratio: share of rows outside near-duplicate clusters, batch / reference.
        min_template_ratio: share of n-grams outside template n-grams, batch / reference.
        narrow_domain_tolerant: the spread metrics (distinct-n, pairwise distance, cluster entropy) below their
            minimum fail the batch only together with a collapse metric (near-duplicate mass, template share);
            alone they mean a narrower domain than the reference, reported but not failed. ``False``: any metric
            below its minimum fails.
        distinct_n: n of distinct-n.
        clusters: k of the k-means clustering fit on the reference embeddings.
        reference_draws: reference subsamples averaged for the reference values.
        near_duplicate_jaccard: two rows are near-duplicates at this exact Jaccard of word shingles or above.
        near_duplicate_ngram: shingle size (words) of the near-duplicate metric.
        near_duplicate_cosine: also near-duplicates at this embedding cosine or above (``None``: text only;
            MiniLM puts real paraphrases of one intent above 0.95, so it is off by default).
        template_ngram_min / template_ngram_max: word n-gram sizes of the template metric.
        template_min_row_share: an n-gram is a template n-gram when it occurs in more than this share of rows...
        template_min_rows: ...and in at least this many rows.
    """

    min_pairwise_distance_ratio: float = Field(0.85, ge=0)
    min_distinct_ratio: float = Field(0.6, ge=0)
    min_cluster_entropy_ratio: float = Field(0.7, ge=0)
    min_near_duplicate_ratio: float = Field(0.7, ge=0)
    min_template_ratio: float = Field(0.75, ge=0)
    narrow_domain_tolerant: bool = True
    distinct_n: int = Field(2, ge=1, le=5)
    clusters: int = Field(16, ge=2)
    reference_draws: int = Field(5, ge=1)
    near_duplicate_jaccard: float = Field(0.5, gt=0, le=1)
    near_duplicate_ngram: int = Field(3, ge=1, le=10)
    near_duplicate_cosine: float | None = Field(None, gt=0, le=1)
    template_ngram_min: int = Field(4, ge=2, le=10)
    template_ngram_max: int = Field(6, ge=2, le=10)
    template_min_row_share: float = Field(0.10, gt=0, lt=1)
    template_min_rows: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _ngram_range(self) -> "DiversityConfig":
        if self.template_ngram_max < self.template_ngram_min:
            raise ValueError("template_ngram_max must be >= template_ngram_min")
        return self


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
