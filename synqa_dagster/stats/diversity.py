"""Inter-row diversity and mode-collapse detection: is a batch as varied as the same number of real rows, and if
it is less varied, is that a *narrower domain* or a batch *collapsed onto templates*?

Metrics (each computed on the batch and on size-matched reference subsamples, compared as a ratio):

* ``distinct_<n>``: unique lower-cased word n-grams / all n-grams (lexical variety);
* ``mean_pairwise_distance``: mean pairwise cosine distance of the embeddings (semantic spread);
* ``cluster_entropy``: normalised entropy of k-means cluster assignments, clusters fit on the reference
  embeddings (topic spread);
* ``near_duplicate_mass``: share of rows in a cluster of near-duplicates (connected components of the pairs with
  exact Jaccard ≥ ``near_duplicate_jaccard`` on word 3-gram shingles of the normalised text, optionally also
  embedding cosine ≥ ``near_duplicate_cosine``);
* ``template_ngram_share``: share of the rows' word n-grams (n = 4..6, each row's distinct n-grams) that occur in
  more than ``template_min_row_share`` of the rows (and in at least ``template_min_rows`` rows).

The first three fall for *any* batch narrower than the reference: a batch about three BANKING77 intents has a
third of the reference's embedding spread and a lower distinct-2, though every row is a different real message
(measured in ``docs/measurements/drift.md``, "Diversity: narrow domain vs collapse"). The last two measure
collapse itself: rows that copy one another or share a scaffold of long n-grams. Real narrow-domain batches have
almost none of either; a batch of three templates with slot fills has nearly all of its rows in near-duplicate
clusters and over half of its n-grams in template n-grams.

Ratios are "diversity ratios" (below 1 = less diverse than the reference): ``batch / reference`` for the first
three, ``(1 − batch) / (1 − reference)`` for the two collapse metrics (the share of rows outside near-duplicate
clusters, of n-grams outside templates). A metric is *below minimum* when its ratio is under its ``min_ratio``.
The collapse metrics decide the verdict: with ``DiversityConfig.narrow_domain_tolerant`` (default), the
spread/lexical metrics below their minimum fail the batch only together with a collapse metric, and otherwise
are reported as a narrow domain (``diagnosis == "narrow_domain"``, ``note`` column); without it any metric below
its minimum fails (the behaviour before the collapse metrics existed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.cluster.vq import kmeans2
from scipy.sparse.csgraph import connected_components

from synqa_dagster.gates.text import normalize_many, word_ngrams
from synqa_dagster.stats.config import DiversityConfig
from synqa_dagster.stats.probes import tokenize

#: The metrics that measure collapse itself (they decide the verdict); the others measure spread.
COLLAPSE_METRICS = ("near_duplicate_mass", "template_ngram_share")
#: Metrics where a higher value means *less* diverse (their ratio is taken on ``1 - value``).
LOWER_IS_DIVERSE = COLLAPSE_METRICS
#: Diagnoses of :attr:`DiversityReport.diagnosis`.
DIVERSE, NARROW_DOMAIN, TEMPLATE_COLLAPSE, LOW_DIVERSITY = "diverse", "narrow_domain", "template_collapse", "low_diversity"


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


# --------------------------------------------------------------------------------------------- collapse metrics


class NgramIndex:
    """Each text's distinct word n-grams (of the normalised text, :func:`synqa_dagster.gates.text.normalize_text`)
    as sorted integer ids, for the near-duplicate (``shingle`` n) and template (``template_sizes``) metrics.

    Built once for a set of texts (the batch, the reference pool); subsets of rows (reference draws) reuse it.
    A text shorter than the shingle size has one shingle (all its words), as in the dedup gate.
    """

    def __init__(self, texts: Sequence[str], shingle: int = 3, template_sizes: Sequence[int] = (4, 5, 6)) -> None:
        vocab: dict[tuple[int, str], int] = {}
        self.shingles: list[np.ndarray] = []
        self.template: list[np.ndarray] = []
        for norm in normalize_many(texts):
            tokens = norm.split()
            shingles = [vocab.setdefault((0, g), len(vocab)) for g in word_ngrams(tokens, shingle)]
            self.shingles.append(np.unique(np.asarray(shingles, dtype=np.int64)))
            grams = [
                vocab.setdefault((n, g), len(vocab)) for n in template_sizes if len(tokens) >= n for g in word_ngrams(tokens, n)
            ]
            self.template.append(np.unique(np.asarray(grams, dtype=np.int64)))
        self.vocab_size = len(vocab)

    def __len__(self) -> int:
        return len(self.shingles)

    def take(self, idx: Sequence[int]) -> "NgramIndex":
        """The index of the rows ``idx`` (same ids)."""
        out = NgramIndex.__new__(NgramIndex)
        out.shingles = [self.shingles[i] for i in idx]
        out.template = [self.template[i] for i in idx]
        out.vocab_size = self.vocab_size
        return out


def _rows_matrix(sets: Sequence[np.ndarray], width: int) -> sparse.csr_matrix:
    lengths = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    indices = np.concatenate(sets) if len(sets) and lengths.sum() else np.empty(0, dtype=np.int64)
    return sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(sets), max(width, 1)))


def near_duplicate_clusters(
    shingles: Sequence[np.ndarray],
    jaccard: float = 0.5,
    embeddings: np.ndarray | None = None,
    cosine: float | None = None,
    block_cells: int = 4_000_000,
) -> np.ndarray:
    """Size of each row's near-duplicate cluster (1 = no near-duplicate).

    Clusters are the connected components of the graph whose edges are the pairs of rows with exact Jaccard
    similarity ≥ ``jaccard`` of their shingle-id sets (and, when ``embeddings`` and ``cosine`` are given, cosine ≥
    ``cosine``). Exact over all pairs, computed as sparse products over blocks of rows (``block_cells`` bounds
    each block's ``rows × n``). Empty rows (no words) are near-duplicates of each other.
    """
    n = len(shingles)
    if n < 2:
        return np.ones(n, dtype=np.int64)
    width = int(max((int(s.max()) for s in shingles if len(s)), default=0)) + 1
    x = _rows_matrix(shingles, width)
    size = np.fromiter(map(len, shingles), dtype=np.float64, count=n)
    xt = x.T.tocsr()
    step = max(1, block_cells // n)
    src, dst = [], []
    for lo in range(0, n, step):
        inter = (x[lo:lo + step] @ xt).tocoo()
        r, c = inter.row + lo, inter.col
        union = size[r] + size[c] - inter.data
        keep = (r < c) & (inter.data >= jaccard * union)
        src.append(r[keep])
        dst.append(c[keep])
        if embeddings is not None and cosine is not None:
            sims = np.asarray(embeddings[lo:lo + step], dtype=np.float32) @ np.asarray(embeddings, dtype=np.float32).T
            rr, cc = np.nonzero(sims >= cosine)
            rr = rr + lo
            keep = rr < cc
            src.append(rr[keep])
            dst.append(cc[keep])
    empty = np.flatnonzero(size == 0)
    if len(empty) > 1:
        src.append(np.full(len(empty) - 1, empty[0]))
        dst.append(empty[1:])
    s, d = np.concatenate(src), np.concatenate(dst)
    graph = sparse.csr_matrix((np.ones(len(s), dtype=np.int8), (s, d)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.bincount(labels)[labels]


def near_duplicate_mass(
    shingles: Sequence[np.ndarray], jaccard: float = 0.5, embeddings: np.ndarray | None = None, cosine: float | None = None
) -> float:
    """Share of rows in a near-duplicate cluster of two or more rows (:func:`near_duplicate_clusters`)."""
    if not len(shingles):
        return 0.0
    return float((near_duplicate_clusters(shingles, jaccard, embeddings, cosine) >= 2).mean())


def template_ngram_share(grams: Sequence[np.ndarray], min_row_share: float = 0.10, min_rows: int = 3) -> float:
    """Share of the rows' distinct n-grams that are *template n-grams*: n-grams occurring in more than
    ``min_row_share`` of the rows and in at least ``min_rows`` rows (0 when no row has an n-gram)."""
    if not len(grams):
        return 0.0
    flat = np.concatenate(grams)
    if not len(flat):
        return 0.0
    df = np.bincount(flat)
    limit = max(min_row_share * len(grams), min_rows - 1)
    return float((df[flat] > limit).mean())


def diversity_metrics(
    texts: Sequence[str],
    embeddings: np.ndarray | None,
    centroids: np.ndarray | None,
    n: int = 2,
    config: DiversityConfig | None = None,
    index: NgramIndex | None = None,
) -> dict[str, float]:
    """The diversity metrics of one set of rows (embedding metrics only when embeddings are given; the collapse
    metrics only when ``config`` is given, with ``index`` the rows' :class:`NgramIndex` if already built)."""
    out = {f"distinct_{n}": distinct_n(texts, n)}
    if embeddings is not None:
        out["mean_pairwise_distance"] = mean_pairwise_distance(embeddings)
        if centroids is not None:
            out["cluster_entropy"] = cluster_entropy(embeddings, centroids)
    if config is not None:
        index = index if index is not None else _index(texts, config)
        use_cos = embeddings is not None and config.near_duplicate_cosine is not None
        out["near_duplicate_mass"] = near_duplicate_mass(
            index.shingles, config.near_duplicate_jaccard, embeddings if use_cos else None, config.near_duplicate_cosine
        )
        out["template_ngram_share"] = template_ngram_share(index.template, config.template_min_row_share, config.template_min_rows)
    return out


def _index(texts: Sequence[str], config: DiversityConfig) -> NgramIndex:
    sizes = range(config.template_ngram_min, config.template_ngram_max + 1)
    return NgramIndex(texts, config.near_duplicate_ngram, sizes)


# --------------------------------------------------------------------------------------------- report


@dataclass
class DiversityReport:
    """Batch vs reference diversity.

    Attributes:
        table: one row per metric: ``metric``, ``batch``, ``reference`` (mean over size-matched reference
            subsamples), ``ratio`` (diversity ratio, see the module docstring), ``min_ratio``, ``kind``
            (``collapse`` for :data:`COLLAPSE_METRICS`, else ``spread``), ``below_min`` (ratio < min_ratio),
            ``failed`` (counts against the batch), ``note`` (why a metric below its minimum did not fail).
    """

    table: pd.DataFrame

    @property
    def failing(self) -> list[str]:
        """Failing metrics, the collapse metrics first (so a template collapse names itself first)."""
        failed = self.table.loc[self.table["failed"]]
        order = failed["kind"].ne("collapse") if "kind" in failed.columns else pd.Series(False, index=failed.index)
        return failed.assign(_o=order).sort_values("_o", kind="stable")["metric"].tolist()

    @property
    def passed(self) -> bool:
        return not self.failing

    @property
    def diagnosis(self) -> str:
        """``template_collapse`` (a collapse metric failed), ``low_diversity`` (only spread metrics failed:
        ``narrow_domain_tolerant`` off), ``narrow_domain`` (spread metrics below minimum, no collapse) or
        ``diverse``."""
        t = self.table
        if (t["failed"] & t["kind"].eq("collapse")).any():
            return TEMPLATE_COLLAPSE
        if t["failed"].any():
            return LOW_DIVERSITY
        return NARROW_DOMAIN if t["below_min"].any() else DIVERSE

    def summary(self) -> str:
        """One line: the diagnosis and the metrics behind it."""
        t = self.table
        low = ", ".join(f"{m} {r:.2f}" for m, r in zip(t.loc[t["below_min"], "metric"], t.loc[t["below_min"], "ratio"]))
        return {
            TEMPLATE_COLLAPSE: f"collapsed onto templates / near-duplicates: {', '.join(self.failing)} below the reference",
            LOW_DIVERSITY: f"less diverse than the reference: {', '.join(self.failing)}",
            NARROW_DOMAIN: f"narrower domain than the reference (not collapse: no near-duplicate or template excess): {low}",
            DIVERSE: "as diverse as the reference",
        }[self.diagnosis]


def _ratio(metric: str, value: float, ref: float) -> float:
    if metric in LOWER_IS_DIVERSE:
        value, ref = 1.0 - value, 1.0 - ref
        if ref <= 0:
            return 1.0  # the reference is entirely collapsed: the batch cannot be less diverse
    return value / ref if ref > 0 else float("nan")


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
    batch = diversity_metrics(batch_texts, batch_embeddings if use_emb else None, centroids, n, config)
    ref_index = _index(reference_texts, config)
    rng = np.random.default_rng(seed)
    size = min(len(batch_texts), len(reference_texts))
    draws = []
    for _ in range(config.reference_draws):
        idx = rng.choice(len(reference_texts), size=size, replace=False)
        draws.append(diversity_metrics(
            [reference_texts[i] for i in idx], reference_embeddings[idx] if use_emb else None, centroids, n, config,
            ref_index.take(idx),
        ))
    minimum = {
        f"distinct_{n}": config.min_distinct_ratio,
        "mean_pairwise_distance": config.min_pairwise_distance_ratio,
        "cluster_entropy": config.min_cluster_entropy_ratio,
        "near_duplicate_mass": config.min_near_duplicate_ratio,
        "template_ngram_share": config.min_template_ratio,
    }
    rows = []
    for metric, value in batch.items():
        ref = float(np.mean([d[metric] for d in draws])) if draws else float("nan")
        ratio = _ratio(metric, value, ref)
        kind = "collapse" if metric in COLLAPSE_METRICS else "spread"
        rows.append(dict(metric=metric, batch=value, reference=ref, ratio=ratio, min_ratio=minimum[metric], kind=kind,
                         below_min=bool(ratio < minimum[metric])))
    table = pd.DataFrame(rows)
    collapse = bool((table["below_min"] & table["kind"].eq("collapse")).any())
    counts = table["kind"].eq("collapse") | collapse | (not config.narrow_domain_tolerant)
    table["failed"] = table["below_min"] & counts
    table["note"] = np.where(
        table["below_min"] & ~table["failed"], "narrow domain: no near-duplicate or template excess", ""
    )
    columns = ["metric", "batch", "reference", "ratio", "min_ratio", "failed", "below_min", "kind", "note"]
    return DiversityReport(table[columns])
