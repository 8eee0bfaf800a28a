"""Drift, diversity and bias checks on the batch's stored findings (partitioned, blocking).

The findings are computed once per batch by the ``drift_findings`` asset (``synqa_dagster.assets.drift``); each
check here only reads its row of that table and reports it. ``review_queue`` (and so everything downstream:
human review, the accepted split, the handover) depends on ``drift_findings``, so an ERROR (drift and diversity by
default) stops the batch, and the check's metadata says ``verdict: returned_to_synthesis`` with the failing
probes named. Every probe's statistic, p, BH-adjusted p, effect size and threshold is shown as a markdown table,
with a real-vs-synthetic histogram per numeric probe (inlined as a data-URI image).
"""


from typing import Any

import dagster as dg
import pandas as pd

from synqa_dagster.stages import DRIFT_FINDINGS
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.findings import COVERAGE, DIVERSITY, DRIFT, IDENTITY, POLITENESS, TOO_FEW, stored_finding
from synqa_dagster.stats.plots import markdown_image_b64

RETURNED = "returned_to_synthesis"


def _severity(level: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if level == "ERROR" else dg.AssetCheckSeverity.WARN


def _md(frame: pd.DataFrame | None) -> str:
    if frame is None or not len(frame):
        return "_none_"
    shown = frame.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else (f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"))
    return shown.to_markdown(index=False)


def _too_few(found: dict[str, Any]) -> dg.AssetCheckResult:
    details = found["details"]
    return dg.AssetCheckResult(
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"verdict": TOO_FEW, "rows_batch": details["rows_batch"], "min_rows": details["min_rows"]},
        description=f"only {details['rows_batch']} surviving rows (< min_rows {details['min_rows']}): not tested",
    )


def _result(found: dict[str, Any], metadata: dict[str, Any], description: str | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bool(found["passed"]), severity=_severity(found["severity"]), metadata=metadata,
        description=description or found["summary"],
    )


def drift_result(table: pd.DataFrame) -> dg.AssetCheckResult:
    """``distribution_drift`` from the stored findings."""
    found = stored_finding(table, DRIFT)
    if found["verdict"] == TOO_FEW:
        return _too_few(found)
    details = found["details"]
    metadata: dict[str, Any] = {
        "verdict": found["verdict"],
        "failing_probes": dg.MetadataValue.json(found["failing"]),
        "rows_batch": int(found["rows_batch"]),
        "rows_reference": int(found["rows_reference"]),
        "alpha_bh": details.get("alpha_bh"),
        "text_column": details.get("text_column", found["text_column"]),
        "probes": dg.MetadataValue.md(_md(found["table"])),
    }
    for probe, png in found["plots"].items():
        metadata[f"histogram_{probe}"] = dg.MetadataValue.md(markdown_image_b64(png, f"{probe}: reference vs batch"))
    return _result(found, metadata)


def diversity_result(table: pd.DataFrame) -> dg.AssetCheckResult:
    """``diversity_collapse`` from the stored findings."""
    found = stored_finding(table, DIVERSITY)
    if found["verdict"] == TOO_FEW:
        return _too_few(found)
    frame = found["table"]
    return _result(found, {
        "verdict": found["verdict"],
        "failing_metrics": dg.MetadataValue.json(found["failing"]),
        "rows_batch": int(found["rows_batch"]),
        "metrics": dg.MetadataValue.md(_md(frame)),
        "diagnosis": str(found["details"].get("diagnosis", "")),
        **({f"{m}_ratio": float(r) for m, r in zip(frame["metric"], frame["ratio"])} if frame is not None else {}),
    })


def identity_result(table: pd.DataFrame) -> dg.AssetCheckResult:
    """``identity_term_rates`` from the stored findings."""
    found = stored_finding(table, IDENTITY)
    if found["verdict"] == TOO_FEW:
        return _too_few(found)
    return _result(found, {"failing_categories": dg.MetadataValue.json(found["failing"]), "rates": dg.MetadataValue.md(_md(found["table"]))})


def coverage_result(table: pd.DataFrame) -> dg.AssetCheckResult:
    """``intent_coverage`` from the stored findings."""
    found = stored_finding(table, COVERAGE)
    details, frame = found["details"], found["table"]
    return _result(found, {
        "scope": details.get("scope"),
        "intents_expected": 0 if frame is None else len(frame),
        "intents_under_min": dg.MetadataValue.json(found["failing"]),
        "min_rows": details.get("min_rows"),
        "coverage": dg.MetadataValue.md(_md(None if frame is None else frame.head(60))),
    })


def politeness_result(table: pd.DataFrame) -> dg.AssetCheckResult:
    """``politeness_skew`` from the stored findings."""
    found = stored_finding(table, POLITENESS)
    if found["verdict"] == TOO_FEW:
        return _too_few(found)
    details = found["details"]
    return _result(found, {"polite_skew": details["polite_skew"], "threshold": details["threshold"], "tones": dg.MetadataValue.md(_md(found["table"]))})


def build_drift_checks(drift: DriftConfig, partitions: dg.PartitionsDefinition | None, findings_asset: str = DRIFT_FINDINGS) -> list[dg.AssetChecksDefinition]:
    """The five checks on ``drift_findings``: ``distribution_drift`` and ``diversity_collapse`` (ERROR by
    default), ``identity_term_rates``, ``intent_coverage`` and ``politeness_skew`` (WARN by default). All
    blocking and partitioned like the batch; severities come from ``drift.severities`` (stored with each finding).
    """
    common = dict(asset=findings_asset, blocking=True, partitions_def=partitions)
    sev = drift.severities
    specs = [
        (DRIFT, drift_result,
         f"Two-sample KS (numeric probes) and chi-squared (categorical) of the survivors vs the reference; a probe fails "
         f"when its effect size exceeds its threshold and its BH-adjusted p < {drift.alpha} (severity {sev.drift})."),
        (DIVERSITY, diversity_result,
         "Inter-row diversity (distinct-n, mean pairwise embedding distance, cluster entropy, near-duplicate cluster "
         "mass, template n-gram share) vs size-matched reference subsamples: a batch collapsed onto a few templates "
         f"fails; a merely narrower domain is reported as such (severity {sev.diversity})."),
        (IDENTITY, identity_result,
         f"Identity-term mention rates per category vs the reference (chi-squared, BH; severity {sev.identity_terms})."),
        (COVERAGE, coverage_result,
         f"Every intent {'of the reference' if drift.bias.coverage_scope == 'reference' else 'the batch generated'} keeps at least "
         f"{drift.bias.coverage_min_rows} accepted row(s) (severity {sev.coverage})."),
        (POLITENESS, politeness_result,
         f"Polite-row share vs the reference (over-politeness of the teacher; severity {sev.politeness})."),
    ]
    return [_check(name, report, description, common) for name, report, description in specs]


def _check(name: str, report, description: str, common: dict) -> dg.AssetChecksDefinition:
    @dg.asset_check(name=name, description=description, **common)
    def _stored(drift_findings: pd.DataFrame):
        return report(drift_findings)

    return _stored
