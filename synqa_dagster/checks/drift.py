"""Drift, diversity and bias checks on the contamination gate's survivors (partitioned, blocking).

They run after ``contamination_gate`` and before ``accepted_dataset``: an ERROR (drift and diversity by
default) stops the batch from reaching the accepted split, and the check's metadata says
``verdict: returned_to_synthesis`` with the failing probes named. Every probe's statistic, p, BH-adjusted p,
effect size and threshold is shown as a markdown table, with a real-vs-synthetic histogram per numeric probe
(inlined as a data-URI image and written as a PNG next to the batch's table through the store).

The statistics live in :mod:`synqa_dagster.stats` (one :class:`~synqa_dagster.stats.findings.Finding` per check,
the same numbers ``synqa audit`` and the dataset card report); this module only loads, wraps and reports.
"""


import hashlib
import threading
from collections import OrderedDict
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from synqa_dagster.assets.reference import REFERENCE_ASSET
from synqa_dagster.gates.base import DECISION_COLUMNS, survivors
from synqa_dagster.resources import EmbedderResource, StoreResource
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.findings import (
    Finding,
    coverage_finding,
    distribution_finding,
    diversity_finding,
    identity_finding,
    politeness_finding,
    text_column,
)
from synqa_dagster.stats.plots import histogram_png, markdown_image

CHECKED_ASSET = "contamination_gate"
RETURNED = "returned_to_synthesis"
_CACHE: "OrderedDict[str, np.ndarray]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _severity(level: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if level == "ERROR" else dg.AssetCheckSeverity.WARN


def batch_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows under test: a gate decision table's survivors (``kept``), or the table itself."""
    if "kept" not in table.columns:
        return table.reset_index(drop=True)
    if all(c in table.columns for c in DECISION_COLUMNS):
        return survivors(table)
    return table.loc[table["kept"].astype(bool)].drop(columns=["kept"]).reset_index(drop=True)


def synthetic_embeddings(
    rows: pd.DataFrame, drift: DriftConfig, candidate_embeddings: pd.DataFrame | None, embedder: EmbedderResource | None
) -> np.ndarray | None:
    """Embeddings of the rows' compared column: the stored ``candidate_embeddings`` when that column is ``text``
    (what that asset embeds), else the column embedded once with the same model (cached per content)."""
    column = text_column(rows, drift)
    if column == "text" and candidate_embeddings is not None and len(candidate_embeddings):
        by_id = dict(zip(candidate_embeddings["row_id"], candidate_embeddings["embedding"]))
        if all(r in by_id for r in rows["row_id"]):
            return np.asarray([np.asarray(by_id[r], dtype=np.float32) for r in rows["row_id"]], dtype=np.float32)
    if embedder is None:
        return None
    texts = rows[column].fillna("").astype(str).tolist()
    key = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    vectors = embedder.embedder().encode(texts)
    with _CACHE_LOCK:
        _CACHE[key] = vectors
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return vectors


def reference_embeddings(reference: pd.DataFrame) -> np.ndarray | None:
    """The stored reference vectors (``embedding`` column of ``reference_corpus``), or None."""
    if "embedding" not in reference.columns or not len(reference):
        return None
    return np.asarray([np.asarray(v, dtype=np.float32) for v in reference["embedding"]], dtype=np.float32)


def _partition(context: Any) -> str | None:
    try:
        return context.partition_key if context.has_partition_key else None
    except Exception:  # noqa: BLE001 - unpartitioned or older context API
        return None


def _md(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else (f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"))
    return shown.to_markdown(index=False) if len(shown) else "_none_"


def _verdict(failing: list, severity: str) -> str:
    """``returned_to_synthesis`` only when the failure blocks the batch (ERROR); a WARN failure ships flagged."""
    if not failing:
        return "accepted"
    return RETURNED if severity == "ERROR" else "accepted_with_warning"


def _too_few(finding: Finding, drift: DriftConfig) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"verdict": "too_few_rows", "rows_batch": finding.details["rows_batch"], "min_rows": drift.min_rows},
        description=f"only {finding.details['rows_batch']} surviving rows (< min_rows {drift.min_rows}): not tested",
    )


def drift_result(
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    drift: DriftConfig,
    batch_vectors: np.ndarray | None,
    store: StoreResource | None = None,
    batch: str | None = None,
) -> dg.AssetCheckResult:
    """The ``distribution_drift`` result for ``rows`` vs ``reference`` (see module docstring)."""
    found = distribution_finding(rows, reference, drift, batch_vectors, reference_embeddings(reference))
    if found.verdict == "too_few_rows":
        return _too_few(found, drift)
    table, failing = found.table, found.failing
    metadata: dict[str, Any] = {
        "verdict": _verdict(failing, drift.severities.drift),
        "failing_probes": dg.MetadataValue.json(failing),
        "rows_batch": len(rows),
        "rows_reference": len(reference),
        "alpha_bh": drift.alpha,
        "text_column": text_column(rows, drift),
        "probes": dg.MetadataValue.md(_md(table)),
    }
    paths = []
    for _, row in table.loc[table["test"] == "ks"].iterrows():
        probe = row["probe"]
        png = histogram_png(
            found.batch_probes.numeric[probe], found.reference_probes.numeric[probe], probe, drift.histogram_bins,
            subtitle=f"D={row['effect']:.3f} (max {row['threshold']:.2f}), p_BH={row['p_adjusted']:.2g}",
        )
        metadata[f"histogram_{probe}"] = dg.MetadataValue.md(markdown_image(png, f"{probe}: reference vs batch"))
        if store is not None and drift.write_plots:
            paths.append(store.store.write_bytes(CHECKED_ASSET, batch, png, f"drift_{probe}.png"))
    if paths:
        metadata["histogram_files"] = dg.MetadataValue.json(paths)
    return dg.AssetCheckResult(
        passed=not failing,
        severity=_severity(drift.severities.drift),
        metadata=metadata,
        description=(f"{_verdict(failing, drift.severities.drift).replace('_', ' ')}: drift in {', '.join(failing)}" if failing else "within the reference envelope"),
    )


def diversity_result(rows: pd.DataFrame, reference: pd.DataFrame, drift: DriftConfig, batch_vectors: np.ndarray | None) -> dg.AssetCheckResult:
    """The ``diversity_collapse`` result: batch diversity vs size-matched reference subsamples."""
    found = diversity_finding(rows, reference, drift, batch_vectors, reference_embeddings(reference))
    if found.verdict == "too_few_rows":
        return _too_few(found, drift)
    failing = found.failing
    return dg.AssetCheckResult(
        passed=not failing,
        severity=_severity(drift.severities.diversity),
        metadata={
            "verdict": _verdict(failing, drift.severities.diversity),
            "failing_metrics": dg.MetadataValue.json(failing),
            "rows_batch": len(rows),
            "metrics": dg.MetadataValue.md(_md(found.table)),
            **{f"{m}_ratio": float(r) for m, r in zip(found.table["metric"], found.table["ratio"])},
        },
        description=(f"mode collapse: {', '.join(failing)} below the reference" if failing else "as diverse as the reference"),
    )


def identity_result(rows: pd.DataFrame, reference: pd.DataFrame, drift: DriftConfig) -> dg.AssetCheckResult:
    """The ``identity_term_rates`` result: identity-term mention rates per category vs the reference."""
    found = identity_finding(rows, reference, drift)
    if found.verdict == "too_few_rows":
        return _too_few(found, drift)
    return dg.AssetCheckResult(
        passed=found.passed,
        severity=_severity(drift.severities.identity_terms),
        metadata={"failing_categories": dg.MetadataValue.json(found.failing), "rates": dg.MetadataValue.md(_md(found.table))},
    )


def coverage_result(rows: pd.DataFrame, expected_intents: list[str], drift: DriftConfig) -> dg.AssetCheckResult:
    """The ``intent_coverage`` result: intents expected in the batch with too few accepted rows."""
    found = coverage_finding(rows, expected_intents, drift)
    return dg.AssetCheckResult(
        passed=found.passed,
        severity=_severity(drift.severities.coverage),
        metadata={
            "scope": drift.bias.coverage_scope,
            "intents_expected": len(found.table),
            "intents_under_min": dg.MetadataValue.json(found.failing),
            "min_rows": drift.bias.coverage_min_rows,
            "coverage": dg.MetadataValue.md(_md(found.table.head(60))),
        },
    )


def politeness_result(rows: pd.DataFrame, reference: pd.DataFrame, drift: DriftConfig) -> dg.AssetCheckResult:
    """The ``politeness_skew`` result: polite-row share vs the reference's."""
    found = politeness_finding(rows, reference, drift)
    if found.verdict == "too_few_rows":
        return _too_few(found, drift)
    return dg.AssetCheckResult(
        passed=found.passed,
        severity=_severity(drift.severities.politeness),
        metadata={"polite_skew": found.details["polite_skew"], "threshold": drift.bias.max_politeness_skew, "tones": dg.MetadataValue.md(_md(found.table))},
    )


def build_drift_checks(drift: DriftConfig, partitions: dg.PartitionsDefinition | None, reference_asset: str = REFERENCE_ASSET) -> list[dg.AssetChecksDefinition]:
    """The five checks on ``contamination_gate``: ``distribution_drift`` and ``diversity_collapse`` (ERROR by
    default), ``identity_term_rates``, ``intent_coverage`` and ``politeness_skew`` (WARN by default). All
    blocking and partitioned like the batch; severities come from ``drift.severities``.

    Inputs: ``contamination_gate`` (survivors = ``kept`` rows), ``reference_asset`` (default ``reference_corpus``),
    ``candidate_embeddings`` (drift, diversity) and ``generated_candidates`` (coverage, scope ``batch``).
    Resources: ``embedder`` (drift, diversity), ``store`` (drift: histogram PNG files).
    """
    common = dict(asset=CHECKED_ASSET, blocking=True, partitions_def=partitions)
    ref_in = {"reference": dg.AssetIn(reference_asset)}
    emb_in = {"candidate_embeddings": dg.AssetIn("candidate_embeddings")}
    sev = drift.severities

    @dg.asset_check(
        name="distribution_drift",
        description=(
            f"Two-sample KS (numeric probes) and chi-squared (categorical) of the survivors vs {reference_asset}; a probe "
            f"fails when its effect size exceeds its threshold and its BH-adjusted p < {drift.alpha} (severity {sev.drift})."
        ),
        additional_ins={**ref_in, **emb_in},
        **common,
    )
    def distribution_drift(
        context: dg.AssetCheckExecutionContext,
        contamination_gate: pd.DataFrame,
        reference: pd.DataFrame,
        candidate_embeddings: pd.DataFrame,
        embedder: EmbedderResource,
        store: StoreResource,
    ):
        rows = batch_rows(contamination_gate)
        vectors = synthetic_embeddings(rows, drift, candidate_embeddings, embedder) if len(rows) >= drift.min_rows else None
        return drift_result(rows, reference, drift, vectors, store, _partition(context))

    @dg.asset_check(
        name="diversity_collapse",
        description=(
            "Inter-row diversity (mean pairwise embedding distance, distinct-n, cluster entropy) vs size-matched "
            f"reference subsamples: a batch collapsed onto a few templates fails (severity {sev.diversity})."
        ),
        additional_ins={**ref_in, **emb_in},
        **common,
    )
    def diversity_collapse(
        contamination_gate: pd.DataFrame, reference: pd.DataFrame, candidate_embeddings: pd.DataFrame, embedder: EmbedderResource
    ):
        rows = batch_rows(contamination_gate)
        vectors = synthetic_embeddings(rows, drift, candidate_embeddings, embedder) if len(rows) >= drift.min_rows else None
        return diversity_result(rows, reference, drift, vectors)

    @dg.asset_check(
        name="identity_term_rates",
        description=f"Identity-term mention rates per category vs the reference (chi-squared, BH; severity {sev.identity_terms}).",
        additional_ins=ref_in,
        **common,
    )
    def identity_term_rates(contamination_gate: pd.DataFrame, reference: pd.DataFrame):
        return identity_result(batch_rows(contamination_gate), reference, drift)

    by_reference = drift.bias.coverage_scope == "reference"

    @dg.asset_check(
        name="intent_coverage",
        description=(
            f"Every intent {'of the reference' if by_reference else 'the batch generated'} keeps at least "
            f"{drift.bias.coverage_min_rows} accepted row(s) (severity {sev.coverage})."
        ),
        additional_ins={"expected": dg.AssetIn(reference_asset if by_reference else "generated_candidates")},
        **common,
    )
    def intent_coverage(contamination_gate: pd.DataFrame, expected: pd.DataFrame):
        intents = expected["intent"].dropna().astype(str).tolist() if "intent" in expected.columns else []
        return coverage_result(batch_rows(contamination_gate), intents, drift)

    @dg.asset_check(
        name="politeness_skew",
        description=f"Polite-row share vs the reference (over-politeness of the teacher; severity {sev.politeness}).",
        additional_ins=ref_in,
        **common,
    )
    def politeness_skew(contamination_gate: pd.DataFrame, reference: pd.DataFrame):
        return politeness_result(batch_rows(contamination_gate), reference, drift)

    return [distribution_drift, diversity_collapse, identity_term_rates, intent_coverage, politeness_skew]
