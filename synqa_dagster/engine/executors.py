"""Executors: run one datatrove step over every shard, inline, on local worker processes or on a Ray cluster.

:func:`run_tasks` builds the datatrove executor the :class:`~synqa_dagster.config.ExecutorConfig` names
(``LocalPipelineExecutor`` / ``RayPipelineExecutor``), runs it, and checks that every task left its result;
a failed task raises :class:`EngineError` naming the stage, the shard and the worker's error (datatrove's Ray
executor only logs failed tasks, so completion is checked from the files, the same way for every executor).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from synqa_dagster.engine import shards as sh

#: modules preloaded by the forkserver that LocalPipelineExecutor's workers fork from (started once per process)
_PRELOAD = ["synqa_dagster.engine.steps", "synqa_dagster.gates.dedup", "pyarrow.parquet", "synqa_dagster.engine.warm"]
_preload_set = False
#: environment variables passed to Ray workers (the job's runtime_env)
_RAY_ENV_PREFIXES = ("SYNQA_", "HF_", "TRANSFORMERS_", "PYTHONPATH")


class EngineError(RuntimeError):
    """A stage failed in the engine; the message names the stage, the shard and the error. No result is returned
    and the run folder is removed, so nothing partial is visible."""


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def plan(config: Any, n_rows: int) -> tuple[str, int, int]:
    """``(kind, tasks, workers)`` for a batch of ``n_rows``: ``inline`` below ``shard_rows_min`` (or when asked)."""
    if config is None or config.kind == "inline" or n_rows < config.shard_rows_min or n_rows == 0:
        return "inline", 1, 1
    tasks = max(1, min(config.tasks or cpu_count(), n_rows))
    workers = config.workers or tasks
    if config.kind == "local":
        workers = min(workers, tasks, cpu_count())
    return config.kind, tasks, min(workers, tasks)


def run_tasks(step: Any, config: Any, kind: str, tasks: int, workers: int, run_dir: str,
              done: Callable[[Any, int], bool], stage_name: str) -> None:
    """Run ``step`` (a datatrove ``PipelineStep``) on ranks ``0..tasks-1`` with the executor ``kind``; raise
    :class:`EngineError` unless every rank is ``done``."""
    fs = sh.folder(run_dir)
    logging_dir = f"{run_dir.rstrip('/')}/logs/{step.step}"
    failure: BaseException | None = None
    try:
        _executor(step, config, kind, tasks, workers, logging_dir).run()
    except Exception as exc:  # a local worker's exception is re-raised here; the error files say which shard
        failure = exc
    missing = [r for r in range(tasks) if not done(fs, r)]
    if failure is None and not missing:
        return
    errors = [sh.read_json(fs, f"errors/{r:05d}.json") for r in range(tasks) if fs.isfile(f"errors/{r:05d}.json")]
    if errors:
        e = errors[0]
        more = f" (+{len(errors) - 1} more shard(s) failed)" if len(errors) > 1 else ""
        raise EngineError(
            f"stage {stage_name!r} failed on shard {e['shard']} of {e['shards']} ({e['step']}, {kind} executor): "
            f"{e['error']}{more}\n--- worker traceback ---\n{e['traceback']}"
        ) from failure
    raise EngineError(
        f"stage {stage_name!r} ({step.step}, {kind} executor): shard(s) {missing} of {tasks} left no result"
        + (f": {type(failure).__name__}: {failure}" if failure else "")
    ) from failure


def _executor(step: Any, config: Any, kind: str, tasks: int, workers: int, logging_dir: str) -> Any:
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        _set_preload()
        return LocalPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logging_dir,
                                     skip_completed=False)
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        connect_ray(config.address)
        return RayPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logging_dir, skip_completed=False,
                                   cpus_per_task=config.cpus_per_task, mem_per_cpu_gb=config.mem_per_cpu_gb)
    raise ValueError(f"unknown executor kind {kind!r}")


def _set_preload() -> None:
    """Workers fork from a forkserver that has already imported the engine and the gates (a fresh interpreter,
    never a fork of this possibly multi-threaded process), so each pool starts in well under a second."""
    global _preload_set
    if not _preload_set:
        import multiprocess

        multiprocess.get_context("forkserver").set_forkserver_preload(_PRELOAD)
        _preload_set = True


def connect_ray(address: str | None) -> None:
    """Connect this process to the Ray cluster at ``address`` (once; an existing connection is reused). The job's
    workers get this process's ``SYNQA_*``, ``HF_*``, ``TRANSFORMERS_*`` and ``PYTHONPATH`` variables."""
    import ray

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(_RAY_ENV_PREFIXES)}
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
             runtime_env={"env_vars": env}, logging_level="WARNING")
