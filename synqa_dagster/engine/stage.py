"""``run_stage``: one registry stage's gate over a batch, inline or as datatrove tasks over shards."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synqa_dagster.engine import shards as sh
from synqa_dagster.engine.executors import plan, run_tasks
from synqa_dagster.engine.steps import (
    DedupBucketStep, DedupSignatureStep, DedupVerifyStep, EmbedShardStep, GateShardStep, WorkerEnvironment,
)
from synqa_dagster.gates.base import GateResult
from synqa_dagster.gates.dedup import DedupGate
from synqa_dagster.stages import EMBEDDINGS, PRIOR_INDEX, STAGES, GateStage, stage as find_stage

_STEPS = {"signatures": DedupSignatureStep, "buckets": DedupBucketStep, "verify": DedupVerifyStep,
          "gate": GateShardStep, "embed": EmbedShardStep}


def worker_environment(environment: Any, gates: Any) -> WorkerEnvironment:
    """A picklable description of ``environment`` (an ``EmbedderResource``-like object with ``model_path`` /
    ``batch_size``), or of the gate config's ``embedding_model_path`` when there is none."""
    if isinstance(environment, WorkerEnvironment):
        return environment
    model_path = getattr(environment, "model_path", None)
    if model_path is None and getattr(gates, "embedding_model_path", None):
        from synqa_dagster.paths import resolve_path

        model_path = str(resolve_path(gates.embedding_model_path))
    section = getattr(gates, "embedding", None)  # the gate config's route decides, as EmbedderResource.from_gate_config
    embedding = section.model_dump_json() if section is not None else getattr(environment, "embedding", None)
    return WorkerEnvironment(model_path=model_path, batch_size=int(getattr(environment, "batch_size", 64) or 64),
                             embedding=embedding)


class _Run:
    """One sharded run: its folder, shards and executor."""

    def __init__(self, stage_: GateStage, gates: Any, config: Any, kind: str, tasks: int, workers: int,
                 environment: WorkerEnvironment, registry_stage: bool) -> None:
        base = (config.run_dir if config is not None and config.run_dir else None) or tempfile.gettempdir()
        self.run_dir = f"{base.rstrip('/')}/synqa-engine-{stage_.name}-{uuid.uuid4().hex[:12]}"
        self.fs = sh.folder(self.run_dir)
        self.stage, self.gates, self.config = stage_, gates, config
        self.kind, self.tasks, self.workers = kind, tasks, workers
        self.environment = environment
        self.stage_obj = None if registry_stage else stage_
        self.bounds: list[tuple[int, int]] = []

    def write_inputs(self, rows: pd.DataFrame, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.bounds = sh.shard_bounds(len(rows), self.tasks)
        if len(self.bounds) != self.tasks:
            self.tasks = len(self.bounds)
        for r, (lo, hi) in enumerate(self.bounds):
            sh.write_frame(self.fs, f"input/{r:05d}.parquet", rows.iloc[lo:hi].reset_index(drop=True))
            for name, array in (arrays or {}).items():
                sh.write_array(self.fs, f"input/{r:05d}.{name}.npy", np.asarray(array)[lo:hi])

    def run(self, step: str, done: Any, **kwargs: Any) -> None:
        task = _STEPS[step](self.run_dir, self.stage.name, self.gates, self.environment, stage_obj=self.stage_obj, **kwargs)
        run_tasks(task, self.config, self.kind, self.tasks, min(self.workers, self.tasks), self.run_dir, done, self.stage.name)

    def remove(self) -> None:
        if "://" not in self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        try:
            self.fs.rm("", recursive=True)
        except FileNotFoundError:
            pass


def run_stage(
    stage_name: str | GateStage,
    rows: pd.DataFrame,
    gates: Any,
    executor: Any = None,
    environment: Any = None,
    stages: Sequence[GateStage] = STAGES,
    **inputs: Any,
) -> GateResult:
    """Run one stage's gate over ``rows`` and return its :class:`GateResult` (aligned with ``rows``).

    Args:
        stage_name: a registry stage's name (or the :class:`GateStage` itself, e.g. from a custom ``stages`` list).
        rows: the batch (``row_id``, ``text`` and the columns the gate reads), in funnel order.
        gates: the :class:`~synqa_dagster.config.GateConfig`.
        executor: an :class:`~synqa_dagster.config.ExecutorConfig`; None = ``gates.executor``.
        environment: builds gates that use the embedding model (``.embedder()``: the ``EmbedderResource``); workers
            get a picklable copy of it (:class:`~synqa_dagster.engine.steps.WorkerEnvironment`).
        stages: the registry ``stage_name`` is looked up in.
        inputs: the stage's declared inputs (``prior`` for dedup, ``embeddings`` aligned with ``rows``).

    The result is the same, byte for byte once stored, whichever executor ran it. ``metrics["engine"]`` says
    which executor, how many tasks and shards, and how long. A failed shard raises
    :class:`~synqa_dagster.engine.executors.EngineError` (stage and shard named); no partial result is returned
    and the run folder is removed either way.
    """
    s = stage_name if isinstance(stage_name, GateStage) else find_stage(stage_name, stages)
    config = executor if executor is not None else getattr(gates, "executor", None)
    rows = rows.reset_index(drop=True)
    kind, tasks, workers = plan(config, len(rows))
    dedup_like = not s.per_row
    registry_stage = any(r is s for r in STAGES)
    started = time.perf_counter()
    if kind != "inline" and dedup_like:
        gate = s.build(gates, environment if environment is not None else worker_environment(None, gates))
        if not isinstance(gate, DedupGate):
            kind, tasks, workers = "inline", 1, 1  # a whole-table stage the engine cannot shard: run it in process
    if kind == "inline":
        env = environment if environment is not None else worker_environment(None, gates)
        result = s.build(gates, env).evaluate(rows, **inputs)
        shards = [len(rows)]
    else:
        worker_gates = gates
        if dedup_like and gate.config.bands is None:  # resolve the LSH banding once here (a numeric optimisation
            # that takes ~1 s), and hand the workers the same banding explicitly: identical gate, no recomputation
            section = gate.config.model_copy(update={"bands": gate.bands, "rows": gate.rows})
            worker_gates = gates.model_copy(update={s.config_section: section}) if "." not in s.config_section else gates
        run = _Run(s, worker_gates, config, kind, tasks, workers, worker_environment(environment, gates), registry_stage)
        try:
            if dedup_like:
                from synqa_dagster.engine.dedup import run_dedup

                result = run_dedup(run, gate, rows, inputs.get(PRIOR_INDEX))
            else:
                arrays = {name: np.asarray(value) for name, value in inputs.items() if value is not None}
                unknown = set(arrays) - {EMBEDDINGS}
                if unknown:
                    raise TypeError(f"stage {s.name!r}: the engine cannot shard inputs {sorted(unknown)}")
                run.write_inputs(rows, arrays)
                run.run("gate", lambda f, r: f.isfile(sh.result_name(r)), inputs=tuple(arrays))
                result = sh.read_results(run.fs, s.name, run.tasks)
        finally:
            run.remove()
        tasks = run.tasks
        shards = [hi - lo for lo, hi in run.bounds]
    if len(result) != len(rows):
        raise ValueError(f"stage {s.name!r}: {len(result)} decisions for {len(rows)} rows")
    result.metrics = {**(result.metrics or {}), "engine": {
        "executor": kind, "tasks": tasks, "workers": workers if kind != "inline" else 1, "shard_rows": shards,
        "seconds": round(time.perf_counter() - started, 4),
    }}
    return result


def embed_rows(rows: pd.DataFrame, gates: Any, executor: Any = None, environment: Any = None) -> np.ndarray:
    """The shared sentence embeddings of ``rows["text"]`` (``(n, dim)`` float32, in row order), computed inline
    with ``environment.embedder()`` or per shard by the executor (each worker loads the model once). Vectors from
    different shard sizes agree to float rounding (encode batches differ), not byte for byte."""
    config = executor if executor is not None else getattr(gates, "executor", None)
    rows = rows.reset_index(drop=True)
    kind, tasks, workers = plan(config, len(rows))
    if kind == "inline":
        env = environment if environment is not None else worker_environment(None, gates)
        return np.asarray(env.embedder().encode(rows["text"].astype(str).tolist()), dtype=np.float32)
    embed_stage = GateStage(name="embeddings", asset="embeddings", config_section="version")
    run = _Run(embed_stage, gates, config, kind, tasks, workers, worker_environment(environment, gates), True)
    try:
        run.write_inputs(rows[["text"]])
        run.run("embed", lambda f, r: f.isfile(f"results/{r:05d}.npy"))
        return np.concatenate([sh.read_array(run.fs, f"results/{r:05d}.npy") for r in range(run.tasks)])
    finally:
        run.remove()
