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

What is *not* implemented: double / multiple sampling and the switching rules (tightened / reduced inspection).
Every slice of every batch is judged under normal inspection as an isolated lot.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
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
    if text in ("v", "^"):
        return text
    ac, re = text.split("/")
    return int(ac), int(re)


TABLE_2A: dict[str, tuple[tuple[int, int] | str, ...]] = {
    letter: tuple(_parse_cell(cell) for cell in cells.split()) for letter, cells in _TABLE_2A_ROWS
}
"""ISO 2859-1 Table 2-A: code letter -> one cell per AQL column: ``(Ac, Re)``, ``"v"`` (↓) or ``"^"`` (↑)."""

if any(len(cells) != len(AQL_VALUES) for cells in TABLE_2A.values()):  # pragma: no cover - guards the data above
    raise RuntimeError("Table 2-A rows must have one cell per AQL column")


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


def table_2a_plan(letter: str, aql: float) -> tuple[str, int, int]:
    """ISO 2859-1 Table 2-A: the plan for a code letter and an AQL, following the arrows.

    Args:
        letter: the code letter from Table 1.
        aql: a standard AQL value (see :data:`AQL_VALUES`).

    Returns:
        ``(plan_letter, Ac, Re)``: the code letter whose plan is used (differs from ``letter`` when the cell is an
        arrow; the sample size is ``SAMPLE_SIZES[plan_letter]``), the acceptance and the rejection number.
    """
    if letter not in TABLE_2A:
        raise ValueError(f"code letter {letter!r} is not one of {', '.join(CODE_LETTERS)}")
    column = aql_index(aql)
    row = CODE_LETTERS.index(letter)
    cell = TABLE_2A[letter][column]
    if not isinstance(cell, str):
        return letter, cell[0], cell[1]
    step = 1 if cell == "v" else -1
    for direction in (step, -step):  # the printed arrow first; off the table, the nearest plan the other way
        index = row + direction
        while 0 <= index < len(CODE_LETTERS):
            found = TABLE_2A[CODE_LETTERS[index]][column]
            if not isinstance(found, str):
                return CODE_LETTERS[index], found[0], found[1]
            index += direction
    raise AssertionError(f"Table 2-A column {aql} has no plan")  # pragma: no cover


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
    """

    kind: Literal["zero_acceptance"] = "zero_acceptance"
    confidence: float = Field(0.90, gt=0.0, lt=1.0)
    max_defect_rate: float = Field(0.10, gt=0.0, lt=1.0)


class Iso2859Plan(_Strict):
    """ISO 2859-1 single sampling plan, normal inspection.

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
    """

    risk_tier: str = "medium"
    strata: list[str] = Field(default_factory=lambda: ["intent", "locale"])
    tiers: dict[str, SamplingPlan] = Field(default_factory=_default_tiers)
    seed: int = 0

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
        rejection_number: Re = Ac + 1: the lot is rejected once this many defects are found.
        code_letter: ISO: the code letter whose plan is used (after following arrows); None for zero-acceptance.
        table_code_letter: ISO: the code letter Table 1 gives for the lot size (before arrows); else None.
        table_sample_size: the plan's own sample size before capping at the lot size.
        full_inspection: True when every item of the lot is reviewed.
        description: one plain-text paragraph: how the plan was derived and what it means.
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


def iso2859_plan(lot_size: int, level: str, aql: float) -> PlanDecision:
    """ISO 2859-1 single sampling plan, normal inspection, for one lot.

    Args:
        lot_size: items in the lot (>= 1).
        level: inspection level (S-1 ... S-4, I, II, III).
        aql: a standard AQL (Table 2-A column), in percent.

    Returns:
        A :class:`PlanDecision`; when the plan's sample size reaches the lot size every item is inspected and
        Ac / Re stay those of the plan.
    """
    lot_size = _positive_int(lot_size, "lot_size")
    aql = AQL_VALUES[aql_index(aql)]
    first = code_letter(lot_size, level)
    letter, ac, re = table_2a_plan(first, aql)
    n_table = SAMPLE_SIZES[letter]
    full = n_table >= lot_size
    n = lot_size if full else n_table
    label = _AQL_LABELS[aql_index(aql)]
    parts = [f"ISO 2859-1 single sampling, normal inspection, level {level}, AQL {label}: lot of {lot_size} -> "
             f"code letter {first} (Table 1)"]
    if letter != first:
        printed = "down" if TABLE_2A[first][aql_index(aql)] == "v" else "up"
        went = "below" if CODE_LETTERS.index(letter) > CODE_LETTERS.index(first) else "above"
        parts.append(f"; Table 2-A shows an arrow ({printed}) for {first} at AQL {label}, so the first plan {went} "
                     f"it is used: code letter {letter}")
        if (printed == "down") != (went == "below"):
            parts.append(" (the printed arrow points off the table; the nearest plan the other way is used)")
    parts.append(f"; n={n_table}, Ac={ac}, Re={re} (Table 2-A).")
    rule = ("any defective row rejects the slice" if ac == 0
            else f"the slice is accepted with at most {ac} defective rows and rejected with {re} or more")
    if full:
        parts.append(f" n={n_table} >= lot size {lot_size}: 100% inspection of all {lot_size} rows with Ac={ac} "
                     f"kept from the plan; {rule}.")
    else:
        parts.append(f" Review {n} rows; {rule}.")
        if aql <= 10:
            p_acc = acceptance_probability(n, ac, aql / 100)
            lq10 = limiting_quality(n, ac, 0.10)
            parts.append(f" A slice at exactly {label}% defective passes with probability {p_acc:.2f}; one at "
                         f"{lq10:.1%} defective passes only 10% of the time (LQ10, binomial).")
    return PlanDecision("iso2859", lot_size, n, ac, re, letter, first, n_table, full, "".join(parts))


def zero_acceptance_sample_size(confidence: float, max_defect_rate: float) -> int:
    """``n = ceil(ln(1 - C) / ln(1 - p))``: the fewest rows such that 0 defects in ``n`` gives confidence ``C``
    that the defect rate is <= ``p`` (i.e. ``(1 - p)^n <= 1 - C``)."""
    if not 0 < confidence < 1 or not 0 < max_defect_rate < 1:
        raise ValueError(f"confidence and max_defect_rate must be in (0, 1); got {confidence}, {max_defect_rate}")
    n = max(1, math.ceil(math.log1p(-confidence) / math.log1p(-max_defect_rate) - 1e-9))
    while (1 - max_defect_rate) ** n > 1 - confidence + 1e-12:  # guard the tolerance above
        n += 1
    return n


def zero_acceptance_plan(lot_size: int, confidence: float, max_defect_rate: float) -> PlanDecision:
    """Zero-acceptance plan for one lot: ``c = 0``, ``n`` from :func:`zero_acceptance_sample_size` capped at the
    lot size. The description states the guarantee, including the finite-lot (hypergeometric) bound."""
    lot_size = _positive_int(lot_size, "lot_size")
    n_table = zero_acceptance_sample_size(confidence, max_defect_rate)
    full = n_table >= lot_size
    n = lot_size if full else n_table
    text = (f"Zero-acceptance plan (c=0), confidence {confidence:.0%}, max defect rate {max_defect_rate:.1%}: "
            f"n = ceil(ln(1-{confidence:g})/ln(1-{max_defect_rate:g})) = {n_table}.")
    if full:
        text += (f" n >= lot size {lot_size}: 100% inspection of all {lot_size} rows; any defective row rejects the "
                 f"slice, and 0 defects means no reviewed row of the slice is defective.")
    else:
        bound = hypergeometric_defect_bound(lot_size, n, confidence)
        text += (f" Review {n} of {lot_size} rows; any defective row rejects the slice. If 0 defects are found in "
                 f"{n}, then with confidence {confidence:.0%} the slice's defect rate is <= {max_defect_rate:.1%} "
                 f"(finite lot: at most {bound} of {lot_size} rows defective, hypergeometric).")
    return PlanDecision("zero_acceptance", lot_size, n, 0, 1, None, None, n_table, full, text)


def plan_for(config: ReviewSamplingConfig, lot_size: int) -> PlanDecision:
    """The plan of ``config.risk_tier`` for a lot of ``lot_size`` items."""
    plan = config.plan
    if isinstance(plan, Iso2859Plan):
        return iso2859_plan(lot_size, plan.inspection_level, plan.aql)
    return zero_acceptance_plan(lot_size, plan.confidence, plan.max_defect_rate)


def guarantee_text(plan: ZeroAcceptancePlan | Iso2859Plan) -> str:
    """One paragraph for a dataset card / README: what passing human review under ``plan`` guarantees and what
    it does not."""
    common = (" Each slice (one combination of the strata values) is judged as its own lot; the sampled rows are "
              "drawn reproducibly from a hash of seed, batch and row id. The guarantee only covers what reviewers "
              "judge (their criteria and their errors) and says nothing about slices or defects they did not see.")
    if isinstance(plan, ZeroAcceptancePlan):
        n = zero_acceptance_sample_size(plan.confidence, plan.max_defect_rate)
        return (f"Human review used a zero-acceptance plan: in every slice {n} rows (all rows of smaller slices) "
                f"were reviewed and a single defective row rejects the slice. For an accepted slice: with "
                f"{plan.confidence:.0%} confidence its defect rate is at most {plan.max_defect_rate:.1%} (0 defects in "
                f"{n} rows would happen with probability <= {1 - plan.confidence:.0%} if it were higher); smaller "
                f"slices were inspected in full. It does not show the defect rate is zero, nor bound it more tightly "
                f"than {plan.max_defect_rate:.1%}." + common)
    label = _AQL_LABELS[aql_index(plan.aql)]
    return (f"Human review used ISO 2859-1 single sampling plans for normal inspection (inspection level "
            f"{plan.inspection_level}, AQL {label}%): the sample size and the acceptance number of each slice come "
            f"from Tables 1 and 2-A for the slice's size, and small slices are inspected in full. An AQL plan "
            f"protects the producer: a slice whose defect rate is at or below {label}% is accepted with high "
            f"probability. It does NOT bound the defect rate of an accepted slice at {label}%: slices several times "
            f"worse than the AQL can still pass (each slice's plan description gives the rate it passes only 10% of "
            f"the time), and the standard's switching rules (tightened / reduced inspection across batches) are "
            f"not applied." + common)


# ------------------------------------------------------------------------------------------------ sampling


@dataclass(frozen=True)
class SampleDraw:
    """A batch's review sample.

    Attributes:
        rows: the sampled rows (all input columns) plus ``slice_key`` and ``sample_position`` (0..N-1, the review
            order: ascending sampling hash, so slices are interleaved and any prefix is a random subsample).
        slices: one row per slice: slice_key, lot_size, sample_size, acceptance_number, rejection_number,
            code_letter, plan_kind, full_inspection, plan (the plan description).
        plan: JSON-serialisable summary: risk tier, plan parameters, strata, seed, batch, totals, ``sample_version``
            (sha256 over config, batch and row ids) and the guarantee paragraph.
    """

    rows: pd.DataFrame
    slices: pd.DataFrame
    plan: dict[str, Any] = field(default_factory=dict)


SLICE_FRAME_COLUMNS = ("slice_key", "lot_size", "sample_size", "acceptance_number", "rejection_number",
                       "code_letter", "plan_kind", "full_inspection", "plan")


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


def draw_sample(rows: pd.DataFrame, config: ReviewSamplingConfig, batch: str) -> SampleDraw:
    """Draw the stratified review sample of one batch.

    Each slice is a lot: its plan comes from :func:`plan_for` for the slice's size, and its ``n`` rows are those
    with the smallest :func:`sampling_hash` -- the same rows for the same (batch, seed, row ids) whatever the input
    order, and a slice's sample does not depend on the other slices.

    Args:
        rows: the batch; needs a unique ``row_id`` column and the ``config.strata`` columns.
        config: the review sampling config.
        batch: the batch (partition) key, mixed into the ranking.

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
    for key, group in frame.groupby("slice_key", sort=True):
        decision = plan_for(config, len(group))
        chosen.append(group.sort_values("rank", kind="stable").head(decision.sample_size))
        slice_records.append({"slice_key": key, "lot_size": decision.lot_size, "sample_size": decision.sample_size,
                              "acceptance_number": decision.acceptance_number,
                              "rejection_number": decision.rejection_number, "code_letter": decision.code_letter,
                              "plan_kind": decision.kind, "full_inspection": decision.full_inspection,
                              "plan": decision.description})
    picked = pd.concat(chosen) if chosen else frame.iloc[0:0]
    picked = picked.sort_values(["rank"], kind="stable")
    sample = rows.iloc[picked["pos"].to_numpy()].copy()
    sample["slice_key"] = picked["slice_key"].to_numpy()
    sample["sample_position"] = range(len(sample))
    sample = sample.reset_index(drop=True)
    slices = pd.DataFrame.from_records(slice_records, columns=list(SLICE_FRAME_COLUMNS))
    plan = config.plan
    summary = {
        "risk_tier": config.risk_tier,
        "plan": plan.model_dump(),
        "standard": ("ISO 2859-1:1999 Table 1 and Table 2-A (single sampling, normal inspection)"
                     if isinstance(plan, Iso2859Plan) else "zero-acceptance (c=0) success-run plan"),
        "strata": list(config.strata),
        "seed": config.seed,
        "batch": batch,
        "rows_total": int(len(rows)),
        "sample_total": int(len(sample)),
        "slices": int(len(slices)),
        "full_inspection_slices": int(slices["full_inspection"].sum()) if len(slices) else 0,
        "sample_version": _sample_version(config, batch, ids),
        "guarantee": guarantee_text(plan),
    }
    return SampleDraw(rows=sample, slices=slices, plan=summary)


# ------------------------------------------------------------------------------------------------ verdicts

VERDICT_COLUMNS = ("slice_key", "plan_kind", "lot_size", "sample_size", "acceptance_number", "rejection_number",
                   "reviewed", "defects", "complete", "rejected", "accepted", "reason")


def slice_verdicts(slices: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """Per-slice outcome of (possibly partial) human review.

    Args:
        slices: ``SampleDraw.slices`` (or the store's copy): slice_key, lot_size, sample_size, acceptance_number,
            rejection_number and ``plan_kind`` (if absent, inferred from the ``plan`` text: zero-acceptance plans
            start with "Zero-acceptance").
        decisions: one row per reviewed row: row_id, slice_key, verdict ("accept" / "reject"). May be empty.

    Returns:
        One row per slice (in ``slices`` order): slice_key, plan_kind, lot_size, sample_size, acceptance_number,
        rejection_number, reviewed, defects, complete (reviewed == sample_size), rejected (defects >
        acceptance_number: decided as soon as it happens, even before the review is complete), accepted (complete
        and not rejected) and reason, e.g. "human review: slice refund_request/en-GB defect rate 4/50 > AQL plan
        1/50".

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
        n, c = int(record["sample_size"]), int(record["acceptance_number"])
        reviewed, defects = counts.get(key, (0, 0))
        if reviewed > n:
            raise ValueError(f"slice {key!r}: {reviewed} decisions but the sample size is {n}")
        complete, rejected = reviewed == n, defects > c
        label = "zero-acceptance plan" if kind == "zero_acceptance" else "AQL plan"
        if rejected:
            reason = f"human review: slice {key} defect rate {defects}/{n} > {label} {c}/{n}"
        elif complete:
            reason = f"human review: slice {key} defect rate {defects}/{n} <= {label} {c}/{n}"
        else:
            reason = (f"human review: slice {key} pending, {reviewed}/{n} reviewed, {defects} defects so far "
                      f"({label} {c}/{n})")
        records.append({"slice_key": key, "plan_kind": kind, "lot_size": record.get("lot_size"), "sample_size": n,
                        "acceptance_number": c, "rejection_number": int(record["rejection_number"]),
                        "reviewed": reviewed, "defects": defects, "complete": complete, "rejected": rejected,
                        "accepted": complete and not rejected, "reason": reason})
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
