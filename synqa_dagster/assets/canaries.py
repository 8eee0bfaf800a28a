"""The ``gate_canaries`` asset: every gate of the batch measured on planted known positives and negatives.

Thin wrapper around :func:`synqa_dagster.stages.run_canaries`: it builds each automatic stage's gate exactly as
the batch's gate asset does (same config, same cached scorer and eval index, same embedding model), plants the
stage's seeded canaries (:mod:`synqa_dagster.canaries`), runs them through it and stores one row per planted
row. The planted rows never enter the batch's own tables. The ``gate_canary_recall`` check (blocking) fails the
batch when a gate's recall is under its floor; ``review_queue`` waits for it, and the handover card and the signed
manifest state each gate's measured recall and false-positive rate.
"""

import time
from typing import Sequence

import dagster as dg

from synqa_dagster import canaries as planted
from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.metadata import batch_asset_settings, preview_markdown, table_metadata
from synqa_dagster.resources import EmbedderResource
from synqa_dagster.assets.gates import REAL_ROW_ASSETS, batch_real_rows
from synqa_dagster.stages import CANARIES, CANDIDATES, REAL_ROWS, STAGES, GateStage, run_canaries

GROUP = "gates"


def build_canary_asset(
    recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition, stages: Sequence[GateStage] = STAGES
) -> dg.AssetsDefinition:
    """``gate_canaries`` for one recipe + gate config."""
    versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)
    planted_for = [s.name for s in stages if s.canaries is not None and s.automatic]
    needs_real = any(REAL_ROWS in s.inputs for s in stages if s.canaries is not None and s.automatic)
    real_ins = {name: dg.AssetIn(name) for name in REAL_ROW_ASSETS} if needs_real else {}

    @dg.asset(
        name=CANARIES,
        # after generation: regenerating a batch clears its tables (this one too), and the canaries then
        # measure the gates the new candidates go through
        deps=[CANDIDATES],
        ins=real_ins,  # the memorisation canaries copy real rows
        kinds={"python", "parquet"},
        description=(
            f"Canaries: seeded known positives and negatives planted for each gate ({', '.join(planted_for)}) and run "
            "through the batch's own gate objects — leaked prompts, near-duplicate pairs at a known Jaccard, labelled "
            "toxic and benign rows, the eval items verbatim / re-wrapped / truncated / embedded. Each gate's measured "
            "recall and false-positive rate for this batch; never mixed into the batch's tables."
        ),
        metadata={"min_recall": gates.canaries.min_recall, "max_false_positive_rate": gates.canaries.max_false_positive_rate},
        **common,
    )
    def gate_canaries(context: dg.AssetExecutionContext, embedder: EmbedderResource, **upstream):
        started = time.perf_counter()
        real = batch_real_rows(upstream) if needs_real else None
        results = run_canaries(context.partition_key, gates, embedder, stages, real=real)
        summary = planted.summarize(results, gates.canaries)
        for row in summary.itertuples():
            context.log.info(f"canaries {row.gate}: recall {row.caught}/{row.positives}, false positives "
                             f"{row.false_positives}/{row.negatives}{'' if row.passed else ' — UNDER ITS FLOOR'}")
        return dg.Output(
            results,
            metadata=table_metadata(
                results.loc[results["dropped"] != (results["expected"] == planted.DROP)] if len(results) else results,
                ["gate", "canary_kind", "expected", "dropped", "reject_reason"], time.perf_counter() - started,
                per_gate=dg.MetadataValue.md(preview_markdown(summary, list(summary.columns), rows=50)),
                per_kind=dg.MetadataValue.md(preview_markdown(planted.by_kind(results), ["gate", "canary_kind", "expected", "planted", "dropped", "drop_rate"], rows=50)),
                planted=len(results),
                **versions,
            ),
        )

    return gate_canaries


__all__ = ["build_canary_asset"]
