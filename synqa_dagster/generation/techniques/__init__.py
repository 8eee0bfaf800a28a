"""The registry of synthesis techniques, in pipeline-branch order.

Adding a technique: write one module here with its config model (a :class:`TechniqueConfig`) and a
:class:`Technique` subclass, add an instance to :data:`TECHNIQUES`, and (optionally, defaults apply) its section
under ``techniques:`` in the recipe. ``synqa_dagster.config.Techniques`` is built from this registry, and
``synqa_dagster.generation.pipeline`` builds branches, collects leaves and writes rows by looping over it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

from synqa_dagster.generation.techniques.base import BuildContext, Technique, TechniqueConfig, Turn
from synqa_dagster.generation.techniques.evol_instruct import EvolInstructSpec, EvolInstructTechnique
from synqa_dagster.generation.techniques.magpie import MagpieMultiTurnTechnique, MagpieSingleTurnTechnique, MagpieSpec
from synqa_dagster.generation.techniques.self_instruct import SelfInstructSpec, SelfInstructTechnique

#: Every technique, in the order its branch is added to the pipeline (and its leaf is read).
TECHNIQUES: tuple[Technique, ...] = (
    SelfInstructTechnique(),
    EvolInstructTechnique(),
    MagpieSingleTurnTechnique(),
    MagpieMultiTurnTechnique(),
)


def sections(techniques: tuple[Technique, ...] = TECHNIQUES) -> dict[str, type[TechniqueConfig]]:
    """``section -> config model`` in registry order (techniques sharing a section must share its model)."""
    out: dict[str, type[TechniqueConfig]] = {}
    for technique in techniques:
        known = out.setdefault(technique.section, technique.config_model)
        if known is not technique.config_model:
            raise TypeError(f"techniques.{technique.section}: {technique!r} uses {technique.config_model.__name__}, not {known.__name__}")
    return out


class TemplateIdsMixin:
    """Adds :meth:`template_ids` to every ``techniques:`` model built by :func:`techniques_model`."""

    def template_ids(self) -> set[str]:
        """Prompt-template ids the techniques need in ``prompt_templates`` (each section's ``template_ids()``)."""
        return set().union(*(section.template_ids() for _, section in self))  # type: ignore[attr-defined]


def techniques_model(
    techniques: tuple[Technique, ...] = TECHNIQUES,
    *,
    base: type[BaseModel] = BaseModel,
    name: str = "Techniques",
    doc: str | None = None,
    module: str | None = None,
) -> type[BaseModel]:
    """The pydantic model of the recipe's ``techniques:`` mapping: one defaulted field per section."""
    fields: dict[str, Any] = {section: (model, model()) for section, model in sections(techniques).items()}
    model = create_model(name, __base__=(base, TemplateIdsMixin), __module__=module or __name__, **fields)
    model.__doc__ = doc or f"The recipe's techniques: sections {', '.join(fields)}."
    return model


def by_leaf(techniques: tuple[Technique, ...] = TECHNIQUES) -> dict[str, Technique]:
    """``leaf step name -> technique`` (leaf names are unique)."""
    out: dict[str, Technique] = {}
    for technique in techniques:
        if technique.leaf in out:
            raise ValueError(f"leaf step {technique.leaf!r} registered twice")
        out[technique.leaf] = technique
    return out


__all__ = [
    "TECHNIQUES", "BuildContext", "Technique", "TechniqueConfig", "Turn", "by_leaf", "sections", "techniques_model",
    "SelfInstructSpec", "SelfInstructTechnique", "EvolInstructSpec", "EvolInstructTechnique", "MagpieSpec",
    "MagpieSingleTurnTechnique", "MagpieMultiTurnTechnique",
]
