"""The generation child dies with its caller, and each call has a cache of its own (real processes, real LLM).

A caller process is ``kill -9``-ed (its whole process group, as ``synqa demo``'s would be) while the child is
generating: the child and every distilabel step worker must be gone within seconds, and the next call must
sweep the dead call's cache folder and give byte-identical rows. Two simultaneous calls must not share a cache
(they used to, which doubled the completion tokens).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from synqa_dagster.config import load_recipe
from synqa_dagster.corpus.seeds import load_seed_corpus
from synqa_dagster.generation.runner import (
    LOCK_FILE, RUNS_DIR, GenerationFailed, run_in_subprocess, sweep_stale_run_caches,
)
from synqa_dagster.generation.seeds import select_seeds
from tests.conftest import REPO_ROOT, TINY, write_recipe

BATCH = "2026-11-02"
CREATED_AT = "2026-11-02T00:00:00+00:00"
#: TINY cut down further (one seed, short completions): every technique and step worker still runs.
SMALL = {**TINY, "seed_corpus.seeds_per_batch": 1, "generator.sampling.max_new_tokens": 24}
RUNNER = "synqa_dagster.generation.runner"

#: The caller: generates one batch through run_in_subprocess, printing the child's log lines.
CALLER = """
import sys
from pathlib import Path
from synqa_dagster.config import load_recipe
from synqa_dagster.generation.runner import run_in_subprocess
from tests.test_generation_runner import BATCH, CREATED_AT, batch_seeds
recipe = load_recipe(sys.argv[1])
run_in_subprocess(recipe, batch_seeds(recipe), BATCH, CREATED_AT, Path(sys.argv[2]), log=lambda l: print(l, flush=True), cache_key=sys.argv[3])
print("caller finished", flush=True)
"""


def batch_seeds(recipe) -> pd.DataFrame:
    """The seeds of :data:`BATCH` for ``recipe`` (as the asset selects them)."""
    corpus = load_seed_corpus(REPO_ROOT / "data/demo/seeds.jsonl", REPO_ROOT / "data/demo/taxonomy", "v1").rows
    return select_seeds(corpus, BATCH, recipe.seed_corpus.seeds_per_batch, salt=recipe.generator.seed)


def _proc_stat(pid: str) -> tuple[str, int, int] | None:
    """``(state, ppid, pgrp)`` of a process from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def group_members(pgid: int) -> dict[int, str]:
    """Live (not zombie) processes of process group ``pgid``: pid -> command line."""
    members = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (stat := _proc_stat(pid)) and stat[2] == pgid and stat[0] not in "ZX":
            members[int(pid)] = _cmdline(pid)
    return members


def _runner_child_of(parent: int) -> int | None:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (stat := _proc_stat(pid)) and stat[1] == parent and RUNNER in _cmdline(pid):
            return int(pid)
    return None


def _wait_for(condition, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def assert_same_rows(rows: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Byte-identical: equal frames, equal row hashes, equal Parquet bytes."""
    pd.testing.assert_frame_equal(rows, expected)
    assert pd.util.hash_pandas_object(rows).equals(pd.util.hash_pandas_object(expected))
    assert rows.to_parquet(index=False) == expected.to_parquet(index=False)


@pytest.fixture(scope="module")
def small_recipe(tmp_path_factory) -> Path:
    """The small recipe (:data:`SMALL`) written to a temporary file."""
    return write_recipe(tmp_path_factory.mktemp("recipe") / "small.yaml", **SMALL)


@pytest.fixture(scope="module")
def reference(small_recipe, tmp_path_factory):
    """Rows and stats of one generation of :data:`BATCH` from a clean cache, with no cache key."""
    cache = tmp_path_factory.mktemp("clean") / "cache"
    recipe = load_recipe(small_recipe)
    rows, stats = run_in_subprocess(recipe, batch_seeds(recipe), BATCH, CREATED_AT, cache, log=lambda _: None)
    assert len(rows) and stats.completion_tokens > 0
    assert list((cache / RUNS_DIR).iterdir()) == []  # removed on success
    return rows, stats


def test_a_killed_caller_takes_the_child_and_its_step_workers_with_it(small_recipe, reference, tmp_path):
    cache = tmp_path / "cache"
    run_dir = cache / RUNS_DIR / "killed-run"
    log = tmp_path / "caller.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("w") as out:
        caller = subprocess.Popen(
            [sys.executable, "-c", CALLER, str(small_recipe), str(cache), "killed-run"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    child = None
    try:
        child = _wait_for(lambda: _runner_child_of(caller.pid), 120, "the generation child", log)
        assert os.getpgid(child) == child != os.getpgid(caller.pid)  # its own group: the caller's kill misses it
        # Generating: distilabel's step workers are up (in the child's group) and it has started its cache.
        _wait_for(
            lambda: len([c for c in group_members(child).values() if RUNNER in c]) >= 4 and (run_dir / "distilabel").is_dir(),
            120, "distilabel's step workers", log,
        )
        time.sleep(2)
        members = group_members(child)
        assert caller.poll() is None, log.read_text()
        # Every process of the group is the child, a fork of it (distilabel's workers and manager), or the guardian.
        assert all(RUNNER in cmd or " -S -c " in cmd for cmd in members.values()), members
        assert sum(" -S -c " in cmd for cmd in members.values()) == 1, members

        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait()
        killed = time.monotonic()
        _wait_for(lambda: not group_members(child), 10, f"the child's group to die (left: {group_members(child)})", log)
        print(f"child group of {len(members)} processes gone {time.monotonic() - killed:.2f} s after the kill")
        # The dead call's folder is left behind, but nobody holds it any more...
        assert run_dir.is_dir() and _lock_is_free(run_dir / LOCK_FILE)
    finally:
        if child is not None and group_members(child):
            os.killpg(child, signal.SIGKILL)
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()

    # ...so the next call sweeps it, generates the same batch, and leaves nothing behind.
    recipe = load_recipe(small_recipe)
    rows, stats = run_in_subprocess(recipe, batch_seeds(recipe), BATCH, CREATED_AT, cache, log=lambda _: None, cache_key="next-run")
    assert not run_dir.exists()
    assert list((cache / RUNS_DIR).iterdir()) == []
    expected_rows, expected_stats = reference
    assert_same_rows(rows, expected_rows)
    assert stats.completion_tokens == expected_stats.completion_tokens
    assert stats.rows_by_technique == expected_stats.rows_by_technique


def test_a_crashed_child_leaves_no_workers_and_fails_the_call_at_once(small_recipe, tmp_path):
    """The child's main process dies (SIGKILL, as the OOM killer would): its workers go too, the call fails fast."""
    recipe = load_recipe(small_recipe)
    cache = tmp_path / "cache"
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            run_in_subprocess(recipe, batch_seeds(recipe), BATCH, CREATED_AT, cache, log=lambda _: None)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    child = _wait_for(lambda: _runner_child_of(os.getpid()), 120, "the generation child")
    try:
        _wait_for(lambda: len(group_members(child)) >= 5, 120, "distilabel's step workers")
        os.kill(child, signal.SIGKILL)
        caller.join(15)  # the workers hold the child's stdout: with them alive the call would hang
        assert not caller.is_alive(), f"the call still waits; left: {group_members(child)}"
    finally:
        if group_members(child):
            os.killpg(child, signal.SIGKILL)
    assert isinstance(outcome[0], GenerationFailed) and "exit -9" in str(outcome[0]), outcome
    assert not group_members(child)
    assert list((cache / RUNS_DIR).iterdir()) == []


def test_only_cache_folders_no_live_process_holds_are_swept(tmp_path):
    runs = tmp_path / RUNS_DIR
    live, stale, staging, bare = (runs / n for n in ("live-run", "stale-run", ".new-0123", "no-lock"))
    for folder in (live, stale, staging, bare):
        (folder / "distilabel").mkdir(parents=True)
    for folder in (live, stale, staging):
        (folder / LOCK_FILE).touch()
    holder = subprocess.Popen(  # a live process holding live-run's lock
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(live / LOCK_FILE)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert sweep_stale_run_caches(runs) == [stale]
        # a folder being set up (.new-*) or without a lock file is only removed once it is old
        assert {p.name for p in runs.iterdir()} == {"live-run", ".new-0123", "no-lock"}
        holder.kill()
        holder.wait()
        assert sweep_stale_run_caches(runs) == [live]
        old = time.time() - 2 * 3600
        for folder in (staging, bare):
            os.utime(folder, (old, old))
        assert sorted(p.name for p in sweep_stale_run_caches(runs)) == [".new-0123", "no-lock"]
        assert list(runs.iterdir()) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_cache_key_in_use_gets_a_folder_of_its_own(tmp_path):
    from synqa_dagster.generation.runner import _claim_run_dir

    runs = tmp_path / RUNS_DIR
    first, first_fd = _claim_run_dir(runs, "run/42")
    assert first == runs / "run_42" and not _lock_is_free(first / LOCK_FILE)
    second, second_fd = _claim_run_dir(runs, "run/42")  # held by a live call: never shared
    assert second.name.startswith("run_42.") and second != first
    os.close(first_fd)  # the first call is gone, leaving its folder: the next claim of the key takes it over
    (first / "distilabel").mkdir()
    third, third_fd = _claim_run_dir(runs, "run/42")
    assert third == first and not (third / "distilabel").exists()
    for fd in (second_fd, third_fd):
        os.close(fd)


@pytest.mark.slow
def test_simultaneous_calls_do_not_share_a_cache(small_recipe, reference, tmp_path):
    """Two calls for the same batch at once, even with the same cache key, each count only their own tokens."""
    recipe = load_recipe(small_recipe)
    seeds = batch_seeds(recipe)
    cache = tmp_path / "cache"
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            results[i] = run_in_subprocess(recipe, seeds, BATCH, CREATED_AT, cache, log=lambda _: None, cache_key="same-run")
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected_rows, expected_stats = reference
    for i in range(2):
        assert not isinstance(results[i], BaseException), results[i]
        rows, stats = results[i]
        assert stats.completion_tokens == expected_stats.completion_tokens  # not doubled
        assert_same_rows(rows, expected_rows)
    assert list((cache / RUNS_DIR).iterdir()) == []
