"""A batch run as a transaction over the table store and the handover folders, and the per-batch lock.

Dagster-free. A run stages every table it writes and every handover folder it builds or withdraws under
``<base>/.runs/<run id>/`` of each store it uses (:mod:`synqa_dagster.storage`); what is published — the
accepted split, the signed handover folder, the roll-up — stays valid, untouched, until the run succeeds.

:class:`RunTransaction` is one run's view of those stores (its *participants*). :meth:`RunTransaction.commit`:

1. writes a commit marker (``.runs/<run id>/.committing``) into every participant's staging — from here on the
   run's outcome is decided: a crash is finished by :func:`recover_location` (roll forward), never undone;
2. publishes each participant's staged units (tables folder by folder; handover folders whole, manifest last on S3);
3. rebuilds the dataset roll-up (README.md, batches.json) from the published folders when a folder changed;
4. removes the staging, marker last.

:meth:`RunTransaction.discard` throws a failed run's staging away (refused once the marker is down).

:class:`BatchLock` is the "one run per batch at a time" lock on one machine: an ``fcntl.flock`` on
``<locks>/batch=<key>.lock``, which the kernel releases when the holder dies (``kill -9`` included), re-entrant
within a process (the CLI holds it around a run whose resources take it again). The holder's run id, pid and
host are written into the file so a refused run can say who holds the batch. Runs on other machines sharing
one Dagster instance are kept apart by the run-storage check in :mod:`synqa_dagster.runs`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from synqa_dagster.storage import RUNS_DIR, HandoverFolders, TableStore

MARKER = ".committing"


@dataclass
class CommitReport:
    """What a commit published: ``tables`` as ``(asset, batch, action)``, ``folders`` as ``(name, action)``, and
    whether the roll-up was rebuilt."""

    run_id: str
    tables: list[tuple[str, str | None, str]] = field(default_factory=list)
    folders: list[tuple[str, str]] = field(default_factory=list)
    rollup: bool = False

    def summary(self) -> str:
        tables = sorted({f"{a}" + (f"[{b}]" if b else "") for a, b, _ in self.tables})
        folders = [f"{n} ({how})" for n, how in self.folders]
        return (f"run {self.run_id[:8]} committed {len(tables)} table(s)"
                + (f", handover {', '.join(folders)}" if folders else "") + ("; roll-up rebuilt" if self.rollup else ""))


class CommitRefused(RuntimeError):
    """A run's staging cannot be discarded: its commit had started (it must be rolled forward)."""


def _marker_exists(store: TableStore | HandoverFolders, run_id: str) -> bool:
    rel = f"{RUNS_DIR}/{run_id}/{MARKER}"
    if isinstance(store, TableStore):
        if store.is_local:
            return (Path(store._root()) / rel).is_file()
        return store.objects().exists(rel)
    if store.path is not None:
        return (store.path / rel).is_file()
    return store.objects.exists(rel)


def _write_marker(store: TableStore | HandoverFolders, run_id: str, payload: bytes) -> None:
    rel = f"{RUNS_DIR}/{run_id}/{MARKER}"
    if isinstance(store, TableStore):
        if not store.is_local:
            store.objects().put(rel, payload)
            return
        path = Path(store._root()) / rel
    elif store.path is None:
        store.objects.put(rel, payload)
        return
    else:
        path = store.path / rel
    from synqa_dagster.common import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, payload)


class RunTransaction:
    """One run's staged work across its table stores and handover folders.

    Attributes:
        run_id: the Dagster run id (the staging folder's name).
        tables: the table stores the run writes through (their published views), by base.
        folders: the handover folder bases the run writes through (their published views), by location.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.tables: dict[str, TableStore] = {}
        self.folders: dict[str, HandoverFolders] = {}

    def enlist_tables(self, store: TableStore) -> TableStore:
        """Take part with ``store``; returns the run's view of it."""
        published = store.published()
        self.tables.setdefault(published.base, published)
        return published.for_run(self.run_id)

    def enlist_folders(self, folders: HandoverFolders) -> HandoverFolders:
        """Take part with ``folders``; returns the run's view of them."""
        published = folders.published()
        self.folders.setdefault(published.location, published)
        return published.for_run(self.run_id)

    def _participants(self) -> list[TableStore | HandoverFolders]:
        return [*self.tables.values(), *self.folders.values()]

    def has_staged(self) -> bool:
        """Whether any participant holds staged work of this run."""
        return any(self.run_id in p.staged_runs() for p in self._participants())

    def commit(self) -> CommitReport:
        """Publish the run's staged work (see the module docstring); idempotent after a crash."""
        report = CommitReport(self.run_id)
        staged = [p for p in self._participants() if self.run_id in p.staged_runs()]
        if not staged:
            return report
        payload = json.dumps({"run_id": self.run_id, "at": dt.datetime.now(dt.timezone.utc).isoformat()}).encode()
        for participant in staged:
            if not _marker_exists(participant, self.run_id):
                _write_marker(participant, self.run_id, payload)
        for participant in staged:
            if isinstance(participant, TableStore):
                report.tables += participant.commit_run(self.run_id, cleanup=False)
            else:
                report.rollup |= _commit_folders(participant, self.run_id, report)
        for participant in staged:  # marker last: each discard removes the run's whole staging folder
            participant.discard_run(self.run_id)
        return report

    def discard(self) -> bool:
        """Throw the run's staging away; raises :class:`CommitRefused` once its commit has started."""
        participants = [p for p in self._participants() if self.run_id in p.staged_runs()]
        if any(_marker_exists(p, self.run_id) for p in participants):
            raise CommitRefused(f"run {self.run_id} had started committing: roll it forward instead")
        for participant in participants:
            participant.discard_run(self.run_id)
        return bool(participants)


def _commit_folders(folders: HandoverFolders, run_id: str, report: CommitReport) -> bool:
    from synqa_dagster.handover.batch import ROLLUP_PARAMS, rebuild_rollup

    raw = folders.for_run(run_id).read_file(ROLLUP_PARAMS)  # the run's roll-up parameters, else the last published
    touched = folders.touched_rollup(run_id)
    changed = folders.commit_run(run_id, cleanup=False)
    report.folders += changed
    if not (changed or touched):
        return False
    rebuild_rollup(folders, json.loads(raw.decode("utf-8")) if raw else None)
    return True


def staged_run_ids(*stores: TableStore | HandoverFolders) -> set[str]:
    """Every run id with staging under any of ``stores``."""
    return {run for store in stores for run in store.staged_runs()}


def recover_location(store: TableStore | HandoverFolders, run_id: str, *, succeeded: bool | None) -> str:
    """Finish run ``run_id``'s staging under one store after its run ended without doing so: roll forward when
    its commit had started (marker) or the run succeeded, discard when it failed; ``succeeded=None`` (still
    running, or unknown) leaves it. Returns "rolled forward", "discarded" or "left"."""
    if run_id not in store.staged_runs():
        return "left"
    txn = RunTransaction(run_id)
    if isinstance(store, TableStore):
        txn.enlist_tables(store)
    else:
        txn.enlist_folders(store)
    if _marker_exists(store, run_id) or succeeded is True:
        txn.commit()
        return "rolled forward"
    if succeeded is False:
        txn.discard()
        return "discarded"
    return "left"


# -- the per-batch lock ----------------------------------------------------------------------------------------


class BatchBusy(RuntimeError):
    """Another run holds this batch; the message says which run, process and host, and since when."""


_HELD: dict[str, list] = {}  # lock path -> [fd, count, run_id]
_HELD_GUARD = threading.Lock()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a batch lock (as written into the lock file by the holder)."""

    run_id: str
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"


class BatchLock:
    """The lock that lets one run at a time build ``batch`` on this machine (see the module docstring).

    Attributes:
        path: the lock file, ``<locks_dir>/batch=<batch>.lock``.
        batch: the batch (partition key).
    """

    def __init__(self, locks_dir: Path, batch: str) -> None:
        self.batch = batch
        self.path = Path(locks_dir) / f"batch={batch}.lock"

    def holder(self) -> LockHolder | None:
        """The holder recorded in the lock file (meaningful while the lock is held), or None."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        return LockHolder(str(data.get("run_id")), int(data.get("pid", 0)), str(data.get("host")), str(data.get("since")))

    def held_here(self) -> bool:
        """Whether this process holds the lock."""
        return str(self.path) in _HELD

    def is_free(self) -> bool:
        """Whether nobody holds the lock right now (this process counts as a holder)."""
        if self.held_here():
            return False
        if not self.path.exists():
            return True
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops the probe's lock
        return True

    def acquire(self, run_id: str) -> None:
        """Take the lock for ``run_id`` without waiting; raises :class:`BatchBusy` naming the holder."""
        key = str(self.path)
        with _HELD_GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self.holder()
                who = holder.describe() if holder else "another process"
                raise BatchBusy(f"batch {self.batch} is already being built by {who}; this run was refused. "
                                f"Wait for that run to finish, or stop it (the lock is {self.path})") from None
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                                     "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}).encode())
            _HELD[key] = [fd, 1, run_id]

    def release(self) -> None:
        """Give the lock back (the last release of a re-entrant hold closes it)."""
        key = str(self.path)
        with _HELD_GUARD:
            entry = _HELD.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]
            os.close(entry[0])

    @contextmanager
    def held(self, run_id: str) -> Iterator["BatchLock"]:
        """``with lock.held(run_id):`` acquire, then release on exit."""
        self.acquire(run_id)
        try:
            yield self
        finally:
            self.release()
