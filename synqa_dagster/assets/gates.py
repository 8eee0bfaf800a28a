"""The gate assets, one per automatic stage of the registry (:data:`synqa_dagster.stages.STAGES`), plus
``candidate_embeddings`` before the first stage that needs embeddings.

Each gate asset is a thin wrapper: it loads the previous stage's survivors, builds the stage's pure gate from
``synqa_dagster.gates``, resolves the extra inputs the stage declares (``prior``: the dedup index of earlier
batches; ``embeddings``: the shared vectors), stores the decision table (every row it saw, kept or dropped with
reason and score) and reports per-gate counts. Survivors of one gate are the next gate's input, so the UI reads
as the funnel. Nothing here names a gate: the order and the wiring come from the registry.
"""


import time
from typing import Any, Sequence

import dagster as dg
import pandas as pd

from synqa_dagster.common import jsonable
from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.embedding import vectors_for
from synqa_dagster.engine import run_stage
from synqa_dagster.gates.base import Gate, decision_table, survivors
from synqa_dagster.metadata import batch_asset_settings, table_metadata
from synqa_dagster.resources import EmbedderResource, StoreResource
from synqa_dagster.corpus.real import real_rows
from synqa_dagster.stages import (
    DEDUP_INDEX, EMBEDDINGS, EMBEDDINGS_ASSET, PRIOR_INDEX, REAL_ROWS, REFERENCE_ASSET, SEED_CORPUS, STAGES, GateStage,
    automatic_stages, census, earlier_drops, embeddings_stage, input_asset,
)

GROUP = "gates"
PREVIEW = ["row_id", "technique", "kept", "reject_reason", "text"]


def run_gate(context: dg.AssetExecutionContext, gate: Gate | GateStage, rows: pd.DataFrame, versions: dict[str, str],
             gates: GateConfig | None = None, environment: Any = None, **kwargs: Any) -> dg.Output:
    """Evaluate ``gate`` on ``rows`` and wrap its decision table with the funnel metadata.

    ``gate`` is a built gate (evaluated here) or a stage, run by the engine (:func:`synqa_dagster.engine.run_stage`:
    inline, local workers or Ray, as ``gates.executor`` says; the metadata names the executor and its tasks)."""
    started = time.perf_counter()
    if isinstance(gate, GateStage):
        result = run_stage(gate, rows, gates, environment=environment, **kwargs)
    else:
        result = gate.evaluate(rows, **kwargs)
    engine = result.metrics.get("engine", {}) if isinstance(result.metrics, dict) else {}
    table = decision_table(rows, result)
    counters = result.counters()
    seconds = time.perf_counter() - started
    context.log.info(f"{gate.name}: {counters['kept']} kept, {counters['dropped']} dropped {counters['dropped_by_category']}"
                     + (f" ({engine['executor']} executor, {engine['tasks']} task(s))" if engine else ""))
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
            **({"executor": engine["executor"], "executor_tasks": engine["tasks"]} if engine else {}),
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


def _stage_inputs(
    context: dg.AssetExecutionContext, s: GateStage, rows: pd.DataFrame, upstream: dict[str, Any],
    store: StoreResource, embedder: EmbedderResource,
) -> dict[str, Any]:
    """The keyword inputs ``s`` declares, resolved from the run (store, shared embeddings)."""
    kwargs: dict[str, Any] = {}
    if PRIOR_INDEX in s.inputs:
        prior = prior_accepted(store, context.partition_key)
        if prior is not None:
            context.log.info(f"{s.name}: against {len(prior)} rows accepted in {prior['batch'].nunique()} earlier batch(es)")
        kwargs[PRIOR_INDEX] = prior
    if EMBEDDINGS in s.inputs:
        kwargs[EMBEDDINGS] = vectors_for(rows, upstream[EMBEDDINGS_ASSET], dim=embedder.embedder().dim)
    if REAL_ROWS in s.inputs:
        kwargs[REAL_ROWS] = batch_real_rows(upstream)
        context.log.info(f"{s.name}: against {len(kwargs[REAL_ROWS])} real rows (seed corpus + reference sample)")
    return kwargs


#: The assets holding the real rows a ``real`` stage reads (:func:`batch_real_rows`).
REAL_ROW_ASSETS = (SEED_CORPUS, REFERENCE_ASSET)


def batch_real_rows(upstream: dict[str, Any]) -> pd.DataFrame:
    """The batch's real rows (every seed of the corpus snapshot + the reference sample, with its vectors) from
    the ``seed_corpus`` and ``reference_corpus`` inputs."""
    return real_rows(upstream.get(SEED_CORPUS), upstream.get(REFERENCE_ASSET))


def _real_ins(s: GateStage) -> dict[str, dg.AssetIn]:
    return {name: dg.AssetIn(name) for name in REAL_ROW_ASSETS} if REAL_ROWS in s.inputs else {}


def _gate_asset(s: GateStage, stages: Sequence[GateStage], gates: GateConfig, versions: dict, common: dict) -> dg.AssetsDefinition:
    source = input_asset(s, stages)
    ins = {source: dg.AssetIn(source), **_real_ins(s)}
    if EMBEDDINGS in s.inputs:
        ins[EMBEDDINGS_ASSET] = dg.AssetIn(EMBEDDINGS_ASSET)
    section = s.config(gates)
    first = source == "generated_candidates"

    @dg.asset(
        name=s.asset,
        ins=ins,
        kinds=set(s.kinds),
        description=f"Gate {list(stages).index(s) + 1} of {len(stages)} — {s.describe(section)}",
        metadata={"gate": s.name, "inputs": list(s.inputs), **s.asset_metadata(section)},
        **common,
    )
    def _gate(context: dg.AssetExecutionContext, store: StoreResource, embedder: EmbedderResource, **upstream: pd.DataFrame):
        table = upstream[source]
        rows = table.reset_index(drop=True) if first else survivors(table)
        return run_gate(context, s, rows, versions, gates=gates, environment=embedder,
                        **_stage_inputs(context, s, rows, upstream, store, embedder))

    return _gate


def _census_asset(s: GateStage, stages: Sequence[GateStage], gates: GateConfig, versions: dict, common: dict) -> dg.AssetsDefinition:
    earlier = list(stages)[: list(stages).index(s)]
    ins = {e.asset: dg.AssetIn(e.asset) for e in earlier}
    if EMBEDDINGS in s.inputs:
        ins[EMBEDDINGS_ASSET] = dg.AssetIn(EMBEDDINGS_ASSET)

    @dg.asset(
        name=s.census_asset,
        ins=ins,
        kinds={"python", "parquet"},
        description=(
            f"The {s.name} gate's verdict on every row an earlier gate ({', '.join(e.name for e in earlier)}) already "
            f"dropped, so the card counts every {s.name} hit whichever gate dropped the row first. Changes nothing "
            "that ships: those rows stay rejected by the gate that dropped them."
        ),
        **common,
    )
    def _census(context: dg.AssetExecutionContext, embedder: EmbedderResource, **upstream: pd.DataFrame):
        started = time.perf_counter()
        dropped = earlier_drops(s, upstream, stages)
        gate = s.build(gates, embedder)
        vectors = None
        if EMBEDDINGS in s.inputs and len(dropped):
            vectors = vectors_for(dropped, upstream.get(EMBEDDINGS_ASSET), strict=False)
            if vectors is None:  # rows dropped before the shared embeddings were computed: embed them here, once
                vectors = embedder.embedder().encode(dropped["text"].astype(str).tolist())
        table = census(gate, dropped, vectors)
        hits = table.loc[table["hit"]]
        context.log.info(f"{s.name} census: {len(hits)} of {len(table)} earlier drops also hit {s.name}")
        return dg.Output(table, metadata=table_metadata(
            hits if len(hits) else table, ["row_id", "dropped_by", "category", "reason"], time.perf_counter() - started,
            checked=len(table), hits=len(hits),
            hits_by_first_gate=hits["dropped_by"].value_counts().to_dict() if len(hits) else {}, **versions,
        ))

    return _census


def _embeddings_asset(source: str, common: dict, versions: dict) -> dg.AssetsDefinition:
    first = source == "generated_candidates"

    @dg.asset(
        name=EMBEDDINGS_ASSET,
        ins={source: dg.AssetIn(source)},
        kinds={"model2vec", "parquet"},
        description=(
            f"Sentence embeddings of the rows that survive {source}, computed once per batch and shared by the gates "
            "that need them and the drift findings: on the default static_cascade route static model2vec vectors "
            "distilled offline from all-MiniLM-L6-v2 (the gates re-score rows near their thresholds with MiniLM); "
            "on the minilm route all-MiniLM-L6-v2 from its wheel (gate config `embedding.route`)."
        ),
        **common,
    )
    def candidate_embeddings(context: dg.AssetExecutionContext, embedder: EmbedderResource, **upstream: pd.DataFrame):
        started = time.perf_counter()
        table = upstream[source]
        rows = table.reset_index(drop=True) if first else survivors(table)
        model = embedder.embedder()
        vectors = model.encode(rows["text"].tolist())
        out = pd.DataFrame({"row_id": rows["row_id"], "embedding": list(vectors)})
        seconds = time.perf_counter() - started
        return dg.Output(
            out,
            metadata=table_metadata(
                out, ["row_id"], seconds, model=model.model_id, dim=int(vectors.shape[1]) if len(vectors) else model.dim,
                route=getattr(model, "route", "minilm"),
                rescorer=getattr(getattr(model, "rescorer", None), "model_id", None),
                rows_per_second=len(out) / seconds if seconds else 0.0, **versions,
            ),
        )

    return candidate_embeddings


def build_gate_assets(
    recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition, stages: Sequence[GateStage] = STAGES
) -> list[dg.AssetsDefinition]:
    """One asset per automatic stage of ``stages`` (in order) and ``candidate_embeddings``."""
    versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)
    assets: list[dg.AssetsDefinition] = []
    needs_embeddings = embeddings_stage(stages)
    for s in automatic_stages(stages):
        if s is needs_embeddings:
            assets.append(_embeddings_asset(input_asset(s, stages), common, versions))
        assets.append(_gate_asset(s, stages, gates, versions, common))
        if s.census:
            assets.append(_census_asset(s, stages, gates, versions, common))
    return assets


