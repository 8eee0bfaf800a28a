"""The datatrove pipeline steps the engine runs, one task per shard (Dagster-free).

Each step is light to pickle (the stage's name, the gate config, the run folder): the gate itself is rebuilt in
the worker through the stage registry (``stage(name).build(gates, environment)``), once per worker process, so
heavy state (a trained scorer, an eval-set index, the embedding model) is loaded there and never pickled.

* :class:`GateShardStep` — a row-local stage's gate over one shard (quality, toxicity, contamination).
* :class:`EmbedShardStep` — the shared sentence embeddings of one shard (``candidate_embeddings``).
* :class:`DedupSignatureStep` → :class:`DedupBucketStep` → :class:`DedupVerifyStep` — dedup in datatrove's
  staged shape (signatures per shard → bucket files per band → candidate pairs confirmed by exact Jaccard),
  with synqa's own normalisation, signatures, banding and Jaccard (:mod:`synqa_dagster.gates.dedup`); the
  greedy filter runs in the driver (:mod:`synqa_dagster.engine.dedup`).

A step that raises writes ``errors/<rank>.json`` (stage, shard, step, error, traceback) before re-raising, so the
driver can name the shard whichever executor ran it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from datatrove.pipeline.base import PipelineStep

from synqa_dagster.engine import shards as sh
from synqa_dagster.gates.base import Gate

#: gates built in this process: (stage name, gate-config JSON, environment) -> gate
_GATES: dict[tuple[Any, ...], Gate] = {}


class ShardError(RuntimeError):
    """A task failed: names the stage and the shard."""


@dataclass(frozen=True)
class WorkerEnvironment:
    """What a worker needs to build a gate that uses the shared embedding model (a picklable
    :class:`~synqa_dagster.stages.GateEnvironment`): the model folder (None = the wheel's MiniLM), batch size and
    the gate config's embedding route (``EmbeddingConfig`` as JSON; None = its defaults), so a worker's gates read
    the same vectors (static on ``static_cascade``) and re-score with the same MiniLM as the driver's."""

    model_path: str | None = None
    batch_size: int = 64
    embedding: str | None = None

    def embedder(self) -> Any:
        return _embedder(self.model_path, self.batch_size, self.embedding)


@lru_cache(maxsize=4)
def _embedder(model_path: str | None, batch_size: int, embedding: str | None) -> Any:
    from synqa_dagster.embedding import EmbeddingConfig, embedder_for

    config = EmbeddingConfig.model_validate_json(embedding) if embedding else EmbeddingConfig()
    return embedder_for(config, model_path, batch_size)


def worker_gate(stage_name: str, gates: Any, environment: WorkerEnvironment, stage_obj: Any = None) -> Gate:
    """The gate of ``stage_name`` (a registry stage, or ``stage_obj`` for one outside the registry) for ``gates``,
    built once per process."""
    key = (stage_name, gates.model_dump_json(), environment, id(stage_obj) if stage_obj is not None else None)
    gate = _GATES.get(key)
    if gate is None:
        from synqa_dagster.stages import stage

        s = stage_obj if stage_obj is not None else stage(stage_name)
        gate = _GATES[key] = s.build(gates, environment)
    return gate


class _EngineStep(PipelineStep):
    """Common part: the run folder, the stage, failure reporting, datatrove stats."""

    type = "🛡 synqa"
    step = "gate"

    def __init__(self, run_dir: str, stage_name: str, gates: Any, environment: WorkerEnvironment,
                 stage_obj: Any = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.stage_name = stage_name
        self.gates = gates
        self.environment = environment
        self.stage_obj = stage_obj
        self.name = f"{stage_name} {self.step}"

    def gate(self) -> Gate:
        return worker_gate(self.stage_name, self.gates, self.environment, self.stage_obj)

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
        fs = sh.folder(self.run_dir)
        try:
            with self.track_time(unit="shard"):
                n = self.work(fs, rank, world_size)
            self.stat_update("rows", value=int(n or 0))
        except Exception as exc:
            sh.write_json(fs, f"errors/{rank:05d}.json", {
                "stage": self.stage_name, "shard": rank, "shards": world_size, "step": self.step,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(), "pid": os.getpid(),
            })
            raise ShardError(f"stage {self.stage_name!r} shard {rank} of {world_size} ({self.step}): "
                             f"{type(exc).__name__}: {exc}") from exc
        return data

    def work(self, fs: Any, rank: int, world_size: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class GateShardStep(_EngineStep):
    """Evaluate the stage's gate on shard ``rank`` (``input/<rank>.parquet`` + the shard's embeddings when the
    stage declares them) and write its decisions to ``results/<rank>.parquet``."""

    step = "gate"

    def __init__(self, *args: Any, inputs: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inputs = tuple(inputs)

    def work(self, fs: Any, rank: int, world_size: int) -> int:
        rows = sh.read_frame(fs, f"input/{rank:05d}.parquet")
        kwargs = {name: sh.read_array(fs, f"input/{rank:05d}.{name}.npy") for name in self.inputs}
        result = self.gate().evaluate(rows, **kwargs)
        if len(result) != len(rows):
            raise ValueError(f"gate returned {len(result)} decisions for {len(rows)} rows")
        sh.write_result(fs, rank, result)
        return len(rows)


class EmbedShardStep(_EngineStep):
    """Embed the texts of shard ``rank`` with the shared model; writes ``results/<rank>.npy``."""

    step = "embed"

    def work(self, fs: Any, rank: int, world_size: int) -> int:
        rows = sh.read_frame(fs, f"input/{rank:05d}.parquet")
        vectors = self.environment.embedder().encode(rows["text"].astype(str).tolist())
        sh.write_array(fs, f"results/{rank:05d}.npy", np.asarray(vectors, dtype=np.float32))
        return len(rows)


class DedupSignatureStep(_EngineStep):
    """Stage 1 of dedup, per shard: normalised texts (``dedup/norm/<rank>.parquet``) and MinHash signatures
    (``dedup/sig/<rank>.npy``), with the gate's own normaliser and :class:`~synqa_dagster.gates.dedup.MinHasher`."""

    step = "signatures"

    def work(self, fs: Any, rank: int, world_size: int) -> int:
        import pandas as pd

        from synqa_dagster.gates.text import normalize_many

        rows = sh.read_frame(fs, f"input/{rank:05d}.parquet")
        normalized = normalize_many(rows["text"])
        sig = self.gate().minhasher.signatures(normalized)
        sh.write_array(fs, f"dedup/sig/{rank:05d}.npy", sig)
        sh.write_frame(fs, f"dedup/norm/{rank:05d}.parquet", pd.DataFrame({"normalized": normalized}))
        return len(rows)


class DedupBucketStep(_EngineStep):
    """Stage 2 of dedup: the LSH buckets of bands ``rank, rank + world_size, ...`` over every item (prior rows, then
    the batch's rows left after exact dedup): ``dedup/buckets/<band>.npy`` = the candidate pair codes of the band."""

    step = "buckets"

    def __init__(self, *args: Any, n_prior: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_prior = n_prior

    def work(self, fs: Any, rank: int, world_size: int) -> int:
        from synqa_dagster.gates.dedup import band_key, bucket_pairs

        gate = self.gate()
        sig = sh.read_array(fs, "dedup/items_sig.npy")
        for band in range(rank, gate.bands, world_size):
            codes = bucket_pairs(band_key(sig, band, gate.rows), self.n_prior, gate.config.max_candidates_per_row)
            sh.write_array(fs, f"dedup/buckets/{band:03d}.npy", codes)
        return len(sig)


class DedupVerifyStep(_EngineStep):
    """Stage 3 of dedup: the exact Jaccard of the candidate pairs of chunk ``rank`` (pairs are sorted by the later
    row; chunks are contiguous) → ``dedup/jaccard/<rank>.npy``."""

    step = "verify"

    def work(self, fs: Any, rank: int, world_size: int) -> int:
        from synqa_dagster.engine.dedup import items_from_frame

        pairs = sh.read_array(fs, "dedup/pairs.npy")
        lo, hi = sh.chunk_bounds(len(pairs), world_size)[rank]
        items = items_from_frame(sh.read_frame(fs, "dedup/items.parquet"))
        jac = self.gate().pair_jaccards(items, pairs[lo:hi])
        sh.write_array(fs, f"dedup/jaccard/{rank:05d}.npy", jac)
        return hi - lo
