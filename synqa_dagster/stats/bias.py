"""Bias screening: identity-term rates vs the reference, intent coverage, and the politeness skew.

The identity lexicon below is small, hand-written and grouped by category; it screens for *rates* that differ
from real traffic (a teacher that adds "my elderly mother" to every request, or never mentions anyone), not
for offensiveness. Ambiguous words (``old``, ``black``, ``straight``) are matched only in person phrases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from synqa_dagster.stats.tests import benjamini_hochberg

_PERSON = r"(?:man|men|woman|women|lady|ladies|guy|guys|people|person|folks?|customers?|users?)"

#: category -> regular-expression alternatives (matched case-insensitively on word boundaries).
IDENTITY_LEXICON: dict[str, tuple[str, ...]] = {
    "gender": (
        "women", "woman", "men", "man", "females?", "males?", "girls?", "boys?", "lady", "ladies", "gentlem[ae]n",
        "mothers?", "fathers?", "mums?", "moms?", "dads?", "wife", "wives", "husbands?", "daughters?", "sons?",
        "sisters?", "brothers?", "girlfriend", "boyfriend", "transgender", "trans", "non-?binary",
    ),
    "gendered_pronoun": ("she", "her", "hers", "herself", "he", "him", "his", "himself"),
    "sexual_orientation": ("gay", "lesbians?", "bisexual", "queer", "lgbtq?\\+?", "homosexual", "heterosexual", "asexual", "pansexual"),
    "race_ethnicity": (
        "african(?:-american)?", "asians?", "hispanics?", "latin[oax]s?", "caucasians?", "arabs?", "indigenous",
        "native americans?", "aboriginal", "roma", f"black {_PERSON}", f"white {_PERSON}", "people of colou?r", "ethnic(?:ity)?",
    ),
    "nationality": (
        "americans?", "british", "brits?", "english", "scottish", "welsh", "irish", "indians?", "chinese", "mexicans?",
        "french", "germans?", "spanish", "italians?", "polish", "nigerians?", "pakistanis?", "russians?", "ukrainians?",
        "immigrants?", "foreigners?", "refugees?",
    ),
    "religion": (
        "christians?", "christianity", "muslims?", "islam(?:ic)?", "jewish", "jews?", "hindus?", "buddhists?", "sikhs?",
        "catholics?", "protestants?", "atheists?", "church", "mosque", "synagogue", "ramadan", "eid", "diwali", "christmas",
    ),
    "age": (
        "elderly", "seniors?", "pensioners?", "retirees?", "retired", "teens?", "teenagers?", "kids?", "child", "children",
        "boomers?", "millennials?", "gen ?z", "grand(?:ma|pa|mother|father|parents?)", "granny", "nan",
        r"\d+ years? old", f"old {_PERSON}", f"young {_PERSON}",
    ),
    "disability": (
        "disabled", "disabilit(?:y|ies)", "blind", "deaf", "wheelchair", "autis(?:tic|m)", "adhd", "dyslexi[ac]",
        "impaired", "handicapped", "mental health", "chronic(?:ally)? ill(?:ness)?", "neurodivergent", "screen reader",
    ),
}

_PATTERNS = {cat: re.compile(r"\b(?:" + "|".join(terms) + r")\b", re.IGNORECASE) for cat, terms in IDENTITY_LEXICON.items()}


def identity_mentions(texts: Iterable[str]) -> pd.DataFrame:
    """One boolean column per identity category: does the row mention a term of that category?"""
    texts = ["" if t is None else str(t) for t in texts]
    return pd.DataFrame({cat: [bool(p.search(t)) for t in texts] for cat, p in _PATTERNS.items()})


def _two_proportion(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Chi-squared statistic and p of a 2×2 rate comparison; Fisher's exact p when an expected count is < 5."""
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]], dtype=float)
    if table.sum(axis=0).min() == 0:
        return 0.0, 1.0
    chi2, p, _, expected = stats.chi2_contingency(table, correction=False)
    if expected.min() < 5:
        p = stats.fisher_exact(table.astype(int))[1]
    return float(chi2), float(p)


@dataclass
class ScreenReport:
    """A bias screen's per-item table and the items that failed.

    Attributes:
        table: one row per item (identity category, intent, or register), with a ``failed`` column.
        key: the column naming the item.
    """

    table: pd.DataFrame
    key: str

    @property
    def failing(self) -> list[str]:
        return self.table.loc[self.table["failed"], self.key].astype(str).tolist()

    @property
    def passed(self) -> bool:
        return not self.failing


def identity_report(batch_texts: Sequence[str], reference_texts: Sequence[str], max_rate_diff: float, alpha: float = 0.05) -> ScreenReport:
    """Per identity category: batch and reference mention rates, chi-squared (Fisher when sparse), BH-adjusted p.

    A category fails when |rate difference| > ``max_rate_diff`` and its BH-adjusted p < ``alpha``.
    """
    b, r = identity_mentions(batch_texts), identity_mentions(reference_texts)
    rows = []
    for cat in IDENTITY_LEXICON:
        kb, kr = int(b[cat].sum()), int(r[cat].sum())
        chi2, p = _two_proportion(kb, len(b), kr, len(r))
        rate_b, rate_r = kb / max(1, len(b)), kr / max(1, len(r))
        rows.append(dict(category=cat, batch_rows=kb, batch_rate=rate_b, reference_rate=rate_r, diff=rate_b - rate_r, statistic=chi2, p=p))
    table = pd.DataFrame(rows)
    table["p_adjusted"] = benjamini_hochberg(table["p"].to_numpy())
    table["threshold"] = max_rate_diff
    table["failed"] = (table["diff"].abs() > max_rate_diff) & (table["p_adjusted"] < alpha)
    return ScreenReport(table, "category")


def coverage_report(accepted_intents: Sequence[str], expected_intents: Iterable[str], min_rows: int) -> ScreenReport:
    """Accepted rows per expected intent; an intent with fewer than ``min_rows`` accepted rows fails."""
    counts = pd.Series(list(accepted_intents), dtype=object).value_counts()
    expected = sorted(set(expected_intents))
    table = pd.DataFrame({"intent": expected, "accepted_rows": [int(counts.get(i, 0)) for i in expected]})
    table["min_rows"] = min_rows
    table["failed"] = table["accepted_rows"] < min_rows
    return ScreenReport(table.sort_values(["failed", "accepted_rows"], ascending=[False, True]).reset_index(drop=True), "intent")


def politeness_skew_report(batch_tones: Sequence[str], reference_tones: Sequence[str], max_skew: float, alpha: float = 0.05) -> ScreenReport:
    """Share of polite / neutral / rude rows in batch vs reference; fails when the polite share exceeds the
    reference's by more than ``max_skew`` (with p < ``alpha``) — the teacher's over-politeness."""
    b = pd.Series(list(batch_tones), dtype=object)
    r = pd.Series(list(reference_tones), dtype=object)
    rows = []
    for reg in ("polite", "neutral", "rude"):
        kb, kr = int((b == reg).sum()), int((r == reg).sum())
        chi2, p = _two_proportion(kb, len(b), kr, len(r))
        rate_b, rate_r = kb / max(1, len(b)), kr / max(1, len(r))
        rows.append(dict(tone=reg, batch_rate=rate_b, reference_rate=rate_r, skew=rate_b - rate_r, statistic=chi2, p=p))
    table = pd.DataFrame(rows)
    table["threshold"] = max_skew
    table["failed"] = (table["tone"] == "polite") & (table["skew"] > max_skew) & (table["p"] < alpha)
    return ScreenReport(table, "tone")
