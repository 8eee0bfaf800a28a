"""Calibration of the drift gate on real data (figures in docs/measurements/drift.md; print them with ``-s``).

* Same distribution must pass: BANKING77 test subsamples vs a BANKING77 train reference, many random
  subsamples per realistic batch size; the batch verdict's false-alarm rate must be at most 5%.
* Different distributions must fail: SST-2 sentences, GSM8K questions, and BANKING77 rewritten to be uniformly
  polite and long (power reported).
* A collapsed batch (three templates with slot fills) must fail the diversity check; a BANKING77 sample must pass.

The default run uses the text probes only (no embeddings; a few seconds); ``@pytest.mark.slow`` repeats it with
the embedding-density probe and the embedding diversity metrics.
"""

from __future__ import annotations

import numpy as np
import pytest

from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.diversity import compare_diversity
from synqa_dagster.stats.probes import Probes, compute_probes
from synqa_dagster.stats.tests import compare_probes
from tests.stats import realdata

CONFIG = DriftConfig()
REFERENCE_ROWS = 1000


def _probes(frame, embeddings=None, reference_embeddings=None, is_reference=False) -> Probes:
    intents = frame["intent"].tolist() if "intent" in frame.columns else None
    return compute_probes(frame["text"].tolist(), intents, embeddings, reference_embeddings, CONFIG.knn, is_reference)


def _verdict_rate(batch_pool: Probes, reference_pool: Probes, n: int, reps: int, rng, ref_rows=REFERENCE_ROWS):
    """Share of ``reps`` batches of size ``n`` that fail, each against a fresh reference subsample."""
    failed, by_probe = 0, {}
    for _ in range(reps):
        ref = reference_pool.take(rng.choice(len(reference_pool), min(ref_rows, len(reference_pool)), replace=False))
        batch = batch_pool.take(rng.choice(len(batch_pool), n, replace=False))
        report = compare_probes(batch, ref, CONFIG.thresholds(), CONFIG.alpha, CONFIG.categorical_effect, CONFIG.min_expected)
        failed += not report.passed
        for probe in report.failing:
            by_probe[probe] = by_probe.get(probe, 0) + 1
    return failed / reps, by_probe


@pytest.fixture(scope="module")
def pools(shared_data):
    train, test = realdata.banking77(shared_data, "train"), realdata.banking77(shared_data, "test")
    polite = test.assign(text=[realdata.polite_long(t, i) for i, t in enumerate(test["text"])])
    return {
        "train": _probes(train), "test": _probes(test), "sst2": _probes(realdata.sst2(shared_data)),
        "gsm8k": _probes(realdata.gsm8k(shared_data)), "polite_long": _probes(polite),
    }


@pytest.mark.parametrize("n", [50, 100, 200, 500])
def test_same_distribution_false_alarm_rate_at_most_5_percent(pools, n):
    rate, by_probe = _verdict_rate(pools["test"], pools["train"], n, reps=100, rng=np.random.default_rng(n))
    print(f"\nBANKING77 test vs train, n={n}: false-alarm rate {rate:.3f} over 100 batches {by_probe}")
    assert rate <= 0.05


@pytest.mark.parametrize("drifted", ["sst2", "gsm8k", "polite_long"])
@pytest.mark.parametrize("n", [50, 100])
def test_different_distributions_are_detected(pools, drifted, n):
    power, by_probe = _verdict_rate(pools[drifted], pools["train"], n, reps=50, rng=np.random.default_rng(7 + n))
    print(f"\n{drifted} vs BANKING77 train, n={n}: power {power:.3f} over 50 batches {by_probe}")
    assert power >= 0.95


def test_collapsed_batch_fails_diversity_and_banking_passes(shared_data, embedder_small):
    train, test = realdata.banking77(shared_data, "train"), realdata.banking77(shared_data, "test")
    rng = np.random.default_rng(3)
    ref = train.iloc[rng.choice(len(train), 200, replace=False)]["text"].tolist()
    real = test.iloc[rng.choice(len(test), 60, replace=False)]["text"].tolist()
    collapsed = realdata.collapsed_batch(60)
    vectors = embedder_small.encode(ref + real + collapsed)
    ref_v, real_v, col_v = vectors[:200], vectors[200:260], vectors[260:]
    ok = compare_diversity(real, real_v, ref, ref_v, CONFIG.diversity, CONFIG.seed)
    bad = compare_diversity(collapsed, col_v, ref, ref_v, CONFIG.diversity, CONFIG.seed)
    print("\nBANKING77 batch diversity:\n" + ok.table.to_string() + "\ncollapsed batch diversity:\n" + bad.table.to_string())
    assert ok.passed, ok.table
    assert not bad.passed and {"distinct_2", "mean_pairwise_distance"} <= set(bad.failing)


@pytest.fixture(scope="module")
def embedder_small():
    from synqa_dagster.embedding import Embedder

    return Embedder()


@pytest.mark.slow
def test_full_calibration_with_embeddings(shared_data, embedder_small):
    """The embedding-density probe included: 1000 reference rows, 600-row pools per side (≈40 s of embedding)."""
    rng = np.random.default_rng(11)
    train, test = realdata.banking77(shared_data, "train"), realdata.banking77(shared_data, "test")
    ref = train.iloc[rng.choice(len(train), REFERENCE_ROWS, replace=False)].reset_index(drop=True)
    ref_v = embedder_small.encode(ref["text"].tolist())
    ref_p = _probes(ref, ref_v, is_reference=True)
    sides = {
        "banking77_test": test.iloc[rng.choice(len(test), 600, replace=False)].reset_index(drop=True),
        "sst2": realdata.sst2(shared_data).sample(300, random_state=1).reset_index(drop=True),
        "gsm8k": realdata.gsm8k(shared_data).sample(300, random_state=1).reset_index(drop=True),
    }
    sides["polite_long"] = sides["banking77_test"].head(300).assign(text=lambda f: [realdata.polite_long(t, i) for i, t in enumerate(f["text"])])
    results = {}
    for name, frame in sides.items():
        vectors = embedder_small.encode(frame["text"].tolist())
        pool = _probes(frame, vectors, ref_v)
        for n in (50, 100, 200):
            failed, by_probe = 0, {}
            for _ in range(100 if name == "banking77_test" else 50):
                batch = pool.take(rng.choice(len(pool), n, replace=False))
                report = compare_probes(batch, ref_p, CONFIG.thresholds(), CONFIG.alpha, CONFIG.categorical_effect, CONFIG.min_expected)
                failed += not report.passed
                for probe in report.failing:
                    by_probe[probe] = by_probe.get(probe, 0) + 1
            reps = 100 if name == "banking77_test" else 50
            results[(name, n)] = failed / reps
            print(f"\n[embeddings] {name} n={n}: fail rate {failed / reps:.3f} over {reps} {by_probe}")
        if name == "banking77_test":
            div = compare_diversity(frame["text"].tolist()[:100], vectors[:100], ref["text"].tolist(), ref_v, CONFIG.diversity, CONFIG.seed)
            print(div.table.to_string())
            assert div.passed
    assert all(results[("banking77_test", n)] <= 0.05 for n in (50, 100, 200))
    assert all(rate >= 0.95 for (name, n), rate in results.items() if name != "banking77_test")
