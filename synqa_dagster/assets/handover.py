"""The handover assets: ``handover_pack`` (one signed folder per batch) and ``dataset_card`` (the roll-up).

Thin wrappers: they gather the batch's tables and versions, call :mod:`synqa_dagster.handover.batch` (which writes
and signs the folder) and report the Merkle root, key id, funnel and card in the asset's metadata. The folders live
where ``StoreResource.handover_folders`` says: a local folder, or S3 when the storage is (published with the
manifest last, see :mod:`synqa_dagster.storage`).
"""


import base64
import time
from typing import Sequence

import dagster as dg
import pandas as pd

from synqa_dagster.assets.corpus import taxonomy_hash
from synqa_dagster.common import file_hash
from synqa_dagster.config import GateConfig, Recipe
from synqa_dagster.gates.eval_sets import load_eval_sets
from synqa_dagster.handover.batch import BatchInputs, read_card_facts, write_batch_handover, write_rollup
from synqa_dagster.paths import resolve_path
from synqa_dagster.assets.review import read_agreement, read_slice_verdicts
from synqa_dagster.resources import EmbedderResource, HandoverResource, StoreResource
from synqa_dagster.stages import (
    ACCEPTED, CANARIES, CANDIDATES, DATASET_CARD, DRIFT_FINDINGS, HANDOVER, REFERENCE_ASSET, REVIEW_QUEUE, SEED_CORPUS, STAGES,
    GateStage, measured_quality, ordered_tables,
)
from synqa_dagster.stats.findings import findings_from_table

GROUP = "handover"


def build_handover_assets(
    recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition, stages: Sequence[GateStage] = STAGES
) -> list[dg.AssetsDefinition]:
    """``handover_pack`` (partitioned) and ``dataset_card`` (unpartitioned roll-up)."""
    versions = {"recipe_hash": recipe.content_hash(), "gate_config_hash": gates.content_hash()}
    code_version = f"{versions['recipe_hash']}.{versions['gate_config_hash']}"
    human = next(s for s in stages if not s.automatic)
    ins = {name: dg.AssetIn(name) for name in (SEED_CORPUS, CANDIDATES, REVIEW_QUEUE, ACCEPTED, DRIFT_FINDINGS, CANARIES)}
    ins.update({s.asset: dg.AssetIn(s.asset) for s in stages})
    ins.update({s.census_asset: dg.AssetIn(s.census_asset) for s in stages if s.census})
    ins["reference"] = dg.AssetIn(REFERENCE_ASSET)

    @dg.asset(
        name=HANDOVER,
        group_name=GROUP,
        kinds={"json", "huggingface", "ed25519"},
        partitions_def=partitions,
        code_version=code_version,
        owners=["team:synqa"],
        ins=ins,
        description=(
            "The batch's signed handover folder: accepted rows and reject log (JSONL), per-row lineage (seed, "
            "generator, template, every gate's result and score, reviewer HMAC) as canonical JSON under an RFC 6962 "
            "Merkle root, an in-toto statement in an Ed25519-signed DSSE envelope, the recipe and gate config files "
            "that ran, the funnel (PNG + markdown) and a Hugging Face dataset card. Check it with `synqa verify`."
        ),
    )
    def handover_pack(
        context: dg.AssetExecutionContext, handover: HandoverResource, store: StoreResource, embedder: EmbedderResource,
        **tables: pd.DataFrame
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        batch = context.partition_key
        review_queue, reference = tables[REVIEW_QUEUE], tables["reference"]
        spec = recipe.seed_corpus
        inputs = BatchInputs(
            batch=batch,
            candidates=tables[CANDIDATES],
            gate_tables=ordered_tables(tables, stages),
            review_sample=review_queue,
            review_verdicts=read_slice_verdicts(store, human.asset, batch) if len(review_queue) else pd.DataFrame(),
            review_status=_review_status(context, batch, human.asset),
            review_agreement=read_agreement(store, human.asset, batch) if len(review_queue) else None,
            recipe=recipe,
            gates=gates,
            seed_corpus_path=spec.path,
            seed_corpus_hash=file_hash(recipe.resolved(spec.path)),
            seed_rows=len(tables[SEED_CORPUS]),
            taxonomy_version=spec.taxonomy_version,
            taxonomy_hash=taxonomy_hash(recipe),
            reference_path=gates.drift.reference_path,
            reference_hash=file_hash(resolve_path(gates.drift.reference_path)) if gates.drift.reference_path else None,
            reference_rows=len(reference),
            drift=findings_from_table(tables[DRIFT_FINDINGS]),
            eval_set_items=_eval_set_items(gates),
            stages=tuple(stages),
            canaries=tables[CANARIES],
            census={s.name: tables[s.census_asset] for s in stages if s.census},
            measured=measured_quality(gates, embedder, stages),
        )
        folders = store.handover_folders(handover.base_path)
        name = f"batch={batch}"
        folder = write_batch_handover(folders, inputs, handover.signing_key())
        facts = read_card_facts(folders, name)
        png = folders.read_bytes(name, "funnel.png")
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
                    folders.read_bytes(name, "funnel.md").decode("utf-8")
                    + f"\n\n![funnel](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
                ),
                "card": dg.MetadataValue.md(folders.read_bytes(name, "README.md").decode("utf-8")),
                "verify": f"synqa verify {folder}",
                "seconds": round(time.perf_counter() - started, 2),
                **versions,
            }
        )

    @dg.asset(
        name=DATASET_CARD,
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
    def dataset_card(context: dg.AssetExecutionContext, handover: HandoverResource, store: StoreResource) -> dg.MaterializeResult:
        folders = store.handover_folders(handover.base_path)
        written = write_rollup(folders, recipe.card.pretty_name, recipe.card.license, recipe.card.summary or None)
        if written is None:
            raise dg.Failure(f"no batch handover folders under {folders.uri()}: materialize handover_pack first")
        text, facts = written
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(folders.uri("README.md")),
            "batches": len(facts),
            "accepted": sum(f.accepted for f in facts),
            "rejected": sum(f.rejected for f in facts),
            "card": dg.MetadataValue.md(text),
            **versions,
        })

    return [handover_pack, dataset_card]


def _review_status(context: dg.AssetExecutionContext, batch: str, asset: str) -> str:
    """The human review status recorded in the metadata of the materialization of ``asset`` that this run sees:
    its own, else the newest by a committed run (a rolled-back run's never counts)."""
    from synqa_dagster.batches import latest_committed_record

    record = latest_committed_record(context.instance, asset, batch, also_run=context.run_id)
    if record is None:
        return "unknown"
    meta = record.asset_materialization.metadata
    value = meta.get("review_status")
    return str(value.value) if value is not None else "unknown"


def _eval_set_items(gates: GateConfig) -> dict[str, int]:
    try:
        items = load_eval_sets(gates.contamination.eval_sets)
    except Exception:  # counted for the card only; the gate itself already loaded them
        return {}
    return {str(k): int(v) for k, v in items["eval_set"].value_counts().items()}
