"""Self-Instruct: new user requests written from a seed, each answered by the teacher.

Branch::

    load_seeds -> self_instruct -> keep_first_instructions -> expand_instructions -> build_si_messages -> respond_self_instruct
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from synqa_dagster.generation.techniques.base import BuildContext, Technique, TechniqueConfig, Turn


class SelfInstructSpec(TechniqueConfig):
    """Self-Instruct: new user requests written from a seed (distilabel ``SelfInstruct``)."""

    enabled: bool = True
    num_instructions: int = Field(2, ge=1, le=10, description="Instructions requested per seed.")
    criteria_template_id: str = "self_instruct.criteria.v1"
    application_description: str = "A customer-support assistant for a consumer app and subscription."

    def template_ids(self) -> set[str]:
        """The criteria template, when the technique is enabled."""
        return {self.criteria_template_id} if self.enabled else set()


class SelfInstructTechnique(Technique):
    """Self-Instruct branch: ``SelfInstruct`` writes requests from the seed, ``ChatGeneration`` answers each one.

    Input columns: ``seed_text`` (as SelfInstruct's ``input``), ``response_system_prompt``.
    Output columns (leaf ``respond_self_instruct``): ``instruction``, ``generation``.

    Attributes:
        name / section: ``self_instruct`` (recipe section ``techniques.self_instruct``, :class:`SelfInstructSpec`).
        leaf: ``respond_self_instruct``.
    """

    name = "self_instruct"
    section = "self_instruct"
    config_model = SelfInstructSpec
    leaf = "respond_self_instruct"

    def build(self, ctx: BuildContext) -> Any:
        from distilabel.steps import ExpandColumns
        from distilabel.steps.tasks import ChatGeneration, SelfInstruct

        from synqa_dagster.generation.steps import BuildResponseMessages, KeepFirstInstructions

        si = self.spec(ctx.recipe)
        self_instruct = SelfInstruct(
            name="self_instruct",
            llm=ctx.llm("self_instruct"),
            num_instructions=si.num_instructions,
            criteria_for_query_generation=ctx.recipe.template(si.criteria_template_id),
            application_description=si.application_description,
            input_mappings={"input": "seed_text"},
        )
        keep = KeepFirstInstructions(name="keep_first_instructions", num_instructions=si.num_instructions)
        expand = ExpandColumns(name="expand_instructions", columns={"instructions": "instruction"})
        messages = BuildResponseMessages(name="build_si_messages")
        respond = ChatGeneration(name=self.leaf, llm=ctx.llm(self.leaf))
        ctx.load >> self_instruct >> keep >> expand >> messages >> respond
        return respond

    def conversation(self, record: dict[str, Any]) -> list[Turn]:
        return [{"role": "user", "content": record.get("instruction")}, {"role": "assistant", "content": record.get("generation")}]

    def prompt_template_id(self, recipe) -> str:
        return self.spec(recipe).criteria_template_id
