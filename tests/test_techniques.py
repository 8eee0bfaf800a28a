"""The technique registry: one module per synthesis technique, looped over by the pipeline (no LLM is run here)."""

import json
from typing import Any

import pandas as pd
import pytest
import yaml

from synqa_dagster.config import Recipe, StrictModel, Techniques, load_recipe
from synqa_dagster.generation import models
from synqa_dagster.generation.pipeline import build_pipeline, candidate_rows, seed_inputs
from synqa_dagster.common import stable_int
from synqa_dagster.generation.techniques import (
    TECHNIQUES,
    BuildContext,
    Technique,
    TechniqueConfig,
    by_leaf,
    sections,
    techniques_model,
)
from tests.conftest import REPO_ROOT

SEED = 12345

#: Today's graph: the step names, edges and branch order rows (and their seeds) depend on.
EXPECTED_EDGES = [
    ("load_seeds", "self_instruct"),
    ("self_instruct", "keep_first_instructions"),
    ("keep_first_instructions", "expand_instructions"),
    ("expand_instructions", "build_si_messages"),
    ("build_si_messages", "respond_self_instruct"),
    ("load_seeds", "evol_instruct"),
    ("evol_instruct", "build_evol_messages"),
    ("build_evol_messages", "respond_evol_instruct"),
    ("load_seeds", "magpie_single_turn"),
    ("load_seeds", "magpie_multi_turn"),
]

RECORD = {"seed_id": "seed-0001", "intent": "account.login_issue", "locale": "en-GB"}
#: A hand-made leaf record per technique and the conversation it must give.
LEAF_RECORDS = {
    "respond_self_instruct": ({"instruction": "Reset my password", "generation": "Use the link."},
                              [("user", "Reset my password"), ("assistant", "Use the link.")]),
    "respond_evol_instruct": ({"instruction": "seed", "evolved_instruction": "Reset it twice", "generation": "Done."},
                              [("user", "Reset it twice"), ("assistant", "Done.")]),
    "magpie_single_turn": ({"instruction": "Hi", "response": "Hello", "system_prompt": "sys"},
                           [("user", "Hi"), ("assistant", "Hello")]),
    "magpie_multi_turn": ({"conversation": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Locked"},
                                            {"role": "assistant", "content": "Reset"}]},
                          [("user", "Hi"), ("assistant", "Hello"), ("user", "Locked"), ("assistant", "Reset")]),
}


@pytest.fixture()
def no_tokenizer(monkeypatch, tmp_path):
    """Magpie LLMs need a tokenizer folder only when loaded; building the graph does not load them."""
    monkeypatch.setattr(models, "tokenizer_dir", lambda spec: tmp_path / "tokenizer")


def _inputs(recipe: Recipe, techniques=TECHNIQUES) -> list[dict[str, Any]]:
    from synqa_dagster.corpus.taxonomy import load_taxonomy

    seeds = pd.DataFrame([{"seed_id": "seed-0001", "intent": "account.login_issue", "locale": "en-GB", "text": "I can't log in"}])
    spec = recipe.seed_corpus
    return seed_inputs(recipe, seeds, load_taxonomy(recipe.resolved(spec.taxonomy_dir), spec.taxonomy_version), techniques)


def _dag(pipeline) -> tuple[list[str], list[tuple[str, str]]]:
    """Step names in insertion order and edges in branch order (networkx lists edges grouped by source)."""
    nodes = list(pipeline.dag.G.nodes)
    return nodes, sorted(pipeline.dag.G.edges, key=lambda e: (nodes.index(e[1]), nodes.index(e[0])))


def test_registry_names_sections_and_leaves_are_consistent():
    assert [t.name for t in TECHNIQUES] == ["self_instruct", "evol_instruct", "magpie_single_turn", "magpie_multi_turn"]
    assert len({t.name for t in TECHNIQUES}) == len(TECHNIQUES)
    assert len({t.leaf for t in TECHNIQUES}) == len(TECHNIQUES)
    assert list(by_leaf()) == ["respond_self_instruct", "respond_evol_instruct", "magpie_single_turn", "magpie_multi_turn"]
    # every technique has its section in the recipe's `techniques:` model, typed by its own config model
    assert list(Techniques.model_fields) == list(sections()) == ["self_instruct", "evol_instruct", "magpie"]
    for technique in TECHNIQUES:
        assert Techniques.model_fields[technique.section].annotation is technique.config_model
        assert issubclass(technique.config_model, TechniqueConfig)
        assert technique.config_model.__doc__ and type(technique).__doc__
    with pytest.raises(ValueError, match="registered twice"):
        by_leaf(TECHNIQUES + (TECHNIQUES[0],))


def test_each_leaf_record_becomes_its_conversation():
    for leaf, (record, expected) in LEAF_RECORDS.items():
        turns = by_leaf()[leaf].conversation({**RECORD, **record})
        assert [(t["role"], t["content"]) for t in turns] == expected, leaf


def test_template_ids_per_technique_and_on_rows():
    recipe = load_recipe()
    expected = {
        "self_instruct": ("self_instruct.criteria.v1", "response.system.v1"),
        "evol_instruct": ("evol_instruct.builtin.distilabel-1.5.3", "response.system.v1"),
        "magpie_single_turn": ("magpie.system.v1", "magpie.system.v1"),
        "magpie_multi_turn": ("magpie.system.v1", "magpie.system.v1"),
    }
    assert {t.name: (t.prompt_template_id(recipe), t.response_template_id(recipe)) for t in TECHNIQUES} == expected
    outputs = {leaf: [{**RECORD, **record}] for leaf, (record, _) in LEAF_RECORDS.items()}
    rows = candidate_rows(recipe, "2026-11-02", "2026-11-02T00:00:00+00:00", outputs, "llamacpp/x", "sha256:ab")
    got = {r["technique"]: (r["prompt_template_id"], r["response_template_id"]) for r in rows.to_dict("records")}
    assert got == expected
    assert recipe.techniques.template_ids() == {"self_instruct.criteria.v1", "magpie.system.v1"}


def test_seed_inputs_fill_every_technique_column():
    rows = _inputs(load_recipe())
    assert list(rows[0]) == ["seed_id", "intent", "locale", "seed_text", "system_prompt", "response_system_prompt"]
    assert "en-GB" in rows[0]["system_prompt"]


def test_default_graph_keeps_step_names_order_and_seeds(no_tokenizer, tmp_path):
    recipe = load_recipe()
    pipeline = build_pipeline(recipe, _inputs(recipe), SEED, tmp_path)
    nodes, edges = _dag(pipeline)
    assert nodes == ["load_seeds"] + [b for _, b in EXPECTED_EDGES]
    assert edges == EXPECTED_EDGES
    assert list(pipeline.dag.G.successors("load_seeds")) == ["self_instruct", "evol_instruct", "magpie_single_turn", "magpie_multi_turn"]
    for name in nodes:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        if llm is not None:
            assert llm.seed == stable_int("step-seed", SEED, name, bits=31), name
    assert pipeline.dag.get_step("evol_instruct")["step"].seed == stable_int("evol", SEED, bits=31)
    assert pipeline.dag.get_step("magpie_multi_turn")["step"].n_turns == recipe.techniques.magpie.n_turns
    # disabled sections drop their branch only
    recipe.techniques.magpie.multi_turn = False
    recipe.techniques.self_instruct.enabled = False
    nodes, _ = _dag(build_pipeline(recipe, _inputs(recipe), SEED, tmp_path))
    assert nodes == ["load_seeds", "evol_instruct", "build_evol_messages", "respond_evol_instruct", "magpie_single_turn"]


# ------------------------------------------------------------------ adding a technique = one module + registering it


class ParaphraseSpec(TechniqueConfig):
    """Paraphrase: the teacher answers the seed text as-is (a test technique)."""

    enabled: bool = True
    style: str = "plain"


class ParaphraseTechnique(Technique):
    """Test technique: one ``TextGeneration`` step on the seed text.

    Input columns: ``seed_text``. Output columns (leaf ``respond_paraphrase``): ``generation``.

    Attributes:
        name / section: ``paraphrase``; leaf: ``respond_paraphrase``.
    """

    name = "paraphrase"
    section = "paraphrase"
    config_model = ParaphraseSpec
    leaf = "respond_paraphrase"

    def input_columns(self, recipe):
        return {"paraphrase_prompt": recipe.response_template_id}

    def build(self, ctx: BuildContext):
        from distilabel.steps.tasks import TextGeneration

        step = TextGeneration(name=self.leaf, llm=ctx.llm(self.leaf), input_mappings={"instruction": "seed_text"})
        ctx.load >> step
        return step

    def conversation(self, record):
        return [{"role": "user", "content": record.get("seed_text")}, {"role": "assistant", "content": record.get("generation")}]

    def prompt_template_id(self, recipe):
        return f"paraphrase.{self.spec(recipe).style}"


def test_a_new_technique_is_one_module_plus_registering_it(no_tokenizer, tmp_path):
    registry = TECHNIQUES + (ParaphraseTechnique(),)
    ExtendedTechniques = techniques_model(registry, base=StrictModel)

    class ExtendedRecipe(Recipe):
        techniques: ExtendedTechniques = ExtendedTechniques()

    data = yaml.safe_load((REPO_ROOT / "recipes" / "demo.yaml").read_text())
    data["techniques"]["paraphrase"] = {"style": "formal"}  # its recipe section
    recipe = ExtendedRecipe.model_validate(data)
    assert recipe.techniques.paraphrase.style == "formal"
    with pytest.raises(ValueError):
        ExtendedRecipe.model_validate({**data, "techniques": {"paraphrase": {"unknown": 1}}})

    inputs = _inputs(recipe, registry)
    assert inputs[0]["paraphrase_prompt"] == inputs[0]["response_system_prompt"]
    pipeline = build_pipeline(recipe, inputs, SEED, tmp_path, techniques=registry)
    nodes, edges = _dag(pipeline)
    assert nodes[-1] == "respond_paraphrase" and edges[-1] == ("load_seeds", "respond_paraphrase")
    assert edges[:-1] == EXPECTED_EDGES  # the other branches are untouched
    assert pipeline.dag.get_step("respond_paraphrase")["step"].llm.seed == stable_int("step-seed", SEED, "respond_paraphrase", bits=31)

    outputs = {"respond_paraphrase": [{**RECORD, "seed_text": "I can't log in", "generation": "Let's fix that."}]}
    rows = candidate_rows(recipe, "2026-11-02", "2026-11-02T00:00:00+00:00", outputs, "llamacpp/x", "sha256:ab", techniques=registry)
    row = rows.iloc[0]
    assert (row["technique"], row["prompt_template_id"], row["response_template_id"]) == ("paraphrase", "paraphrase.formal", "response.system.v1")
    assert json.loads(row["conversation"]) == [{"role": "user", "content": "I can't log in"}, {"role": "assistant", "content": "Let's fix that."}]
