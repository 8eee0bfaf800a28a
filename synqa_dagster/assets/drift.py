"""The ``drift_findings`` asset: the batch's drift, diversity and bias findings, computed once per batch.

It tests the survivors of the last automatic stage of the registry (the contamination gate by default) against
``reference_corpus`` (whose probes and vectors were computed once when it was built) and stores one row per
check (:func:`synqa_dagster.stats.findings.findings_table`). The five blocking checks in
``synqa_dagster.checks.drift`` only report from this table, and the handover folder and its card read it — nothing
computes the findings a second time. ``review_queue`` depends on it, so an ERROR finding stops the batch before
its review sample is drawn.
"""


import base64
import time
from typing import Sequence

import dagster as dg
import pandas as pd

from synqa_dagster.embedding import vectors_for
from synqa_dagster.gates.base import survivors
from synqa_dagster.metadata import batch_asset_settings, table_metadata
from synqa_dagster.resources import EmbedderResource, StoreResource
from synqa_dagster.stages import (
    CANDIDATES, DRIFT_FINDINGS, EMBEDDINGS_ASSET, REFERENCE_ASSET, STAGES, GateStage, embeddings_stage, last_automatic,
)
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.findings import (
    DRIFT, batch_findings, findings_from_table, findings_table, reference_vectors, text_column,
)
from synqa_dagster.stats.plots import histogram_png

GROUP = "gates"


def batch_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows under test: a gate decision table's survivors (``kept``), or the table itself."""
    if "kept" not in table.columns:
        return table.reset_index(drop=True)
    return survivors(table)


def compared_vectors(rows: pd.DataFrame, drift: DriftConfig, embeddings: pd.DataFrame | None, embedder: EmbedderResource | None):
    """Vectors of the rows' compared column: the stored shared embeddings when that column is ``text`` (what
    ``candidate_embeddings`` embeds), else the column embedded once here with the same model."""
    column = text_column(rows, drift)
    if column == "text":
        stored = vectors_for(rows, embeddings, strict=False)
        if stored is not None:
            return stored
    if embedder is None:
        return None
    return embedder.embedder().encode(rows[column].fillna("").astype(str).tolist())


def histogram_plots(found, drift: DriftConfig) -> dict[str, str]:
    """Base64 PNG histograms (reference vs batch) of every KS probe of the distribution finding."""
    plots: dict[str, str] = {}
    if found.table is None or found.batch_probes is None:
        return plots
    for _, row in found.table.loc[found.table["test"] == "ks"].iterrows():
        probe = row["probe"]
        png = histogram_png(
            found.batch_probes.numeric[probe], found.reference_probes.numeric[probe], probe, drift.histogram_bins,
            subtitle=f"D={row['effect']:.3f} (max {row['threshold']:.2f}), p_BH={row['p_adjusted']:.2g}",
        )
        plots[probe] = base64.b64encode(png).decode("ascii")
    return plots


def build_drift_findings_asset(
    recipe, gates, partitions: dg.PartitionsDefinition | None, stages: Sequence[GateStage] = STAGES,
    reference_asset: str = REFERENCE_ASSET, tested_asset: str | None = None,
) -> dg.AssetsDefinition:
    """``drift_findings`` for the gate config's ``drift`` section (see the module docstring).

    ``tested_asset`` overrides the table under test (default: the registry's last automatic stage).
    """
    drift: DriftConfig = gates.drift
    tested = tested_asset or last_automatic(stages).asset
    by_reference = drift.bias.coverage_scope == "reference"
    ins = {"tested": dg.AssetIn(tested), "reference": dg.AssetIn(reference_asset)}
    if not by_reference:
        ins["candidates"] = dg.AssetIn(CANDIDATES)
    if embeddings_stage(stages) is not None:
        ins["embeddings"] = dg.AssetIn(EMBEDDINGS_ASSET)
    if recipe is not None:
        versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)
    else:
        versions, common = {}, dict(group_name=GROUP, partitions_def=partitions, io_manager_key="parquet_io_manager")

    @dg.asset(
        name=DRIFT_FINDINGS,
        ins=ins,
        kinds={"scipy", "parquet"},
        description=(
            f"The batch's drift, diversity and bias findings, computed once: KS and chi-squared of the {tested} "
            f"survivors vs {reference_asset} (BH-adjusted, effect sizes), diversity vs size-matched reference draws, "
            "identity-term rates, intent coverage, politeness. One row per check; the blocking checks report from "
            "it and the handover card reads it."
        ),
        **common,
    )
    def drift_findings(context: dg.AssetExecutionContext, embedder: EmbedderResource, store: StoreResource, **upstream: pd.DataFrame):
        started = time.perf_counter()
        rows = batch_rows(upstream["tested"])
        reference = upstream["reference"]
        vectors = compared_vectors(rows, drift, upstream.get("embeddings"), embedder) if len(rows) >= drift.min_rows else None
        expected = reference if by_reference else upstream["candidates"]
        intents = expected["intent"].dropna().astype(str).tolist() if "intent" in expected.columns else []
        found = batch_findings(rows, reference, drift, vectors, reference_vectors(reference), intents)
        plots = histogram_plots(found[0], drift) if found[0].check == DRIFT else {}
        files = []
        if plots and drift.write_plots and context.has_partition_key:
            for probe, png in plots.items():
                files.append(store.store.write_bytes(DRIFT_FINDINGS, context.partition_key, base64.b64decode(png), f"drift_{probe}.png"))
        column = text_column(rows, drift) if len(rows.columns) else "text"
        table = findings_table(found, len(rows), len(reference), column, drift.alpha, {DRIFT: plots})
        summary = findings_from_table(table)
        context.log.info(f"drift findings: {summary['summary']}")
        return dg.Output(
            table,
            metadata=table_metadata(
                table, ["check", "passed", "severity", "verdict", "summary"], time.perf_counter() - started,
                summary=summary["summary"], blocking=summary["blocking"], rows_tested=len(rows),
                histogram_files=files, **versions,
            ),
        )

    return drift_findings
