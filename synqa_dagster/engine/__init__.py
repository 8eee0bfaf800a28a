"""The row-stage engine (Dagster-free): a registry stage's gate over a batch as datatrove pipeline tasks over shards.

``run_stage(stage_name, rows, gates, executor=None, environment=None, **inputs) -> GateResult`` splits the rows
into shards in row order, runs one datatrove ``PipelineStep`` per shard (the worker rebuilds the gate through the
stage registry, once per process), writes each shard's decisions as Parquet to a run folder and merges them back
in row order. Dedup runs in datatrove's staged shape with synqa's own dedup code (:mod:`.dedup`).
``embed_rows`` does the same for the shared embeddings. Executors (``ExecutorConfig.kind``): ``inline`` (in
process), ``local`` (``LocalPipelineExecutor``), ``ray`` (``RayPipelineExecutor`` on a running cluster). The
output is byte-identical whichever executor ran it. See ``docs/engine.md``.
"""

from synqa_dagster.engine.executors import EngineError, plan
from synqa_dagster.engine.stage import embed_rows, run_stage, worker_environment
from synqa_dagster.engine.steps import ShardError, WorkerEnvironment

__all__ = ["EngineError", "ShardError", "WorkerEnvironment", "embed_rows", "plan", "run_stage", "worker_environment"]
