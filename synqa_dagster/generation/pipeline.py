"""Expand seeds into instruction/response candidates with a distilabel pipeline.

Graph (one branch per technique; every selected seed goes through every enabled branch)::

    load_seeds ─┬─> self_instruct ─> keep_first_instructions ─> expand_instructions ─> build_si_messages ─> respond_self_instruct
                ├─> evol_instruct (seeded) ─> build_evol_messages ─> respond_evol_instruct
                ├─> magpie_single_turn      (Magpie, n_turns=1, steered by a per-seed system prompt)
                └─> magpie_multi_turn       (Magpie, n_turns=N)

Each branch is a registered technique (``synqa_dagster.generation.techniques.TECHNIQUES``, one module per
technique: config model, branch, leaf, conversation extraction, template ids); this module only loops over them.

Inputs: the batch's selected seed rows (``seed_id``, ``intent``, ``locale``, ``text``) and the recipe.
Outputs: one candidate row per generated example with the lineage columns of :data:`CANDIDATE_COLUMNS`.

Reproducibility: every LLM call is seeded from the batch seed and its step (llama.cpp re-seeds per call), so a completion
depends only on its prompt; rows are sorted by content-derived ``row_id``; ``created_at`` is the batch's
logical time (the partition window), not the wall clock. Same batch + same recipe ⇒ byte-identical rows.

Offline: distilabel's cache and the datasets cache live under the ``cache_root`` given to
:func:`generate_candidates` (the runner passes a folder of its own per call, ``<instance>/cache/runs/<run id>``,
removed afterwards: nothing there is reused across runs), the Hugging Face hub is set offline, and distilabel's
end-of-run citation lookup is disabled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from synqa_dagster.config import Recipe
from synqa_dagster.corpus.taxonomy import Taxonomy
from synqa_dagster.generation import models
from synqa_dagster.common import stable_int
from synqa_dagster.generation.seeds import batch_seed, fill_template
from synqa_dagster.generation.techniques import TECHNIQUES, BuildContext, Technique, by_leaf
from synqa_dagster.generation.techniques.evol_instruct import EVOL_TEMPLATE_ID  # noqa: F401  (public name, kept)
from synqa_dagster.generation.techniques.magpie import MAGPIE_PRE_QUERY_ID  # noqa: F401  (public name, kept)

CANDIDATE_COLUMNS = [
    "row_id", "batch", "seed_id", "intent", "taxonomy_version", "locale", "technique", "instruction", "response",
    "conversation", "text", "n_turns", "generator_id", "generator_version", "prompt_template_id",
    "response_template_id", "sampling", "recipe_hash", "created_at",
]


@dataclass(frozen=True)
class GenerationStats:
    """What a generation run did: rows per technique, LLM calls and completion tokens, wall time."""

    rows_by_technique: dict[str, int]
    completion_tokens: int
    seconds: float


def offline_environment(cache_root: Path) -> dict[str, str]:
    """Environment that keeps distilabel / datasets / HF caches inside ``cache_root`` and the hub offline.

    ``cache_root`` must belong to one generation alone: distilabel writes each step's output batches under
    ``<cache_root>/distilabel/<pipeline>/<signature>/…`` and reads back all it finds there, so a shared folder mixes
    runs (see :mod:`synqa_dagster.generation.runner`).
    """
    return {
        "DISTILABEL_CACHE_DIR": str(cache_root / "distilabel"),
        "HF_HOME": str(cache_root / "huggingface"),
        "HF_DATASETS_CACHE": str(cache_root / "huggingface" / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DISTILABEL_LOG_LEVEL": os.environ.get("DISTILABEL_LOG_LEVEL", "WARNING"),
    }


def seed_inputs(
    recipe: Recipe, seeds: pd.DataFrame, taxonomy: Taxonomy, techniques: tuple[Technique, ...] = TECHNIQUES
) -> list[dict[str, Any]]:
    """One input dict per seed for the pipeline (system prompts filled from the recipe's templates).

    Columns: ``seed_id``, ``intent``, ``locale``, ``seed_text``, each registered technique's
    :meth:`~Technique.input_columns` (filled whether or not the technique is enabled), ``response_system_prompt``.
    """
    columns: dict[str, str] = {}
    for technique in techniques:
        columns.update(technique.input_columns(recipe))
    columns["response_system_prompt"] = recipe.response_template_id
    templates = {column: recipe.template(template_id) for column, template_id in columns.items()}
    rows = []
    for seed in seeds.itertuples(index=False):
        values = dict(
            locale=seed.locale,
            intent=seed.intent,
            intent_description=taxonomy.descriptions.get(seed.intent, seed.intent),
            seed_text=seed.text,
        )
        row = {"seed_id": seed.seed_id, "intent": seed.intent, "locale": seed.locale, "seed_text": seed.text}
        row.update((column, fill_template(template, **values)) for column, template in templates.items())
        rows.append(row)
    return rows


def build_pipeline(
    recipe: Recipe, inputs: list[dict[str, Any]], seed: int, cache_dir: Path, techniques: tuple[Technique, ...] = TECHNIQUES
):
    """The distilabel ``Pipeline`` for one batch (not yet run): ``load_seeds`` plus one branch per enabled technique."""
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts

    spec = recipe.generator

    def llm(step: str, magpie: bool = False):
        # One seed per step: otherwise Magpie single- and multi-turn would open with the same exchange.
        step_seed = stable_int("step-seed", seed, step, bits=31)
        client = models.build_llm(spec, step_seed, magpie=magpie)
        client.generation_kwargs = models.generation_kwargs(spec, step_seed)
        return client

    by_leaf(techniques)  # leaf names must be unique
    with Pipeline(name=f"synqa-{recipe.name}", cache_dir=str(cache_dir)) as pipeline:
        load = LoadDataFromDicts(name="load_seeds", data=inputs, batch_size=max(1, len(inputs)))
        context = BuildContext(recipe=recipe, seed=seed, load=load, llm=llm)
        for technique in techniques:
            if technique.enabled(recipe):
                technique.build(context)
    return pipeline


def candidate_rows(
    recipe: Recipe,
    batch: str,
    created_at: str,
    outputs: dict[str, list[dict[str, Any]]],
    generator_id: str,
    generator_version: str,
    techniques: tuple[Technique, ...] = TECHNIQUES,
) -> pd.DataFrame:
    """Turn the pipeline's leaf outputs (``leaf step name -> records``) into candidate rows with lineage,
    content-derived ids, stable order; each leaf's technique gives the conversation and the template ids."""
    sampling = json.dumps(recipe.generator.sampling.model_dump(mode="json") | {"seed": batch_seed(recipe, batch)}, sort_keys=True)
    leaves = by_leaf(techniques)
    recipe_hash = recipe.content_hash()
    rows = []
    for leaf, records in outputs.items():
        technique = leaves[leaf]
        prompt_template_id = technique.prompt_template_id(recipe)
        response_template_id = technique.response_template_id(recipe)
        for record in records:
            turns = [{"role": t["role"], "content": (t["content"] or "").strip()} for t in technique.conversation(record)]
            instruction = next((t["content"] for t in turns if t["role"] == "user"), "")
            response = next((t["content"] for t in turns if t["role"] == "assistant"), "")
            conversation = json.dumps(turns, ensure_ascii=False, sort_keys=True)
            rows.append(
                {
                    "batch": batch,
                    "seed_id": record["seed_id"],
                    "intent": record["intent"],
                    "taxonomy_version": recipe.seed_corpus.taxonomy_version,
                    "locale": record["locale"],
                    "technique": technique.name,
                    "instruction": instruction,
                    "response": response,
                    "conversation": conversation,
                    "text": "\n".join(t["content"] for t in turns),
                    "n_turns": sum(t["role"] == "user" for t in turns),
                    "generator_id": generator_id,
                    "generator_version": generator_version,
                    "prompt_template_id": prompt_template_id,
                    "response_template_id": response_template_id,
                    "sampling": sampling,
                    "recipe_hash": recipe_hash,
                    "created_at": created_at,
                }
            )
    frame = pd.DataFrame(rows, columns=[c for c in CANDIDATE_COLUMNS if c != "row_id"])
    frame.insert(0, "row_id", [row_id(r) for r in frame.to_dict("records")])
    frame = frame.sort_values(["seed_id", "technique", "row_id"], kind="stable")
    # The same (seed, technique, content) generated twice is one row: its id is its content.
    frame = frame.drop_duplicates("row_id").reset_index(drop=True)
    return frame


def row_id(row: dict[str, Any]) -> str:
    """Content-derived id: SHA-256 over batch, seed, technique, template and the conversation (16 hex digits)."""
    key = json.dumps(
        [row["batch"], row["seed_id"], row["technique"], row["prompt_template_id"], row["conversation"]],
        ensure_ascii=False,
    )
    import hashlib

    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def generate_candidates(
    recipe: Recipe,
    seeds: pd.DataFrame,
    taxonomy: Taxonomy,
    batch: str,
    created_at: str,
    cache_root: Path,
) -> tuple[pd.DataFrame, GenerationStats]:
    """Run the distilabel pipeline for one batch and return candidate rows and stats.

    ``cache_root`` holds distilabel's and the datasets caches for this run only (:func:`offline_environment`);
    the rows do not depend on where it is.
    """
    import time

    env = offline_environment(cache_root)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        _disable_citation_lookup()
        seed = batch_seed(recipe, batch)
        generator_id, generator_version = models.generator_identity(recipe.generator)
        if recipe.generator.backend == "llamacpp" and any(t.uses_magpie and t.enabled(recipe) for t in TECHNIQUES):
            models.tokenizer_dir(recipe.generator)  # build once, before the step processes start
        inputs = seed_inputs(recipe, seeds, taxonomy)
        started = time.perf_counter()
        pipeline = build_pipeline(recipe, inputs, seed, cache_root / "distilabel")
        distiset = pipeline.run(use_cache=False)
        seconds = time.perf_counter() - started
        outputs: dict[str, list[dict[str, Any]]] = {}
        tokens = 0
        for leaf in by_leaf(TECHNIQUES):
            if leaf in distiset:
                records = distiset[leaf]["train"].to_list()
                outputs[leaf] = records
                tokens += sum(_completion_tokens(r) for r in records)
        frame = candidate_rows(recipe, batch, created_at, outputs, generator_id, generator_version)
        stats = GenerationStats(
            rows_by_technique=frame["technique"].value_counts().sort_index().to_dict(),
            completion_tokens=tokens,
            seconds=seconds,
        )
        return frame, stats
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _completion_tokens(record: dict[str, Any]) -> int:
    total = 0
    for key, stats in (record.get("distilabel_metadata") or {}).items():
        if key.startswith("statistics_") and isinstance(stats, dict):
            out = stats.get("output_tokens")
            if isinstance(out, list):
                total += sum(int(x) for x in out if isinstance(x, (int, float)))
            elif isinstance(out, (int, float)):
                total += int(out)
    return total


def _offline_bibtex(ref: str) -> str:
    raise ValueError(f"synqa runs offline; citation lookup for {ref} skipped")


def _disable_citation_lookup() -> None:
    """distilabel resolves arXiv citations over HTTP at the end of a run (when bs4 is importable); never here."""
    import distilabel.distiset

    distilabel.distiset.get_bibtex = _offline_bibtex
