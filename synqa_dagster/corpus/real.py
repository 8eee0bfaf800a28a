"""The real rows a batch is grounded on — the seed corpus and the reference sample — as one table (Dagster-free).

The memorisation gate (:mod:`synqa_dagster.gates.memorisation`) checks every generated row against these: a
synthetic row that repeats a long verbatim span of a real customer message, or is an embedding near-copy of one,
leaks that message into the training set. Each real row is named by ``source_id`` (``seed:<seed_id>`` or
``reference:<message_id>``), which is what a rejection's reason cites.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Columns of :func:`real_rows` (``embedding`` only when every part had vectors).
REAL_COLUMNS = ("source_id", "source", "text")


def real_rows(seeds: pd.DataFrame | None = None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The seed corpus (``seed_id``, ``text``) and the reference sample (``ref_id``, ``message_id`` or ``row_id``,
    ``text``, optional ``embedding``) as one table of ``source_id``, ``source`` (``seed`` / ``reference``), ``text``
    — plus ``embedding`` when any part carries vectors (None for the rows without: the reference corpus is embedded
    once, by its own asset, so only the seeds are left to encode, see :func:`with_embeddings`).

    Blank texts are left out; the same text from both sides stays twice (each source is named)."""
    parts = []
    for source, frame, id_columns in (("seed", seeds, ("seed_id", "row_id")),
                                      ("reference", reference, ("ref_id", "message_id", "row_id", "seed_id"))):
        if frame is None or not len(frame):
            continue
        id_column = next((c for c in id_columns if c in frame.columns), None)
        ids = frame[id_column].astype(str) if id_column else pd.Series([str(i) for i in range(len(frame))])
        part = pd.DataFrame({
            "source_id": [f"{source}:{i}" for i in ids],
            "source": source,
            "text": frame["text"].astype(str).to_numpy(),
        })
        if "embedding" in frame.columns:
            part["embedding"] = list(frame["embedding"])
        parts.append(part[part["text"].str.strip() != ""])
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in REAL_COLUMNS})
    if any("embedding" in p.columns for p in parts):
        parts = [p if "embedding" in p.columns else p.assign(embedding=[None] * len(p)) for p in parts]
    return pd.concat(parts, ignore_index=True)


def with_embeddings(rows: pd.DataFrame, embedder: Any) -> pd.DataFrame:
    """``rows`` with an ``embedding`` for every row: the vectors it has, the others encoded with ``embedder``
    (in one call)."""
    if not len(rows):
        return rows.assign(embedding=[])
    vectors = list(rows["embedding"]) if "embedding" in rows.columns else [None] * len(rows)
    missing = [i for i, v in enumerate(vectors) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        encoded = embedder.encode(rows["text"].iloc[missing].astype(str).tolist())
        for j, i in enumerate(missing):
            vectors[i] = encoded[j]
    return rows.assign(embedding=[np.asarray(v, dtype=np.float32) for v in vectors])
