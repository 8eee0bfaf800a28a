"""The ``generated_candidates`` asset: seeds expanded by the teacher LLM through the distilabel pipeline."""



import time
from typing import Sequence

import dagster as dg
import pandas as pd

from synqa_dagster.metadata import table_metadata
from synqa_dagster.config import Recipe
from synqa_dagster.generation.runner import run_in_subprocess
from synqa_dagster.generation.seeds import batch_seed, select_seeds
from synqa_dagster.paths import instance_dir
from synqa_dagster.resources import HandoverResource, StoreResource
from synqa_dagster.stages import CANDIDATES, STAGES, GateStage, batch_tables

def build_generation_asset(
    recipe: Recipe, partitions: dg.PartitionsDefinition, stages: Sequence[GateStage] = STAGES
) -> dg.AssetsDefinition:
    """``generated_candidates`` for ``recipe`` (its code_version is the recipe hash).

    Regenerating a batch withdraws every per-batch table built from its previous candidates
    (:func:`synqa_dagster.stages.batch_tables` of ``stages``) and its handover folder, when the run commits.
    """
    recipe_hash = recipe.content_hash()
    downstream = batch_tables(stages)

    @dg.asset(
        name=CANDIDATES,
        group_name="generation",
        kinds={"distilabel", "llama.cpp" if recipe.generator.backend == "llamacpp" else recipe.generator.backend, "parquet"},
        partitions_def=partitions,
        code_version=recipe_hash,
        io_manager_key="parquet_io_manager",
        owners=["team:synqa"],
        description=(
            "Instruction/response candidates for one batch: the batch's seeds expanded with Self-Instruct, "
            "Evol-Instruct and Magpie (single and multi-turn) by the recipe's teacher LLM through a distilabel "
            "pipeline. Every row carries row_id, seed, technique, generator id/version, prompt template id, "
            "sampling parameters and created_at. Same batch + same recipe gives byte-identical rows."
        ),
        metadata={"recipe": recipe.name, "recipe_version": recipe.version, "recipe_hash": recipe_hash},
    )
    def generated_candidates(
        context: dg.AssetExecutionContext, seed_corpus: pd.DataFrame, store: StoreResource, handover: HandoverResource
    ):
        batch = context.partition_key
        # A regenerated batch invalidates everything built from its previous candidates: withdraw those outputs
        # so a run that stops early (a held review) never leaves a superseded accepted split or dedup index. The
        # run is a transaction (synqa_dagster.runs): these withdrawals, like every write of the run, are staged
        # and only applied when the run ends without a failed step; a failed run leaves the batch as it was.
        removed = [a for a in downstream if store.store.delete(a, batch)]
        folders = store.handover_folders(handover.base_path)  # local or S3, as the handover assets write them
        if folders.delete(f"batch={batch}"):  # the signed handover of the old candidates no longer describes it
            removed.append(f"handover folder {folders.uri(f'batch={batch}')}")
        if removed:
            context.log.info(f"batch {batch}: withdrawing (at commit) the previous outputs of {', '.join(removed)}")
        window = context.partition_time_window
        spec = recipe.seed_corpus
        seeds = select_seeds(seed_corpus, batch, spec.seeds_per_batch, salt=recipe.generator.seed)
        context.log.info(f"batch {batch}: {len(seeds)} seeds selected; generating with {recipe.generator.backend}/{recipe.generator.model}")
        started = time.perf_counter()
        rows, stats = run_in_subprocess(
            recipe,
            seeds,
            batch=batch,
            created_at=window.start.isoformat(),
            cache_root=instance_dir() / "cache",
            log=context.log.info,
            cache_key=context.run_id,  # a private distilabel cache per run: a dead run cannot poison the next
        )
        seconds = time.perf_counter() - started
        return dg.Output(
            rows,
            metadata=table_metadata(
                rows,
                ["row_id", "technique", "seed_id", "instruction", "response"],
                seconds,
                recipe_hash=recipe_hash,
                seeds_used=int(len(seeds)),
                rows_by_technique=stats.rows_by_technique,
                completion_tokens=stats.completion_tokens,
                rows_per_second=len(rows) / seconds if seconds else 0.0,
                tokens_per_second=stats.completion_tokens / stats.seconds if stats.seconds else 0.0,
                generator_id=str(rows["generator_id"].iloc[0]) if len(rows) else "",
                generator_version=str(rows["generator_version"].iloc[0]) if len(rows) else "",
                batch_seed=batch_seed(recipe, batch),
            ),
        )

    return generated_candidates
