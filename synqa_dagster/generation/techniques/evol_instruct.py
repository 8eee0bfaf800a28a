"""Evol-Instruct: rewrite a seed into a harder request (reproducible mutation choice), then answer it.

Branch::

    load_seeds -> evol_instruct (seeded) -> build_evol_messages -> respond_evol_instruct
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from synqa_dagster.common import stable_int
from synqa_dagster.generation.techniques.base import BuildContext, Technique, TechniqueConfig, Turn

#: distilabel's built-in mutation templates are the prompt; their id names the distilabel release.
EVOL_TEMPLATE_ID = "evol_instruct.builtin.distilabel-1.5.3"


class EvolInstructSpec(TechniqueConfig):
    """Evol-Instruct: rewrite a seed into a harder request, ``steps`` times (distilabel ``EvolInstruct``)."""

    enabled: bool = True
    steps: int = Field(1, ge=1, le=5, description="Difficulty evolutions per seed.")


class EvolInstructTechnique(Technique):
    """Evol-Instruct branch: ``SeededEvolInstruct`` evolves the seed text, ``ChatGeneration`` answers it.

    Input columns: ``seed_text`` (as EvolInstruct's ``instruction``), ``response_system_prompt``.
    Output columns (leaf ``respond_evol_instruct``): ``evolved_instruction``, ``generation``.

    Attributes:
        name / section: ``evol_instruct`` (recipe section ``techniques.evol_instruct``, :class:`EvolInstructSpec`).
        leaf: ``respond_evol_instruct``.
    """

    name = "evol_instruct"
    section = "evol_instruct"
    config_model = EvolInstructSpec
    leaf = "respond_evol_instruct"

    def build(self, ctx: BuildContext) -> Any:
        from distilabel.steps.tasks import ChatGeneration

        from synqa_dagster.generation.steps import BuildResponseMessages, SeededEvolInstruct

        evol = SeededEvolInstruct(
            name="evol_instruct",
            llm=ctx.llm("evol_instruct"),
            num_evolutions=self.spec(ctx.recipe).steps,
            seed=stable_int("evol", ctx.seed, bits=31),
            input_mappings={"instruction": "seed_text"},
        )
        messages = BuildResponseMessages(name="build_evol_messages", input_mappings={"instruction": "evolved_instruction"})
        respond = ChatGeneration(name=self.leaf, llm=ctx.llm(self.leaf))
        ctx.load >> evol >> messages >> respond
        return respond

    def conversation(self, record: dict[str, Any]) -> list[Turn]:
        return [{"role": "user", "content": record.get("evolved_instruction")}, {"role": "assistant", "content": record.get("generation")}]

    def prompt_template_id(self, recipe) -> str:
        return EVOL_TEMPLATE_ID
