"""The contract every synthesis technique fulfils: a recipe section, a pipeline branch, leaf outputs, templates.

A technique is a small object (think a distilabel step or a datatrove block): it declares the recipe section it
reads (its pydantic config model), the columns it adds to every seed input, the distilabel steps it appends after
``load_seeds``, the leaf step whose records are its output, how a leaf record becomes a conversation, and the
template ids recorded on its rows. ``synqa_dagster.generation.pipeline`` only loops over the registry.

Import-light on purpose: ``synqa_dagster.config`` imports the config models from here, so nothing in this package
imports ``synqa_dagster.config`` (or distilabel) at module import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover - typing only, avoids the config <-> techniques import cycle
    from synqa_dagster.config import Recipe

#: One conversation turn: ``{"role": "user" | "assistant", "content": str}``.
Turn = dict[str, Any]


class TechniqueConfig(BaseModel):
    """Base of a technique's recipe section (``techniques.<section>``); strict like every recipe model.

    Inputs: the technique's mapping in the recipe YAML. Outputs: the validated section (hashed into the recipe).

    Attributes:
        enabled: whether the technique runs at all.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True

    def template_ids(self) -> set[str]:
        """Prompt-template ids this section needs to exist in ``prompt_templates`` (none by default)."""
        return set()


@dataclass(frozen=True)
class BuildContext:
    """What a technique's branch is given to add its steps to the distilabel ``Pipeline``.

    Inputs: built by ``build_pipeline`` once per batch. Outputs: none (read-only).

    Attributes:
        recipe: the validated recipe.
        seed: the batch seed (mix it with a step name for step-level seeds).
        load: the ``load_seeds`` step every branch starts from.
        llm: ``llm(step_name, magpie=False)`` -> a seeded distilabel LLM for that step.
    """

    recipe: Recipe
    seed: int
    load: Any
    llm: Callable[..., Any]


class Technique:
    """One synthesis technique: a branch of the generation pipeline and the rows its leaf produces.

    Subclass, set the class attributes, implement :meth:`build` and :meth:`conversation`, and register an
    instance in ``synqa_dagster.generation.techniques.TECHNIQUES``.

    Input columns: every seed input has ``seed_id``, ``intent``, ``locale``, ``seed_text``,
        ``response_system_prompt`` and the columns of :meth:`input_columns` of every registered technique.
    Output columns: the leaf step's records must carry ``seed_id``, ``intent``, ``locale`` and whatever
        :meth:`conversation` reads.

    Attributes:
        name: technique name written in the ``technique`` column of every row from the leaf.
        section: the field of ``recipe.techniques`` holding its config (techniques may share one section).
        config_model: the pydantic model of that section.
        leaf: name of the distilabel step whose output records become rows.
        uses_magpie: True when its LLM needs the Magpie pre-query template (a local tokenizer is built first).
    """

    name: ClassVar[str]
    section: ClassVar[str]
    config_model: ClassVar[type[TechniqueConfig]]
    leaf: ClassVar[str]
    uses_magpie: ClassVar[bool] = False

    def spec(self, recipe: Recipe) -> TechniqueConfig:
        """This technique's config section of ``recipe``."""
        return getattr(recipe.techniques, self.section)

    def enabled(self, recipe: Recipe) -> bool:
        """Whether the branch runs for ``recipe``."""
        return self.spec(recipe).enabled

    def input_columns(self, recipe: Recipe) -> dict[str, str]:
        """Extra per-seed input columns, as ``column -> prompt template id`` (filled per seed); none by default."""
        return {}

    def build(self, ctx: BuildContext) -> Any:
        """Append this technique's steps after ``ctx.load`` (inside the open ``Pipeline``); return the leaf step."""
        raise NotImplementedError

    def conversation(self, record: dict[str, Any]) -> list[Turn]:
        """The user/assistant turns of one leaf record (system turns dropped)."""
        raise NotImplementedError

    def prompt_template_id(self, recipe: Recipe) -> str:
        """Template id recorded as ``prompt_template_id`` on this technique's rows."""
        raise NotImplementedError

    def response_template_id(self, recipe: Recipe) -> str:
        """Template id recorded as ``response_template_id`` (default: the recipe's response system prompt)."""
        return recipe.response_template_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, leaf={self.leaf!r})"
