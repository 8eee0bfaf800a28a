"""The ``seed_corpus`` asset: the validated, versioned seed rows each batch is built from."""


import time

import dagster as dg

from synqa_dagster.metadata import table_metadata
from synqa_dagster.config import Recipe
from synqa_dagster.common import files_hash
from synqa_dagster.corpus.seeds import load_seed_corpus


def taxonomy_hash(recipe: Recipe) -> str:
    """Hash of every taxonomy file the recipe's taxonomy folder holds (labels, descriptions and mappings)."""
    folder = recipe.resolved(recipe.seed_corpus.taxonomy_dir)
    return files_hash(sorted(folder.glob("*.yaml")))


def build_seed_corpus_asset(recipe: Recipe, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """``seed_corpus`` for ``recipe``: one validated snapshot of the corpus per batch."""
    spec = recipe.seed_corpus

    @dg.asset(
        name="seed_corpus",
        group_name="corpus",
        kinds={"python", "parquet"},
        partitions_def=partitions,
        code_version=recipe.content_hash(),
        io_manager_key="parquet_io_manager",
        owners=["team:synqa"],
        description=(
            "Seed rows (seed_id, intent, locale, text, reference answer) validated with great-expectations against "
            "the taxonomy: schema, non-null, lengths, labels in the taxonomy, unique ids. A bad corpus fails here "
            "with file, line and field, so nothing downstream runs on it."
        ),
        metadata={"seed_corpus_path": spec.path, "taxonomy_version": spec.taxonomy_version},
    )
    def seed_corpus(context: dg.AssetExecutionContext):
        started = time.perf_counter()
        corpus = load_seed_corpus(
            recipe.resolved(spec.path),
            recipe.resolved(spec.taxonomy_dir),
            spec.taxonomy_version,
            min_chars=spec.min_text_chars,
            max_chars=spec.max_text_chars,
        )
        rows = corpus.rows
        context.log.info(f"seed corpus {corpus.path}: {len(rows)} seeds valid, hash {corpus.content_hash}")
        return dg.Output(
            rows,
            # The corpus content is this asset's data version: editing seeds or the taxonomy marks every
            # batch's generated_candidates as stale in the UI ("upstream data changed"), even with the same recipe.
            data_version=dg.DataVersion(f"{corpus.content_hash}-{corpus.taxonomy.version}-{taxonomy_hash(recipe)}"),
            metadata=table_metadata(
                rows,
                ["seed_id", "intent", "locale", "text"],
                time.perf_counter() - started,
                corpus_hash=corpus.content_hash,
                taxonomy_version=corpus.taxonomy.version,
                intents=int(rows["intent"].nunique()),
                locales=rows["locale"].value_counts().sort_index().to_dict(),
                recipe_hash=recipe.content_hash(),
            ),
        )

    return seed_corpus
