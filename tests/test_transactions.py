"""Run transactions over the table store and the handover folders, and the per-batch lock (Dagster-free).

A run's writes are staged beside what is published and only swapped in on commit; a discarded run leaves the
published tables and handover folders byte-identical; a commit interrupted half-way is finished by recovery; the
batch lock is exclusive across processes, re-entrant within one, and released by the kernel on ``kill -9``.
Local stores here; the same code on a real S3 server is in ``tests/test_s3_storage.py``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from synqa_dagster.handover.batch import handover_folders
from synqa_dagster.storage import RUNS_DIR, TableStore
from synqa_dagster.transaction import (
    BatchBusy, BatchLock, CommitRefused, RunTransaction, recover_location,
)

BATCH = "2026-11-02"


def _frame(tag: str, n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [f"{tag}{i}" for i in range(n)], "text": [f"{tag} row {i}" for i in range(n)]})


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` except run staging, with its sha256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and RUNS_DIR not in p.relative_to(root).parts}


def _published(tmp_path: Path) -> TableStore:
    store = TableStore(str(tmp_path / "storage"))
    store.write("generated_candidates", BATCH, _frame("old"))
    store.write("accepted_dataset", BATCH, _frame("old", 2))
    store.write_bytes("drift_findings", BATCH, b"old-png", "drift_a.png")
    store.write("drift_findings", BATCH, _frame("old", 1))
    return store


def test_a_run_sees_its_own_writes_and_nobody_else_does_until_commit(tmp_path):
    store = _published(tmp_path)
    run = store.for_run("run-1")
    run.write("generated_candidates", BATCH, _frame("new"))
    assert run.delete("accepted_dataset", BATCH) is True
    # the run's view
    assert run.read("generated_candidates", BATCH)["row_id"].iloc[0] == "new0"
    assert not run.exists("accepted_dataset", BATCH)
    with pytest.raises(FileNotFoundError, match="accepted_dataset"):
        run.read("accepted_dataset", BATCH)
    assert run.batches("accepted_dataset") == []
    # everyone else: untouched
    assert store.read("generated_candidates", BATCH)["row_id"].iloc[0] == "old0"
    assert store.exists("accepted_dataset", BATCH)
    txn = RunTransaction("run-1")
    txn.enlist_tables(store)
    report = txn.commit()
    assert ("accepted_dataset", BATCH, "withdrawn") in report.tables
    assert store.read("generated_candidates", BATCH)["row_id"].iloc[0] == "new0"
    assert not store.exists("accepted_dataset", BATCH)
    assert store.staged_runs() == []


def test_a_discarded_run_leaves_the_published_tables_byte_identical(tmp_path):
    store = _published(tmp_path)
    before = _tree_digest(tmp_path / "storage")
    run = store.for_run("run-2")
    run.write("generated_candidates", BATCH, _frame("new"))
    run.delete("accepted_dataset", BATCH)
    run.write_bytes("drift_findings", BATCH, b"new-png", "drift_a.png")
    txn = RunTransaction("run-2")
    txn.enlist_tables(store)
    assert txn.discard() is True
    assert _tree_digest(tmp_path / "storage") == before
    assert store.staged_runs() == []


def test_a_replaced_table_folder_loses_the_old_side_files(tmp_path):
    store = _published(tmp_path)
    run = store.for_run("run-3")
    run.write("drift_findings", BATCH, _frame("new", 1))
    run.write_bytes("drift_findings", BATCH, b"new-png", "drift_b.png")
    txn = RunTransaction("run-3")
    txn.enlist_tables(store)
    txn.commit()
    folder = Path(store.uri("drift_findings", BATCH)).parent
    assert sorted(p.name for p in folder.iterdir()) == ["data.parquet", "drift_b.png"]
    assert store.read_bytes("drift_findings", BATCH, "drift_b.png") == b"new-png"


def test_a_write_after_a_withdrawal_in_the_same_run_wins(tmp_path):
    store = _published(tmp_path)
    run = store.for_run("run-4")
    run.delete("accepted_dataset", BATCH)
    run.write("accepted_dataset", BATCH, _frame("again", 3))
    assert len(run.read("accepted_dataset", BATCH)) == 3
    txn = RunTransaction("run-4")
    txn.enlist_tables(store)
    txn.commit()
    assert store.read("accepted_dataset", BATCH)["row_id"].tolist() == ["again0", "again1", "again2"]


def test_a_commit_interrupted_half_way_is_rolled_forward_and_cannot_be_discarded(tmp_path, monkeypatch):
    store = _published(tmp_path)
    run = store.for_run("run-5")
    run.write("accepted_dataset", BATCH, _frame("new", 5))
    run.write("generated_candidates", BATCH, _frame("new"))
    txn = RunTransaction("run-5")
    txn.enlist_tables(store)
    calls = {"n": 0}
    real = TableStore._commit_unit

    def crash_after_first(self, *args, **kwargs):  # failure injection: the process dies between two units
        if calls["n"] == 1:
            raise KeyboardInterrupt("killed mid-commit")
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TableStore, "_commit_unit", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        txn.commit()
    monkeypatch.setattr(TableStore, "_commit_unit", real)
    assert store.staged_runs() == ["run-5"]
    with pytest.raises(CommitRefused):
        txn.discard()  # the outcome was decided when the marker went down
    assert recover_location(store, "run-5", succeeded=None) == "rolled forward"
    assert store.read("accepted_dataset", BATCH)["row_id"].iloc[0] == "new0"
    assert store.read("generated_candidates", BATCH)["row_id"].iloc[0] == "new0"
    assert store.staged_runs() == []


def test_recovery_discards_a_failed_runs_staging_and_leaves_a_live_one(tmp_path):
    store = _published(tmp_path)
    store.for_run("dead").write("accepted_dataset", BATCH, _frame("dead"))
    store.for_run("live").write("accepted_dataset", BATCH, _frame("live"))
    assert recover_location(store, "dead", succeeded=False) == "discarded"
    assert recover_location(store, "live", succeeded=None) == "left"
    assert store.staged_runs() == ["live"]
    assert store.read("accepted_dataset", BATCH)["row_id"].iloc[0] == "old0"


def test_handover_folders_are_staged_and_swapped_in_whole(tmp_path):
    from tests.test_lineage_verify import build_pack

    base = tmp_path / "handover"
    folders = handover_folders(base)
    folders.publish(build_pack(tmp_path / "old", batch=BATCH).folder, f"batch={BATCH}")  # outside any run
    published_before = _tree_digest(base)
    run = folders.for_run("run-6")
    run.publish(build_pack(tmp_path / "new", batch=BATCH).folder, f"batch={BATCH}")  # another key: other bytes
    assert run.complete(f"batch={BATCH}") and run.names() == [f"batch={BATCH}"]
    assert _tree_digest(base) == published_before  # nobody else sees the new pack
    txn = RunTransaction("run-6")
    txn.enlist_folders(folders)
    assert txn.commit().folders == [(f"batch={BATCH}", "replaced")]
    assert _tree_digest(base) != published_before and folders.staged_runs() == []


def test_a_withdrawn_handover_folder_stays_published_until_commit(tmp_path):
    from tests.test_lineage_verify import build_pack

    base = tmp_path / "handover"
    folders = handover_folders(base)
    folders.publish(build_pack(tmp_path / "old", batch=BATCH).folder, f"batch={BATCH}")
    run = folders.for_run("run-7")
    assert run.delete(f"batch={BATCH}") is True
    assert not run.complete(f"batch={BATCH}") and run.names() == []
    assert folders.complete(f"batch={BATCH}")
    txn = RunTransaction("run-7")
    txn.enlist_folders(folders)
    txn.commit()
    assert not folders.complete(f"batch={BATCH}")


# ------------------------------------------------------------------------------------------------- batch lock
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from synqa_dagster.transaction import BatchLock
    BatchLock(Path(sys.argv[1]), sys.argv[2]).acquire("holder-run")
    print("held", flush=True)
    time.sleep(600)
""")


def test_the_batch_lock_refuses_a_second_holder_and_is_freed_by_kill_9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), BATCH], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = BatchLock(tmp_path, BATCH)
        assert not lock.is_free()
        with pytest.raises(BatchBusy, match=rf"batch {BATCH} is already being built by run holder-run \(pid {proc.pid}"):
            lock.acquire("second-run")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 5
        while not lock.is_free() and time.time() < deadline:
            time.sleep(0.05)
        with lock.held("second-run"):
            assert lock.held_here() and lock.holder().run_id == "second-run"
        assert lock.is_free()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_batch_lock_is_reentrant_within_a_process(tmp_path):
    lock = BatchLock(tmp_path, BATCH)
    with lock.held("cli"):
        BatchLock(tmp_path, BATCH).acquire("run")  # the run's resources take it again: fine
        BatchLock(tmp_path, BATCH).release()
        assert lock.held_here()
    assert lock.is_free() and not lock.held_here()
    assert (tmp_path / f"batch={BATCH}.lock").stat().st_mode & 0o077 == 0
