"""The gate assets, in funnel order: quality → dedup → toxicity → contamination, plus candidate_embeddings.

Each gate asset is a thin wrapper: it loads the previous stage's survivors, calls a pure gate from
``synqa_dagster.gates``, stores the decision table (every row it saw, kept or dropped with reason and score) and
reports per-gate counts. Survivors of one gate are the next gate's input, so the UI reads as the funnel.
"""


import time
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from synqa_dagster.assets.reporting import batch_asset_settings, table_metadata
from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.gates.base import Gate, decision_table, survivors
from synqa_dagster.gates.dedup import DedupGate
from synqa_dagster.gates.quality import QualityGate
from synqa_dagster.resources import EmbedderResource, ScorerResource, StoreResource
from synqa_dagster.stats.findings import jsonable

GATE_ORDER = ("quality_gate", "dedup_gate", "toxicity_gate", "contamination_gate")
DEDUP_INDEX = "dedup_index"
GROUP = "gates"
PREVIEW = ["row_id", "technique", "kept", "reject_reason", "text"]


def run_gate(context: dg.AssetExecutionContext, gate: Gate, rows: pd.DataFrame, versions: dict[str, str], **kwargs: Any) -> dg.Output:
    """Evaluate ``gate`` on ``rows`` and wrap its decision table with the funnel metadata."""
    started = time.perf_counter()
    result = gate.evaluate(rows, **kwargs)
    table = decision_table(rows, result)
    counters = result.counters()
    seconds = time.perf_counter() - started
    context.log.info(f"{gate.name}: {counters['kept']} kept, {counters['dropped']} dropped {counters['dropped_by_category']}")
    rejected = table.loc[~table["kept"]]
    return dg.Output(
        table,
        metadata=table_metadata(
            rejected if len(rejected) else table,
            PREVIEW,
            seconds,
            rows_in=counters["seen"],
            kept=counters["kept"],
            dropped=counters["dropped"],
            dropped_by_category=counters["dropped_by_category"],
            pass_rate=counters["kept"] / counters["seen"] if counters["seen"] else 1.0,
            rows_per_second=counters["seen"] / seconds if seconds else 0.0,
            gate_metrics=jsonable(result.metrics),
            **versions,
        ),
    )


def prior_accepted(store_resource: StoreResource, batch: str) -> pd.DataFrame | None:
    """The dedup index of every batch accepted *before* ``batch`` (never after: backfills stay deterministic)."""
    store = store_resource.store
    earlier = [b for b in store.batches(DEDUP_INDEX) if b < batch]
    if not earlier:
        return None
    return pd.concat([store.read(DEDUP_INDEX, b) for b in earlier], ignore_index=True)


def build_gate_assets(recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The four gate assets and ``candidate_embeddings`` for one recipe + gate config."""
    versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)

    @dg.asset(
        name="quality_gate",
        kinds={"python", "parquet"},
        description=(
            "Gate 1 — quality heuristics: empty, too short/long, repetition, leaked meta-prompt text "
            "(\"Rewritten Prompt:\", template markers), wrong language, echoed instruction. Stores every candidate "
            "with keep/drop, reason and score."
        ),
        metadata={"thresholds": gates.quality.model_dump(mode="json")},
        **common,
    )
    def quality_gate(context: dg.AssetExecutionContext, generated_candidates: pd.DataFrame):
        return run_gate(context, QualityGate(gates.quality), generated_candidates, versions)

    @dg.asset(
        name="dedup_gate",
        kinds={"datasketch", "parquet"},
        description=(
            "Gate 2 — dedup: exact (normalised hash) and MinHash-LSH near-duplicates confirmed by exact Jaccard, "
            "within the batch and against every batch accepted before it (the persistent dedup_index). The "
            "reason names the duplicated row, its batch and the similarity."
        ),
        metadata={"threshold": gates.dedup.threshold, "num_perm": gates.dedup.num_perm, "shingle": f"{gates.dedup.shingle}-{gates.dedup.ngram}"},
        **common,
    )
    def dedup_gate(context: dg.AssetExecutionContext, quality_gate: pd.DataFrame, store: StoreResource):
        prior = prior_accepted(store, context.partition_key)
        if prior is not None:
            context.log.info(f"dedup against {len(prior)} rows accepted in {prior['batch'].nunique()} earlier batch(es)")
        return run_gate(context, DedupGate(gates.dedup), survivors(quality_gate), versions, prior=prior)

    @dg.asset(
        name="toxicity_gate",
        kinds={"scikitlearn", "parquet"},
        description=(
            f"Gate 3 — toxicity ({gates.toxicity.backend}): the fast profanity-check scorer, Detoxify from a local "
            "checkpoint, or a cascade of both. Per-slice (intent, locale) rates feed the batch escalation check."
        ),
        metadata={"backend": gates.toxicity.backend},
        **common,
    )
    def toxicity_gate(context: dg.AssetExecutionContext, dedup_gate: pd.DataFrame, scorers: ScorerResource):
        return run_gate(context, scorers.toxicity_gate(gates.toxicity), survivors(dedup_gate), versions)

    @dg.asset(
        name="candidate_embeddings",
        kinds={"sentencetransformers", "parquet"},
        description=(
            "Sentence embeddings (all-MiniLM-L6-v2 from its wheel, offline) of the rows that reach the "
            "contamination gate, computed once per batch and shared by the contamination gate and the drift checks."
        ),
        **common,
    )
    def candidate_embeddings(context: dg.AssetExecutionContext, toxicity_gate: pd.DataFrame, embedder: EmbedderResource):
        started = time.perf_counter()
        rows = survivors(toxicity_gate)
        model = embedder.embedder()
        vectors = model.encode(rows["text"].tolist())
        table = pd.DataFrame({"row_id": rows["row_id"], "embedding": list(vectors)})
        seconds = time.perf_counter() - started
        return dg.Output(
            table,
            metadata=table_metadata(
                table, ["row_id"], seconds, model=model.model_id, dim=int(vectors.shape[1]) if len(vectors) else model.dim,
                rows_per_second=len(table) / seconds if seconds else 0.0, **versions,
            ),
        )

    @dg.asset(
        name="contamination_gate",
        kinds={"python", "parquet"},
        description=(
            "Gate 4 — eval-set contamination: hashed word n-gram overlap and embedding cosine against the named "
            "eval sets. The reason names the eval set, item id and the overlap or cosine."
        ),
        metadata={
            "eval_sets": [s.name for s in gates.contamination.eval_sets],
            "ngram_size": gates.contamination.ngram_size,
            "embedding_threshold": gates.contamination.embedding_threshold,
        },
        **common,
    )
    def contamination_gate(
        context: dg.AssetExecutionContext,
        toxicity_gate: pd.DataFrame,
        candidate_embeddings: pd.DataFrame,
        scorers: ScorerResource,
        embedder: EmbedderResource,
    ):
        rows = survivors(toxicity_gate)
        by_id = dict(zip(candidate_embeddings["row_id"], candidate_embeddings["embedding"]))
        missing = [r for r in rows["row_id"] if r not in by_id]
        if missing:
            raise ValueError(f"candidate_embeddings has no vector for {len(missing)} row(s), e.g. {missing[:3]}")
        dim = len(next(iter(by_id.values()))) if by_id else embedder.embedder().dim
        vectors = np.asarray([by_id[r] for r in rows["row_id"]], dtype=np.float32).reshape(len(rows), dim)
        gate = scorers.contamination_gate(gates.contamination, embedder.embedder())
        return run_gate(context, gate, rows, versions, embeddings=vectors)

    return [quality_gate, dedup_gate, toxicity_gate, candidate_embeddings, contamination_gate]
