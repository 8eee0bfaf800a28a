"""The funnel's outputs: ``reject_log`` (every rejected row, with why), ``accepted_dataset``, ``dedup_index``."""


import time

import dagster as dg
import pandas as pd

from synqa_dagster.assets.reporting import batch_asset_settings, table_metadata
from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.funnel import funnel_markdown, funnel_table
from synqa_dagster.gates.base import rejects, survivors
from synqa_dagster.gates.dedup import DedupGate

GROUP = "outputs"


def build_output_assets(recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """``reject_log``, ``accepted_dataset`` and ``dedup_index`` for one recipe + gate config."""
    versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)

    @dg.asset(
        name="reject_log",
        kinds={"parquet"},
        description=(
            "Every rejected row of the batch (all five gates, human review included) with the gate that rejected it, the exact reason, the score and all "
            "its lineage fields (kept for audit; nothing is deleted)."
        ),
        **common,
    )
    def reject_log(
        context: dg.AssetExecutionContext,
        quality_gate: pd.DataFrame,
        dedup_gate: pd.DataFrame,
        toxicity_gate: pd.DataFrame,
        contamination_gate: pd.DataFrame,
        human_review: pd.DataFrame,
    ):
        started = time.perf_counter()
        tables = (quality_gate, dedup_gate, toxicity_gate, contamination_gate, human_review)
        parts = [rejects(t) for t in tables]
        log = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
        # The same columns in every batch, whichever gates happened to reject something.
        columns = list(dict.fromkeys(c for t in (*parts, human_review) for c in t.columns if c != "kept"))
        log = log.reindex(columns=columns)
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
        name="accepted_dataset",
        kinds={"parquet", "huggingface"},
        description=(
            "The accepted training split of the batch: rows that passed every gate and human review, with their lineage and every "
            "gate's score. Loads with pandas, pyarrow and Hugging Face datasets."
        ),
        **common,
    )
    def accepted_dataset(
        context: dg.AssetExecutionContext,
        generated_candidates: pd.DataFrame,
        quality_gate: pd.DataFrame,
        dedup_gate: pd.DataFrame,
        toxicity_gate: pd.DataFrame,
        contamination_gate: pd.DataFrame,
        human_review: pd.DataFrame,
    ):
        started = time.perf_counter()
        accepted = survivors(human_review)
        funnel = funnel_table(
            len(generated_candidates),
            {"quality": quality_gate, "dedup": dedup_gate, "toxicity": toxicity_gate, "contamination": contamination_gate,
             "human_review": human_review},
        )
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
        name="dedup_index",
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
