"""Execution gate for code pairs: a generated ``solution`` must pass its generated ``tests``, run in a sandbox.

Rows of a code recipe carry ``solution`` (Python source defining functions) and ``tests`` (pytest-style
top-level ``assert`` statements, ``def test_*`` functions, ``Test*`` classes with ``test_*`` methods, unittest
``TestCase`` classes). Each row is first checked statically (both parse and compile; the tests assert something
a test can reach), then run once in a fresh, throwaway sandbox process. A row is kept when every test passes.

Sandbox, per row (see :class:`SandboxIsolation` for what this machine actually provides; the gate reports it in
``metrics["isolation"]``):

- a fresh ``python -S -B -P -X utf8`` process (``-S``: no ``site``, so no ``.pth`` code from the environment;
  the runner then appends the interpreter's ``site-packages`` to ``sys.path``, so numpy/pandas stay importable,
  but the editable install of this project does not; ``-P``: no script directory on ``sys.path``; not ``-I``
  or ``-E``, because the environment is built from scratch by the gate and sets ``PYTHONHASHSEED=0``, which
  keeps set and dict order, hence results, deterministic), in its own session (``start_new_session``, so
  the whole process group can be killed), stdin on ``/dev/null``;
- a temporary working directory holding only ``solution.py``, ``tests.py``, the runner and its
  ``sandbox.json`` (``HOME`` and ``TMPDIR`` point into it), deleted afterwards;
- a scrubbed environment: nothing of the gate's is inherited (no ``HOME`` secrets, ``SYNQA_*``, ``AWS_*``,
  tokens); ``PATH=/usr/bin:/bin``, ``C.UTF-8`` locale, one BLAS/OpenMP thread;
- resource limits: ``RLIMIT_CPU`` :attr:`~ExecutionGateConfig.cpu_seconds`, ``RLIMIT_AS``
  :attr:`~ExecutionGateConfig.memory_mb`, ``RLIMIT_FSIZE`` :attr:`~ExecutionGateConfig.max_file_bytes`,
  ``RLIMIT_NOFILE``, ``RLIMIT_CORE`` 0, inherited by every process the row starts. They are set with
  ``resource.setrlimit`` by the runner's first lines, before any of the row's code is read, rather than in a
  ``preexec_fn``, which CPython documents as unsafe in a threaded parent (the gate starts rows from worker
  threads; uid, groups and session are set by ``subprocess`` itself, in C). Plus a wall clock after which
  the gate SIGKILLs the process group and sweeps every process the row started (same process group or
  session, same user namespace, same cgroup); stdout+stderr are captured through one pipe and the run is
  killed once they exceed :attr:`~ExecutionGateConfig.max_output_bytes`;
- a new user + network namespace per row where the kernel allows it unprivileged (``unshare(CLONE_NEWUSER |
  CLONE_NEWNET)``): no network interface but a down loopback, and no capability outside the namespace even when
  the gate runs as root;
- process-count containment (:attr:`~ExecutionGateConfig.max_processes`, threads count too). ``RLIMIT_NPROC``
  counts *all* processes of a uid, and the kernel does not enforce it for root at all, so: when the gate runs
  as root, rows run as ``nobody`` (65534) if that uid can start the interpreter (see
  :attr:`~ExecutionGateConfig.run_as_user`), else as root; for a non-root row uid, ``RLIMIT_NPROC`` is set
  *after* the user-namespace unshare, where the kernel counts only that namespace's processes (per row, no
  interference with the gate's or other rows' processes; without user namespaces: the uid's current count +
  ``max_processes``); for root rows, a per-row cgroup with ``pids.max`` (cgroup v1 ``pids`` hierarchy, or v2
  where the pids controller can be delegated) when writable, else no hard cap (the audit hook's fork blocking
  and the kill sweep only). Every run ends with a kill sweep: SIGKILL to the process group, then to every
  process in the row's session, user namespace or cgroup, until none is left;
- an audit hook (``sys.addaudithook``; hooks cannot be removed) installed by the runner before the row's code
  runs: it blocks process creation (``os.system``, ``subprocess.Popen``, ``os.exec*``, ``os.fork``,
  ``os.posix_spawn``, ``pty.spawn``, and ``multiprocessing``'s spawn path, ``_posixsubprocess.fork_exec``),
  network use (``socket.connect``, ``bind``, ``getaddrinfo``..., non-``AF_UNIX`` sockets), writes outside the
  working directory (``open`` for writing, ``os.remove``/``rename``/``mkdir``/``chmod``..., ``shutil.rmtree``/
  ``copy*``/``move``; links and symlinks are refused), reads under :attr:`~ExecutionGateConfig.deny_read`
  (default: the repository root and ``$HOME``, plus ``/etc/shadow`` and friends and other processes'
  ``/proc/<pid>``; the interpreter's standard library and ``site-packages`` stay readable even when they lie
  under a denied root), ``ctypes`` lookups of process, socket, syscall and interpreter-internal symbols,
  ``gc`` / ``sys._current_frames`` introspection, adding audit hooks and ``resource.setrlimit``. A blocked
  event ends the run at once with a ``sandbox_violation`` naming it (even if the row's code would catch the
  exception).

Results come back on a dedicated pipe, one line per record prefixed with a per-run random nonce that the
runner reads from a second pipe (never from argv, the environment or a file): fake results printed to stdout
are never read, lines without the nonce are tampering, and a run counts as passed only when every test the
gate expects (from the tests' AST) reported and the runner's final record came (``sys.exit`` /
``os._exit`` before or during the tests never pass).

What an in-process audit-hook sandbox cannot stop: see the "Limitations" section of :class:`ExecutionGate`.

Reasons are exact: ``test test_adds_negative failed: AssertionError at line 3 (assert add(-1, 1) == 0)``,
``limit: CPU time 2 s exceeded``, ``limit: memory 256 MB exceeded (MemoryError)``, ``limit: wall clock 5 s
exceeded``, ``limit: output over 65536 bytes``, ``sandbox: os.system blocked``, ``sandbox: write outside the
working directory blocked (/etc/x)``, ``sandbox: network blocked (socket.connect)``, ``tests do not parse:
line 2: invalid syntax``, ``tests assert nothing``. The parts the row controls (exception messages, source
lines, paths) have control characters removed and are cut to 200 characters.

References:
    - PEP 578, "Python Runtime Audit Hooks", and the CPython audit events table
      (https://docs.python.org/3/library/audit_events.html).
    - OpenAI HumanEval ``execution.py`` (``reliability_guard``), the usual baseline for executing generated
      code, which this gate extends with process isolation, namespaces and kill sweeps.
    - ``user_namespaces(7)``, ``network_namespaces(7)``, ``getrlimit(2)`` (``RLIMIT_NPROC`` semantics),
      the cgroup v1 ``pids`` controller documentation.
"""

from __future__ import annotations

import ast
import concurrent.futures
import itertools
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from synqa_dagster.gates import _sandbox_runner as runner
from synqa_dagster.gates.base import Gate, GateResult

__all__ = [
    "CATEGORIES",
    "ExecutionGate",
    "ExecutionGateConfig",
    "RunOutcome",
    "SandboxIsolation",
    "clean_reason_text",
    "probe_isolation",
]

#: Drop categories, in the order the gate checks them.
CATEGORIES = (
    "unparseable",
    "no_assertions",
    "sandbox_violation",
    "limit_output",
    "limit_wall",
    "limit_cpu",
    "limit_memory",
    "limit_file",
    "crashed",
    "tests_failed",
)

#: Paths whose reading is always denied (secrets of the machine, whatever ``deny_read`` says).
SYSTEM_DENY_READ = (
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/run/secrets",
    "/var/run/secrets",
)

_RUNNER_SOURCE = Path(runner.__file__).read_text(encoding="utf-8")
_MAX_RESULT_BYTES = 1 << 20
_row_counter = itertools.count()


def _repo_root() -> str | None:
    root = Path(__file__).resolve().parents[2]
    return str(root) if (root / "pyproject.toml").exists() else None


class ExecutionGateConfig(BaseModel):
    """Configuration of :class:`ExecutionGate`.

    Attributes:
        cpu_seconds: CPU time of the row's process (``RLIMIT_CPU``, whole seconds; SIGXCPU, then SIGKILL one
            second later).
        wall_seconds: wall-clock limit of one row's run, interpreter start included; the process group is then
            SIGKILLed and every process of the row swept.
        memory_mb: address space of each process of the row (``RLIMIT_AS``); the interpreter plus numpy and
            pandas need about 250 MB of it, hence 512 by default.
        max_output_bytes: stdout+stderr (one pipe) a run may write; the run is killed once it writes more.
        max_processes: processes *and threads* a row may have at once (``pids.max`` of its cgroup, or
            ``RLIMIT_NPROC`` inside its user namespace; see the module docstring for which applies).
        max_file_bytes: largest file the row may write (``RLIMIT_FSIZE``).
        max_open_files: ``RLIMIT_NOFILE``.
        max_files_written: how many files a row may open for writing (a cap on disk use, with ``max_file_bytes``).
        max_source_chars: longer solutions or tests are rejected without running (``unparseable``).
        workers: rows run in parallel (threads, each waiting on one sandbox process).
        solution_column, tests_column: the row columns holding the solution source and the tests source.
        deny_read: paths the row may not read (the audit hook refuses them; standard library and
            ``site-packages`` stay readable, the longest matching prefix wins). ``None``: the repository root
            (where ``.synqa/keys`` lives) and the gate's ``$HOME``. :data:`SYSTEM_DENY_READ` and other
            processes' ``/proc/<pid>`` entries are always denied.
        python: the interpreter that runs the rows (Python >= 3.11, for ``-P``; its standard library and
            ``site-packages``, of its virtual environment if it has one, are what solutions may import);
            ``None``: the gate's own (``sys.executable``).
        run_as_user: uid (and gid) the rows run as, when the gate runs as root. ``"auto"``: ``nobody`` (65534)
            if that uid can start the interpreter (and enter ``tmp_root``), else root (still without
            capabilities outside its user namespace when those are available); ``None``: the gate's own uid.
        use_cgroups: when the rows run as root, contain their processes with a per-row ``pids`` cgroup if the
            hierarchy is writable.
        tmp_root: where the per-row working directories are created (``None``: the system temporary
            directory).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_seconds: int = Field(2, ge=1, le=3600, description="RLIMIT_CPU of the row's process, in seconds.")
    wall_seconds: float = Field(5.0, gt=0, le=3600, description="Wall-clock limit of one row's run.")
    memory_mb: int = Field(512, ge=64, description="RLIMIT_AS of each process of the row, in MB.")
    max_output_bytes: int = Field(64 * 1024, ge=0, description="stdout+stderr bytes before the run is killed.")
    max_processes: int = Field(16, ge=1, le=4096, description="Processes and threads a row may have at once.")
    max_file_bytes: int = Field(16 * 1024 * 1024, ge=0, description="RLIMIT_FSIZE: largest file written.")
    max_open_files: int = Field(256, ge=16, description="RLIMIT_NOFILE.")
    max_files_written: int = Field(256, ge=1, description="Files a row may open for writing.")
    max_source_chars: int = Field(200_000, ge=1, description="Longest solution or tests source accepted.")
    workers: int = Field(2, ge=1, le=256, description="Rows run in parallel.")
    solution_column: str = Field("solution", description="Column with the solution source.")
    tests_column: str = Field("tests", description="Column with the tests source.")
    deny_read: tuple[str, ...] | None = Field(None, description="Paths the row may not read (None: repo, $HOME).")
    python: str | None = Field(None, description="Interpreter for the rows (None: sys.executable).")
    run_as_user: int | Literal["auto"] | None = Field("auto", description="uid rows run as when the gate is root.")
    use_cgroups: bool = Field(True, description="Per-row pids cgroup when running as root.")
    tmp_root: str | None = Field(None, description="Parent of the per-row working directories.")


# ----------------------------------------------------------------------------------------------------------------
# Isolation probe
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxIsolation:
    """What the sandbox provides on this machine (probed once per configuration and process).

    Attributes:
        python: the interpreter the rows run with.
        user: uid the rows are started as (``None``: the gate's own uid).
        namespaces: True when each row gets its own user + network namespace.
        network: ``"netns"`` (a network namespace with no usable interface; the audit hook also blocks socket
            calls) or ``"audit_hook"`` (only the hook stands between the row and the network).
        processes: ``"cgroup_pids"``, ``"rlimit_nproc_userns"`` (per-row count), ``"rlimit_nproc_uid"``
            (count shared with the uid's other processes: limit = their number at start + ``max_processes``)
            or ``"process_group"`` (no hard cap: the hook's fork blocking and the kill sweep only).
        filesystem: always ``"audit_hook"`` (plus the user's own permissions when rows run as another uid).
        cgroup_parent: the cgroup directory per-row cgroups are created in (``processes == "cgroup_pids"``);
            each row's cgroup is removed after its run, this (empty) parent is left in place.
        site_dirs: ``site-packages`` directories appended to the row's ``sys.path``.
        allow_read: standard library and ``site-packages`` roots that stay readable under denied roots.
        version: the interpreter's version.
    """

    python: str
    user: int | None
    namespaces: bool
    network: str
    processes: str
    filesystem: str = "audit_hook"
    cgroup_parent: str | None = None
    site_dirs: tuple[str, ...] = ()
    allow_read: tuple[str, ...] = ()
    version: str = ""

    def as_metrics(self) -> dict[str, Any]:
        """The isolation in force, for ``GateResult.metrics`` (paths left out)."""
        d = asdict(self)
        d.pop("site_dirs")
        d.pop("allow_read")
        d["user"] = "gate's own" if self.user is None else self.user
        d["gate_euid"] = os.geteuid()
        return d


_PROBES: dict[tuple, SandboxIsolation] = {}
_PROBE_LOCK = threading.Lock()


def _scrubbed_env(workdir: str) -> dict[str, str]:
    tmp = os.path.join(workdir, "tmp")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": tmp,
        "XDG_CACHE_HOME": tmp,
        "XDG_CONFIG_HOME": tmp,
        "NO_COLOR": "1",
    }
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    return env


def _user_kwargs(uid: int | None) -> dict[str, Any]:
    if uid is None or os.geteuid() != 0:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def _chown_tree(path: str, uid: int | None) -> None:
    if uid is None or os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, uid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, uid)


def _run_probe(python: str, uid: int | None, tmp_root: str | None) -> dict[str, Any] | None:
    workdir = tempfile.mkdtemp(prefix="synqa_sbx_probe_", dir=tmp_root)
    try:
        os.mkdir(os.path.join(workdir, "tmp"))
        script = os.path.join(workdir, "runner.py")
        Path(script).write_text(_RUNNER_SOURCE, encoding="utf-8")
        _chown_tree(workdir, uid)
        try:
            done = subprocess.run(
                [python, "-S", "-B", "-P", "-X", "utf8", script, "--probe"],
                cwd=workdir,
                env=_scrubbed_env(workdir),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                start_new_session=True,
                **_user_kwargs(uid),
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return None
        try:
            info = json.loads(done.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        return info if {"purelib", "stdlib"} <= set(info.get("readable", ())) else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _cgroup_pids_parent() -> str | None:
    """A writable ``pids`` cgroup directory under this process's own cgroup, or None."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates: list[str] = []
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount, fstype, options = fields[4], tail[0], tail[2].split(",")
        if fstype == "cgroup" and "pids" in options:
            path = next((c.split(":", 2)[2] for c in own if "pids" in c.split(":", 2)[1].split(",")), "/")
            candidates.append(os.path.join(mount, path.lstrip("/")))
        elif fstype == "cgroup2":
            path = next((c.split(":", 2)[2] for c in own if c.startswith("0::")), "/")
            base = os.path.join(mount, path.lstrip("/"))
            try:
                if "pids" in Path(base, "cgroup.controllers").read_text().split():
                    subtree = Path(base, "cgroup.subtree_control")
                    if "pids" not in subtree.read_text().split():
                        subtree.write_text("+pids")
                    candidates.append(base)
            except OSError:
                continue
    for base in candidates:
        parent = os.path.join(base, "synqa_sandbox")
        test = os.path.join(parent, f"probe_{os.getpid()}_{next(_row_counter)}")
        try:
            os.makedirs(parent, exist_ok=True)
            os.mkdir(test)
            try:
                Path(test, "pids.max").write_text("8")
            finally:
                os.rmdir(test)
            return parent
        except OSError:
            continue
    return None


def probe_isolation(config: ExecutionGateConfig) -> SandboxIsolation:
    """Find out (once per interpreter, user and cgroup settings) what isolation this machine gives the rows."""
    python = config.python or sys.executable
    key = (python, config.run_as_user, config.use_cgroups, config.tmp_root, os.geteuid())
    with _PROBE_LOCK:
        if key in _PROBES:
            return _PROBES[key]
        euid = os.geteuid()
        if config.run_as_user == "auto":
            candidates: list[int | None] = [65534, None] if euid == 0 else [None]
        elif config.run_as_user is None or config.run_as_user == euid:
            candidates = [None]
        elif euid != 0:
            raise ValueError(f"run_as_user={config.run_as_user} needs a gate running as root (euid {euid})")
        else:
            candidates = [int(config.run_as_user)]
        info, user = None, None
        for user in candidates:
            info = _run_probe(python, user, config.tmp_root)
            if info is not None:
                break
        if info is None:
            raise RuntimeError(f"the sandbox interpreter {python!r} does not start (as uid {candidates})")
        run_uid = euid if user is None else user
        namespaces = bool(info.get("userns"))
        cgroup_parent = None
        if run_uid != 0:
            processes = "rlimit_nproc_userns" if namespaces else "rlimit_nproc_uid"
        else:
            cgroup_parent = _cgroup_pids_parent() if config.use_cgroups else None
            processes = "cgroup_pids" if cgroup_parent else "process_group"
        paths = info["paths"]
        site_keys = ("purelib", "platlib", "system_purelib", "system_platlib")
        site_dirs = tuple(dict.fromkeys(paths[k] for k in site_keys if paths.get(k) and os.path.isdir(paths[k])))
        allow = [paths.get(k) for k in ("stdlib", "platstdlib", *site_keys)]
        allow += [p for p in info.get("sys_path", []) if p]
        allow_read = tuple(dict.fromkeys(os.path.realpath(p) for p in allow if p))
        iso = SandboxIsolation(
            python=python,
            user=user,
            namespaces=namespaces,
            network="netns" if info.get("netns_isolated") else "audit_hook",
            processes=processes,
            cgroup_parent=cgroup_parent,
            site_dirs=site_dirs,
            allow_read=allow_read,
            version=str(info.get("version", "")),
        )
        _PROBES[key] = iso
        return iso


# ----------------------------------------------------------------------------------------------------------------
# One row
# ----------------------------------------------------------------------------------------------------------------


def clean_reason_text(text: Any, limit: int = 200) -> str:
    """Text the row controls, made safe for a reason: control, format and separator characters become spaces
    (no newlines, ANSI escapes, bidi overrides), whitespace is collapsed, and the result is cut to ``limit``
    characters (an ellipsis marks a cut)."""
    text = str(text)[: limit * 4]
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        out.append(" " if cat[0] in "CZ" else ch)
    cleaned = " ".join("".join(out).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


@dataclass
class RunOutcome:
    """The verdict on one row.

    Attributes:
        category: drop category (``None``: kept).
        reason: exact reason (``None``: kept).
        score: fraction of the expected tests that passed (NaN when nothing ran).
        tests: the tests the gate expected (names).
        passed: the tests that passed.
        seconds: wall time of the sandbox run (0 when rejected statically).
        exit_status: the runner's exit code (negative: killed by that signal); None when not run.
        cpu_seconds: CPU time of the runner process.
        swept: processes of the row that were still alive after the runner ended and were killed.
        leftover: processes of the row still alive after the sweep (always 0 unless the sweep failed).
        output_bytes: stdout+stderr bytes the run wrote.
    """

    category: str | None
    reason: str | None
    score: float = float("nan")
    tests: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exit_status: int | None = None
    cpu_seconds: float = 0.0
    swept: int = 0
    leftover: int = 0
    output_bytes: int = 0


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _where(rec: dict[str, Any]) -> str:
    line = rec.get("line")
    text = ""
    if isinstance(line, int) and line > 0:
        text = f" at line {line}" if rec.get("file") == "tests" else f" at solution line {line}"
        src = rec.get("src")
        if src:
            text += f" ({clean_reason_text(src)})"
    return text


def _error_text(rec: dict[str, Any]) -> str:
    etype = clean_reason_text(rec.get("etype") or "Error", 80)
    msg = clean_reason_text(rec.get("msg") or "")
    return f"{etype}: {msg}" if msg else etype


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, session) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    if len(rest) < 4:
        return None
    return rest[0].decode(), int(rest[2]), int(rest[3])


def _row_processes(session: int, userns: str | None, cgroup: str | None) -> set[int]:
    """Live processes of one row: same session or process group, same user namespace, or in its cgroup."""
    found: set[int] = set()
    if cgroup is not None:
        try:
            found.update(int(p) for p in Path(cgroup, "cgroup.procs").read_text().split())
        except OSError:
            pass
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        if st[1] == session or st[2] == session:
            found.add(pid)
        elif userns is not None:
            try:
                if os.readlink(f"/proc/{pid}/ns/user") == userns:
                    found.add(pid)
            except OSError:
                pass
    found.discard(os.getpid())
    return {p for p in found if (st := _proc_stat(p)) is not None and st[0] not in ("Z", "X")}


def _sweep(session: int, userns: str | None, cgroup: str | None) -> tuple[int, int]:
    """SIGKILL every process of the row until none is left; returns (killed, still alive after 2 s)."""
    killed: set[int] = set()
    deadline = time.monotonic() + 2.0
    delay = 0.001
    while True:
        alive = _row_processes(session, userns, cgroup)
        if not alive:
            return len(killed), 0
        if time.monotonic() > deadline:
            return len(killed), len(alive)
        try:
            os.killpg(session, signal.SIGKILL)
        except OSError:
            pass
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _remove_tree(path: str) -> None:
    """``rmtree`` that also removes what the row made unreadable (``chmod 000`` on a directory)."""

    def retry(func: Any, failed: str, exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                func(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


class ExecutionGate(Gate):
    """Drops code rows whose solution does not pass its tests in the sandbox, or that misbehave there.

    Args:
        config: an :class:`ExecutionGateConfig` (defaults when omitted); keyword overrides are merged into it.

    Input columns:
        ``row_id``, ``text`` (unused), ``solution`` and ``tests`` (names configurable).

    Output:
        :class:`GateResult`; categories (:data:`CATEGORIES`): ``unparseable`` (solution or tests do not parse
        or compile, or are missing or too long), ``no_assertions`` (``tests assert nothing``: no ``assert``
        with a non-constant condition and no assertion call such as ``self.assertEqual``, ``pytest.raises`` or
        ``np.testing.assert_allclose`` reachable from a test), ``sandbox_violation`` (the audit hook blocked
        something, or the result channel was tampered with), ``limit_output``, ``limit_wall``, ``limit_cpu``,
        ``limit_memory``, ``limit_file``, ``crashed`` (the solution raised on import, the process died or
        exited before the tests finished: ``sys.exit``, ``os._exit``, a signal) and ``tests_failed`` (the
        first failing test, its exception and line). The score is the fraction of the expected tests that
        passed (1.0 for kept rows; NaN for static rejects). ``metrics`` holds rows/s, counts per category,
        the isolation in force (:meth:`SandboxIsolation.as_metrics`), the limits, and how many leftover
        processes the sweeps killed.

    Attributes:
        config: the configuration.
        isolation: the probed :class:`SandboxIsolation` (probed on first use).

    Limitations (an audit-hook sandbox in the row's own process is a guard rail, not a security boundary):
        - ``ctypes`` (or ``mmap`` + machine code) can make any system call without an audit event: fork,
          open, connect. The hook refuses ``ctypes`` lookups of such symbols, which a determined row gets
          around (an address computed from ``/proc/self/maps``, hand-written machine code). What still
          holds then is what the kernel enforces: rlimits, the cgroup or namespace process cap, the network
          namespace, the wall clock and the kill sweep, and file permissions when rows run as another uid.
          Rows running as root (this machine: the interpreter lives under ``/root``, unreachable for
          ``nobody``) can then read and write what root can; only the hook protects ``deny_read`` paths.
        - Result integrity: the nonce defeats fake results printed to stdout and exit tricks, but the row's
          code runs in the runner's process and can find the nonce (walking frames back to the runner) and
          forge a pass, or return objects whose ``__eq__`` is always True. The gate screens generated code for
          correctness and unsafe behaviour; it is not an adversarial judge.
        - Disk: files are capped in size and number, not in total bytes beyond ``max_files_written *
          max_file_bytes``; memory is capped per process (``RLIMIT_AS``), not per row.
        - Extension modules that open files or sockets in C (pyarrow's parquet writer, h5py...) do so without
          an audit event, so the hook does not see those paths (``sqlite3`` is covered: its ``connect`` event
          is checked like a write, URI databases and extension loading are refused).
        - Reads outside ``deny_read`` are allowed (``/etc/passwd``, other rows' working directories when rows
          run as the same uid).
    """

    name: ClassVar[str] = "execution"

    def __init__(self, config: ExecutionGateConfig | None = None, **overrides: Any) -> None:
        base = config or ExecutionGateConfig()
        self.config = ExecutionGateConfig(**{**base.model_dump(), **overrides}) if overrides else base
        self._isolation: SandboxIsolation | None = None
        deny = self.config.deny_read
        if deny is None:
            deny = tuple(p for p in (_repo_root(), os.path.expanduser("~")) if p and p != "/")
        self._deny_read = tuple(dict.fromkeys(os.path.realpath(p) for p in (*deny, *SYSTEM_DENY_READ)))

    @property
    def isolation(self) -> SandboxIsolation:
        if self._isolation is None:
            self._isolation = probe_isolation(self.config)
        return self._isolation

    # -- static checks -------------------------------------------------------------------------------------------

    def check_static(self, solution: str, tests: str) -> tuple[RunOutcome | None, list[str]]:
        """Parse/compile both sources and check that the tests assert something; returns (a reject or None,
        the tests the runner will run)."""
        cfg = self.config
        for label, src in (("solution", solution), ("tests", tests)):
            if not src.strip():
                if label == "tests":
                    return RunOutcome("no_assertions", "tests assert nothing (tests are empty)"), []
                return RunOutcome("unparseable", "solution is empty"), []
            if len(src) > cfg.max_source_chars:
                return RunOutcome(
                    "unparseable", f"{label} too long: {len(src)} chars > max {cfg.max_source_chars}"
                ), []
        trees = {}
        for label, src in (("solution", solution), ("tests", tests)):
            verb = "does not" if label == "solution" else "do not"
            try:
                tree = ast.parse(src, f"{label}.py")
                compile(tree, f"{label}.py", "exec", dont_inherit=True)
            except SyntaxError as e:
                msg = clean_reason_text(e.msg or "invalid syntax")
                return RunOutcome("unparseable", f"{label} {verb} parse: line {e.lineno or 0}: {msg}"), []
            except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
                msg = clean_reason_text(f"{type(e).__name__}: {e}")
                return RunOutcome("unparseable", f"{label} {verb} parse: {msg}"), []
            trees[label] = tree
        names = runner.plan_tests(trees["tests"])
        if runner.find_assertions(trees["tests"]) == 0:
            return RunOutcome("no_assertions", "tests assert nothing"), names
        if not names:
            return RunOutcome(
                "no_assertions", "tests assert nothing (no top-level assert and no test function runs them)"
            ), names
        return None, names

    # -- sandbox run ---------------------------------------------------------------------------------------------

    def run_row(self, solution: str, tests: str) -> RunOutcome:
        """Check one (solution, tests) pair and, if it passes the static checks, run it in the sandbox."""
        outcome, names = self.check_static(solution, tests)
        if outcome is not None:
            return outcome
        return self._run_sandbox(solution, tests, names)

    def _runner_config(self, workdir: str) -> dict[str, Any]:
        cfg, iso = self.config, self.isolation
        nproc = {"rlimit_nproc_userns": "userns", "rlimit_nproc_uid": "uid"}.get(iso.processes, "none")
        return {
            "cwd": workdir,
            "solution_file": os.path.join(workdir, "solution.py"),
            "tests_file": os.path.join(workdir, "tests.py"),
            "unshare": iso.namespaces,
            "cpu_seconds": cfg.cpu_seconds,
            "memory_bytes": cfg.memory_mb * 1024 * 1024,
            "file_bytes": cfg.max_file_bytes,
            "open_files": cfg.max_open_files,
            "max_processes": cfg.max_processes,
            "nproc": nproc,
            "deny_read": list(self._deny_read),
            "allow_read": list(iso.allow_read),
            "site_dirs": list(iso.site_dirs),
            "max_files_written": cfg.max_files_written,
        }

    def _run_sandbox(self, solution: str, tests: str, names: list[str]) -> RunOutcome:  # noqa: C901
        cfg, iso = self.config, self.isolation
        t0 = time.monotonic()
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="synqa_sbx_", dir=cfg.tmp_root))
        cgroup: str | None = None
        fds: list[int] = []
        try:
            os.mkdir(os.path.join(workdir, "tmp"))
            Path(workdir, "solution.py").write_text(solution, encoding="utf-8", errors="surrogateescape")
            Path(workdir, "tests.py").write_text(tests, encoding="utf-8", errors="surrogateescape")
            Path(workdir, "runner.py").write_text(_RUNNER_SOURCE, encoding="utf-8")
            Path(workdir, "sandbox.json").write_text(json.dumps(self._runner_config(workdir)), encoding="utf-8")
            _chown_tree(workdir, iso.user)
            if iso.cgroup_parent is not None:
                cgroup = os.path.join(iso.cgroup_parent, f"row_{os.getpid()}_{next(_row_counter)}")
                os.mkdir(cgroup)
                Path(cgroup, "pids.max").write_text(str(cfg.max_processes))
            res_r, res_w = os.pipe()
            ctl_r, ctl_w = os.pipe()
            out_r, out_w = os.pipe()
            fds = [res_r, ctl_w, out_r]
            try:
                proc = subprocess.Popen(
                    [iso.python, "-S", "-B", "-P", "-X", "utf8", "runner.py", str(ctl_r), str(res_w),
                     "sandbox.json"],
                    cwd=workdir,
                    env=_scrubbed_env(workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=out_w,
                    pass_fds=(ctl_r, res_w),
                    close_fds=True,
                    start_new_session=True,
                    **_user_kwargs(iso.user),
                )
            finally:
                for fd in (res_w, ctl_r, out_w):
                    os.close(fd)
            return self._supervise(proc, res_r, ctl_w, out_r, fds, cgroup, names, t0)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if cgroup is not None:
                for _ in range(50):
                    try:
                        os.rmdir(cgroup)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)
            _remove_tree(workdir)

    def _supervise(  # noqa: C901 - one event loop
        self,
        proc: subprocess.Popen,
        res_r: int,
        ctl_w: int,
        out_r: int,
        fds: list[int],
        cgroup: str | None,
        names: list[str],
        t0: float,
    ) -> RunOutcome:
        cfg, iso = self.config, self.isolation
        pid = proc.pid
        nonce = secrets.token_hex(16)
        deadline = t0 + cfg.wall_seconds
        for fd in (res_r, out_r):
            os.set_blocking(fd, False)
        try:
            pidfd: int | None = os.pidfd_open(pid)
            fds.append(pidfd)
        except (AttributeError, OSError):
            pidfd = None
        sel = selectors.DefaultSelector()
        sel.register(res_r, selectors.EVENT_READ, "res")
        sel.register(out_r, selectors.EVENT_READ, "out")
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        res = bytearray()
        out_bytes = 0
        ready = False
        userns: str | None = None
        exited = timed_out = output_over = overflow = False
        setup_error: str | None = None
        status = 0
        rusage = None

        def read_into(fd: int, kind: str) -> bool:
            """Read what is there; False at EOF."""
            nonlocal out_bytes, output_over, overflow
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    return True
                except OSError:
                    return False
                if not chunk:
                    return False
                if kind == "out":
                    out_bytes += len(chunk)
                    if out_bytes > cfg.max_output_bytes:
                        output_over = True
                        return True
                else:
                    if len(res) + len(chunk) > _MAX_RESULT_BYTES:
                        overflow = True
                        return True
                    res.extend(chunk)

        try:
            while not (exited or output_over or overflow or setup_error):
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(min(timeout, 0.05 if pidfd is None else 1.0)):
                    if key.data == "exit":
                        exited = True
                    elif not read_into(key.fd, key.data):
                        sel.unregister(key.fd)
                if pidfd is None and not exited:  # no pidfd (kernel < 5.3): poll
                    done_pid, status, rusage = os.wait4(pid, os.WNOHANG)
                    if done_pid == pid:
                        exited = True
                        proc.returncode = os.waitstatus_to_exitcode(status)
                if not ready and b"\n" in res:
                    first = bytes(res[: res.index(b"\n")])
                    if first != b"ready":
                        setup_error = clean_reason_text(first.decode("utf-8", "replace"))
                        break
                    ready = True
                    try:
                        if cgroup is not None:
                            Path(cgroup, "cgroup.procs").write_text(str(pid))
                        if iso.namespaces:
                            userns = os.readlink(f"/proc/{pid}/ns/user")
                        os.write(ctl_w, nonce.encode() + b"\n")
                    except OSError as e:
                        setup_error = clean_reason_text(f"sandbox setup failed: {e}")
                        break
                    finally:
                        os.close(ctl_w)
                        fds.remove(ctl_w)
        finally:
            sel.close()
            if proc.returncode is None and not exited:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            # sweep while the runner is an unreaped zombie: its pid (= the row's session and process group id)
            # cannot be reused by an unrelated process until it is reaped below
            swept, leftover = _sweep(pid, userns, cgroup)
            if proc.returncode is None:
                try:
                    _, status, rusage = os.wait4(pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:  # reaped by someone else (a host-wide SIGCHLD handler)
                    proc.returncode = -signal.SIGKILL if not exited else 0
            # what the row's processes wrote before they died
            read_into(res_r, "res")
            read_into(out_r, "out")

        seconds = time.monotonic() - t0
        exit_status = proc.returncode
        cpu = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
        outcome = self._classify(
            names, nonce, bytes(res), exit_status, cpu, timed_out, output_over, overflow, setup_error
        )
        outcome.seconds, outcome.exit_status, outcome.cpu_seconds = seconds, exit_status, cpu
        outcome.swept, outcome.leftover, outcome.output_bytes = swept, leftover, out_bytes
        return outcome

    def _classify(  # noqa: C901 - the verdict table, in priority order
        self,
        names: list[str],
        nonce: str,
        res: bytes,
        exit_status: int | None,
        cpu: float,
        timed_out: bool,
        output_over: bool,
        overflow: bool,
        setup_error: str | None,
    ) -> RunOutcome:
        cfg = self.config
        records: list[dict[str, Any]] = []
        forged = overflow
        lines = res.split(b"\n")
        prefix = nonce.encode() + b" "
        for line in lines[1:-1]:  # [0] is "ready"; the last piece has no newline
            if not line:
                continue
            if not line.startswith(prefix):
                forged = True
                continue
            try:
                rec = json.loads(line[len(prefix) :])
            except ValueError:
                forged = True
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                forged = True
        results: dict[str, dict[str, Any]] = {}
        for rec in records:
            index = rec.get("i")
            if rec.get("k") == "test" and type(index) is int and 0 <= index < len(names):
                results.setdefault(names[index], rec)
        passed = [n for n in names if results.get(n, {}).get("ok") is True]
        score = len(passed) / len(names) if names else float("nan")

        def out(category: str, reason: str) -> RunOutcome:
            return RunOutcome(category, reason, score=score, tests=list(names), passed=passed)

        if setup_error is not None:
            return out("crashed", f"sandbox setup failed: {setup_error}")
        violation = next((r for r in records if r.get("k") == "violation"), None)
        if violation is not None:
            reason = clean_reason_text(violation.get("reason", ""), 300)
            return out("sandbox_violation", reason if reason.startswith("sandbox: ") else f"sandbox: {reason}")
        if forged:
            return out("sandbox_violation", "sandbox: forged or malformed record on the result channel")
        if output_over:
            return out("limit_output", f"limit: output over {cfg.max_output_bytes} bytes")
        if timed_out:
            return out("limit_wall", f"limit: wall clock {_fmt_num(cfg.wall_seconds)} s exceeded")
        signaled = exit_status is not None and exit_status < 0
        sig = -exit_status if signaled else 0  # type: ignore[operator]
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= cfg.cpu_seconds):
            return out("limit_cpu", f"limit: CPU time {cfg.cpu_seconds} s exceeded")
        errors = [r for r in records if r.get("k") in ("solution", "setup", "test") and r.get("etype")]
        if any(r.get("etype") == "MemoryError" for r in errors):
            return out("limit_memory", f"limit: memory {cfg.memory_mb} MB exceeded (MemoryError)")
        if sig == signal.SIGXFSZ or any(
            "[Errno 27]" in str(r.get("msg", "")) for r in errors
        ):
            return out("limit_file", f"limit: file size {cfg.max_file_bytes} bytes exceeded")
        solution_error = next((r for r in records if r.get("k") == "solution"), None)
        if solution_error is not None:
            return out("crashed", f"solution raised {_error_text(solution_error)}{_where(solution_error)}")
        if exit_status == runner.VIOLATION_EXIT:
            return out("sandbox_violation", "sandbox: violation (its record was lost)")
        if not any(r.get("k") == "done" for r in records):
            if signaled:
                return out("crashed", f"killed by {_signal_name(-exit_status)} before the tests finished")
            return out("crashed", f"exited with status {exit_status} before the tests finished")
        missing = [n for n in names if n not in results]
        if missing:
            return out("crashed", f"no result for test {clean_reason_text(missing[0], 80)}")
        setup = next((r for r in records if r.get("k") == "setup"), None)
        failed = [n for n in names if results[n].get("ok") is not True]
        if setup is not None or failed:
            if setup is not None:  # a non-asserting top-level statement of the tests raised (pytest: collection)
                reason = f"tests raised {_error_text(setup)}{_where(setup)}"
            else:
                first = results[failed[0]]
                label = (
                    "top-level asserts"
                    if failed[0] == runner.MODULE_TEST
                    else f"test {clean_reason_text(failed[0], 80)}"
                )
                if isinstance(first.get("case"), int) and isinstance(first.get("cases"), int):
                    label += f" (case {first['case']} of {first['cases']})"
                reason = f"{label} failed: {_error_text(first)}{_where(first)}"
            if len(failed) > 1:
                reason += f"; {len(failed)} of {len(names)} tests failed"
            return out("tests_failed", reason)
        return RunOutcome(None, None, score=score, tests=list(names), passed=passed)

    # -- the gate ------------------------------------------------------------------------------------------------

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        """Statically check, then run, every row (``workers`` at a time); one decision per row, in order."""
        cfg = self.config
        t0 = time.perf_counter()
        rows = rows.reset_index(drop=True)
        n = len(rows)
        result = GateResult.all_kept(self.name, n)
        for column in (cfg.solution_column, cfg.tests_column):
            if column not in rows.columns:
                raise ValueError(f"execution gate: rows have no {column!r} column")

        def text(value: Any) -> str:
            return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

        solutions = [text(v) for v in rows[cfg.solution_column].tolist()]
        tests = [text(v) for v in rows[cfg.tests_column].tolist()]
        outcomes: list[RunOutcome | None] = [None] * n
        to_run: list[tuple[int, list[str]]] = []
        for i in range(n):
            outcome, names = self.check_static(solutions[i], tests[i])
            if outcome is not None:
                outcomes[i] = outcome
            else:
                to_run.append((i, names))
        t_run = time.perf_counter()
        if to_run:
            iso = self.isolation
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(cfg.workers, len(to_run))) as pool:
                futures = {
                    pool.submit(self._run_sandbox, solutions[i], tests[i], names): i for i, names in to_run
                }
                for future in concurrent.futures.as_completed(futures):
                    outcomes[futures[future]] = future.result()
        else:
            iso = self._isolation
        run_seconds = time.perf_counter() - t_run
        for i, outcome in enumerate(outcomes):
            assert outcome is not None
            if outcome.category is None:
                result.score[i] = outcome.score
            else:
                result.drop(i, outcome.category, outcome.reason or outcome.category, outcome.score)
        seconds = time.perf_counter() - t0
        dropped = Counter(o.category for o in outcomes if o is not None and o.category is not None)
        result.metrics = {
            **result.counters(),
            "rows_per_second": round(n / seconds, 2) if seconds > 0 else None,
            "sandbox_runs": len(to_run),
            "sandbox_rows_per_second": round(len(to_run) / run_seconds, 2) if to_run and run_seconds > 0 else None,
            "seconds": round(seconds, 3),
            "by_category": {c: int(dropped.get(c, 0)) for c in CATEGORIES},
            "isolation": iso.as_metrics() if iso is not None else None,
            "limits": cfg.model_dump(include={
                "cpu_seconds", "wall_seconds", "memory_mb", "max_output_bytes", "max_processes",
                "max_file_bytes", "max_open_files", "max_files_written", "workers",
            }),
            "swept_processes": int(sum(o.swept for o in outcomes if o is not None)),
            "leftover_processes": int(sum(o.leftover for o in outcomes if o is not None)),
            "tests_run": int(sum(len(o.tests) for o in outcomes if o is not None and o.seconds > 0)),
            "tests_passed": int(sum(len(o.passed) for o in outcomes if o is not None)),
        }
        return result
