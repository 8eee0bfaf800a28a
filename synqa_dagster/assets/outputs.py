"""The funnel's outputs: ``reject_log`` (every rejected row, with why), ``accepted_dataset``, ``dedup_index``.

Both ``reject_log`` and ``accepted_dataset`` read every stage's decision table, in the registry's order
(:data:`synqa_dagster.stages.STAGES`); the accepted split is the last stage's survivors.
"""


import time
from typing import Sequence

import dagster as dg
import pandas as pd

from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.funnel import funnel_markdown, funnel_table
from synqa_dagster.gates.base import rejects, survivors
from synqa_dagster.gates.dedup import DedupGate
from synqa_dagster.metadata import batch_asset_settings, table_metadata
from synqa_dagster.stages import ACCEPTED, CANDIDATES, DEDUP_INDEX, REJECT_LOG, STAGES, GateStage, ordered_tables

GROUP = "outputs"


def reject_log_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every rejected row of ``tables`` (gate name -> decision table, funnel order), with the same columns in every
    batch whichever gates happened to reject something."""
    parts = [rejects(t) for t in tables.values()]
    log = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    last = list(tables.values())[-1]
    columns = list(dict.fromkeys(c for t in (*parts, last) for c in t.columns if c != "kept"))
    return log.reindex(columns=columns)


def build_output_assets(
    recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition, stages: Sequence[GateStage] = STAGES
) -> list[dg.AssetsDefinition]:
    """``reject_log``, ``accepted_dataset`` and ``dedup_index`` for one recipe + gate config."""
    versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)
    gate_ins = {s.asset: dg.AssetIn(s.asset) for s in stages}
    names = ", ".join(s.name for s in stages)

    @dg.asset(
        name=REJECT_LOG,
        ins=gate_ins,
        kinds={"parquet"},
        description=(
            f"Every rejected row of the batch (all {len(stages)} gates: {names}) with the gate that rejected it, the "
            "exact reason, the score and all its lineage fields (kept for audit; nothing is deleted)."
        ),
        **common,
    )
    def reject_log(context: dg.AssetExecutionContext, **tables: pd.DataFrame):
        started = time.perf_counter()
        log = reject_log_table(ordered_tables(tables, stages))
        return dg.Output(
            log,
            metadata=table_metadata(
                log, ["row_id", "gate", "reject_reason", "text"], time.perf_counter() - started,
                rejected_by_gate=log["gate"].value_counts().to_dict() if len(log) else {},
                rejected_by_category=log["reject_category"].value_counts().to_dict() if len(log) else {},
                **versions,
            ),
        )

    @dg.asset(
        name=ACCEPTED,
        ins={CANDIDATES: dg.AssetIn(CANDIDATES), **gate_ins},
        kinds={"parquet", "huggingface"},
        description=(
            "The accepted training split of the batch: rows that passed every gate, human review included, with their lineage and every "
            "gate's score. Loads with pandas, pyarrow and Hugging Face datasets."
        ),
        **common,
    )
    def accepted_dataset(context: dg.AssetExecutionContext, **tables: pd.DataFrame):
        started = time.perf_counter()
        generated_candidates = tables[CANDIDATES]
        decisions = ordered_tables(tables, stages)
        accepted = survivors(list(decisions.values())[-1])
        funnel = funnel_table(len(generated_candidates), decisions)
        markdown = funnel_markdown(len(generated_candidates), funnel)
        context.log.info("funnel:\n" + markdown)
        return dg.Output(
            accepted,
            metadata=table_metadata(
                accepted, ["row_id", "technique", "intent", "instruction", "response"], time.perf_counter() - started,
                funnel=dg.MetadataValue.md(markdown),
                candidates=len(generated_candidates),
                accept_rate=len(accepted) / len(generated_candidates) if len(generated_candidates) else 0.0,
                **versions,
            ),
        )

    @dg.asset(
        name=DEDUP_INDEX,
        kinds={"datasketch", "parquet"},
        description=(
            "MinHash signatures of the batch's accepted rows: the persistent cross-batch dedup index. The dedup "
            "gate of batch k reads the index of every batch before k (never after), so rebuilding is deterministic."
        ),
        **common,
    )
    def dedup_index(context: dg.AssetExecutionContext, accepted_dataset: pd.DataFrame):
        started = time.perf_counter()
        index = DedupGate(gates.dedup).index_frame(accepted_dataset)
        return dg.Output(index, metadata=table_metadata(index, ["row_id", "batch"], time.perf_counter() - started, **versions))

    return [reject_log, accepted_dataset, dedup_index]
