"""Inter-row diversity and mode-collapse detection: is a batch as varied as the same number of real rows?

Metrics: mean pairwise cosine distance of the embeddings, distinct-n (unique word n-grams / n-grams) and the
normalised entropy of k-means cluster assignments (clusters fit on the reference embeddings). Each batch value
is compared with the mean over reference subsamples of the batch's size (distinct-n and entropy depend on n);
a batch fails when a metric falls below ``min_ratio × reference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.cluster.vq import kmeans2

from synqa_dagster.stats.config import DiversityConfig
from synqa_dagster.stats.probes import tokenize


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean cosine distance over all pairs of distinct rows (unit-length vectors); 0 for fewer than 2 rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    if n < 2:
        return 0.0
    s = x.sum(axis=0)
    total_sim = float(s @ s) - float((x * x).sum())
    return 1.0 - total_sim / (n * (n - 1))


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique lower-cased word n-grams / all n-grams over the texts (1.0 = no n-gram repeats)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        toks = [t.lower() for t in tokenize(text)]
        grams.extend(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def fit_clusters(reference_embeddings: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means centroids (k-means++ init, fixed seed) of the reference embeddings, unit-normalised."""
    x = np.asarray(reference_embeddings, dtype=np.float64)
    k = max(1, min(k, len(x)))
    centroids, _ = kmeans2(x, k, minit="++", seed=seed)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    return centroids / np.where(norms == 0, 1, norms)


def cluster_entropy(embeddings: np.ndarray, centroids: np.ndarray) -> float:
    """Entropy of nearest-centroid assignments, normalised by log(min(k, n)) to [0, 1]."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < 2 or len(centroids) < 2:
        return 0.0
    labels = np.argmax(x @ centroids.T, axis=1)
    p = np.bincount(labels, minlength=len(centroids)) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(min(len(centroids), len(x))))


def diversity_metrics(texts: Sequence[str], embeddings: np.ndarray | None, centroids: np.ndarray | None, n: int = 2) -> dict[str, float]:
    """The diversity metrics of one set of rows (embedding metrics only when embeddings are given)."""
    out = {f"distinct_{n}": distinct_n(texts, n)}
    if embeddings is not None:
        out["mean_pairwise_distance"] = mean_pairwise_distance(embeddings)
        if centroids is not None:
            out["cluster_entropy"] = cluster_entropy(embeddings, centroids)
    return out


@dataclass
class DiversityReport:
    """Batch vs reference diversity.

    Attributes:
        table: one row per metric: ``metric``, ``batch``, ``reference`` (mean over size-matched reference
            subsamples), ``ratio``, ``min_ratio``, ``failed``.
    """

    table: pd.DataFrame

    @property
    def failing(self) -> list[str]:
        """Metrics below their minimum ratio."""
        return self.table.loc[self.table["failed"], "metric"].tolist()

    @property
    def passed(self) -> bool:
        return not self.failing


def compare_diversity(
    batch_texts: Sequence[str],
    batch_embeddings: np.ndarray | None,
    reference_texts: Sequence[str],
    reference_embeddings: np.ndarray | None,
    config: DiversityConfig,
    seed: int = 0,
) -> DiversityReport:
    """Compare the batch's diversity with size-matched reference subsamples (see module docstring)."""
    n = config.distinct_n
    use_emb = batch_embeddings is not None and reference_embeddings is not None and len(reference_embeddings) >= 2
    centroids = fit_clusters(reference_embeddings, config.clusters, seed) if use_emb else None
    batch = diversity_metrics(batch_texts, batch_embeddings if use_emb else None, centroids, n)
    rng = np.random.default_rng(seed)
    size = min(len(batch_texts), len(reference_texts))
    draws = []
    for _ in range(config.reference_draws):
        idx = rng.choice(len(reference_texts), size=size, replace=False)
        draws.append(diversity_metrics([reference_texts[i] for i in idx], reference_embeddings[idx] if use_emb else None, centroids, n))
    minimum = {
        f"distinct_{n}": config.min_distinct_ratio,
        "mean_pairwise_distance": config.min_pairwise_distance_ratio,
        "cluster_entropy": config.min_cluster_entropy_ratio,
    }
    rows = []
    for metric, value in batch.items():
        ref = float(np.mean([d[metric] for d in draws])) if draws else float("nan")
        ratio = value / ref if ref > 0 else float("nan")
        rows.append(dict(metric=metric, batch=value, reference=ref, ratio=ratio, min_ratio=minimum[metric], failed=bool(ratio < minimum[metric])))
    return DiversityReport(pd.DataFrame(rows))
