"""Batch runs as transactions inside Dagster: begin when a run's storage resources start, commit or roll back when
they are torn down, one run per batch at a time, and dead runs marked failed.

The storage resources (:class:`~synqa_dagster.resources.storage.ParquetIOManager` and
:class:`~synqa_dagster.resources.storage.StoreResource`) call :func:`begin` from ``setup_for_execution`` and
:func:`end` from ``teardown_after_execution``; the jobs run every step in one process (``in_process_executor``),
so both happen once per run, in the run's own process, whether the run was started by ``synqa demo``, the UI,
a schedule or a sensor. Between the two, every table and handover write of the run is staged
(:mod:`synqa_dagster.transaction`). At the end:

* no step failed → the staging is committed (the run is tagged ``synqa/txn=committed``);
* a step failed (a blocking check included) → it is discarded (``synqa/txn=rolled-back``): the batch keeps the
  outputs of its last committed run, byte for byte.

A run that dies without reaching its end (``kill -9``, a lost machine) leaves its staging and its ``STARTED``
status behind. :func:`recover` — called by every :func:`begin`, by the CLI and by ``run_recovery_sensor`` —
marks such runs failed (each run records its pid, the pid's start time and the host in its tags, so a dead
worker on this host is certain), rolls forward a commit that had started, and discards the rest.

One run per batch: :func:`begin` takes the batch's :class:`~synqa_dagster.transaction.BatchLock` (this machine)
and refuses the run when the run storage holds another live, earlier run of the same batch (runs on other
machines sharing a PostgreSQL instance). Queued runs wait in the instance's run queue (``dagster.yaml``:
``tag_concurrency_limits`` on ``dagster/partition``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from synqa_dagster.paths import instance_dir
from synqa_dagster.storage import HandoverFolders, TableStore
from synqa_dagster.transaction import BatchBusy, BatchLock, CommitReport, RunTransaction, recover_location

log = logging.getLogger("synqa.runs")

TAG_HOST = "synqa/host"
TAG_PID = "synqa/pid"
TAG_PID_STARTED = "synqa/pid_started"
TAG_TXN = "synqa/txn"
PARTITION_TAG = "dagster/partition"
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def locks_dir() -> Path:
    """Where the per-batch locks live (``<instance>/locks``)."""
    return instance_dir() / "locks"


def process_started(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None
    when there is no such process. Together with the pid it names one process: a reused pid differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return state != "Z" and (started is None or process_started(pid) == started)


def worker_is_dead(run: dg.DagsterRun) -> bool:
    """True when ``run`` recorded a worker on this host and that process is gone."""
    tags = run.tags
    if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
        return False
    return not process_alive(int(tags[TAG_PID]), tags.get(TAG_PID_STARTED))


def mark_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-progress run whose worker process on this host is gone; returns their run ids."""
    marked = []
    for run in instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS))):
        if worker_is_dead(run):
            instance.report_run_failed(run, f"synqa: the run's worker (pid {run.tags[TAG_PID]} on "
                                            f"{run.tags[TAG_HOST]}) is gone — killed or crashed; marked failed")
            marked.append(run.run_id)
    return marked


def _succeeded(instance: dg.DagsterInstance, run_id: str) -> bool | None:
    run = instance.get_run_by_id(run_id)
    if run is None or run.status in IN_PROGRESS or run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
        return None
    return run.status == dg.DagsterRunStatus.SUCCESS


def recover(instance: dg.DagsterInstance, stores: list[TableStore | HandoverFolders], *, skip: str | None = None) -> dict[str, str]:
    """Mark dead runs failed, then finish every other run's leftover staging under ``stores``: roll forward a
    commit that had started (or a succeeded run), discard a failed run's; leave live and unknown runs alone.
    Returns ``{run id: what was done}`` for the runs acted on."""
    mark_dead_runs(instance)
    done: dict[str, str] = {}
    for store in stores:
        for run_id in store.staged_runs():
            if run_id == skip:
                continue
            outcome = recover_location(store, run_id, succeeded=_succeeded(instance, run_id))
            if outcome != "left":
                done[run_id] = outcome
                if instance.get_run_by_id(run_id) is not None:
                    instance.add_run_tags(run_id, {TAG_TXN: "committed" if outcome == "rolled forward" else "rolled-back"})
    for run_id, outcome in done.items():
        log.info("synqa: run %s %s (recovered)", run_id, outcome)
    return done


def other_live_runs(instance: dg.DagsterInstance, batch: str, run_id: str) -> list[dg.DagsterRun]:
    """In-progress runs of ``batch`` other than ``run_id`` that started before it (the earliest run wins)."""
    mine = instance.get_run_record_by_id(run_id)
    mine_at = mine.create_timestamp if mine is not None else None
    out = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=list(IN_PROGRESS), tags={PARTITION_TAG: batch})):
        if record.dagster_run.run_id == run_id or worker_is_dead(record.dagster_run):
            continue
        if mine_at is None or record.create_timestamp <= mine_at:
            out.append(record.dagster_run)
    return out


@dataclass
class _Active:
    txn: RunTransaction
    lock: BatchLock | None
    refs: int = 1
    participants: list = field(default_factory=list)


_ACTIVE: dict[str, _Active] = {}
_GUARD = threading.RLock()


def active(run_id: str | None) -> RunTransaction | None:
    """The open transaction of ``run_id`` in this process, if any."""
    entry = _ACTIVE.get(run_id) if run_id else None
    return entry.txn if entry else None


def begin(context: dg.InitResourceContext, tables: TableStore, folders: HandoverFolders | None = None) -> RunTransaction | None:
    """Open (or join) the run's transaction from a storage resource's setup; None outside a run.

    The first participant of a run recovers what earlier runs left behind, takes the batch lock (raising
    :class:`~synqa_dagster.transaction.BatchBusy` when another run holds the batch) and records this worker's
    pid and host on the run.
    """
    run_id, instance, run = context.run_id, context.instance, context.dagster_run
    if not run_id or instance is None or run is None:
        return None
    with _GUARD:
        entry = _ACTIVE.get(run_id)
        if entry is not None:
            entry.refs += 1
            _enlist(entry.txn, tables, folders)
            return entry.txn
        txn = RunTransaction(run_id)
        _enlist(txn, tables, folders)
        recover(instance, [*txn.tables.values(), *txn.folders.values()], skip=run_id)
        batch = run.tags.get(PARTITION_TAG)
        lock = None
        if batch:
            lock = BatchLock(locks_dir(), batch)
            lock.acquire(run_id)
            try:
                others = other_live_runs(instance, batch, run_id)
                if others:
                    first = others[0]
                    raise BatchBusy(
                        f"batch {batch} is already being built by run {first.run_id} ({first.job_name}, status "
                        f"{first.status.value}, pid {first.tags.get(TAG_PID, '?')} on {first.tags.get(TAG_HOST, '?')}); "
                        f"this run was refused. Wait for it to finish or cancel it in the Dagster UI."
                    )
            except BaseException:
                lock.release()
                raise
        started = process_started(os.getpid())
        instance.add_run_tags(run_id, {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()),
                                       **({TAG_PID_STARTED: started} if started else {})})
        _ACTIVE[run_id] = _Active(txn, lock)
        return txn


def _enlist(txn: RunTransaction, tables: TableStore, folders: HandoverFolders | None) -> None:
    txn.enlist_tables(tables)
    if folders is not None:
        txn.enlist_folders(folders)


def run_failed_so_far(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether any step of the run has failed (what a run's end decides its commit on)."""
    return bool(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records)


def end(context: dg.InitResourceContext) -> CommitReport | None:
    """Close the run's transaction from a storage resource's teardown: the last participant commits it when no
    step failed and discards it otherwise, tags the run with the outcome and releases the batch lock."""
    run_id, instance = context.run_id, context.instance
    if not run_id or instance is None:
        return None
    with _GUARD:
        entry = _ACTIVE.get(run_id)
        if entry is None:
            return None
        entry.refs -= 1
        if entry.refs > 0:
            return None
        del _ACTIVE[run_id]
    report = None
    try:
        if run_failed_so_far(instance, run_id):
            staged = entry.txn.discard()
            instance.add_run_tags(run_id, {TAG_TXN: "rolled-back"})
            if staged:
                instance.report_engine_event(
                    f"synqa: a step failed, so nothing this run wrote was published; the batch keeps the outputs of "
                    f"its last committed run", instance.get_run_by_id(run_id))
        else:
            report = entry.txn.commit()
            instance.add_run_tags(run_id, {TAG_TXN: "committed"})
            instance.report_engine_event(f"synqa: {report.summary()}", instance.get_run_by_id(run_id))
    finally:
        if entry.lock is not None:
            entry.lock.release()
    return report


def batch_busy_reason(instance: dg.DagsterInstance, batch: str) -> str | None:
    """Why a new run of ``batch`` would be refused now (the lock is held here, or a live run of it is in the
    run storage), else None. For the CLI's message before it starts a run."""
    mark_dead_runs(instance)
    lock = BatchLock(locks_dir(), batch)
    if not lock.held_here() and not lock.is_free():
        holder = lock.holder()
        return f"batch {batch} is already being built by {holder.describe() if holder else 'another process'}"
    live = [r for r in instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS), tags={PARTITION_TAG: batch}))
            if not worker_is_dead(r)]
    if live:
        r = live[0]
        return (f"batch {batch} is already being built by run {r.run_id} ({r.job_name}, {r.status.value}, "
                f"pid {r.tags.get(TAG_PID, '?')} on {r.tags.get(TAG_HOST, '?')})")
    return None


def committed(run: dg.DagsterRun | None) -> bool:
    """Whether ``run``'s outputs are the published ones' source: it succeeded and was not rolled back (runs from
    before transactions have no tag and count when they succeeded)."""
    if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
        return False
    return run.tags.get(TAG_TXN, "committed") == "committed"


def build_run_recovery_sensor(stores: "callable") -> dg.SensorDefinition:
    """A sensor (on by default, every 60 s) that marks dead runs failed and finishes their staging, so a run
    killed outside the CLI (UI, schedule) does not stay ``STARTED`` or keep its staging. ``stores()`` returns
    the table stores and handover folders to sweep."""

    @dg.sensor(name="run_recovery_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Marks runs whose worker process died as failed, and rolls their staged outputs forward "
                           "(a commit that had started) or back (everything else).")
    def run_recovery_sensor(context: dg.SensorEvaluationContext):
        done = recover(context.instance, stores())
        return dg.SkipReason(f"recovered {len(done)} run(s): {done}" if done else "no dead runs")

    return run_recovery_sensor
