"""The handover assets: ``handover_pack`` (one signed folder per batch) and ``dataset_card`` (the roll-up).

Thin wrappers: they gather the batch's tables and versions, call :mod:`synqa_dagster.handover.batch` (which writes
and signs the folder) and report the Merkle root, key id, funnel and card in the asset's metadata.
"""


import base64
import time

import dagster as dg
import pandas as pd

from synqa_dagster.assets.corpus import taxonomy_hash
from synqa_dagster.assets.reference import REFERENCE_ASSET
from synqa_dagster.checks.drift import batch_rows, reference_embeddings, synthetic_embeddings
from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.corpus.seeds import file_hash
from synqa_dagster.gates.eval_sets import load_eval_sets
from synqa_dagster.handover.batch import BatchInputs, read_card_facts, write_batch_handover, write_rollup
from synqa_dagster.lineage.pack import atomic_write_bytes
from synqa_dagster.paths import resolve_path
from synqa_dagster.resources import EmbedderResource, HandoverResource
from synqa_dagster.review.sampling import SLICE_FRAME_COLUMNS, slice_verdicts
from synqa_dagster.stats.findings import drift_findings

GROUP = "handover"


def build_handover_assets(recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """``handover_pack`` (partitioned) and ``dataset_card`` (unpartitioned roll-up)."""
    versions = {"recipe_hash": recipe.content_hash(), "gate_config_hash": gates.content_hash()}
    code_version = f"{versions['recipe_hash']}.{versions['gate_config_hash']}"

    @dg.asset(
        name="handover_pack",
        group_name=GROUP,
        kinds={"json", "huggingface", "ed25519"},
        partitions_def=partitions,
        code_version=code_version,
        owners=["team:synqa"],
        ins={"reference": dg.AssetIn(REFERENCE_ASSET)},
        description=(
            "The batch's signed handover folder: accepted rows and reject log (JSONL), per-row lineage (seed, "
            "generator, template, every gate's result and score, reviewer HMAC) as canonical JSON under an RFC 6962 "
            "Merkle root, an in-toto statement in an Ed25519-signed DSSE envelope, the recipe and gate config files "
            "that ran, the funnel (PNG + markdown) and a Hugging Face dataset card. Check it with `synqa verify`."
        ),
    )
    def handover_pack(
        context: dg.AssetExecutionContext,
        seed_corpus: pd.DataFrame,
        generated_candidates: pd.DataFrame,
        quality_gate: pd.DataFrame,
        dedup_gate: pd.DataFrame,
        toxicity_gate: pd.DataFrame,
        candidate_embeddings: pd.DataFrame,
        contamination_gate: pd.DataFrame,
        review_queue: pd.DataFrame,
        human_review: pd.DataFrame,
        accepted_dataset: pd.DataFrame,
        reference: pd.DataFrame,
        handover: HandoverResource,
        embedder: EmbedderResource,
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        batch = context.partition_key
        drift = _drift(contamination_gate, reference, candidate_embeddings, embedder, generated_candidates, gates)
        spec = recipe.seed_corpus
        inputs = BatchInputs(
            batch=batch,
            candidates=generated_candidates,
            gate_tables={"quality": quality_gate, "dedup": dedup_gate, "toxicity": toxicity_gate,
                         "contamination": contamination_gate, "human_review": human_review},
            review_sample=review_queue,
            review_verdicts=_verdicts(review_queue, human_review),
            review_status=_review_status(context, batch),
            recipe=recipe,
            gates=gates,
            seed_corpus_path=spec.path,
            seed_corpus_hash=file_hash(recipe.resolved(spec.path)),
            seed_rows=len(seed_corpus),
            taxonomy_version=spec.taxonomy_version,
            taxonomy_hash=taxonomy_hash(recipe),
            reference_path=gates.drift.reference_path,
            reference_hash=file_hash(resolve_path(gates.drift.reference_path)) if gates.drift.reference_path else None,
            reference_rows=len(reference),
            drift=drift,
            eval_set_items=_eval_set_items(gates),
        )
        folder = write_batch_handover(handover.base(), inputs, handover.signing_key())
        facts = read_card_facts(folder)
        png = (folder / "funnel.png").read_bytes()
        context.log.info(f"handover folder {folder}: {facts.accepted} accepted, Merkle root {facts.lineage.merkle_root[:16]}…")
        return dg.MaterializeResult(
            metadata={
                "folder": dg.MetadataValue.path(str(folder)),
                "accepted": facts.accepted,
                "rejected": facts.rejected,
                "merkle_root": facts.lineage.merkle_root,
                "key_id": facts.lineage.key_id,
                "review": f"{facts.review.status}: {facts.review.reviewed}/{facts.review.sample_size or 0} reviewed, {facts.review.defects} defect(s)",
                "funnel": dg.MetadataValue.md(
                    (folder / "funnel.md").read_text(encoding="utf-8")
                    + f"\n\n![funnel](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
                ),
                "card": dg.MetadataValue.md((folder / "README.md").read_text(encoding="utf-8")),
                "verify": f"synqa verify {folder}",
                "seconds": round(time.perf_counter() - started, 2),
                **versions,
            }
        )

    @dg.asset(
        name="dataset_card",
        group_name=GROUP,
        kinds={"huggingface", "markdown"},
        deps=[handover_pack],
        code_version=code_version,
        owners=["team:synqa"],
        description=(
            "The dataset-level roll-up across batches: README.md with Hugging Face front matter listing every batch's "
            "accepted split and reject log, totals, and a per-batch table with each batch's Merkle root and key id."
        ),
    )
    def dataset_card(context: dg.AssetExecutionContext, handover: HandoverResource) -> dg.MaterializeResult:
        base = handover.base()
        written = write_rollup(base, recipe.card.pretty_name, recipe.card.license, recipe.card.summary or None)
        if written is None:
            raise dg.Failure(f"no batch handover folders under {base}: materialize handover_pack first")
        text, facts = written
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(base / "README.md")),
            "batches": len(facts),
            "accepted": sum(f.accepted for f in facts),
            "rejected": sum(f.rejected for f in facts),
            "card": dg.MetadataValue.md(text),
            **versions,
        })

    return [handover_pack, dataset_card]


def _drift(contamination_gate, reference, candidate_embeddings, embedder, generated_candidates, gates: GateConfig) -> dict | None:
    """The drift findings the batch's checks reported, recomputed Dagster-free for the card (deterministic)."""
    drift = gates.drift
    rows = batch_rows(contamination_gate)
    vectors = synthetic_embeddings(rows, drift, candidate_embeddings, embedder) if len(rows) >= drift.min_rows else None
    expected = (reference if drift.bias.coverage_scope == "reference" else generated_candidates)
    intents = expected["intent"].dropna().astype(str).tolist() if "intent" in expected.columns else []
    return drift_findings(rows, reference, drift, vectors, reference_embeddings(reference), intents)


def _verdicts(review_queue: pd.DataFrame, human_review: pd.DataFrame) -> pd.DataFrame:
    """Per-slice verdicts from the stored sample (which carries each slice's plan) and the review columns."""
    if not len(review_queue) or "review_verdict" not in human_review.columns:
        return pd.DataFrame()
    plans = review_queue.drop_duplicates("slice_key")[[c for c in SLICE_FRAME_COLUMNS if c in review_queue.columns]]
    decided = human_review.loc[human_review["review_verdict"].notna(), ["row_id", "slice_key", "review_verdict"]]
    return slice_verdicts(plans.reset_index(drop=True), decided.rename(columns={"review_verdict": "verdict"}))


def _review_status(context: dg.AssetExecutionContext, batch: str) -> str:
    """The human_review status recorded in this batch's latest materialization metadata."""
    record = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("human_review"), asset_partitions=[batch]), limit=1
    ).records
    if not record:
        return "unknown"
    meta = record[0].asset_materialization.metadata if record[0].asset_materialization else {}
    value = meta.get("review_status")
    return str(value.value) if value is not None else "unknown"


def _eval_set_items(gates: GateConfig) -> dict[str, int]:
    try:
        items = load_eval_sets(gates.contamination.eval_sets)
    except Exception:  # counted for the card only; the gate itself already loaded them
        return {}
    return {str(k): int(v) for k, v in items["eval_set"].value_counts().items()}
