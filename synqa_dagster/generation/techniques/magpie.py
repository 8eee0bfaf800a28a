"""Magpie: the teacher writes the user turn itself from a pre-query template, steered by a per-seed system prompt.

Two registered techniques share the recipe section ``techniques.magpie`` (:class:`MagpieSpec`)::

    load_seeds -> magpie_single_turn   (Magpie, n_turns=1)
    load_seeds -> magpie_multi_turn    (Magpie, n_turns=N)
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from synqa_dagster.generation.techniques.base import BuildContext, Technique, TechniqueConfig, Turn

#: Id of the pre-query template Magpie uses for ChatML models (SmolLM2).
MAGPIE_PRE_QUERY_ID = "magpie.pre_query.chatml"


class MagpieSpec(TechniqueConfig):
    """Magpie: the model writes the user turn itself from a pre-query template (distilabel ``Magpie``)."""

    enabled: bool = True
    single_turn: bool = True
    multi_turn: bool = True
    n_turns: int = Field(2, ge=2, le=4, description="User turns in a multi-turn conversation.")
    system_template_id: str = "magpie.system.v1"

    def template_ids(self) -> set[str]:
        """The system template (always: every seed input carries the filled Magpie system prompt)."""
        return {self.system_template_id}


class _MagpieTechnique(Technique):
    """Shared parts of the Magpie techniques: the section, the system-prompt column and the template ids.

    Input columns: ``system_prompt`` (the recipe's Magpie system template filled per seed).

    Attributes:
        section: ``magpie`` (:class:`MagpieSpec`).
        uses_magpie: True (the LLM gets the Magpie pre-query template).
    """

    section = "magpie"
    config_model = MagpieSpec
    uses_magpie = True

    def input_columns(self, recipe) -> dict[str, str]:
        return {"system_prompt": self.spec(recipe).system_template_id}

    def prompt_template_id(self, recipe) -> str:
        return self.spec(recipe).system_template_id

    def response_template_id(self, recipe) -> str:
        return self.spec(recipe).system_template_id


class MagpieSingleTurnTechnique(_MagpieTechnique):
    """Magpie, one exchange: ``magpie.enabled and magpie.single_turn``.

    Input columns: ``system_prompt``.
    Output columns (leaf ``magpie_single_turn``): ``instruction``, ``response``.

    Attributes:
        name / leaf: ``magpie_single_turn``.
    """

    name = "magpie_single_turn"
    leaf = "magpie_single_turn"

    def enabled(self, recipe) -> bool:
        spec = self.spec(recipe)
        return spec.enabled and spec.single_turn

    def build(self, ctx: BuildContext) -> Any:
        from distilabel.steps.tasks import Magpie

        step = Magpie(name=self.leaf, llm=ctx.llm(self.leaf, magpie=True), n_turns=1)
        ctx.load >> step
        return step

    def conversation(self, record: dict[str, Any]) -> list[Turn]:
        return [{"role": "user", "content": record.get("instruction")}, {"role": "assistant", "content": record.get("response")}]


class MagpieMultiTurnTechnique(_MagpieTechnique):
    """Magpie, ``n_turns`` exchanges: ``magpie.enabled and magpie.multi_turn``.

    Input columns: ``system_prompt``.
    Output columns (leaf ``magpie_multi_turn``): ``conversation`` (system turn dropped from the row).

    Attributes:
        name / leaf: ``magpie_multi_turn``.
    """

    name = "magpie_multi_turn"
    leaf = "magpie_multi_turn"

    def enabled(self, recipe) -> bool:
        spec = self.spec(recipe)
        return spec.enabled and spec.multi_turn

    def build(self, ctx: BuildContext) -> Any:
        from distilabel.steps.tasks import Magpie

        step = Magpie(name=self.leaf, llm=ctx.llm(self.leaf, magpie=True), n_turns=self.spec(ctx.recipe).n_turns)
        ctx.load >> step
        return step

    def conversation(self, record: dict[str, Any]) -> list[Turn]:
        return [dict(role=m["role"], content=m["content"]) for m in record.get("conversation") or [] if m.get("role") != "system"]
