"""Drift, diversity and bias findings as plain data: the numbers behind the drift asset checks, Dagster-free.

Each ``*_finding`` function runs one check's statistics (from :mod:`synqa_dagster.stats`) on a table of rows
under test and a reference table, and returns a :class:`Finding`: whether it was tested, passed, its configured
severity, the verdict, a one-line summary, the failing items and the full per-item table. The Dagster checks in
``synqa_dagster.checks.drift`` wrap these findings (so a check and the dataset card or ``synqa audit`` report the
same numbers); :func:`drift_findings` gathers all five into one JSON-able dict.

Inputs (all functions):
    rows: the rows under test (the contamination gate's survivors), with ``drift.text_column`` (falls back to
        ``text``) and optionally ``intent``.
    reference: the real reference sample with a ``text`` column and optionally ``intent``.
    drift: the :class:`~synqa_dagster.stats.config.DriftConfig` (thresholds, alpha, severities, min_rows).

References: see :mod:`synqa_dagster.stats.tests` (KS, chi-squared, Benjamini–Hochberg) and
``docs/measurements/drift.md`` (calibration of the thresholds).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synqa_dagster.common import jsonable
from synqa_dagster.stats.bias import coverage_report, identity_report, politeness_skew_report
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.diversity import compare_diversity
from synqa_dagster.stats.probes import Probes, frame_probes
from synqa_dagster.stats.tests import compare_probes

#: Check names, as the Dagster asset checks are named.
DRIFT, DIVERSITY, IDENTITY, COVERAGE, POLITENESS = (
    "distribution_drift", "diversity_collapse", "identity_term_rates", "intent_coverage", "politeness_skew",
)
CHECKS = (DRIFT, DIVERSITY, IDENTITY, COVERAGE, POLITENESS)
RETURNED = "returned_to_synthesis"
TOO_FEW = "too_few_rows"
NOT_TESTED = "not_tested"


@dataclass
class Finding:
    """The outcome of one drift / diversity / bias check.

    Attributes:
        check: the check name (one of :data:`CHECKS`).
        tested: False when the check could not run (too few rows, nothing to compare); it then counts as passed.
        passed: no item failed.
        severity: the configured severity of a failure (``ERROR`` blocks a pipeline batch, ``WARN`` flags it).
        verdict: ``accepted``, ``accepted_with_warning``, ``returned_to_synthesis`` (failed at ERROR),
            ``too_few_rows`` or ``not_tested``.
        summary: one line for humans.
        failing: names of the failing items (probes, metrics, categories, intents, tones).
        table: the per-item table (None when not tested).
        details: extra JSON-able numbers (row counts, thresholds...).
        batch_probes / reference_probes: the computed probes (distribution drift only; for histograms).
    """

    check: str
    tested: bool
    passed: bool
    severity: str
    verdict: str
    summary: str
    failing: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    details: dict[str, Any] = field(default_factory=dict)
    batch_probes: Probes | None = None
    reference_probes: Probes | None = None

    def to_dict(self, items_key: str = "items", rename: dict[str, str] | None = None) -> dict[str, Any]:
        """JSON-able dict: the scalar fields, ``details`` and the table as a list of records under ``items_key``
        (columns renamed by ``rename``; a ``failed`` column becomes ``passed``)."""
        out: dict[str, Any] = {
            "check": self.check, "tested": self.tested, "passed": self.passed, "severity": self.severity,
            "verdict": self.verdict, "summary": self.summary, "failing": list(self.failing), **self.details,
        }
        if self.table is not None:
            table = self.table.rename(columns=rename or {})
            if "failed" in table.columns:
                table = table.assign(passed=~table["failed"].astype(bool)).drop(columns=["failed"])
            out[items_key] = table.to_dict(orient="records")
        return jsonable(out)


def text_column(rows: pd.DataFrame, drift: DriftConfig) -> str:
    """The column of ``rows`` compared with the reference text (``drift.text_column``, else ``text``)."""
    return drift.text_column if drift.text_column in rows.columns else "text"


def verdict(failing: Sequence[str], severity: str) -> str:
    """``accepted`` with no failure; else ``returned_to_synthesis`` at ERROR, ``accepted_with_warning`` at WARN."""
    if not failing:
        return "accepted"
    return RETURNED if severity == "ERROR" else "accepted_with_warning"


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    return frame[column].fillna("").astype(str).tolist()


def _too_few(check: str, n: int, drift: DriftConfig, severity: str) -> Finding | None:
    if n >= drift.min_rows:
        return None
    return Finding(
        check, tested=False, passed=True, severity=severity, verdict=TOO_FEW,
        summary=f"not tested: n = {n} < min {drift.min_rows} rows",
        details={"rows_batch": n, "min_rows": drift.min_rows},
    )


def _fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else (f"{v:.2g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}")


def distribution_finding(
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    drift: DriftConfig,
    batch_vectors: np.ndarray | None = None,
    reference_vectors: np.ndarray | None = None,
    reference_probes: Probes | None = None,
    batch_probes: Probes | None = None,
) -> Finding:
    """Two-sample KS (numeric probes) and chi-squared (categorical) of ``rows`` vs ``reference``.

    A probe fails when its effect size exceeds its threshold and its BH-adjusted p < ``drift.alpha``. The
    embedding-density probe runs only when both ``batch_vectors`` (aligned with ``rows``, of the compared column)
    and ``reference_vectors`` (aligned with ``reference``) are given.
    """
    severity = drift.severities.drift
    if (few := _too_few(DRIFT, len(rows), drift, severity)) is not None:
        return few
    use_emb = batch_vectors is not None and reference_vectors is not None and len(reference_vectors) > 1
    column = text_column(rows, drift)
    ref_probes = _reference_probes(reference, drift, reference_vectors if use_emb else None, reference_probes)
    if batch_probes is None or (use_emb and "nn_distance" not in batch_probes.numeric.columns):
        batch_probes = frame_probes(rows, column, batch_vectors if use_emb else None, reference_vectors if use_emb else None, k=drift.knn)
    bat_probes = batch_probes
    report = compare_probes(bat_probes, ref_probes, drift.thresholds(), drift.alpha, drift.categorical_effect, drift.min_expected)
    failing = report.failing
    v = verdict(failing, severity)
    if report.table.empty:
        summary = "not tested: no probe could be compared"
    elif failing:
        worst = report.table.loc[report.table["failed"]].sort_values("effect", ascending=False)
        parts = [f"{r.probe} ({r.effect_name} {_fmt(r.effect)} > {_fmt(r.threshold)})" for r in worst.itertuples()]
        summary = f"{v.replace('_', ' ')}: drift in {', '.join(parts)}"
    else:
        summary = f"within the reference envelope: {len(report.table)} probe(s), none over threshold at BH alpha {drift.alpha}"
    return Finding(
        DRIFT, tested=not report.table.empty, passed=not failing, severity=severity, verdict=v if not report.table.empty else NOT_TESTED,
        summary=summary, failing=failing, table=report.table,
        details={
            "rows_batch": len(rows), "rows_reference": len(reference), "text_column": column, "alpha_bh": drift.alpha,
            "embedding_probe": bool(use_emb),
        },
        batch_probes=bat_probes, reference_probes=ref_probes,
    )


def diversity_finding(
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    drift: DriftConfig,
    batch_vectors: np.ndarray | None = None,
    reference_vectors: np.ndarray | None = None,
) -> Finding:
    """Distinct-n, mean pairwise embedding distance, cluster entropy, near-duplicate mass and template n-gram share
    vs size-matched reference draws; a narrower domain is told apart from collapse onto templates
    (:attr:`synqa_dagster.stats.diversity.DiversityReport.diagnosis`)."""
    severity = drift.severities.diversity
    if (few := _too_few(DIVERSITY, len(rows), drift, severity)) is not None:
        return few
    report = compare_diversity(
        _texts(rows, text_column(rows, drift)), batch_vectors, _texts(reference, "text"), reference_vectors,
        drift.diversity, drift.seed,
    )
    failing = report.failing
    return Finding(
        DIVERSITY, tested=True, passed=not failing, severity=severity, verdict=verdict(failing, severity),
        summary=report.summary(), failing=failing, table=report.table,
        details={"rows_batch": len(rows), "diagnosis": report.diagnosis},
    )


def identity_finding(rows: pd.DataFrame, reference: pd.DataFrame, drift: DriftConfig) -> Finding:
    """Identity-term mention rates per category vs the reference (chi-squared / Fisher, BH-adjusted)."""
    severity = drift.severities.identity_terms
    if (few := _too_few(IDENTITY, len(rows), drift, severity)) is not None:
        return few
    report = identity_report(
        _texts(rows, text_column(rows, drift)), _texts(reference, "text"), drift.bias.identity_max_rate_diff, drift.alpha
    )
    failing = report.failing
    if failing:
        bad = report.table.loc[report.table["failed"]]
        summary = "identity-term rates differ from the reference: " + ", ".join(
            f"{r.category} {r.batch_rate:.1%} vs {r.reference_rate:.1%}" for r in bad.itertuples()
        )
    else:
        summary = f"identity-term rates within ±{drift.bias.identity_max_rate_diff:.0%} of the reference (or not significant)"
    return Finding(
        IDENTITY, tested=True, passed=not failing, severity=severity, verdict=verdict(failing, severity),
        summary=summary, failing=failing, table=report.table,
        details={"rows_batch": len(rows), "max_rate_diff": drift.bias.identity_max_rate_diff},
    )


def coverage_finding(rows: pd.DataFrame, expected_intents: Sequence[str] | None, drift: DriftConfig) -> Finding:
    """Accepted rows per expected intent; an intent with fewer than ``drift.bias.coverage_min_rows`` fails.

    ``expected_intents`` None means there is nothing to cover (rows carry no intents): not tested.
    """
    severity = drift.severities.coverage
    details = {"scope": drift.bias.coverage_scope, "min_rows": drift.bias.coverage_min_rows}
    if expected_intents is None:
        return Finding(COVERAGE, tested=False, passed=True, severity=severity, verdict=NOT_TESTED,
                       summary="not tested: no intents to cover", details=details)
    accepted = rows["intent"].astype(str).tolist() if "intent" in rows.columns else []
    report = coverage_report(accepted, list(expected_intents), drift.bias.coverage_min_rows)
    failing = report.failing
    n = len(report.table)
    summary = (f"{len(failing)} of {n} expected intent(s) under {drift.bias.coverage_min_rows} accepted row(s)" if failing
               else f"all {n} expected intent(s) have at least {drift.bias.coverage_min_rows} accepted row(s)")
    return Finding(
        COVERAGE, tested=True, passed=not failing, severity=severity, verdict=verdict(failing, severity),
        summary=summary, failing=failing, table=report.table, details={**details, "intents_expected": n},
    )


def politeness_finding(
    rows: pd.DataFrame, reference: pd.DataFrame, drift: DriftConfig,
    reference_probes: Probes | None = None, batch_probes: Probes | None = None,
) -> Finding:
    """Share of polite / neutral / rude rows vs the reference; fails on over-politeness."""
    severity = drift.severities.politeness
    if (few := _too_few(POLITENESS, len(rows), drift, severity)) is not None:
        return few
    b = (batch_probes or frame_probes(rows, text_column(rows, drift))).categorical["tone"]
    r = _reference_probes(reference, drift, None, reference_probes).categorical["tone"]
    report = politeness_skew_report(b, r, drift.bias.max_politeness_skew, drift.alpha)
    polite = report.table.set_index("tone").loc["polite"]
    failing = report.failing
    summary = (f"polite share {polite['batch_rate']:.1%} vs reference {polite['reference_rate']:.1%} "
               f"(skew {polite['skew']:+.1%}, max {drift.bias.max_politeness_skew:.0%})")
    return Finding(
        POLITENESS, tested=True, passed=not failing, severity=severity, verdict=verdict(failing, severity),
        summary=("over-polite: " if failing else "") + summary, failing=failing, table=report.table,
        details={"polite_skew": float(polite["skew"]), "threshold": drift.bias.max_politeness_skew},
    )


#: Per check: the key its table is listed under in :func:`drift_findings`, and column renames.
_ITEMS = {
    DRIFT: ("probes", {"probe": "name", "p_adjusted": "p_adj"}),
    DIVERSITY: ("metrics", None),
    IDENTITY: ("categories", None),
    COVERAGE: ("intents", None),
    POLITENESS: ("tones", None),
}


def batch_findings(
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    drift_config: DriftConfig,
    batch_vectors: np.ndarray | None = None,
    reference_vectors: np.ndarray | None = None,
    expected_intents: Sequence[str] | None = None,
) -> list[Finding]:
    """All five findings for ``rows`` vs ``reference``, in :data:`CHECKS` order; the probes of each side are
    computed once (the reference's come from its stored ``probe_*`` columns when ``reference_corpus`` has them)."""
    ref_probes = stored_reference_probes(reference)
    bat_probes = None
    if len(rows) >= drift_config.min_rows:
        use_emb = batch_vectors is not None and reference_vectors is not None and len(reference_vectors) > 1
        bat_probes = frame_probes(rows, text_column(rows, drift_config), batch_vectors if use_emb else None,
                                  reference_vectors if use_emb else None, k=drift_config.knn)
    return [
        distribution_finding(rows, reference, drift_config, batch_vectors, reference_vectors, ref_probes, bat_probes),
        diversity_finding(rows, reference, drift_config, batch_vectors, reference_vectors),
        identity_finding(rows, reference, drift_config),
        coverage_finding(rows, expected_intents, drift_config),
        politeness_finding(rows, reference, drift_config, ref_probes, bat_probes),
    ]


def summarize_findings(found: Sequence[Finding], rows_batch: int, rows_reference: int, column: str, alpha: float) -> dict[str, Any]:
    """The findings as one JSON-able dict (the shape of :func:`drift_findings`)."""
    return _summary({f.check: f.to_dict(*_ITEMS[f.check]) for f in found}, rows_batch, rows_reference, column, alpha)


def _summary(checks: dict[str, dict[str, Any]], rows_batch: int, rows_reference: int, column: str, alpha: float) -> dict[str, Any]:
    failed = [c for c, f in checks.items() if not f["passed"]]
    blocking = [c for c, f in checks.items() if not f["passed"] and f["severity"] == "ERROR"]
    summary = ("no drift, diversity or bias finding" if not failed
               else f"{len(failed)} finding(s): {', '.join(failed)}" + (f" ({', '.join(blocking)} at ERROR)" if blocking else ""))
    return jsonable({
        "rows_batch": rows_batch,
        "rows_reference": rows_reference,
        "text_column": column,
        "alpha": alpha,
        "passed": not failed,
        "blocking": blocking,
        "summary": summary,
        "checks": checks,
    })


def drift_findings(
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    drift_config: DriftConfig,
    batch_vectors: np.ndarray | None = None,
    reference_vectors: np.ndarray | None = None,
    expected_intents: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All five findings for ``rows`` vs ``reference`` as one JSON-able dict.

    Returns:
        ``{"rows_batch", "rows_reference", "text_column", "alpha", "passed", "blocking", "summary",
        "checks": {check name: finding}}`` where each finding has ``check, tested, passed, severity, verdict,
        summary, failing`` plus its items: ``probes`` (``name, test, statistic, p, p_adj, effect_name, effect,
        threshold, passed``...), ``metrics`` (diversity), ``categories`` (identity terms), ``intents``
        (coverage), ``tones`` (politeness). ``blocking`` lists the checks that failed at severity ERROR.
    """
    found = batch_findings(rows, reference, drift_config, batch_vectors, reference_vectors, expected_intents)
    column = text_column(rows, drift_config) if len(rows.columns) else "text"
    return summarize_findings(found, len(rows), len(reference), column, drift_config.alpha)


# ------------------------------------------------------------------- stored findings and reference probes

#: Columns of the stored findings table (``drift_findings`` asset): one row per check.
FINDINGS_COLUMNS = ("check", "tested", "passed", "severity", "verdict", "summary", "failing", "table", "details",
                    "finding", "plots", "rows_batch", "rows_reference", "text_column", "alpha")
PROBE_PREFIX = "probe_"


def findings_table(found: Sequence[Finding], rows_batch: int, rows_reference: int, column: str, alpha: float,
                   plots: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """The findings as a table, one row per check: the scalars, plus JSON text of the failing items, the raw
    per-item table, the details, the card's form of the finding (:meth:`Finding.to_dict`) and any plots
    (``{name: base64 PNG}``). :func:`findings_from_table` reads it back for the card."""
    records = []
    for f in found:
        records.append({
            "check": f.check, "tested": bool(f.tested), "passed": bool(f.passed), "severity": f.severity,
            "verdict": f.verdict, "summary": f.summary,
            "failing": json.dumps(jsonable(list(f.failing))),
            "table": json.dumps(jsonable(f.table.to_dict("records")) if f.table is not None else None),
            "details": json.dumps(jsonable(f.details)),
            "finding": json.dumps(f.to_dict(*_ITEMS[f.check])),
            "plots": json.dumps((plots or {}).get(f.check, {})),
            "rows_batch": int(rows_batch), "rows_reference": int(rows_reference), "text_column": column, "alpha": float(alpha),
        })
    return pd.DataFrame(records, columns=list(FINDINGS_COLUMNS))


def stored_finding(table: pd.DataFrame, check: str) -> dict[str, Any]:
    """One check's row of a stored findings table, JSON columns parsed (``table`` back as a DataFrame or None)."""
    rows = table.loc[table["check"] == check]
    if not len(rows):
        raise KeyError(f"the findings table has no row for check {check!r} (has: {', '.join(map(str, table['check']))})")
    row = rows.iloc[0].to_dict()
    for key in ("failing", "details", "finding", "plots"):
        row[key] = json.loads(row[key])
    items = json.loads(row["table"])
    row["table"] = None if items is None else pd.DataFrame(items)
    return row


def findings_from_table(table: pd.DataFrame | None) -> dict[str, Any] | None:
    """The :func:`drift_findings` dict of a stored findings table (None for no table)."""
    if table is None or not len(table):
        return None
    found = {str(r["check"]): json.loads(r["finding"]) for _, r in table.iterrows()}
    first = table.iloc[0]
    return _summary(found, int(first["rows_batch"]), int(first["rows_reference"]), str(first["text_column"]), float(first["alpha"]))


def probe_columns(probes: Probes) -> dict[str, Any]:
    """The probes as ``probe_<name>`` columns (stored on ``reference_corpus`` so they are computed once)."""
    out: dict[str, Any] = {f"{PROBE_PREFIX}{k}": probes.numeric[k].to_numpy() for k in probes.numeric.columns}
    out.update({f"{PROBE_PREFIX}{k}": probes.categorical[k].astype(str).to_numpy() for k in probes.categorical.columns if k != "intent"})
    return out


def stored_reference_probes(reference: pd.DataFrame) -> Probes | None:
    """The reference's probes from its ``probe_*`` columns (None when the table has none)."""
    from synqa_dagster.stats.probes import CATEGORICAL_PROBES

    cols = [c for c in reference.columns if c.startswith(PROBE_PREFIX)]
    if not cols:
        return None
    names = {c: c[len(PROBE_PREFIX):] for c in cols}
    numeric = pd.DataFrame({n: reference[c].to_numpy(dtype=float) for c, n in names.items() if n not in CATEGORICAL_PROBES})
    categorical = pd.DataFrame({n: reference[c].astype(str).to_numpy() for c, n in names.items() if n in CATEGORICAL_PROBES})
    if "intent" in reference.columns:
        categorical["intent"] = ["(none)" if pd.isna(i) else str(i) for i in reference["intent"]]
    return Probes(numeric.reset_index(drop=True), categorical.reset_index(drop=True))


def _reference_probes(reference: pd.DataFrame, drift: DriftConfig, reference_vectors: np.ndarray | None, stored: Probes | None) -> Probes:
    """The reference's probes: the stored ones (without ``nn_distance`` when the batch has no vectors), else
    computed here."""
    stored = stored if stored is not None else stored_reference_probes(reference)
    if stored is not None and len(stored) == len(reference):
        has_nn = "nn_distance" in stored.numeric.columns
        if reference_vectors is None and has_nn:
            return Probes(stored.numeric.drop(columns=["nn_distance"]), stored.categorical)
        if reference_vectors is None or has_nn:
            return stored
    return frame_probes(reference, "text", reference_vectors, k=drift.knn, is_reference=True)


def reference_vectors(reference: pd.DataFrame) -> np.ndarray | None:
    """The stored reference vectors (``embedding`` column of ``reference_corpus``), or None."""
    if "embedding" not in reference.columns or not len(reference):
        return None
    return np.asarray([np.asarray(v, dtype=np.float32) for v in reference["embedding"]], dtype=np.float32)
