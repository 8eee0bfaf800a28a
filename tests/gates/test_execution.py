"""Tests of the execution gate: hostile snippets are contained and rejected with the right category and reason,
good code pairs pass, and nothing a row starts outlives its run.

The sandboxed cases run in one batch per module (``workers=2``, tight limits: 1 s CPU, 3 s wall) so that the
whole file stays fast; each case then has its own parametrised test on the stored outcome.
"""

from __future__ import annotations

import os
import platform
import signal
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from synqa_dagster.gates import execution
from synqa_dagster.gates._sandbox_runner import find_assertions, plan_tests
from synqa_dagster.gates.execution import (
    CATEGORIES,
    ExecutionGate,
    ExecutionGateConfig,
    clean_reason_text,
)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "from solution import add\n\ndef test_adds():\n    assert add(1, 2) == 3\n"
TOKEN = uuid.uuid4().hex
REPO = execution._repo_root() or str(Path(__file__).resolve().parents[2])
KEY_FILE = os.path.join(REPO, ".synqa", "keys", "reviewer_hmac.key")

RAW_FORK = """import ctypes, mmap
# fork(2) by hand-written machine code: no audit event, no ctypes symbol lookup
code = b"\\xb8\\x39\\x00\\x00\\x00\\x0f\\x05\\xc3"  # mov eax, 57 (SYS_fork); syscall; ret
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
fork = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
while True:
    fork()
"""

#: Forks (by machine code) 20 children that sleep: the kernel must refuse all but ``max_processes - 1`` of them.
RAW_FORK_CAP = RAW_FORK.replace(
    "while True:\n    fork()\n",
    "import time\nok = 0\nfor _ in range(20):\n    pid = fork()\n    if pid == 0:\n        time.sleep(60)\n"
    "        raise SystemExit\n    if pid > 0:\n        ok += 1\n",
)
RAW_FORK_CAP_TESTS = "def test_capped():\n    assert 0 < ok < 8, ok\n"

#: name -> (solution, tests, expected category (None: kept), expected reason: exact str, or a prefix ending "…")
CASES: dict[str, tuple[str, str, str | None, str | None]] = {
    # --- good rows
    "good": (ADD, ADD_TESTS, None, None),
    "good_numpy": (
        "import numpy as np\n\ndef mean(xs):\n    return float(np.mean(xs))\n",
        "import numpy as np\n\ndef test_mean():\n    assert mean([1, 2, 3]) == 2.0\n\n"
        "def test_close():\n    np.testing.assert_allclose(mean([0.1, 0.2]), 0.15)\n",
        None,
        None,
    ),
    "good_unittest_parametrize": (
        ADD,
        "import unittest\nimport pytest\n\nclass TestAdd(unittest.TestCase):\n    def test_eq(self):\n"
        "        self.assertEqual(add(2, 2), 4)\n\n@pytest.mark.parametrize('a,b,c', [(1, 2, 3), (0, 0, 0)])\n"
        "def test_cases(a, b, c):\n    assert add(a, b) == c\n\ndef test_type():\n    with pytest.raises(TypeError):\n"
        "        add(1, 'x')\n\nassert add(1, 1) == 2\n",
        None,
        None,
    ),
    "good_writes_in_cwd": (
        "import tempfile\n\ndef save(text):\n    with open('out.txt', 'w') as f:\n        f.write(text)\n"
        "    with tempfile.TemporaryDirectory() as d:\n        pass\n    return open('out.txt').read()\n",
        "def test_save():\n    assert save('hi') == 'hi'\n",
        None,
        None,
    ),
    "scrubbed_env": (
        "import os\nENV = dict(os.environ)\n",
        "def test_env():\n    assert not [k for k in ENV if k.startswith(('SYNQA_', 'AWS_'))], sorted(ENV)\n"
        f"    assert ENV['HOME'] != {os.path.expanduser('~')!r} and ENV['PATH'] == '/usr/bin:/bin'\n",
        None,
        None,
    ),
    # --- failing and static rejects
    "failing_test": (
        ADD,
        "from solution import add\n\ndef test_adds_negative():\n    assert add(-1, 1) == 1\n",
        "tests_failed",
        "test test_adds_negative failed: AssertionError at line 4 (assert add(-1, 1) == 1)",
    ),
    "hostile_message": (
        ADD,
        "def test_msg():\n    assert add(1, 1) == 3, 'line1\\nline2\\x1b[31m\\u202e' + 'x' * 5000\n",
        "tests_failed",
        "test test_msg failed: AssertionError: line1 line2 [31m xxxx…",
    ),
    # --- process creation
    "fork_bomb": (
        "import os\nwhile True:\n    os.fork()\n", ADD_TESTS, "sandbox_violation", "sandbox: os.fork blocked"
    ),
    "fork_bomb_multiprocessing_spawn": (
        "import multiprocessing as mp\nctx = mp.get_context('spawn')\n"
        "while True:\n    ctx.Process(target=print).start()\n",
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: _posixsubprocess.fork_exec blocked",
    ),
    "fork_bomb_ctypes_libc": (
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n",
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: ctypes access to fork blocked",
    ),
    "os_system": (
        f"import os\nos.system('touch /tmp/pwned_{TOKEN}')\n" + ADD,
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: os.system blocked",
    ),
    "subprocess": (
        f"import subprocess\nsubprocess.run(['touch', '/tmp/pwned_{TOKEN}_sp'])\n" + ADD,
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: subprocess.Popen blocked",
    ),
    # --- limits
    "sleep_loop": ("import time\nwhile True:\n    time.sleep(0.05)\n", ADD_TESTS, "limit_wall",
                   "limit: wall clock 3 s exceeded"),
    "huge_allocation": ("x = bytearray(10**10)\n", ADD_TESTS, "limit_memory",
                        "limit: memory 256 MB exceeded (MemoryError)"),
    "huge_output": ("while True:\n    print('x' * 10000)\n", ADD_TESTS, "limit_output",
                    "limit: output over 65536 bytes"),
    "huge_file": ("with open('big.bin', 'wb') as f:\n    f.write(b'0' * (2 << 20))\n", ADD_TESTS, "limit_file",
                  "limit: file size 1048576 bytes exceeded"),
    # --- files
    "write_parent_dir": ("open('../escape.txt', 'w').write('x')\n", ADD_TESTS, "sandbox_violation",
                         "sandbox: write outside the working directory blocked (…"),
    "write_tmp": (f"open('/tmp/escape_{TOKEN}', 'w').write('x')\n", ADD_TESTS, "sandbox_violation",
                  f"sandbox: write outside the working directory blocked (/tmp/escape_{TOKEN})"),
    "write_after_chdir": (f"import os\nos.chdir('/tmp')\nopen('escape_{TOKEN}_cd', 'w')\n", ADD_TESTS,
                          "sandbox_violation", f"sandbox: write outside the working directory blocked "
                          f"(/tmp/escape_{TOKEN}_cd)"),
    "remove_outside": (f"import os\nos.remove('/tmp/escape_{TOKEN}_rm')\n", ADD_TESTS, "sandbox_violation",
                       f"sandbox: write outside the working directory blocked (/tmp/escape_{TOKEN}_rm)"),
    "sqlite_outside": (
        f"import sqlite3\nsqlite3.connect('/tmp/escape_{TOKEN}.db')\n",
        ADD_TESTS,
        "sandbox_violation",
        f"sandbox: write outside the working directory blocked (/tmp/escape_{TOKEN}.db)",
    ),
    "sqlite_in_memory_is_fine": (
        "import sqlite3\n\ndef one():\n    return sqlite3.connect(':memory:').execute('select 1').fetchone()[0]\n",
        "def test_one():\n    assert one() == 1\n",
        None,
        None,
    ),
    "read_keys": (f"SECRET = open({KEY_FILE!r}).read()\n", "def test_leak():\n    assert SECRET == ''\n",
                  "sandbox_violation", f"sandbox: read of a protected path blocked ({os.path.realpath(KEY_FILE)})"),
    "list_keys": (f"import os\nos.listdir({os.path.dirname(KEY_FILE)!r})\n", ADD_TESTS, "sandbox_violation",
                  "sandbox: read of a protected path blocked (…"),
    "read_project_file": (f"open({os.path.join(REPO, 'pyproject.toml')!r}).read()\n", ADD_TESTS,
                          "sandbox_violation", "sandbox: read of a protected path blocked (…"),
    "read_keys_via_proc_root": (f"open('/proc/self/root' + {KEY_FILE!r}).read()\n", ADD_TESTS,
                                "sandbox_violation", "sandbox: read of a protected path blocked (…"),
    "symlink_to_keys": (f"import os\nos.symlink({os.path.dirname(KEY_FILE)!r}, 'k')\n", ADD_TESTS,
                        "sandbox_violation", "sandbox: os.symlink blocked"),
    "parent_environ": ("import os\nopen(f'/proc/{os.getppid()}/environ').read()\n", ADD_TESTS,
                       "sandbox_violation", "sandbox: read of a protected path blocked (/proc/…"),
    "import_project": ("import synqa_dagster\n", ADD_TESTS, "crashed",
                       "solution raised ModuleNotFoundError: No module named 'synqa_dagster' at solution line 1 …"),
    # --- network
    "create_connection": ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n", ADD_TESTS,
                          "sandbox_violation", "sandbox: network blocked (socket.getaddrinfo)"),
    "raw_socket_connect": ("import socket\ns = socket.socket()\ns.connect(('1.1.1.1', 80))\n", ADD_TESTS,
                           "sandbox_violation", "sandbox: network blocked (socket.socket AF_INET)"),
    # --- exit tricks and forged results
    "sys_exit_before_tests": ("import sys\nsys.exit(0)\n", ADD_TESTS, "crashed",
                              "solution raised SystemExit: 0 at solution line 2 (sys.exit(0))"),
    "os_exit_before_tests": ("import os\nos._exit(0)\n", ADD_TESTS, "crashed",
                             "exited with status 0 before the tests finished"),
    "os_exit_in_test": (ADD, "import os\n\ndef test_a():\n    assert add(1, 1) == 2\n\ndef test_b():\n    os._exit(0)\n"
                        "    assert add(1, 2) == 3\n", "crashed", "exited with status 0 before the tests finished"),
    "sys_exit_in_test": (ADD, "import sys\n\ndef test_a():\n    sys.exit(0)\n    assert add(1, 2) == 3\n",
                         "tests_failed", "test test_a failed: SystemExit: 0 at line 4 (sys.exit(0))"),
    "fake_json_stdout": (
        "print('{\"k\": \"done\"}')\nprint('ready')\nprint('{\"passed\": 1, \"failed\": 0}')\n\n"
        "def add(a, b):\n    return 0\n",
        ADD_TESTS,
        "tests_failed",
        "test test_adds failed: AssertionError at line 4 (assert add(1, 2) == 3)",
    ),
    "fake_records_on_fds": (
        "import os\nfor fd in sorted(int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2):\n    try:\n"
        "        os.write(fd, b'00 {\"k\": \"test\", \"i\": 0, \"ok\": true}\\n"
        "00 {\"k\": \"done\"}\\n')\n    except OSError:\n        pass\nos._exit(0)\n",
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: forged or malformed record on the result channel",
    ),
    # --- attacks on the hook itself
    "monkeypatch_builtins_then_system": (
        "import builtins, sys, posix\nbuiltins.isinstance = lambda *a: False\nbuiltins.len = lambda *a: 0\n"
        "builtins.str = bytes\nsys.audit = lambda *a: None\ndel sys.addaudithook\n"
        f"posix.system('touch /tmp/pwned_{TOKEN}_mp')\n",
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: os.system blocked",
    ),
    "monkeypatch_os_path_then_write": (
        "import os, os.path, posixpath\nos.path.realpath = posixpath.realpath = lambda p, **k: '/tmp'\n"
        "os.path.abspath = lambda p: '/tmp'\nos.getcwd = lambda: '/'\n"
        f"open('/tmp/escape_{TOKEN}_patched', 'w')\n",
        ADD_TESTS,
        "sandbox_violation",
        f"sandbox: write outside the working directory blocked (/tmp/escape_{TOKEN}_patched)",
    ),
    "clear_audit_hooks_ctypes": ("import ctypes\nctypes.pythonapi._PySys_ClearAuditHooks()\n", ADD_TESTS,
                                 "sandbox_violation", "sandbox: ctypes access to _PySys_ClearAuditHooks blocked"),
    "add_audit_hook": ("import sys\nsys.addaudithook(lambda *a: None)\n", ADD_TESTS, "sandbox_violation",
                       "sandbox: sys.addaudithook blocked"),
    "gc_introspection": ("import gc\ngc.get_objects()\n", ADD_TESTS, "sandbox_violation",
                         "sandbox: gc.get_objects (interpreter introspection) blocked"),
    "caught_violation_still_rejected": (
        "import os\ntry:\n    os.system('true')\nexcept BaseException:\n    pass\n" + ADD,
        ADD_TESTS,
        "sandbox_violation",
        "sandbox: os.system blocked",
    ),
}

#: Only where the machine gives each row a network namespace.
NETNS_CASE = (
    "IFACES = [l.split(':')[0].strip() for l in open('/proc/self/net/dev').read().splitlines()[2:]]\n",
    "def test_only_loopback():\n    assert IFACES == ['lo'], IFACES\n",
)


def _matches(reason: str | None, expected: str | None) -> bool:
    if expected is None or reason is None:
        return reason == expected
    return reason.startswith(expected[:-1]) if expected.endswith("…") else reason == expected


def _processes_under(root: str) -> list[int]:
    """Live processes whose working directory is under ``root`` (any sandbox the tests started)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if cwd.startswith(root) and state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


@pytest.fixture(scope="module")
def sandbox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandboxes")


@pytest.fixture(scope="module")
def gate(sandbox_root: Path) -> ExecutionGate:
    return ExecutionGate(
        cpu_seconds=1,
        wall_seconds=3,
        memory_mb=256,
        max_processes=8,
        max_file_bytes=1 << 20,
        workers=2,
        tmp_root=str(sandbox_root / "work"),
    )


@pytest.fixture(scope="module")
def batch(gate: ExecutionGate, sandbox_root: Path) -> dict:
    """Every case of :data:`CASES` (plus the network-namespace and raw-fork cases), evaluated in one batch."""
    (sandbox_root / "work").mkdir()
    cases = dict(CASES)
    if gate.isolation.network == "netns":
        cases["netns_only_loopback"] = (*NETNS_CASE, None, None)
    # hook-proof forks only where the kernel caps the row's processes (never with "process_group" alone)
    if platform.machine() == "x86_64" and gate.isolation.processes != "process_group":
        cases["fork_bomb_raw_syscall"] = (RAW_FORK, ADD_TESTS, "limit_wall|limit_cpu", None)
        if gate.isolation.processes in ("cgroup_pids", "rlimit_nproc_userns"):
            cases["fork_cap_raw_syscall"] = (RAW_FORK_CAP, RAW_FORK_CAP_TESTS, None, None)
    rows = pd.DataFrame(
        {
            "row_id": list(cases),
            "text": "",
            "solution": [c[0] for c in cases.values()],
            "tests": [c[1] for c in cases.values()],
        }
    )
    saved = {k: os.environ.get(k) for k in ("SYNQA_SECRET_TOKEN", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({"SYNQA_SECRET_TOKEN": "s3cret", "AWS_SECRET_ACCESS_KEY": "s3cret"})
    try:
        t0 = time.perf_counter()
        kept, rejected, result = gate(rows)
        seconds = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"\nexecution gate: {len(rows)} hostile/good rows in {seconds:.2f} s; isolation "
          f"{result.metrics['isolation']}")
    return {
        "cases": cases,
        "rows": rows,
        "result": result,
        "kept": kept,
        "rejected": rejected,
        "by_id": {rid: i for i, rid in enumerate(rows["row_id"])},
        "leftover_now": _processes_under(str(sandbox_root)),
    }


@pytest.mark.parametrize(
    "case", list(CASES) + ["netns_only_loopback", "fork_bomb_raw_syscall", "fork_cap_raw_syscall"]
)
def test_case_is_contained_with_its_category_and_reason(batch: dict, case: str) -> None:
    if case not in batch["cases"]:
        pytest.skip("not applicable on this machine (no network namespace or kernel process cap, or not x86_64)")
    solution, tests, category, reason = batch["cases"][case]
    result = batch["result"]
    i = batch["by_id"][case]
    got = (result.category[i], result.reason[i])
    if category is None:
        assert result.keep[i], got
        assert result.score[i] == 1.0
        return
    assert not result.keep[i], f"{case} was kept"
    assert result.category[i] in category.split("|"), got
    if reason is not None:
        assert _matches(result.reason[i], reason), got
    assert result.category[i] in CATEGORIES


def test_reasons_are_clean_and_short(batch: dict) -> None:
    for reason in batch["result"].reason:
        if reason is None:
            continue
        assert len(reason) <= 420
        assert all(ch.isprintable() for ch in reason), reason


def test_nothing_escaped(batch: dict, sandbox_root: Path) -> None:
    """No file outside the working directories, no process left, every working directory deleted."""
    for suffix in ("", "_sp", "_mp"):
        assert not Path(f"/tmp/pwned_{TOKEN}{suffix}").exists()
    for path in (f"/tmp/escape_{TOKEN}", f"/tmp/escape_{TOKEN}_cd", f"/tmp/escape_{TOKEN}_patched",
                 f"/tmp/escape_{TOKEN}.db"):
        assert not Path(path).exists()
    assert not (sandbox_root / "escape.txt").exists()
    assert batch["leftover_now"] == []
    assert batch["result"].metrics["leftover_processes"] == 0
    assert list((sandbox_root / "work").iterdir()) == []


def test_fork_bomb_is_contained_by_the_kernel(batch: dict, gate: ExecutionGate) -> None:
    """Forks by raw syscall get past every audit hook: the kernel's process cap holds them to ``max_processes``
    and the kill sweep leaves none behind (the sleeping children of the capped case are killed too)."""
    if "fork_cap_raw_syscall" not in batch["cases"]:
        pytest.skip("needs x86_64 and a per-row kernel process cap")
    assert batch["result"].keep[batch["by_id"]["fork_cap_raw_syscall"]]
    assert batch["result"].category[batch["by_id"]["fork_bomb_raw_syscall"]] in ("limit_wall", "limit_cpu")
    assert batch["result"].metrics["swept_processes"] >= 1
    assert batch["leftover_now"] == []


def test_rows_can_run_as_nobody_with_nproc_in_a_user_namespace(sandbox_root: Path) -> None:
    """As root with an interpreter ``nobody`` can run (the system one), rows run as uid 65534 and the per-row
    ``RLIMIT_NPROC`` applies (this project's venv interpreter lives under /root, so the main gate stays root)."""
    system_python = next((p for p in ("/usr/bin/python3.12", "/usr/bin/python3.11") if os.access(p, os.X_OK)), None)
    if os.geteuid() != 0 or system_python is None or platform.machine() != "x86_64":
        pytest.skip("needs root, a system Python >= 3.11 and x86_64")
    root = tempfile.mkdtemp(prefix="synqa_nobody_")  # pytest's tmp dirs are 0700: nobody cannot enter them
    try:
        os.chmod(root, 0o711)
        gate = ExecutionGate(python=system_python, cpu_seconds=1, wall_seconds=3, max_processes=8, tmp_root=root)
        if gate.isolation.user != 65534 or gate.isolation.processes != "rlimit_nproc_userns":
            pytest.skip(f"nobody cannot run {system_python} here ({gate.isolation})")
        outcome = gate.run_row(RAW_FORK_CAP + "import os\nUID = os.getuid()\n",
                               RAW_FORK_CAP_TESTS + "    assert UID == 65534, UID\n")
        assert outcome.category is None, outcome.reason
        assert outcome.swept >= 1 and outcome.leftover == 0
        assert _processes_under(root) == []
        keys = gate.run_row(f"K = open({KEY_FILE!r}).read()\n", "assert K\n")
        assert keys.category == "sandbox_violation"
        assert os.listdir(root) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_metrics_report_isolation_and_counts(batch: dict) -> None:
    m = batch["result"].metrics
    assert m["isolation"]["network"] in ("netns", "audit_hook")
    assert m["isolation"]["processes"] in ("cgroup_pids", "rlimit_nproc_userns", "rlimit_nproc_uid", "process_group")
    assert m["isolation"]["filesystem"] == "audit_hook"
    assert sum(m["by_category"].values()) == m["dropped"]
    assert m["sandbox_runs"] == len(batch["rows"])
    assert m["rows_per_second"] > 0
    rejected = batch["rejected"]
    assert set(rejected["reject_category"]) <= set(CATEGORIES)
    assert (rejected["gate"] == "execution").all()


def test_cpu_loop_hits_the_cpu_limit(sandbox_root: Path) -> None:
    """Own gate with a generous wall clock, so that a loaded machine cannot turn the CPU limit into a wall one."""
    gate = ExecutionGate(cpu_seconds=1, wall_seconds=20, tmp_root=str(sandbox_root))
    outcome = gate.run_row("while True:\n    pass\n", ADD_TESTS)
    assert (outcome.category, outcome.reason) == ("limit_cpu", "limit: CPU time 1 s exceeded")
    assert outcome.exit_status in (-signal.SIGXCPU, -signal.SIGKILL)
    assert outcome.cpu_seconds >= 1


def test_failing_test_reason_names_test_and_line(gate: ExecutionGate) -> None:
    tests = "from solution import add\ndef test_adds_negative():\n    assert add(-1, 1) == 0\n"
    outcome = gate.run_row("def add(a, b):\n    return a - b\n", tests)
    assert outcome.category == "tests_failed"
    assert outcome.reason == "test test_adds_negative failed: AssertionError at line 3 (assert add(-1, 1) == 0)"
    partial = gate.run_row(
        ADD,
        "def test_ok():\n    assert add(1, 1) == 2\n\ndef test_bad():\n    assert add(1, 1) == 3\n\n"
        "def test_bad2():\n    assert add(1, 1) == 4\n",
    )
    assert partial.score == pytest.approx(1 / 3)
    assert partial.reason.endswith("; 2 of 3 tests failed")


# --------------------------------------------------------------------------------------------------------------
# Static checks (no sandbox)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("solution", "tests", "category", "reason"),
    [
        (ADD, "x = 1\nthis is not valid python\n", "unparseable", "tests do not parse: line 2: invalid syntax"),
        ("def add(a, b) return a\n", ADD_TESTS, "unparseable", "solution does not parse: line 1: expected ':'"),
        ("return 1\n", ADD_TESTS, "unparseable", "solution does not parse: line 1: 'return' outside function"),
        ("", ADD_TESTS, "unparseable", "solution is empty"),
        (ADD, "def test_x():\n    add(1, 2)\n", "no_assertions", "tests assert nothing"),
        (ADD, "assert True\n\ndef test_x():\n    assert 1\n", "no_assertions", "tests assert nothing"),
        (ADD, "def helper(x):\n    assert x\n\ndef test_x():\n    add(1, 2)\n", "no_assertions",
         "tests assert nothing"),
        (ADD, "   \n", "no_assertions", "tests assert nothing (tests are empty)"),
    ],
)
def test_static_rejects(solution: str, tests: str, category: str, reason: str) -> None:
    gate = ExecutionGate()
    outcome, _ = gate.check_static(solution, tests)
    assert outcome is not None
    assert (outcome.category, outcome.reason) == (category, reason)
    assert np.isnan(outcome.score)


def test_plan_and_assertion_reachability() -> None:
    import ast

    tree = ast.parse(
        "import unittest\nassert f(1) == 1\n\ndef helper(x):\n    assert x\n\ndef test_a():\n    helper(f(2))\n\n"
        "class TestB(unittest.TestCase):\n    def test_c(self):\n        self.assertTrue(f(3))\n    def other(self):\n"
        "        pass\n\ndef test_a():\n    pass\n"
    )
    assert plan_tests(tree) == ["<module>", "test_a", "TestB.test_c"]
    assert find_assertions(tree) == 3
    assert find_assertions(ast.parse("def unused():\n    assert g()\n\ndef test_x():\n    g()\n")) == 0


def test_clean_reason_text() -> None:
    assert clean_reason_text("a\nb\x1b[31mc\u202ed\x00e\t f") == "a b [31mc d e f"
    long = clean_reason_text("y" * 1000)
    assert len(long) == 200 and long.endswith("…")


def test_config_is_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        ExecutionGateConfig(cpu_secondz=1)
    config = ExecutionGateConfig()
    with pytest.raises(ValidationError):
        config.cpu_seconds = 5  # type: ignore[misc]
    assert ExecutionGate(workers=3).config.workers == 3


def test_missing_columns_are_an_error() -> None:
    with pytest.raises(ValueError, match="solution"):
        ExecutionGate().evaluate(pd.DataFrame({"row_id": ["a"], "text": [""]}))


# --------------------------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------------------------


def test_throughput_on_simple_good_rows(sandbox_root: Path) -> None:
    gate = ExecutionGate(workers=2, tmp_root=str(sandbox_root))
    n = 50
    rows = pd.DataFrame(
        {
            "row_id": [f"r{i}" for i in range(n)],
            "text": "",
            "solution": [f"def f(x):\n    return x + {i}\n" for i in range(n)],
            "tests": [f"def test_f():\n    assert f(1) == {i + 1}\n\nassert f(0) == {i}\n" for i in range(n)],
        }
    )
    gate.isolation  # probe outside the timing
    result = gate.evaluate(rows)
    assert result.keep.all(), [r for r in result.reason if r]
    rate = result.metrics["rows_per_second"]
    print(f"\nexecution gate throughput: {rate} rows/s on {n} simple rows, workers=2, "
          f"isolation {result.metrics['isolation']['network']}/{result.metrics['isolation']['processes']}")
    assert rate > 1.0
    assert result.metrics["tests_passed"] == 2 * n
