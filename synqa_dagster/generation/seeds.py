"""Deterministic per-batch seed selection and the prompt inputs built from each seed."""

from __future__ import annotations

import re

import pandas as pd

from synqa_dagster.common import stable_int
from synqa_dagster.config import TEMPLATE_FIELDS, Recipe


def batch_seed(recipe: Recipe, batch: str) -> int:
    """The generator seed of one batch: the recipe seed mixed with the batch key."""
    return stable_int("batch-seed", recipe.generator.seed, batch, bits=31)


def select_seeds(seeds: pd.DataFrame, batch: str, n: int, salt: int) -> pd.DataFrame:
    """Pick ``n`` seeds for ``batch``: a stable pseudo-random order per batch, covering distinct intents first.

    The same corpus, batch and salt always give the same seeds in the same order; different batches rotate
    through the corpus so that, over many batches, every intent and locale is used.
    """
    keyed = seeds.assign(_key=[stable_int("seed-order", salt, batch, s) for s in seeds["seed_id"]])
    keyed = keyed.sort_values(["_key", "seed_id"], kind="stable")
    keyed["_rank_in_intent"] = keyed.groupby("intent").cumcount()
    chosen = keyed.sort_values(["_rank_in_intent", "_key", "seed_id"], kind="stable").head(n)
    return chosen.drop(columns=["_key", "_rank_in_intent"]).sort_values("seed_id").reset_index(drop=True)


_PLACEHOLDER = re.compile(r"\{(" + "|".join(TEMPLATE_FIELDS) + r")\}")


def fill_template(template: str, **values: object) -> str:
    """Replace the known ``{placeholders}`` (see ``TEMPLATE_FIELDS``); all other text, braces included, stays.

    Values are inserted as plain text in one pass, so a value that itself contains ``{seed_text}`` or format
    syntax is never expanded again.
    """
    return _PLACEHOLDER.sub(lambda m: "" if values.get(m.group(1)) is None else str(values[m.group(1)]), template)
