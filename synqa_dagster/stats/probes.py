"""Per-row probes compared between a synthetic batch and the real reference sample.

Numeric probes (one float per row): ``chars``, ``tokens`` (word tokens), ``sentiment`` (VADER compound, offline),
``formality`` (share of formal-writing markers met), ``politeness`` (polite minus rude markers) and, when
embeddings are given, ``nn_distance`` (embedding density: mean cosine distance to the ``k`` nearest reference
rows; reference rows are measured leave-one-out against the rest of the reference).

Categorical probes (one label per row): ``tone`` (polite / neutral / rude) and ``intent`` (taken from an
``intent`` column when the rows have one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

NUMERIC_PROBES = ("chars", "tokens", "sentiment", "formality", "politeness", "nn_distance")
CATEGORICAL_PROBES = ("intent", "tone")

_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?")
_POLITE = re.compile(
    r"\b(please|pls|plz|thank(s| you| u)?|thx|ty|ta|cheers|sorry|apologi[sz]e|kindly|appreciate[ds]?|grateful|"
    r"dear|hello|hi|regards|excuse me|could you|would you|would it be possible|if possible|may i|"
    r"i would like|i'd like|i wonder)\b",
    re.IGNORECASE,
)
_RUDE = re.compile(
    r"\b(wtf|ffs|omfg|useless|ridiculous|pathetic|joke|rubbish|scam(mers)?|terrible|worst|awful|damn|hell|crap|"
    r"shit\w*|f+u+c+k\w*|bloody|stupid|idiots?|incompetent|disgrace(ful)?|sort it out|fix (it|this)|"
    r"seriously|unacceptable)\b",
    re.IGNORECASE,
)
_SHOUT = re.compile(r"\b[A-Z]{4,}\b")
_REPEATED_PUNCT = re.compile(r"[!?]{2,}")
_SLANG = frozenset(
    "u ur r pls plz thx ty lol lmao wtf omg idk bc cuz coz gonna wanna gotta im ive dont cant wont didnt doesnt "
    "isnt hasnt havent wasnt ya yeah yep nope hey ok okay k tho thru btw rn asap".split()
)


def tokenize(text: str) -> list[str]:
    """Word and punctuation tokens (``\\w+`` runs with inner apostrophes, and single punctuation marks)."""
    return _TOKEN.findall(text or "")


def formality(text: str) -> float:
    """Share of six formal-writing markers the text meets, in [0, 1].

    Markers: starts with a capital letter; ends with ``.``, ``?`` or ``!``; no lowercase pronoun ``i``; no
    text-speak or apostrophe-less contraction (``u``, ``pls``, ``dont``...); no shouted all-caps word; no
    repeated ``!``/``?``.
    """
    text = (text or "").strip()
    if not text:
        return 0.0
    words = _WORD.findall(text)
    lower = [w.lower().replace("’", "'") for w in words]
    markers = (
        text[0].isupper(),
        text[-1] in ".?!",
        "i" not in words,
        not any(w in _SLANG for w in lower),
        not _SHOUT.search(text),
        not _REPEATED_PUNCT.search(text),
    )
    return float(sum(markers)) / len(markers)


def politeness_markers(text: str) -> tuple[int, int]:
    """Counts of polite markers (please, thanks, sorry, could you...) and rude ones (wtf, useless, shouting, !!)."""
    text = text or ""
    polite = len(_POLITE.findall(text))
    rude = len(_RUDE.findall(text)) + len(_SHOUT.findall(text)) + len(_REPEATED_PUNCT.findall(text))
    return polite, rude


def tone(polite: int, rude: int) -> str:
    """``polite`` / ``rude`` / ``neutral`` from the marker counts (ties and none are neutral)."""
    if polite > rude:
        return "polite"
    if rude > polite:
        return "rude"
    return "neutral"


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(texts: Sequence[str]) -> np.ndarray:
    """VADER compound sentiment in [-1, 1] per text (lexicon shipped in the vaderSentiment package)."""
    analyzer = _vader()
    return np.array([analyzer.polarity_scores(t or "")["compound"] for t in texts], dtype=float)


def nn_distances(queries: np.ndarray, reference: np.ndarray, k: int = 5, leave_one_out: bool = False) -> np.ndarray:
    """Mean cosine distance from each query row to its ``k`` nearest reference rows (unit-length vectors).

    With ``leave_one_out`` the queries *are* the reference rows and each row's own entry is excluded, so the
    reference's own density is measured the same way as a batch's.
    """
    queries = np.asarray(queries, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if len(queries) == 0:
        return np.zeros(0)
    if len(reference) == 0:
        raise ValueError("nn_distances needs at least one reference embedding")
    out = np.empty(len(queries))
    step = 1024
    for start in range(0, len(queries), step):
        sims = queries[start:start + step] @ reference.T
        if leave_one_out:
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = -np.inf
        kk = min(k, reference.shape[0] - (1 if leave_one_out else 0))
        top = -np.partition(-sims, kk - 1, axis=1)[:, :kk]
        out[start:start + step] = 1.0 - top.mean(axis=1)
    return out


@dataclass
class Probes:
    """Probe values of one set of rows.

    Attributes:
        numeric: one column per numeric probe (see :data:`NUMERIC_PROBES`), one row per input row.
        categorical: one column per categorical probe (see :data:`CATEGORICAL_PROBES`).
    """

    numeric: pd.DataFrame
    categorical: pd.DataFrame

    def __len__(self) -> int:
        return len(self.numeric)

    def take(self, index: Sequence[int] | np.ndarray) -> "Probes":
        """The probes of a subset of rows (by position)."""
        index = np.asarray(index)
        return Probes(self.numeric.iloc[index].reset_index(drop=True), self.categorical.iloc[index].reset_index(drop=True))


def compute_probes(
    texts: Sequence[str],
    intents: Sequence[str] | None = None,
    embeddings: np.ndarray | None = None,
    reference_embeddings: np.ndarray | None = None,
    k: int = 5,
    is_reference: bool = False,
) -> Probes:
    """Every probe for ``texts``.

    ``nn_distance`` is computed when ``embeddings`` is given: against ``reference_embeddings`` (or, with
    ``is_reference``, leave-one-out against ``embeddings`` themselves). ``intent`` is included when given.
    """
    texts = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in texts]
    markers = [politeness_markers(t) for t in texts]
    numeric = pd.DataFrame(
        {
            "chars": np.array([len(t) for t in texts], dtype=float),
            "tokens": np.array([len(tokenize(t)) for t in texts], dtype=float),
            "sentiment": sentiment(texts),
            "formality": np.array([formality(t) for t in texts], dtype=float),
            "politeness": np.array([p - r for p, r in markers], dtype=float),
        }
    )
    if embeddings is not None:
        if is_reference:
            numeric["nn_distance"] = nn_distances(embeddings, embeddings, k, leave_one_out=True)
        elif reference_embeddings is not None:
            numeric["nn_distance"] = nn_distances(embeddings, reference_embeddings, k)
    categorical = pd.DataFrame({"tone": [tone(p, r) for p, r in markers]})
    if intents is not None:
        categorical["intent"] = ["(none)" if i is None or (isinstance(i, float) and np.isnan(i)) else str(i) for i in intents]
    return Probes(numeric, categorical)


def frame_probes(
    frame: pd.DataFrame,
    text_column: str = "text",
    embeddings: np.ndarray | None = None,
    reference_embeddings: np.ndarray | None = None,
    k: int = 5,
    is_reference: bool = False,
) -> Probes:
    """:func:`compute_probes` over a table: texts from ``text_column`` (or ``text``), intents from ``intent``."""
    column = text_column if text_column in frame.columns else "text"
    intents = frame["intent"].tolist() if "intent" in frame.columns else None
    return compute_probes(frame[column].tolist(), intents, embeddings, reference_embeddings, k, is_reference)
