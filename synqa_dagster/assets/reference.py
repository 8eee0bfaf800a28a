"""The ``reference_corpus`` asset: the real-data baseline the drift, diversity and bias checks compare against.

Unpartitioned by default: the reference is one sample shared by every batch, versioned by the hash of its file
(its ``code_version``); a changed file shows the asset as changed in the UI. (Pass ``partitions`` to snapshot it
per batch instead.) The batch job includes it, so every batch run rebuilds it from the file (a few seconds) and
its checks read that table. The rows are embedded here (``embedding`` column, the same MiniLM as
``candidate_embeddings``) so the checks never re-embed it.
"""


import time

import dagster as dg
import numpy as np

from synqa_dagster.metadata import table_metadata
from synqa_dagster.common import file_hash
from synqa_dagster.config import Recipe, canonical_hash
from synqa_dagster.paths import resolve_path
from synqa_dagster.resources import EmbedderResource
from synqa_dagster.stages import REFERENCE_ASSET
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.findings import probe_columns
from synqa_dagster.stats.probes import frame_probes
from synqa_dagster.stats.reference import load_reference_corpus



def reference_code_version(drift: DriftConfig, recipe: Recipe | None = None) -> str:
    """``<file hash>.<hash of the settings that shape the table>`` (``missing`` when the file is absent)."""
    path = resolve_path(drift.reference_path)
    digest = file_hash(path) if path.is_file() else "missing"
    settings = {
        "taxonomy_dir": drift.reference_taxonomy_dir if recipe is None else recipe.seed_corpus.taxonomy_dir,
        "taxonomy_version": None if recipe is None else recipe.seed_corpus.taxonomy_version,
        "min_chars": drift.reference_min_chars,
        "max_chars": drift.reference_max_chars,
        "knn": drift.knn,
    }
    return f"{digest}.{canonical_hash(settings, 8)}"


def build_reference_asset(
    drift: DriftConfig, recipe: Recipe | None = None, partitions: dg.PartitionsDefinition | None = None
) -> dg.AssetsDefinition:
    """``reference_corpus`` from ``drift.reference_path``; with ``recipe``, labels are mapped to the recipe's
    taxonomy version (from its taxonomy folder) so reference intents compare with the batch's."""
    taxonomy_dir = recipe.seed_corpus.taxonomy_dir if recipe is not None else drift.reference_taxonomy_dir
    taxonomy_version = recipe.seed_corpus.taxonomy_version if recipe is not None else None

    @dg.asset(
        name=REFERENCE_ASSET,
        group_name="corpus",
        kinds={"python", "parquet", "sentencetransformers"},
        partitions_def=partitions,
        code_version=reference_code_version(drift, recipe),
        io_manager_key="parquet_io_manager",
        owners=["team:synqa"],
        description=(
            "The real-data baseline for the drift, diversity and bias checks (the user's own sample; the demo's "
            "written customer messages by default), validated like the seed corpus (file, line and field on any "
            "problem), labels mapped to the batch's taxonomy version, embedded with MiniLM."
        ),
        metadata={"reference_path": drift.reference_path, "taxonomy_dir": taxonomy_dir},
    )
    def reference_corpus(context: dg.AssetExecutionContext, embedder: EmbedderResource):
        started = time.perf_counter()
        corpus = load_reference_corpus(
            resolve_path(drift.reference_path),
            resolve_path(taxonomy_dir),
            taxonomy_version,
            min_chars=drift.reference_min_chars,
            max_chars=drift.reference_max_chars,
        )
        rows = corpus.rows
        model = embedder.embedder()
        vectors = model.encode(rows["text"].astype(str).tolist())
        rows = rows.assign(embedding=list(vectors))
        # the reference side of every drift probe, computed once here (nn_distance leave-one-out on these vectors)
        probes = frame_probes(rows, "text", vectors if len(rows) > 1 else None, k=drift.knn, is_reference=True)
        rows = rows.assign(**probe_columns(probes))
        context.log.info(f"reference {corpus.path}: {len(rows)} rows valid, hash {corpus.content_hash}")
        return dg.Output(
            rows,
            metadata=table_metadata(
                rows,
                ["ref_id", "intent", "locale", "text"],
                time.perf_counter() - started,
                reference_hash=corpus.content_hash,
                taxonomy_version=corpus.taxonomy_version,
                intents=int(rows["intent"].nunique()),
                locales=rows["locale"].value_counts().sort_index().to_dict(),
                embedding_model=model.model_id,
                median_chars=float(np.median(probes.numeric["chars"])) if len(rows) else 0.0,
                tone=probes.categorical["tone"].value_counts().to_dict(),
            ),
        )

    return reference_corpus
