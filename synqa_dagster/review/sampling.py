"""How many rows of a batch humans review, which ones, and when a slice fails: acceptance sampling per slice.

A batch of accepted rows is cut into slices (one slice = one combination of the ``strata`` columns, e.g.
``intent`` x ``locale``); each slice is judged as its own lot. The configured risk tier picks the plan:

* ``iso2859``: ISO 2859-1:1999 single sampling for normal inspection. The lot size and the inspection level give
  a sample size code letter (**Table 1**, "Sample size code letters"); the code letter and the AQL give the sample
  size ``n``, the acceptance number ``Ac`` and the rejection number ``Re`` (**Table 2-A**, "Single sampling plans
  for normal inspection (Master table)"). Where Table 2-A shows an arrow, the first plan below (↓) or above (↑) the
  arrow in the same AQL column is used, *with that plan's sample size*. When ``n`` >= the lot size every row is
  inspected (the table's note "If sample size equals or exceeds lot size, carry out 100 % inspection") and
  ``Ac`` / ``Re`` stay those of the plan.
* ``zero_acceptance``: ``c = 0`` and ``n = ceil(ln(1 - C) / ln(1 - p))`` (the "success-run" bound: if the defect
  rate were above ``p``, ``n`` clean rows in a row would happen with probability ``(1 - p)^n <= 1 - C``), capped
  at the lot size. The finite-lot (hypergeometric) bound on the number of defective rows is reported too.

Table sources. ISO 2859-1:1999, *Sampling procedures for inspection by attributes -- Part 1: Sampling schemes
indexed by acceptance quality limit (AQL) for lot-by-lot inspection*, Table 1 and Table 2-A. The same numbers are
Tables I and II-A of ANSI/ASQ Z1.4-2008 and of MIL-STD-105E (1989, public domain, the tables' origin). The values
below were cross-checked against three independent renderings: a transcription of MIL-STD-105E Table II-A (the Ac/Re
sequence of every code-letter row), the level-II extract of MIL-STD-105E Table II-A in the NIBS "AC-TABLE"
(http://www.nibs.org/FMOC/DPW_AC/AC-TABLE.ASC, AQL 0.65-15 with arrows), and the plans quoted from ISO 2859-1:1999
in Jenkins, Peck & Fernando (PLOS, 2023, figshare 22583454); the tests re-check cells from each of them.

Table 2-A is diagonal: reading a code-letter row left to right the cells are ↓ ... ↓, 0/1, ↑, ↓, 1/2, 2/3, 3/4,
5/6, 7/8, 10/11, 14/15, 21/22, then ↑ ... ↑ (rows A-E continue with 30/31 and 44/45 in the high AQL columns).
Two arrows of the printed table point off the table (A at AQL 10 points up, R at AQL 0.015 points down); there the
nearest plan in the other direction of the same column is used (R at 0.015 -> P, n = 800, Ac 0, as the AQL
Inspector's Rule instructions state; A at 10 -> C, n = 5, Ac 1).

Tightened and reduced inspection (the switching rules across batches live in :mod:`.switching`):

* **Table 2-B** ("Single sampling plans for tightened inspection (Master table)") is encoded like Table 2-A, arrows
  included. Its rows read ↓ ... ↓, 0/1, ↓, ↓, 1/2, 2/3, 3/4, 5/6, 8/9, 12/13, 18/19, then ↑ ... ↑ (rows B-E continue
  with 27/28 and 41/42; row A has no 0/1 cell: it reads ↓ up to AQL 25, then 1/2 ... 27/28 from AQL 40). The
  tightened table adds code letter **S** (n = 3150), whose only plan is 1/2 at AQL 0.025; R at AQL 0.015 points
  down off the table's plans, so (as for Table 2-A) the nearest plan the other way is used (Q, n = 1250, Ac 0).
  Tightened inspection keeps the normal sample size of a code letter and lowers the acceptance number (e.g. code J,
  AQL 1.0: normal n = 80, Ac 2; tightened n = 80, Ac 1, Re 2).
* **Table 2-C** (reduced inspection): sample sizes A-C 2, D 3, E 5, F 8, G 13, H 20, J 32, K 50, L 80, M 125,
  N 200, P 315, Q 500, R 800 (2/5 of normal from F on). **Caveat, stated wherever a reduced plan is used:** the
  1999 edition of ISO 2859-1 replaced the limit numbers by the switching score and, as far as could be
  established here, also revised the reduced plans so that Re = Ac + 1 (no "accept the lot but reinstate normal
  inspection" zone between Ac and Re); its Table 2-C cells could not be checked against a copy of the
  standard. What is encoded is the public-domain MIL-STD-105E Table II-C (= ISO 2859-1:1989 Table 2-C = ANSI/ASQC
  Z1.4-1993 Table II-C), whose reduced plans have Re > Ac + 1 (0/2, 1/3, 1/4, 2/5, 3/6, 5/8, 7/10, 10/13, 14/17,
  21/24; row A reads 1/2, 2/3, ... 30/31 from AQL 25 and row B 0/2, 1/3, 2/4, 3/5, 5/6, 7/8 ... 30/31 from AQL
  15, as in that rendering; every row ends in 30/31 at AQL 1000). With such a plan a
  defect count d with Ac < d < Re accepts the lot and reinstates normal inspection (MIL-STD-105E 10.1.4 / ISO
  2859-1:1989), which :func:`slice_verdicts` and :mod:`.switching` implement. Reduced inspection is off unless the
  config's ``allow_reduced`` is set.

Sources of Tables 2-B and 2-C: the tables as transcribed in the AQLSchemes R package (J. Lawson, "MIL-STD-105E
ANSI/ASQ Z1.4", resolved per code letter and AQL column), which agrees cell for cell with the Table 2-A encoded
here; the arrow layout below was reconstructed so that following its arrows gives exactly those resolved plans
(checked on every cell while encoding; the tests re-check each row's plan sequence and the resolved plans of
the AQL 0.65-10 columns). Where rows share a sample size (2-C rows A-C all have n = 2) the arrow printed in
a cell cannot be told from the resolved table; the plan it leads to is the same either way.

Zero-acceptance plans have no table. Their documented analogues: tightened = the same confidence for a bounded
defect rate half as large (``tightened_max_defect_rate``, default ``max_defect_rate / 2``: about twice the rows;
a c = 0 plan cannot lower c, so it bounds a smaller rate instead); reduced = the same bounded rate at a lower
confidence (``reduced_confidence``, default ``1 - (1 - confidence) ** 0.4``, which gives 2/5 of the rows, the
ratio of Table 2-C to Table 2-A sample sizes).

What is *not* implemented: double / multiple sampling.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

InspectionLevel = Literal["S-1", "S-2", "S-3", "S-4", "I", "II", "III"]
INSPECTION_LEVELS: tuple[str, ...] = ("S-1", "S-2", "S-3", "S-4", "I", "II", "III")

MISSING_STRATUM = "(none)"
"""Stratum value used for NaN / None cells (so they form their own slice instead of being dropped)."""
ALL_ROWS_KEY = "(all)"
"""Slice key when ``strata`` is empty: the whole batch is one lot."""
SLICE_KEY_SEPARATOR = "/"

# ------------------------------------------------------------------------------------------------ ISO tables

CODE_LETTERS = "ABCDEFGHJKLMNPQR"
"""Sample size code letters of Table 1 / Table 2-A (I and O are not used; S only exists for tightened inspection)."""

SAMPLE_SIZES: dict[str, int] = dict(zip(CODE_LETTERS, (2, 3, 5, 8, 13, 20, 32, 50, 80, 125, 200, 315, 500, 800,
                                                       1250, 2000)))
"""Table 2-A: sample size of each code letter."""

AQL_VALUES: tuple[float, ...] = (0.010, 0.015, 0.025, 0.040, 0.065, 0.10, 0.15, 0.25, 0.40, 0.65, 1.0, 1.5, 2.5,
                                 4.0, 6.5, 10.0, 15.0, 25.0, 40.0, 65.0, 100.0, 150.0, 250.0, 400.0, 650.0, 1000.0)
"""Table 2-A: the standard (preferred) AQL columns, in percent nonconforming / nonconformities per 100 items.
Above 10 they are only meaningful as nonconformities per 100 items."""

_AQL_LABELS = ("0.010", "0.015", "0.025", "0.040", "0.065", "0.10", "0.15", "0.25", "0.40", "0.65", "1.0", "1.5",
               "2.5", "4.0", "6.5", "10", "15", "25", "40", "65", "100", "150", "250", "400", "650", "1000")

# Table 1: (upper bound of the lot size range or None for "500 001 and over", letters for S-1 S-2 S-3 S-4 I II III)
TABLE_1: tuple[tuple[int | None, str], ...] = (
    (8, "AAAAAAB"),
    (15, "AAAAABC"),
    (25, "AABBBCD"),
    (50, "ABBCCDE"),
    (90, "BBCCCEF"),
    (150, "BBCDDFG"),
    (280, "BCDEEGH"),
    (500, "BCDEFHJ"),
    (1200, "CCEFGJK"),
    (3200, "CDEGHKL"),
    (10000, "CDFGJLM"),
    (35000, "CDFHKMN"),
    (150000, "DEGJLNP"),
    (500000, "DEGJMPQ"),
    (None, "DEHKNQR"),
)
"""ISO 2859-1 Table 1: lot size ranges (2-8, 9-15, ... 500 001 and over) x levels S-1, S-2, S-3, S-4, I, II, III."""

# Table 2-A, one string per code letter; one cell per AQL column of AQL_VALUES: "v" = use the first plan below the
# arrow, "^" = use the first plan above the arrow, "Ac/Re" = a plan.
_TABLE_2A_ROWS: tuple[tuple[str, str], ...] = (
    ("A", "v v v v v v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31"),
    ("B", "v v v v v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31 44/45"),
    ("C", "v v v v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31 44/45 ^"),
    ("D", "v v v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31 44/45 ^ ^"),
    ("E", "v v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31 44/45 ^ ^ ^"),
    ("F", "v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^"),
    ("G", "v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^"),
    ("H", "v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^"),
    ("J", "v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("K", "v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("L", "v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("M", "v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("N", "v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("P", "v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("Q", "0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("R", "^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
)


def _parse_cell(text: str) -> tuple[int, int] | str:
    if text in ("v", "^", "-"):
        return text
    ac, re = text.split("/")
    return int(ac), int(re)


def _parse_table(rows: tuple[tuple[str, str], ...]) -> dict[str, tuple[tuple[int, int] | str, ...]]:
    table = {letter: tuple(_parse_cell(cell) for cell in cells.split()) for letter, cells in rows}
    if any(len(cells) != len(AQL_VALUES) for cells in table.values()):  # pragma: no cover - guards the data
        raise RuntimeError("every table row must have one cell per AQL column")
    return table


TABLE_2A: dict[str, tuple[tuple[int, int] | str, ...]] = _parse_table(_TABLE_2A_ROWS)
"""ISO 2859-1 Table 2-A: code letter -> one cell per AQL column: ``(Ac, Re)``, ``"v"`` (↓) or ``"^"`` (↑)."""

TIGHTENED_CODE_LETTERS = CODE_LETTERS + "S"
"""Code letters of Table 2-B: those of Table 2-A plus S (n = 3150), reached only by the arrows of rows Q and R."""

SAMPLE_SIZES_2B: dict[str, int] = {**SAMPLE_SIZES, "S": 3150}
"""Table 2-B: sample size of each code letter (tightened inspection keeps the normal sample sizes, plus S)."""

# Table 2-B (tightened inspection, single sampling), same notation as Table 2-A; "-" = no entry (row S only).
_TABLE_2B_ROWS: tuple[tuple[str, str], ...] = (
    ("A", "v v v v v v v v v v v v v v v v v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28"),
    ("B", "v v v v v v v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28 41/42"),
    ("C", "v v v v v v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28 41/42 ^"),
    ("D", "v v v v v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28 41/42 ^ ^"),
    ("E", "v v v v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28 41/42 ^ ^ ^"),
    ("F", "v v v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^"),
    ("G", "v v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^"),
    ("H", "v v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^"),
    ("J", "v v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("K", "v v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("L", "v v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("M", "v v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("N", "v v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("P", "v v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("Q", "v 0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("R", "0/1 v v 1/2 2/3 3/4 5/6 8/9 12/13 18/19 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("S", "- - 1/2 - - - - - - - - - - - - - - - - - - - - - - -"),
)

TABLE_2B: dict[str, tuple[tuple[int, int] | str, ...]] = _parse_table(_TABLE_2B_ROWS)
"""ISO 2859-1 Table 2-B (tightened inspection): code letter (A ... S) -> one cell per AQL column."""

SAMPLE_SIZES_2C: dict[str, int] = dict(zip(CODE_LETTERS, (2, 2, 2, 3, 5, 8, 13, 20, 32, 50, 80, 125, 200, 315,
                                                          500, 800)))
"""Table 2-C: sample size of each code letter under reduced inspection."""

# Table 2-C (reduced inspection, single sampling) as MIL-STD-105E Table II-C / ISO 2859-1:1989 (see the module
# docstring: the 1999 revision of the reduced plans is not encoded). Re may exceed Ac + 1.
_TABLE_2C_ROWS: tuple[tuple[str, str], ...] = (
    ("A", "v v v v v v v v v v v v v v 0/1 ^ v 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31"),
    ("B", "v v v v v v v v v v v v v 0/1 ^ v 0/2 1/3 2/4 3/5 5/6 7/8 10/11 14/15 21/22 30/31"),
    ("C", "v v v v v v v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 14/17 21/24 ^"),
    ("D", "v v v v v v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 14/17 21/24 ^ ^"),
    ("E", "v v v v v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 14/17 21/24 ^ ^ ^"),
    ("F", "v v v v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^"),
    ("G", "v v v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^"),
    ("H", "v v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^"),
    ("J", "v v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("K", "v v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("L", "v v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("M", "v v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("N", "v v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("P", "v 0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("Q", "0/1 ^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
    ("R", "^ v 0/2 1/3 1/4 2/5 3/6 5/8 7/10 10/13 ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^"),
)

TABLE_2C: dict[str, tuple[tuple[int, int] | str, ...]] = _parse_table(_TABLE_2C_ROWS)
"""Table 2-C (reduced inspection, MIL-STD-105E Table II-C layout): code letter -> one cell per AQL column."""

SEVERITIES: tuple[str, ...] = ("normal", "tightened", "reduced")
"""Inspection severities that have plans (a discontinued slice is sampled under tightened inspection)."""

_TABLES = {"normal": ("2-A", TABLE_2A, CODE_LETTERS, SAMPLE_SIZES),
           "tightened": ("2-B", TABLE_2B, TIGHTENED_CODE_LETTERS, SAMPLE_SIZES_2B),
           "reduced": ("2-C", TABLE_2C, CODE_LETTERS, SAMPLE_SIZES_2C)}


def aql_index(aql: float) -> int:
    """Column of ``aql`` in Table 2-A.

    Raises:
        ValueError: ``aql`` is not one of the standard values; the message lists them.
    """
    for index, value in enumerate(AQL_VALUES):
        if math.isclose(float(aql), value, rel_tol=1e-9, abs_tol=1e-12):
            return index
    raise ValueError(f"aql {aql!r} is not a standard AQL of ISO 2859-1 Table 2-A; allowed values: "
                     f"{', '.join(_AQL_LABELS)}")


def code_letter(lot_size: int, level: str) -> str:
    """ISO 2859-1 Table 1: the sample size code letter of a lot.

    Args:
        lot_size: number of items in the lot (>= 1; a lot of 1 uses the 2-8 range).
        level: inspection level, one of S-1, S-2, S-3, S-4, I, II, III.

    Returns:
        The code letter ("A" ... "R").

    Raises:
        ValueError: lot_size < 1 or an unknown level.
    """
    if level not in INSPECTION_LEVELS:
        raise ValueError(f"inspection_level {level!r} is not one of {', '.join(INSPECTION_LEVELS)}")
    lot_size = _positive_int(lot_size, "lot_size")
    column = INSPECTION_LEVELS.index(level)
    for upper, letters in TABLE_1:
        if upper is None or lot_size <= upper:
            return letters[column]
    raise AssertionError("Table 1 ends with an open range")  # pragma: no cover


def _severity(severity: str) -> str:
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    return severity


def table_plan(letter: str, aql: float, severity: str = "normal") -> tuple[str, int, int]:
    """The plan of Table 2-A (normal), 2-B (tightened) or 2-C (reduced) for a code letter and an AQL.

    Arrows are followed to the first plan below (↓) or above (↑) in the same AQL column, whose code letter (and
    sample size) is then used; an arrow that points off the table's plans uses the nearest plan the other way.

    Args:
        letter: the code letter from Table 1 ("A" ... "R"; Table 2-B also has "S").
        aql: a standard AQL value (see :data:`AQL_VALUES`).
        severity: "normal", "tightened" or "reduced".

    Returns:
        ``(plan_letter, Ac, Re)``; the sample size is ``SAMPLE_SIZES`` / ``SAMPLE_SIZES_2B`` / ``SAMPLE_SIZES_2C``
        of ``plan_letter``.
    """
    name, table, letters, _ = _TABLES[_severity(severity)]
    if letter not in table:
        raise ValueError(f"code letter {letter!r} is not one of {', '.join(letters)} (Table {name})")
    column = aql_index(aql)
    row = letters.index(letter)
    cell = table[letter][column]
    if not isinstance(cell, str):
        return letter, cell[0], cell[1]
    step = -1 if cell == "^" else 1
    for direction in (step, -step):  # the printed arrow first; off the table, the nearest plan the other way
        index = row + direction
        while 0 <= index < len(letters):
            found = table[letters[index]][column]
            if not isinstance(found, str):
                return letters[index], found[0], found[1]
            index += direction
    raise AssertionError(f"Table {name} column {aql} has no plan")  # pragma: no cover


def table_2a_plan(letter: str, aql: float) -> tuple[str, int, int]:
    """ISO 2859-1 Table 2-A: the plan for a code letter and an AQL, following the arrows.

    Args:
        letter: the code letter from Table 1.
        aql: a standard AQL value (see :data:`AQL_VALUES`).

    Returns:
        ``(plan_letter, Ac, Re)``: the code letter whose plan is used (differs from ``letter`` when the cell is an
        arrow; the sample size is ``SAMPLE_SIZES[plan_letter]``), the acceptance and the rejection number.
    """
    return table_plan(letter, aql, "normal")


def table_2b_plan(letter: str, aql: float) -> tuple[str, int, int]:
    """ISO 2859-1 Table 2-B (tightened inspection): ``(plan_letter, Ac, Re)``, sample size
    ``SAMPLE_SIZES_2B[plan_letter]`` (see :func:`table_plan`)."""
    return table_plan(letter, aql, "tightened")


def table_2c_plan(letter: str, aql: float) -> tuple[str, int, int]:
    """Table 2-C (reduced inspection, MIL-STD-105E Table II-C layout; see the module docstring):
    ``(plan_letter, Ac, Re)``, sample size ``SAMPLE_SIZES_2C[plan_letter]``; Re may exceed Ac + 1."""
    return table_plan(letter, aql, "reduced")


def tighter_acceptance_number(plan_letter: str, aql: float) -> int | None:
    """Ac of the Table 2-A plan of ``plan_letter`` one AQL column tighter (the next smaller AQL).

    The ISO 2859-1:1999 switching score (9.3.3.2 a) 1)) adds 3 for a lot accepted under a normal plan with Ac >= 2
    only if it "would have been accepted if the AQL had been one step tighter": with the same code letter, at
    most this many defects. For every Table 2-A plan with Ac >= 2 the cell to its left in the same row is a plan
    (the row reads ... 1/2, 2/3, 3/4, 5/6, 7/8, 10/11, 14/15, 21/22, 30/31, 44/45), so this is the previous
    acceptance number of that sequence. Returns None where that cell is an arrow or there is no tighter column
    (Ac 0 or 1, where the score uses the +2 rule instead).
    """
    column = aql_index(aql)
    if plan_letter not in TABLE_2A or column == 0:
        return None
    cell = TABLE_2A[plan_letter][column - 1]
    return None if isinstance(cell, str) else cell[0]


# ------------------------------------------------------------------------------------------ operating curves


def acceptance_probability(sample_size: int, acceptance_number: int, defect_rate: float) -> float:
    """P(at most ``acceptance_number`` defects in ``sample_size`` draws) under a binomial model (an infinite lot
    or a process with defect rate ``defect_rate``): the plan's operating characteristic at that rate."""
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1]; got {defect_rate}")
    if defect_rate == 0.0:
        return 1.0
    if defect_rate == 1.0:
        return 1.0 if acceptance_number >= sample_size else 0.0
    log_p, log_q = math.log(defect_rate), math.log1p(-defect_rate)
    total = 0.0
    for k in range(0, min(acceptance_number, sample_size) + 1):
        log_term = (math.lgamma(sample_size + 1) - math.lgamma(k + 1) - math.lgamma(sample_size - k + 1)
                    + k * log_p + (sample_size - k) * log_q)
        total += math.exp(log_term)
    return min(total, 1.0)


def limiting_quality(sample_size: int, acceptance_number: int, consumer_risk: float = 0.10) -> float:
    """The defect rate accepted with probability ``consumer_risk`` (binomial LQ, e.g. LQ10): lots worse than this
    are rejected with probability >= 1 - consumer_risk. Solved by bisection to 1e-9."""
    if not 0.0 < consumer_risk < 1.0:
        raise ValueError(f"consumer_risk must be in (0, 1); got {consumer_risk}")
    if acceptance_number >= sample_size:
        return 1.0
    low, high = 0.0, 1.0
    while high - low > 1e-9:
        mid = (low + high) / 2
        if acceptance_probability(sample_size, acceptance_number, mid) > consumer_risk:
            low = mid
        else:
            high = mid
    return high


OC_DEFECT_RATES: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20)
"""Defect rates at which the dataset card tabulates each plan's operating characteristic (0.5% ... 20%)."""


def lot_acceptance_probability(sample_size: int, acceptance_number: int, rejection_number: int,
                               defect_rate: float) -> float:
    """P(the lot is accepted) under a plan (binomial, like :func:`acceptance_probability`).

    A lot is accepted with fewer than ``rejection_number`` defects in the sample: with ``Re = Ac + 1`` (Tables
    2-A, 2-B and zero-acceptance plans) that is :func:`acceptance_probability` at ``Ac``; a reduced plan with
    ``Re > Ac + 1`` (Table 2-C) also accepts the lot for ``Ac < d < Re`` (and reinstates normal inspection), so
    its lot acceptance is at ``Re - 1``.
    """
    if rejection_number <= acceptance_number:
        raise ValueError(f"rejection_number ({rejection_number}) must exceed acceptance_number ({acceptance_number})")
    return acceptance_probability(sample_size, rejection_number - 1, defect_rate)


def operating_characteristic(sample_size: int, acceptance_number: int, rejection_number: int | None = None,
                             rates: tuple[float, ...] = OC_DEFECT_RATES) -> dict[float, float]:
    """The plan's P(accept the lot) at each of ``rates`` (binomial; see :func:`lot_acceptance_probability`)."""
    re = acceptance_number + 1 if rejection_number is None else rejection_number
    return {rate: lot_acceptance_probability(sample_size, acceptance_number, re, rate) for rate in rates}


def hypergeometric_defect_bound(lot_size: int, sample_size: int, confidence: float) -> int:
    """Upper confidence bound on the number of defective items in a finite lot after 0 defects in a sample.

    The largest ``D`` for which drawing ``sample_size`` items without replacement from a lot of ``lot_size``
    holding ``D`` defectives still shows no defect with probability > 1 - ``confidence``; every larger ``D`` is
    ruled out at that confidence. 100 % inspection gives 0.
    """
    lot_size = _positive_int(lot_size, "lot_size")
    if not 0 < sample_size <= lot_size:
        raise ValueError(f"sample_size must be in 1..lot_size ({lot_size}); got {sample_size}")
    alpha = 1.0 - confidence
    bound, p0 = 0, 1.0  # p0 = P(no defect | D defectives) = C(N-D, n) / C(N, n)
    for defects in range(1, lot_size - sample_size + 1):
        p0 *= (lot_size - defects + 1 - sample_size) / (lot_size - defects + 1)
        if p0 <= alpha:
            break
        bound = defects
    return bound


# ------------------------------------------------------------------------------------------------ config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ZeroAcceptancePlan(_Strict):
    """Zero-acceptance (c = 0) plan: review ``n = ceil(ln(1-C)/ln(1-p))`` rows; any defect rejects the slice.

    Attributes:
        kind: "zero_acceptance" (the discriminator of :data:`SamplingPlan`).
        confidence: C in (0, 1): confidence that a slice passing with 0 defects has a defect rate <= p.
        max_defect_rate: p in (0, 1): the defect rate the plan bounds.
        tightened_max_defect_rate: p under tightened inspection (switching rules; default ``max_defect_rate / 2``).
        reduced_confidence: C under reduced inspection (default ``1 - (1 - confidence) ** 0.4``: 2/5 of the rows).
    """

    kind: Literal["zero_acceptance"] = "zero_acceptance"
    confidence: float = Field(0.90, gt=0.0, lt=1.0)
    max_defect_rate: float = Field(0.10, gt=0.0, lt=1.0)
    tightened_max_defect_rate: float | None = Field(None, gt=0.0, lt=1.0)
    reduced_confidence: float | None = Field(None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _analogues(self) -> ZeroAcceptancePlan:
        if self.tightened_max_defect_rate is not None and self.tightened_max_defect_rate > self.max_defect_rate:
            raise ValueError(f"tightened_max_defect_rate ({self.tightened_max_defect_rate}) must be at most "
                             f"max_defect_rate ({self.max_defect_rate}): tightened inspection bounds a smaller rate")
        if self.reduced_confidence is not None and self.reduced_confidence > self.confidence:
            raise ValueError(f"reduced_confidence ({self.reduced_confidence}) must be at most confidence "
                             f"({self.confidence}): reduced inspection reviews fewer rows")
        return self

    def parameters(self, severity: str = "normal") -> tuple[float, float]:
        """``(confidence, max_defect_rate)`` of the plan under ``severity``: normal as configured; tightened =
        same confidence, ``tightened_max_defect_rate`` (default half of ``max_defect_rate``); reduced = same rate,
        ``reduced_confidence`` (default ``1 - (1 - confidence) ** 0.4``: 2/5 of the rows, the Table 2-C : 2-A
        sample size ratio). The documented analogue of ISO 2859-1 tightened / reduced inspection for c = 0."""
        severity = _severity(severity)
        if severity == "tightened":
            rate = self.tightened_max_defect_rate
            return self.confidence, (self.max_defect_rate / 2 if rate is None else rate)
        if severity == "reduced":
            conf = self.reduced_confidence
            return (1.0 - (1.0 - self.confidence) ** 0.4 if conf is None else conf), self.max_defect_rate
        return self.confidence, self.max_defect_rate


class Iso2859Plan(_Strict):
    """ISO 2859-1 single sampling plan: normal inspection (Table 2-A); under the switching rules a slice may be on
    tightened (Table 2-B) or reduced (Table 2-C) inspection instead, with the same level and AQL.

    Attributes:
        kind: "iso2859" (the discriminator of :data:`SamplingPlan`).
        inspection_level: S-1, S-2, S-3, S-4, I, II (the usual one) or III (more discrimination, larger samples).
        aql: acceptance quality limit, one of the standard columns of Table 2-A (:data:`AQL_VALUES`), in percent.
    """

    kind: Literal["iso2859"] = "iso2859"
    inspection_level: InspectionLevel = "II"
    aql: float = 1.0

    @field_validator("aql")
    @classmethod
    def _standard_aql(cls, value: float) -> float:
        return AQL_VALUES[aql_index(value)]


SamplingPlan = Annotated[ZeroAcceptancePlan | Iso2859Plan, Field(discriminator="kind")]
"""One review tier's plan; the ``kind`` key picks the model."""


def _default_tiers() -> dict[str, ZeroAcceptancePlan | Iso2859Plan]:
    return {
        "low": ZeroAcceptancePlan(confidence=0.90, max_defect_rate=0.10),
        "medium": Iso2859Plan(inspection_level="II", aql=1.0),
        "high": Iso2859Plan(inspection_level="III", aql=0.4),
    }


class ReviewSamplingConfig(_Strict):
    """The ``review`` section of the gate config: which plan applies and how the batch is sliced.

    Attributes:
        risk_tier: key of ``tiers`` that applies to this dataset.
        strata: columns whose value combination defines a slice (each slice is its own lot); empty = one lot.
        tiers: tier name -> plan (:class:`ZeroAcceptancePlan` or :class:`Iso2859Plan`).
        seed: mixed into the row ranking; change it to draw a different (still reproducible) sample.
        switching: apply the ISO 2859-1:1999 clause 9 switching rules across batches, per slice
            (:mod:`synqa_dagster.review.switching`): tightened inspection (Table 2-B / the zero-acceptance
            analogue) after 2 of 5 or fewer consecutive lots are not accepted, normal again after 5 consecutive
            accepted lots, discontinuation after 5 lots not accepted on tightened inspection. False: every lot is
            judged under normal inspection, as an isolated lot.
        allow_reduced: the "responsible authority" condition of 9.3.3.1 c): reduced inspection (Table 2-C) is
            permitted once a slice's switching score reaches 30 and its production is steady. Off by default (see
            the Table 2-C caveat in the module docstring).
    """

    risk_tier: str = "medium"
    strata: list[str] = Field(default_factory=lambda: ["intent", "locale"])
    tiers: dict[str, SamplingPlan] = Field(default_factory=_default_tiers)
    seed: int = 0
    switching: bool = True
    allow_reduced: bool = False

    @model_validator(mode="after")
    def _check(self) -> ReviewSamplingConfig:
        if self.risk_tier not in self.tiers:
            raise ValueError(f"risk_tier {self.risk_tier!r} is not a key of tiers ({', '.join(sorted(self.tiers))})")
        if any(not isinstance(c, str) or not c.strip() for c in self.strata):
            raise ValueError("strata entries must be non-empty column names")
        duplicated = sorted({c for c in self.strata if self.strata.count(c) > 1})
        if duplicated:
            raise ValueError(f"strata lists a column more than once: {duplicated}")
        return self

    @property
    def plan(self) -> ZeroAcceptancePlan | Iso2859Plan:
        """The plan of the configured ``risk_tier``."""
        return self.tiers[self.risk_tier]


# ------------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class PlanDecision:
    """The sampling plan for one lot (slice).

    Attributes:
        kind: "iso2859" or "zero_acceptance".
        lot_size: items in the lot.
        sample_size: items to review (``n``; equals ``lot_size`` under 100 % inspection).
        acceptance_number: ``c`` / Ac: the lot is accepted with at most this many defects.
        rejection_number: Re: the lot is rejected once this many defects are found (Ac + 1, except reduced plans
            of Table 2-C, where Ac < d < Re accepts the lot and reinstates normal inspection).
        code_letter: ISO: the code letter whose plan is used (after following arrows); None for zero-acceptance.
        table_code_letter: ISO: the code letter Table 1 gives for the lot size (before arrows); else None.
        table_sample_size: the plan's own sample size before capping at the lot size.
        full_inspection: True when every item of the lot is reviewed.
        description: one plain-text paragraph: how the plan was derived and what it means.
        severity: "normal", "tightened" or "reduced": the inspection the plan is for.
        tighter_acceptance_number: normal ISO plans with Ac >= 2: the Ac one AQL step tighter (the switching
            score's test, :func:`tighter_acceptance_number`); else None.
    """

    kind: str
    lot_size: int
    sample_size: int
    acceptance_number: int
    rejection_number: int
    code_letter: str | None
    table_code_letter: str | None
    table_sample_size: int
    full_inspection: bool
    description: str
    severity: str = "normal"
    tighter_acceptance_number: int | None = None


_SEVERITY_TEXT = {"normal": "normal inspection", "tightened": "tightened inspection", "reduced": "reduced inspection"}


def iso2859_plan(lot_size: int, level: str, aql: float, severity: str = "normal") -> PlanDecision:
    """ISO 2859-1 single sampling plan for one lot under normal, tightened or reduced inspection.

    Args:
        lot_size: items in the lot (>= 1).
        level: inspection level (S-1 ... S-4, I, II, III).
        aql: a standard AQL (Table 2-A column), in percent.
        severity: "normal" (Table 2-A), "tightened" (Table 2-B) or "reduced" (Table 2-C; see the module docstring
            for which edition's reduced plans are encoded).

    Returns:
        A :class:`PlanDecision`; when the plan's sample size reaches the lot size every item is inspected and
        Ac / Re stay those of the plan.
    """
    lot_size = _positive_int(lot_size, "lot_size")
    aql = AQL_VALUES[aql_index(aql)]
    severity = _severity(severity)
    name, table, letters, sizes = _TABLES[severity]
    first = code_letter(lot_size, level)
    letter, ac, re = table_plan(first, aql, severity)
    n_table = sizes[letter]
    full = n_table >= lot_size
    n = lot_size if full else n_table
    label = _AQL_LABELS[aql_index(aql)]
    parts = [f"ISO 2859-1 single sampling, {_SEVERITY_TEXT[severity]}, level {level}, AQL {label}: lot of "
             f"{lot_size} -> code letter {first} (Table 1)"]
    if letter != first:
        printed = "down" if table[first][aql_index(aql)] == "v" else "up"
        went = "below" if letters.index(letter) > letters.index(first) else "above"
        parts.append(f"; Table {name} shows an arrow ({printed}) for {first} at AQL {label}, so the first plan "
                     f"{went} it is used: code letter {letter}")
        if (printed == "down") != (went == "below"):
            parts.append(" (the printed arrow points off the table; the nearest plan the other way is used)")
    parts.append(f"; n={n_table}, Ac={ac}, Re={re} (Table {name}).")
    if ac == 0 and re == 1:
        rule = "any defective row rejects the slice"
    elif re == ac + 1:
        rule = f"the slice is accepted with at most {ac} defective rows and rejected with {re} or more"
    else:
        rule = (f"the slice is accepted with at most {ac} defective rows and rejected with {re} or more; "
                f"{ac + 1 if re - 1 == ac + 1 else f'{ac + 1}-{re - 1}'} defective rows accept the slice but "
                f"reinstate normal inspection (a MIL-STD-105E Table II-C / ISO 2859-1:1989 reduced plan; the 1999 "
                f"revision of the reduced plans is not encoded)")
    if full:
        parts.append(f" n={n_table} >= lot size {lot_size}: 100% inspection of all {lot_size} rows with Ac={ac} "
                     f"kept from the plan; {rule}.")
    else:
        parts.append(f" Review {n} rows; {rule}.")
        if aql <= 10:
            p_acc = lot_acceptance_probability(n, ac, re, aql / 100)
            lq10 = limiting_quality(n, re - 1, 0.10)
            parts.append(f" A slice at exactly {label}% defective passes with probability {p_acc:.2f}; one at "
                         f"{lq10:.1%} defective passes only 10% of the time (LQ10, binomial).")
    tighter = tighter_acceptance_number(letter, aql) if severity == "normal" and ac >= 2 else None
    return PlanDecision("iso2859", lot_size, n, ac, re, letter, first, n_table, full, "".join(parts), severity,
                        tighter)


def zero_acceptance_sample_size(confidence: float, max_defect_rate: float) -> int:
    """``n = ceil(ln(1 - C) / ln(1 - p))``: the fewest rows such that 0 defects in ``n`` gives confidence ``C``
    that the defect rate is <= ``p`` (i.e. ``(1 - p)^n <= 1 - C``)."""
    if not 0 < confidence < 1 or not 0 < max_defect_rate < 1:
        raise ValueError(f"confidence and max_defect_rate must be in (0, 1); got {confidence}, {max_defect_rate}")
    n = max(1, math.ceil(math.log1p(-confidence) / math.log1p(-max_defect_rate) - 1e-9))
    while (1 - max_defect_rate) ** n > 1 - confidence + 1e-12:  # guard the tolerance above
        n += 1
    return n


def zero_acceptance_plan(lot_size: int, confidence: float, max_defect_rate: float,
                         severity: str = "normal") -> PlanDecision:
    """Zero-acceptance plan for one lot: ``c = 0``, ``n`` from :func:`zero_acceptance_sample_size` capped at the
    lot size. The description states the guarantee, including the finite-lot (hypergeometric) bound.
    ``severity`` only labels the plan: pass the tightened / reduced parameters
    (:meth:`ZeroAcceptancePlan.parameters`) for those."""
    lot_size = _positive_int(lot_size, "lot_size")
    severity = _severity(severity)
    n_table = zero_acceptance_sample_size(confidence, max_defect_rate)
    full = n_table >= lot_size
    n = lot_size if full else n_table
    analogue = {"normal": "", "tightened": " (tightened-inspection analogue: half the bounded defect rate)",
                "reduced": " (reduced-inspection analogue: lower confidence, 2/5 of the rows)"}[severity]
    text = (f"Zero-acceptance plan (c=0){analogue}, confidence {confidence:.0%}, max defect rate "
            f"{max_defect_rate:.1%}: n = ceil(ln(1-{confidence:g})/ln(1-{max_defect_rate:g})) = {n_table}.")
    if full:
        text += (f" n >= lot size {lot_size}: 100% inspection of all {lot_size} rows; any defective row rejects the "
                 f"slice, and 0 defects means no reviewed row of the slice is defective.")
    else:
        bound = hypergeometric_defect_bound(lot_size, n, confidence)
        text += (f" Review {n} of {lot_size} rows; any defective row rejects the slice. If 0 defects are found in "
                 f"{n}, then with confidence {confidence:.0%} the slice's defect rate is <= {max_defect_rate:.1%} "
                 f"(finite lot: at most {bound} of {lot_size} rows defective, hypergeometric).")
    return PlanDecision("zero_acceptance", lot_size, n, 0, 1, None, None, n_table, full, text, severity, None)


def plan_for(config: ReviewSamplingConfig, lot_size: int, severity: str = "normal") -> PlanDecision:
    """The plan of ``config.risk_tier`` for a lot of ``lot_size`` items under ``severity`` ("normal",
    "tightened" or "reduced"; a discontinued slice is sampled with "tightened")."""
    plan = config.plan
    if isinstance(plan, Iso2859Plan):
        return iso2859_plan(lot_size, plan.inspection_level, plan.aql, severity)
    confidence, rate = plan.parameters(severity)
    return zero_acceptance_plan(lot_size, confidence, rate, severity)


def guarantee_text(plan: ZeroAcceptancePlan | Iso2859Plan, switching: bool = False,
                   allow_reduced: bool = False) -> str:
    """One paragraph for a dataset card / README: what passing human review under ``plan`` guarantees and what
    it does not. ``switching`` / ``allow_reduced``: the config's switching options (what it says about
    tightened / reduced inspection across batches)."""
    common = (" Each slice (one combination of the strata values) is judged as its own lot; the sampled rows are "
              "drawn reproducibly from a hash of seed, batch and row id. The guarantee only covers what reviewers "
              "judge (their criteria and their errors) and says nothing about slices or defects they did not see.")
    if switching:
        reduced = (" Reduced inspection (fewer rows) was permitted once a slice's switching score reached 30."
                   if allow_reduced else " Reduced inspection was not permitted.")
        if isinstance(plan, ZeroAcceptancePlan):
            t_conf, t_rate = plan.parameters("tightened")
            r_conf, _ = plan.parameters("reduced")
            rules = (f" Across batches each slice follows the ISO 2859-1:1999 switching rules (clause 9) with the "
                     f"zero-acceptance analogues: tightened inspection bounds the rate at {t_rate:.1%} (confidence "
                     f"{t_conf:.0%}) after 2 of 5 or fewer consecutive lots were not accepted, until 5 consecutive "
                     f"lots are accepted; reduced inspection would state only {r_conf:.0%} confidence."
                     + reduced + " The plan each slice used is stated per slice (review programme).")
        else:
            rules = (" Across batches each slice follows the ISO 2859-1:1999 switching rules (clause 9): tightened "
                     "inspection (Table 2-B, lower acceptance numbers) after 2 of 5 or fewer consecutive lots were "
                     "not accepted, normal again after 5 consecutive accepted lots, inspection discontinued after 5 "
                     "lots not accepted on tightened inspection." + reduced
                     + " The plan each slice used is stated per slice (review programme).")
        switching_text = rules
    else:
        switching_text = (" The standard's switching rules (tightened / reduced inspection across batches) are "
                          "not applied: each batch is judged under normal inspection.")
    if isinstance(plan, ZeroAcceptancePlan):
        n = zero_acceptance_sample_size(plan.confidence, plan.max_defect_rate)
        return (f"Human review used a zero-acceptance plan: in every slice {n} rows (all rows of smaller slices) "
                f"were reviewed and a single defective row rejects the slice. For an accepted slice: with "
                f"{plan.confidence:.0%} confidence its defect rate is at most {plan.max_defect_rate:.1%} (0 defects in "
                f"{n} rows would happen with probability <= {1 - plan.confidence:.0%} if it were higher); smaller "
                f"slices were inspected in full. It does not show the defect rate is zero, nor bound it more tightly "
                f"than {plan.max_defect_rate:.1%}. These figures are for normal inspection."
                + switching_text + common)
    label = _AQL_LABELS[aql_index(plan.aql)]
    return (f"Human review used ISO 2859-1 single sampling plans (inspection level {plan.inspection_level}, AQL "
            f"{label}%): the sample size and the acceptance number of each slice come from Tables 1 and 2-A "
            f"(normal inspection) for the slice's size, and small slices are inspected in full. An AQL plan "
            f"protects the producer: a slice whose defect rate is at or below {label}% is accepted with high "
            f"probability. It does NOT bound the defect rate of an accepted slice at {label}%: slices several times "
            f"worse than the AQL can still pass (each slice's plan description gives the rate it passes only 10% of "
            f"the time)." + switching_text + common)


# ------------------------------------------------------------------------------------------------ sampling


@dataclass(frozen=True)
class SampleDraw:
    """A batch's review sample.

    Attributes:
        rows: the sampled rows (all input columns) plus ``slice_key`` and ``sample_position`` (0..N-1, the review
            order: ascending sampling hash, so slices are interleaved and any prefix is a random subsample).
        slices: one row per slice: slice_key, lot_size, sample_size, acceptance_number, rejection_number,
            code_letter, plan_kind, full_inspection, plan (the plan description), severity (the inspection the
            plan is for) and tighter_acceptance_number (see :class:`PlanDecision`; None where it does not apply).
        plan: JSON-serialisable summary: risk tier, plan parameters, strata, seed, batch, totals, ``sample_version``
            (sha256 over config, batch and row ids) and the guarantee paragraph.
    """

    rows: pd.DataFrame
    slices: pd.DataFrame
    plan: dict[str, Any] = field(default_factory=dict)


SLICE_FRAME_COLUMNS = ("slice_key", "lot_size", "sample_size", "acceptance_number", "rejection_number",
                       "code_letter", "plan_kind", "full_inspection", "plan", "severity", "tighter_acceptance_number")


def sampling_hash(seed: int, batch: str, row_id: str) -> str:
    """The ranking key of a row: sha256 (hex) of ``f"{seed}:{batch}:{row_id}"``; the lowest keys are sampled."""
    return hashlib.sha256(f"{seed}:{batch}:{row_id}".encode("utf-8")).hexdigest()


def slice_keys(rows: pd.DataFrame, strata: list[str]) -> pd.Series:
    """Slice key of every row: the strata values (NaN / None -> "(none)") joined with "/" in strata order.

    Raises:
        ValueError: a stratum column is missing (named), or two different value combinations give the same key.
    """
    missing = [c for c in strata if c not in rows.columns]
    if missing:
        raise ValueError(f"review.strata column {missing[0]!r} is not a column of the rows "
                         f"(columns: {', '.join(map(str, rows.columns))})")
    if not strata:
        return pd.Series([ALL_ROWS_KEY] * len(rows), index=rows.index, dtype=object)
    columns = [[_stratum_value(v) for v in rows[c].tolist()] for c in strata]
    combos = list(zip(*columns))
    keys = [SLICE_KEY_SEPARATOR.join(combo) for combo in combos]
    seen: dict[str, tuple[str, ...]] = {}
    for key, combo in zip(keys, combos):
        if seen.setdefault(key, combo) != combo:
            raise ValueError(f"strata values {seen[key]!r} and {combo!r} both give slice key {key!r}; "
                             f"a stratum value contains {SLICE_KEY_SEPARATOR!r}")
    return pd.Series(keys, index=rows.index, dtype=object)


def draw_sample(rows: pd.DataFrame, config: ReviewSamplingConfig, batch: str,
                severities: Mapping[str, str] | None = None) -> SampleDraw:
    """Draw the stratified review sample of one batch.

    Each slice is a lot: its plan comes from :func:`plan_for` for the slice's size and inspection severity, and its
    ``n`` rows are those with the smallest :func:`sampling_hash` -- the same rows for the same (batch, seed, row
    ids) whatever the input order, and a slice's sample does not depend on the other slices (a tightened slice's
    sample contains its normal one: the ranking is the same, only ``n`` differs).

    Args:
        rows: the batch; needs a unique ``row_id`` column and the ``config.strata`` columns.
        config: the review sampling config.
        batch: the batch (partition) key, mixed into the ranking.
        severities: slice key -> "normal" / "tightened" / "reduced" (the switching state entering this batch,
            :mod:`.switching`); slices not listed, or all when None, are under normal inspection.

    Returns:
        :class:`SampleDraw`.

    Raises:
        ValueError: missing ``row_id`` / stratum column, duplicate or missing row ids, reserved columns present.
    """
    if not isinstance(batch, str) or not batch:
        raise ValueError("batch must be a non-empty string")
    if "row_id" not in rows.columns:
        raise ValueError(f"rows have no 'row_id' column (columns: {', '.join(map(str, rows.columns))})")
    reserved = [c for c in ("slice_key", "sample_position") if c in rows.columns]
    if reserved:
        raise ValueError(f"rows already have column {reserved[0]!r}, which draw_sample adds")
    ids = _row_ids(rows)
    keys = slice_keys(rows, config.strata)
    ranks = [sampling_hash(config.seed, batch, row_id) for row_id in ids]
    frame = pd.DataFrame({"pos": range(len(rows)), "slice_key": keys.to_numpy(), "rank": ranks})

    slice_records, chosen = [], []
    severities = dict(severities or {})
    for key, group in frame.groupby("slice_key", sort=True):
        decision = plan_for(config, len(group), severities.get(str(key), "normal"))
        chosen.append(group.sort_values("rank", kind="stable").head(decision.sample_size))
        slice_records.append({"slice_key": key, "lot_size": decision.lot_size, "sample_size": decision.sample_size,
                              "acceptance_number": decision.acceptance_number,
                              "rejection_number": decision.rejection_number, "code_letter": decision.code_letter,
                              "plan_kind": decision.kind, "full_inspection": decision.full_inspection,
                              "plan": decision.description, "severity": decision.severity,
                              "tighter_acceptance_number": decision.tighter_acceptance_number})
    picked = pd.concat(chosen) if chosen else frame.iloc[0:0]
    picked = picked.sort_values(["rank"], kind="stable")
    sample = rows.iloc[picked["pos"].to_numpy()].copy()
    sample["slice_key"] = picked["slice_key"].to_numpy()
    sample["sample_position"] = range(len(sample))
    sample = sample.reset_index(drop=True)
    slices = pd.DataFrame.from_records(slice_records, columns=list(SLICE_FRAME_COLUMNS))
    slices["tighter_acceptance_number"] = slices["tighter_acceptance_number"].astype("Int64")
    plan = config.plan
    summary = {
        "risk_tier": config.risk_tier,
        "plan": plan.model_dump(),
        "standard": ("ISO 2859-1:1999 Table 1 and Table 2-A (single sampling, normal inspection)"
                     + ("; switching rules of clause 9 with Tables 2-B (tightened) and 2-C (reduced)"
                        if config.switching else "")
                     if isinstance(plan, Iso2859Plan) else "zero-acceptance (c=0) success-run plan"
                     + (" with tightened / reduced analogues under the ISO 2859-1 switching rules"
                        if config.switching else "")),
        "strata": list(config.strata),
        "seed": config.seed,
        "batch": batch,
        "rows_total": int(len(rows)),
        "sample_total": int(len(sample)),
        "slices": int(len(slices)),
        "full_inspection_slices": int(slices["full_inspection"].sum()) if len(slices) else 0,
        "sample_version": _sample_version(config, batch, ids),
        "guarantee": guarantee_text(plan, config.switching, config.allow_reduced),
        "severities": {k: v for k, v in sorted(severities.items()) if v != "normal"},
    }
    return SampleDraw(rows=sample, slices=slices, plan=summary)


# ------------------------------------------------------------------------------------------------ verdicts

VERDICT_COLUMNS = ("slice_key", "plan_kind", "lot_size", "sample_size", "acceptance_number", "rejection_number",
                   "reviewed", "defects", "complete", "rejected", "accepted", "reason", "severity", "limit_zone")


def slice_verdicts(slices: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """Per-slice outcome of (possibly partial) human review.

    Args:
        slices: ``SampleDraw.slices`` (or the store's copy): slice_key, lot_size, sample_size, acceptance_number,
            rejection_number and ``plan_kind`` (if absent, inferred from the ``plan`` text: zero-acceptance plans
            start with "Zero-acceptance"); ``severity`` when present (else "normal").
        decisions: one row per reviewed row: row_id, slice_key, verdict ("accept" / "reject"). May be empty.

    Returns:
        One row per slice (in ``slices`` order): slice_key, plan_kind, lot_size, sample_size, acceptance_number,
        rejection_number, reviewed, defects, complete (reviewed == sample_size), rejected (defects >=
        rejection_number, i.e. > acceptance_number for every plan with Re = Ac + 1: decided as soon as it happens,
        even before the review is complete), accepted (complete and not rejected), reason, e.g. "human review:
        slice refund_request/en-GB defect rate 4/50 > AQL plan 1/50", severity, and limit_zone (complete with
        Ac < defects < Re: only reduced plans of Table 2-C have such a zone; the lot is accepted and normal
        inspection is reinstated, MIL-STD-105E 10.1.4).

    Raises:
        ValueError: missing columns, unknown verdicts or slice keys, a row decided twice, or more decisions in a
            slice than its sample size (each message names the row or slice).
    """
    needed = ("slice_key", "sample_size", "acceptance_number", "rejection_number")
    missing = [c for c in needed if c not in slices.columns]
    if missing:
        raise ValueError(f"slices lack column {missing[0]!r}")
    counts = _decision_counts(decisions, set(slices["slice_key"].astype(str)))
    records = []
    for record in slices.to_dict(orient="records"):
        key = str(record["slice_key"])
        kind = _plan_kind(record)
        n, c, re = int(record["sample_size"]), int(record["acceptance_number"]), int(record["rejection_number"])
        severity = record.get("severity")
        severity = severity if isinstance(severity, str) and severity in SEVERITIES else "normal"
        reviewed, defects = counts.get(key, (0, 0))
        if reviewed > n:
            raise ValueError(f"slice {key!r}: {reviewed} decisions but the sample size is {n}")
        complete, rejected = reviewed == n, defects >= max(re, c + 1)
        limit_zone = complete and not rejected and defects > c
        label = "zero-acceptance plan" if kind == "zero_acceptance" else "AQL plan"
        if severity != "normal":
            label = f"{severity} {label}"
        if rejected:
            reason = f"human review: slice {key} defect rate {defects}/{n} > {label} {c}/{n}"
            if re > c + 1:
                reason += f" (rejection number {re})"
        elif limit_zone:
            reason = (f"human review: slice {key} defect rate {defects}/{n} between Ac {c} and Re {re} of the "
                      f"{label}: accepted, normal inspection reinstated")
        elif complete:
            reason = f"human review: slice {key} defect rate {defects}/{n} <= {label} {c}/{n}"
        else:
            reason = (f"human review: slice {key} pending, {reviewed}/{n} reviewed, {defects} defects so far "
                      f"({label} {c}/{n})")
        records.append({"slice_key": key, "plan_kind": kind, "lot_size": record.get("lot_size"), "sample_size": n,
                        "acceptance_number": c, "rejection_number": int(record["rejection_number"]),
                        "reviewed": reviewed, "defects": defects, "complete": complete, "rejected": rejected,
                        "accepted": complete and not rejected, "reason": reason, "severity": severity,
                        "limit_zone": limit_zone})
    return pd.DataFrame.from_records(records, columns=list(VERDICT_COLUMNS))


# ------------------------------------------------------------------------------------------------ helpers


def _positive_int(value: Any, name: str) -> int:
    if (isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value != int(value) or value < 1):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        result = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return isinstance(result, bool | np.bool_) and bool(result)


def _stratum_value(value: Any) -> str:
    return MISSING_STRATUM if _is_missing(value) else str(value)


def _row_ids(rows: pd.DataFrame) -> list[str]:
    ids = []
    for position, value in enumerate(rows["row_id"].tolist()):
        if _is_missing(value) or not str(value).strip():
            raise ValueError(f"rows position {position}: row_id is empty")
        ids.append(str(value))
    if len(set(ids)) != len(ids):
        seen, dupes = set(), []
        for row_id in ids:
            if row_id in seen:
                dupes.append(row_id)
            seen.add(row_id)
        raise ValueError(f"row_id is not unique: {sorted(set(dupes))[:5]}")
    return ids


def _sample_version(config: ReviewSamplingConfig, batch: str, ids: list[str]) -> str:
    payload = json.dumps({"config": config.model_dump(mode="json"), "batch": batch, "row_ids": sorted(ids)},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _plan_kind(record: dict) -> str:
    kind = record.get("plan_kind")
    if isinstance(kind, str) and kind in ("iso2859", "zero_acceptance"):
        return kind
    plan = record.get("plan")
    return "zero_acceptance" if isinstance(plan, str) and plan.startswith("Zero-acceptance") else "iso2859"


def _decision_counts(decisions: pd.DataFrame, known: set[str]) -> dict[str, tuple[int, int]]:
    if decisions is None or len(decisions) == 0:
        return {}
    missing = [c for c in ("row_id", "slice_key", "verdict") if c not in decisions.columns]
    if missing:
        raise ValueError(f"decisions lack column {missing[0]!r}")
    counts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for position, (row_id, key, verdict) in enumerate(
            zip(decisions["row_id"].tolist(), decisions["slice_key"].tolist(), decisions["verdict"].tolist())):
        where = f"decisions row {position} (row_id {row_id!r})"
        verdict = verdict.strip().lower() if isinstance(verdict, str) else verdict
        if verdict not in ("accept", "reject"):
            raise ValueError(f"{where}: verdict must be 'accept' or 'reject'; got {verdict!r}")
        if str(key) not in known:
            raise ValueError(f"{where}: slice_key {key!r} is not a slice of this sample")
        if str(row_id) in seen:
            raise ValueError(f"{where}: row decided more than once")
        seen.add(str(row_id))
        tally = counts.setdefault(str(key), [0, 0])
        tally[0] += 1
        tally[1] += verdict == "reject"
    return {key: (reviewed, defects) for key, (reviewed, defects) in counts.items()}
