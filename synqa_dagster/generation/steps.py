"""Custom distilabel steps (module level, so distilabel can import them in its step processes).

No ``from __future__ import annotations`` here: distilabel reads the ``StepInput`` type hint at runtime.
"""


import hashlib
import re

from distilabel.steps import Step, StepInput, step
from distilabel.steps.tasks import EvolInstruct


@step(inputs=["instruction", "response_system_prompt"], outputs=["messages"])
def BuildResponseMessages(inputs: StepInput):
    """Build the chat messages that ask the teacher to answer a generated instruction.

    Input columns: ``instruction`` (the generated request), ``response_system_prompt`` (filled per seed).
    Output columns: ``messages`` (system + user turns) for ``ChatGeneration``.
    """
    for row in inputs:
        row["messages"] = [
            {"role": "system", "content": row["response_system_prompt"]},
            {"role": "user", "content": row["instruction"] or ""},
        ]
    yield inputs


class KeepFirstInstructions(Step):
    """Keep the first ``num_instructions`` usable instructions per row (small teachers ignore the count).

    ``SelfInstruct`` splits the completion into lines; small models add headings (``# Example``), list markers
    and one-word fragments. Those are not requests: lines that are markdown headings or have fewer than
    ``min_words`` words are skipped; numbering, bullets and wrapping quotes are stripped. When no line is
    usable, the first raw line is kept (possibly empty), so every seed still yields a row for the gates.

    Input/output column: ``instructions`` (list of str) from ``SelfInstruct``.

    Attributes:
        num_instructions: how many instructions to keep per row.
    """

    num_instructions: int = 2
    min_words: int = 3

    @property
    def inputs(self) -> list[str]:
        return ["instructions"]

    @property
    def outputs(self) -> list[str]:
        return ["instructions"]

    def process(self, inputs: StepInput):
        for row in inputs:
            raw = [i for i in row.get("instructions") or [] if i and i.strip()]
            kept = [c for c in (clean_instruction(i) for i in raw) if len(c.split()) >= self.min_words]
            # Never emit zero instructions for a seed: an empty expansion stalls distilabel's downstream steps,
            # and a bad line is the quality gate's call to make (it rejects it with a reason), not ours.
            row["instructions"] = kept[: self.num_instructions] or [raw[0].strip() if raw else ""]
        yield inputs


_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|[a-z][.)])\s+")


def clean_instruction(line: str | None) -> str:
    """Strip list markers and wrapping quotes from one generated instruction line; headings become empty."""
    text = (line or "").strip()
    if text.startswith("#"):
        return ""
    text = _LIST_MARKER.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class SeededEvolInstruct(EvolInstruct):
    """``EvolInstruct`` whose mutation choice is reproducible.

    distilabel 1.5.3 documents a ``seed`` for picking the mutation but never applies it (the choice comes from
    numpy's unseeded global RNG), so the same batch could evolve differently on every run. Here the mutation is
    a stable hash of ``(seed, instruction)``: independent of call order, process and platform.

    Inputs/outputs/attributes: as ``distilabel.steps.tasks.EvolInstruct``.
    """

    def _apply_random_mutation(self, instruction: str) -> str:
        names = list(self.mutation_templates_names)
        digest = hashlib.sha256(f"{self.seed}\x1f{instruction}".encode("utf-8")).digest()
        mutation = names[int.from_bytes(digest[:8], "big") % len(names)]
        return self.mutation_templates[mutation].replace("<PROMPT>", instruction)
