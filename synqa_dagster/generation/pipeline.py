"""Expand seeds into instruction/response candidates with a distilabel pipeline.

Graph (one branch per technique; every selected seed goes through every enabled branch)::

    load_seeds ─┬─> self_instruct ─> keep_first_instructions ─> expand_instructions ─> build_si_messages ─> respond_self_instruct
                ├─> evol_instruct (seeded) ─> build_evol_messages ─> respond_evol_instruct
                ├─> magpie_single_turn      (Magpie, n_turns=1, steered by a per-seed system prompt)
                └─> magpie_multi_turn       (Magpie, n_turns=N)

Inputs: the batch's selected seed rows (``seed_id``, ``intent``, ``locale``, ``text``) and the recipe.
Outputs: one candidate row per generated example with the lineage columns of :data:`CANDIDATE_COLUMNS`.

Reproducibility: every LLM call is seeded from the batch seed and its step (llama.cpp re-seeds per call), so a completion
depends only on its prompt; rows are sorted by content-derived ``row_id``; ``created_at`` is the batch's
logical time (the partition window), not the wall clock. Same batch + same recipe ⇒ byte-identical rows.

Offline: distilabel's cache and the datasets cache live under the instance folder, the Hugging Face hub is set
offline, and distilabel's end-of-run citation lookup is disabled.
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
from synqa_dagster.generation.seeds import batch_seed, fill_template, stable_int

CANDIDATE_COLUMNS = [
    "row_id", "batch", "seed_id", "intent", "taxonomy_version", "locale", "technique", "instruction", "response",
    "conversation", "text", "n_turns", "generator_id", "generator_version", "prompt_template_id",
    "response_template_id", "sampling", "recipe_hash", "created_at",
]

EVOL_TEMPLATE_ID = "evol_instruct.builtin.distilabel-1.5.3"
MAGPIE_PRE_QUERY_ID = "magpie.pre_query.chatml"


@dataclass(frozen=True)
class GenerationStats:
    """What a generation run did: rows per technique, LLM calls and completion tokens, wall time."""

    rows_by_technique: dict[str, int]
    completion_tokens: int
    seconds: float


def offline_environment(cache_root: Path) -> dict[str, str]:
    """Environment that keeps distilabel / datasets / HF caches inside ``cache_root`` and the hub offline."""
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


def seed_inputs(recipe: Recipe, seeds: pd.DataFrame, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """One input dict per seed for the pipeline (system prompts filled from the recipe's templates)."""
    magpie_tpl = recipe.template(recipe.techniques.magpie.system_template_id)
    response_tpl = recipe.template(recipe.response_template_id)
    rows = []
    for seed in seeds.itertuples(index=False):
        values = dict(
            locale=seed.locale,
            intent=seed.intent,
            intent_description=taxonomy.descriptions.get(seed.intent, seed.intent),
            seed_text=seed.text,
        )
        rows.append(
            {
                "seed_id": seed.seed_id,
                "intent": seed.intent,
                "locale": seed.locale,
                "seed_text": seed.text,
                "system_prompt": fill_template(magpie_tpl, **values),
                "response_system_prompt": fill_template(response_tpl, **values),
            }
        )
    return rows


def build_pipeline(recipe: Recipe, inputs: list[dict[str, Any]], seed: int, cache_dir: Path):
    """The distilabel ``Pipeline`` for one batch (not yet run)."""
    from distilabel.pipeline import Pipeline
    from distilabel.steps import ExpandColumns, LoadDataFromDicts
    from distilabel.steps.tasks import ChatGeneration, Magpie, SelfInstruct

    from synqa_dagster.generation.steps import BuildResponseMessages, KeepFirstInstructions, SeededEvolInstruct

    spec = recipe.generator
    techniques = recipe.techniques

    def llm(step: str, magpie: bool = False):
        # One seed per step: otherwise Magpie single- and multi-turn would open with the same exchange.
        step_seed = stable_int("step-seed", seed, step, bits=31)
        client = models.build_llm(spec, step_seed, magpie=magpie)
        client.generation_kwargs = models.generation_kwargs(spec, step_seed)
        return client

    with Pipeline(name=f"synqa-{recipe.name}", cache_dir=str(cache_dir)) as pipeline:
        load = LoadDataFromDicts(name="load_seeds", data=inputs, batch_size=max(1, len(inputs)))
        if techniques.self_instruct.enabled:
            si = techniques.self_instruct
            self_instruct = SelfInstruct(
                name="self_instruct",
                llm=llm("self_instruct"),
                num_instructions=si.num_instructions,
                criteria_for_query_generation=recipe.template(si.criteria_template_id),
                application_description=si.application_description,
                input_mappings={"input": "seed_text"},
            )
            keep = KeepFirstInstructions(name="keep_first_instructions", num_instructions=si.num_instructions)
            expand = ExpandColumns(name="expand_instructions", columns={"instructions": "instruction"})
            messages = BuildResponseMessages(name="build_si_messages")
            respond = ChatGeneration(name="respond_self_instruct", llm=llm("respond_self_instruct"))
            load >> self_instruct >> keep >> expand >> messages >> respond
        if techniques.evol_instruct.enabled:
            evol = SeededEvolInstruct(
                name="evol_instruct",
                llm=llm("evol_instruct"),
                num_evolutions=techniques.evol_instruct.steps,
                seed=stable_int("evol", seed, bits=31),
                input_mappings={"instruction": "seed_text"},
            )
            messages = BuildResponseMessages(name="build_evol_messages", input_mappings={"instruction": "evolved_instruction"})
            respond = ChatGeneration(name="respond_evol_instruct", llm=llm("respond_evol_instruct"))
            load >> evol >> messages >> respond
        magpie = techniques.magpie
        if magpie.enabled and magpie.single_turn:
            load >> Magpie(name="magpie_single_turn", llm=llm("magpie_single_turn", magpie=True), n_turns=1)
        if magpie.enabled and magpie.multi_turn:
            load >> Magpie(name="magpie_multi_turn", llm=llm("magpie_multi_turn", magpie=True), n_turns=magpie.n_turns)
    return pipeline


_LEAVES = {
    "respond_self_instruct": "self_instruct",
    "respond_evol_instruct": "evol_instruct",
    "magpie_single_turn": "magpie_single_turn",
    "magpie_multi_turn": "magpie_multi_turn",
}


def _conversation(record: dict[str, Any], leaf: str) -> list[dict[str, str]]:
    if leaf == "respond_self_instruct":
        return [{"role": "user", "content": record.get("instruction")}, {"role": "assistant", "content": record.get("generation")}]
    if leaf == "respond_evol_instruct":
        return [{"role": "user", "content": record.get("evolved_instruction")}, {"role": "assistant", "content": record.get("generation")}]
    if leaf == "magpie_single_turn":
        return [{"role": "user", "content": record.get("instruction")}, {"role": "assistant", "content": record.get("response")}]
    return [dict(role=m["role"], content=m["content"]) for m in record.get("conversation") or [] if m.get("role") != "system"]


def candidate_rows(
    recipe: Recipe,
    batch: str,
    created_at: str,
    outputs: dict[str, list[dict[str, Any]]],
    generator_id: str,
    generator_version: str,
) -> pd.DataFrame:
    """Turn the pipeline's leaf outputs into candidate rows with lineage, content-derived ids, stable order."""
    sampling = json.dumps(recipe.generator.sampling.model_dump(mode="json") | {"seed": batch_seed(recipe, batch)}, sort_keys=True)
    template_ids = {
        "self_instruct": recipe.techniques.self_instruct.criteria_template_id,
        "evol_instruct": EVOL_TEMPLATE_ID,
        "magpie_single_turn": recipe.techniques.magpie.system_template_id,
        "magpie_multi_turn": recipe.techniques.magpie.system_template_id,
    }
    recipe_hash = recipe.content_hash()
    rows = []
    for leaf, records in outputs.items():
        technique = _LEAVES[leaf]
        uses_response_template = technique in ("self_instruct", "evol_instruct")
        for record in records:
            turns = [{"role": t["role"], "content": (t["content"] or "").strip()} for t in _conversation(record, leaf)]
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
                    "technique": technique,
                    "instruction": instruction,
                    "response": response,
                    "conversation": conversation,
                    "text": "\n".join(t["content"] for t in turns),
                    "n_turns": sum(t["role"] == "user" for t in turns),
                    "generator_id": generator_id,
                    "generator_version": generator_version,
                    "prompt_template_id": template_ids[technique],
                    "response_template_id": recipe.response_template_id if uses_response_template else template_ids[technique],
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
    """Run the distilabel pipeline for one batch and return candidate rows and stats."""
    import time

    env = offline_environment(cache_root)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        _disable_citation_lookup()
        seed = batch_seed(recipe, batch)
        generator_id, generator_version = models.generator_identity(recipe.generator)
        if recipe.generator.backend == "llamacpp" and recipe.techniques.magpie.enabled:
            models.tokenizer_dir(recipe.generator)  # build once, before the step processes start
        inputs = seed_inputs(recipe, seeds, taxonomy)
        started = time.perf_counter()
        pipeline = build_pipeline(recipe, inputs, seed, cache_root / "distilabel")
        distiset = pipeline.run(use_cache=False)
        seconds = time.perf_counter() - started
        outputs: dict[str, list[dict[str, Any]]] = {}
        tokens = 0
        for leaf in _LEAVES:
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
