"""Diversity: a batch from a narrower real domain passes, a batch collapsed onto templates fails.

Real data from the shared folder (by path): BANKING77 train as the reference, BANKING77 test restricted to a few
intents as the narrow domain, SST-2 as an off-domain corpus; the collapsed batch is three request templates with
slot fills (``tests.stats.realdata.collapsed_batch``). Figures: ``docs/measurements/drift.md``, "Diversity: narrow
domain vs collapse".
"""

from __future__ import annotations

import numpy as np
import pytest

from synqa_dagster.stats.config import DiversityConfig, DriftConfig
from synqa_dagster.stats.diversity import (
    COLLAPSE_METRICS,
    NARROW_DOMAIN,
    TEMPLATE_COLLAPSE,
    NgramIndex,
    compare_diversity,
    near_duplicate_clusters,
    template_ngram_share,
)
from tests.stats import realdata

CONFIG = DriftConfig().diversity
#: Three BANKING77 intents: one narrow topic (cards), as a customer-support batch about one product area.
NARROW_INTENTS = ("card_arrival", "card_delivery_estimate", "lost_or_stolen_card")


@pytest.fixture(scope="module")
def embedder():
    from synqa_dagster.embedding import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def data(shared_data, embedder):
    """300 reference rows (BANKING77 train), 60-row batches: narrow (3 intents of BANKING77 test), collapsed, mixed
    (half collapsed, half real) and SST-2; texts and embeddings."""
    rng = np.random.default_rng(11)
    train, test = realdata.banking77(shared_data, "train"), realdata.banking77(shared_data, "test")
    narrow_pool = test[test["intent"].isin(NARROW_INTENTS)]
    texts = {
        "reference": train["text"].iloc[rng.choice(len(train), 300, replace=False)].tolist(),
        "narrow": narrow_pool["text"].iloc[rng.choice(len(narrow_pool), 60, replace=False)].tolist(),
        "collapsed": realdata.collapsed_batch(60),
        "mixed": realdata.collapsed_batch(30, seed=1) + test["text"].iloc[rng.choice(len(test), 30, replace=False)].tolist(),
        "sst2": realdata.sst2(shared_data)["text"].sample(60, random_state=3).tolist(),
    }
    unique = sorted({t for v in texts.values() for t in v})
    vectors = dict(zip(unique, embedder.encode(unique)))
    return {k: (v, np.stack([vectors[t] for t in v])) for k, v in texts.items()}


def _compare(data, name, config=CONFIG, embeddings=True):
    texts, vectors = data[name]
    ref, ref_v = data["reference"]
    return compare_diversity(texts, vectors if embeddings else None, ref, ref_v if embeddings else None, config, 0)


def test_narrow_real_domain_passes_but_reads_as_narrow(data):
    report = _compare(data, "narrow")
    t = report.table.set_index("metric")
    assert report.passed, report.table
    assert report.diagnosis == NARROW_DOMAIN and "narrower domain" in report.summary()
    # the spread metrics are low (one topic) ...
    assert t.loc["mean_pairwise_distance", "ratio"] < CONFIG.min_pairwise_distance_ratio
    assert t.loc["mean_pairwise_distance", "below_min"] and not t.loc["mean_pairwise_distance", "failed"]
    assert t.loc["mean_pairwise_distance", "note"].startswith("narrow domain")
    # ... but the rows neither copy each other nor share a template
    assert t.loc["near_duplicate_mass", "batch"] <= 0.25 and t.loc["template_ngram_share", "batch"] <= 0.05
    # before the collapse metrics, such a batch read as mode collapse
    old = _compare(data, "narrow", CONFIG.model_copy(update={"narrow_domain_tolerant": False}))
    assert not old.passed and "mean_pairwise_distance" in old.failing


def test_template_collapse_fails_and_names_itself(data):
    report = _compare(data, "collapsed")
    t = report.table.set_index("metric")
    assert not report.passed and report.diagnosis == TEMPLATE_COLLAPSE
    assert set(COLLAPSE_METRICS) <= set(report.failing) and report.failing[0] in COLLAPSE_METRICS
    assert {"distinct_2", "mean_pairwise_distance"} <= set(report.failing)  # corroborating metrics fail with it
    assert t.loc["near_duplicate_mass", "batch"] == 1.0 and t.loc["template_ngram_share", "batch"] > 0.5
    assert "templates" in report.summary()


def test_half_collapsed_batch_fails(data):
    report = _compare(data, "mixed")
    assert not report.passed and report.diagnosis == TEMPLATE_COLLAPSE
    assert "near_duplicate_mass" in report.failing


def test_collapse_metrics_work_without_embeddings(data):
    assert _compare(data, "narrow", embeddings=False).passed
    collapsed = _compare(data, "collapsed", embeddings=False)
    assert not collapsed.passed and set(COLLAPSE_METRICS) <= set(collapsed.failing)
    assert set(collapsed.table["metric"]) == {"distinct_2", *COLLAPSE_METRICS}


def test_off_domain_sst2_is_diverse(data):
    """SST-2 against a BANKING77 reference: off-domain, but not collapsed (the drift check is what flags it)."""
    report = _compare(data, "sst2")
    assert report.passed, report.table
    t = report.table.set_index("metric")
    assert t.loc["near_duplicate_mass", "batch"] == 0.0 and t.loc["distinct_2", "ratio"] > 1.0


def test_table_shape(data):
    table = _compare(data, "narrow").table
    assert list(table.columns) == ["metric", "batch", "reference", "ratio", "min_ratio", "failed", "below_min", "kind", "note"]
    assert table["metric"].tolist() == [
        "distinct_2", "mean_pairwise_distance", "cluster_entropy", "near_duplicate_mass", "template_ngram_share",
    ]


def test_near_duplicate_clusters_and_template_share_exact():
    texts = [
        "my card has not arrived yet can you check",
        "my card has not arrived yet, can you check it",  # Jaccard 7/8 of word 3-grams with the first
        "how do i top up my account with cash",
        "what is the exchange rate for euros today",
        "",
        "!!!",  # no words: a near-duplicate of the empty row
    ]
    index = NgramIndex(texts, shingle=3, template_sizes=(4,))
    assert near_duplicate_clusters(index.shingles, 0.5).tolist() == [2, 2, 1, 1, 2, 2]
    assert near_duplicate_clusters(index.shingles, 0.9).tolist() == [1, 1, 1, 1, 2, 2]
    # 4-grams: rows 0 and 1 share "my card has not", "card has not arrived", ... (6 of row 0's 6 4-grams)
    grams = NgramIndex(texts[:4], template_sizes=(4,)).template
    total = sum(map(len, grams))
    assert template_ngram_share(grams, min_row_share=0.25, min_rows=2) == pytest.approx(12 / total)
    assert template_ngram_share(grams, min_row_share=0.25, min_rows=3) == 0.0
    assert template_ngram_share([], 0.1, 3) == 0.0


def test_config_defaults_and_validation():
    c = DiversityConfig()
    assert (c.min_near_duplicate_ratio, c.min_template_ratio, c.narrow_domain_tolerant) == (0.7, 0.75, True)
    with pytest.raises(ValueError):
        DiversityConfig(template_ngram_min=6, template_ngram_max=4)
    with pytest.raises(ValueError):
        DiversityConfig(near_duplicate_jacard=0.5)  # type: ignore[call-arg]
