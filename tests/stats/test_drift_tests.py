"""Two-sample tests, effect sizes, Benjamini–Hochberg and the per-probe verdict."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.probes import Probes
from synqa_dagster.stats.tests import OTHER, benjamini_hochberg, chi2_test, compare_probes, ks_test, pooled_counts


def test_ks_reports_d_and_p():
    rng = np.random.default_rng(0)
    same = ks_test(rng.normal(size=300), rng.normal(size=300))
    shifted = ks_test(rng.normal(1.0, size=300), rng.normal(size=300))
    assert same["p"] > 0.01 and same["statistic"] < 0.15
    assert shifted["p"] < 1e-10 and 0.3 < shifted["statistic"] < 0.5


def test_chi2_effect_sizes_and_pooling():
    batch = ["a"] * 50 + ["b"] * 50
    ref = ["a"] * 90 + ["b"] * 10
    res = chi2_test(batch, ref)
    assert res["tvd"] == pytest.approx(0.4) and res["p"] < 1e-6 and res["dof"] == 1
    assert res["cramers_v"] == pytest.approx(np.sqrt(res["statistic"] / 200))
    table = pooled_counts(["a"] * 20 + ["z"], ["a"] * 20 + ["x", "y"], min_expected=5)
    assert OTHER in table.index and "x" not in table.index
    assert chi2_test(["a"] * 3, ["a"] * 5 + ["b"])["p"] == 1.0  # nothing left to test after pooling


def test_benjamini_hochberg_matches_definition():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted: 0.01*4/1=0.04, 0.03*4/2=0.06, 0.04*4/3=0.0533 -> monotone 0.0533, 0.2*4/4=0.2
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.05333333, 0.05333333, 0.2])


def _probes(values, labels):
    return Probes(pd.DataFrame({"chars": values}), pd.DataFrame({"tone": labels}))


def test_verdict_needs_effect_above_threshold_and_significance():
    rng = np.random.default_rng(1)
    ref = _probes(rng.normal(size=5000), ["neutral"] * 5000)
    # tiny but "significant" shift at large n: p small, effect below threshold -> pass
    big = _probes(rng.normal(0.1, size=5000), ["neutral"] * 5000)
    report = compare_probes(big, ref, {"chars": 0.2, "tone": 0.2})
    row = report.table.set_index("probe").loc["chars"]
    assert row["p_adjusted"] < 0.05 and row["effect"] < 0.2 and report.passed
    # large shift -> fail, named
    far = _probes(rng.normal(2.0, size=60), ["polite"] * 60)
    report = compare_probes(far, ref, {"chars": 0.2, "tone": 0.2})
    assert set(report.failing) == {"chars", "tone"}
    assert {"statistic", "p", "p_adjusted", "effect", "threshold", "failed"} <= set(report.table.columns)


def test_drift_config_is_strict_and_lists_enabled_probes():
    cfg = DriftConfig.model_validate({"numeric": {"nn_distance": None}, "severities": {"drift": "WARN"}})
    assert "nn_distance" not in cfg.thresholds() and cfg.thresholds()["chars"] == 0.2
    with pytest.raises(ValidationError):
        DriftConfig.model_validate({"numeric": {"lenght": 0.2}})
    with pytest.raises(ValidationError):
        DriftConfig.model_validate({"severities": {"drift": "FATAL"}})
