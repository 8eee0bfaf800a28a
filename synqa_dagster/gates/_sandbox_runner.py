"""In-sandbox runner of :mod:`synqa_dagster.gates.execution` (standard library only).

The execution gate copies this file into each row's throwaway working directory and starts it as
``python -S -B -P runner.py CTL_FD RESULT_FD sandbox.json`` in a fresh session, with a scrubbed environment and
stdin on ``/dev/null``. The gate also imports it (never runs :func:`main`) for the static helpers it shares with
the runner: :func:`plan_tests` (which tests a tests file holds) and :func:`find_assertions`.

What the runner does, in order (nothing of the row runs before step 5):

1. reads ``sandbox.json`` (written by the gate: limits, paths, isolation to set up);
2. optionally enters a new user + network namespace (``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` through libc:
   the process keeps no capability outside it, and sees only a down loopback interface);
3. sets its resource limits (``RLIMIT_CORE`` 0, ``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_FSIZE``,
   ``RLIMIT_NOFILE`` and, where the kernel enforces it for this uid, ``RLIMIT_NPROC``: set *after* the
   unshare, so that it counts only this row's processes), inherited by everything it starts;
4. writes ``ready`` on the result fd and reads the run's nonce from the control fd (the gate sends it once the
   process is placed in its cgroup), then closes the control fd;
5. installs the audit hook (:func:`_hook_factory`; hooks cannot be removed once added), replaces
   ``_posixsubprocess.fork_exec`` (the one process-spawning path without an audit event, used by
   ``multiprocessing``'s spawn and forkserver methods), then executes ``solution.py`` as the module
   ``solution`` and runs the tests of ``tests.py``: the top-level statements as one test when they assert
   something, then each ``test*`` function and each ``test*`` method of a ``Test*`` class, in file order.

Result records go to the dedicated result fd (stdout and stderr are the row's output, never parsed), one line
each, ``<nonce> <json>``, each shorter than ``PIPE_BUF`` so that lines written by several processes never
interleave: ``{"k": "solution"...}`` when the solution raised, ``{"k": "setup"...}`` when a non-asserting
top-level statement of the tests raised, ``{"k": "test", "i": <index in plan_tests>, "ok"...}`` per test,
``{"k": "violation", "reason"...}`` when the hook blocked something (the process then exits at once, with
:data:`VIOLATION_EXIT`), and ``{"k": "done"}`` last. The gate trusts a run only when every expected test
reported and ``done`` came; a line without the nonce is treated as tampering.

This is a defence against honest mistakes and naive cheating, not a security boundary on its own: code in the
same process can walk frames back to the runner, and ``ctypes`` can do anything a C program can. The hard limits
(rlimits, cgroup, namespaces, the gate's wall clock and kill sweep) hold regardless of what the row's code does.
"""

from __future__ import annotations

import ast
import sys

#: Exit status of a run stopped by the audit hook.
VIOLATION_EXIT = 86
#: Name of the pseudo-test made of the tests file's top-level statements.
MODULE_TEST = "<module>"
#: Longest text (exception message, source line) a result record carries; the gate truncates further.
RECORD_TEXT_LIMIT = 600

#: Names of call targets that assert (``self.assertEqual``, ``np.testing.assert_allclose``, ``pytest.raises``).
ASSERTION_CALL_NAMES = frozenset({"raises", "warns", "deprecated_call", "fail_unless", "failUnless"})

#: libc / CPython symbols that ``ctypes`` may not look up: process creation, raw syscalls, sockets, namespaces,
#: raw file access and the interpreter's audit-hook and thread-state internals (a speed bump: see the module
#: docstring).
DENIED_SYMBOLS = frozenset(
    {
        "fork", "vfork", "_Fork", "__fork", "clone", "clone3", "system", "popen", "posix_spawn", "posix_spawnp",
        "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "fexecve", "execveat", "syscall",
        "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg",
        "getaddrinfo", "gethostbyname", "unshare", "setns", "ptrace", "kill", "tgkill", "killpg", "mount",
        "umount", "umount2", "chroot", "pivot_root", "setrlimit", "prlimit", "prlimit64", "setuid", "setgid",
        "setresuid", "setresgid", "open", "open64", "openat", "openat64", "openat2", "creat", "creat64", "fopen",
        "fopen64", "freopen", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
        "symlink", "symlinkat", "truncate", "rmdir", "mkdir", "chmod", "chown", "dlopen", "dlsym", "mprotect",
        "mmap", "mmap64", "process_vm_writev", "process_vm_readv", "prctl", "seccomp",
    }
)
DENIED_SYMBOL_PREFIXES = ("_Py", "PyInterpreterState", "PyThreadState", "PySys_", "PyEval_Set", "Py_Finalize")


# --------------------------------------------------------------------------------------------------------------
# Static helpers shared with the gate (pure functions of the AST).
# --------------------------------------------------------------------------------------------------------------


def _is_test_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def _is_test_class(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef) and node.name.startswith("Test")


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _walk_shallow(node: ast.AST):
    """Every node under ``node`` that runs when ``node`` runs (not the bodies of nested defs, classes, lambdas)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for child in ast.iter_child_nodes(current):
            if isinstance(child, _DEFINITIONS + (ast.Lambda,)):
                continue
            stack.append(child)


def _is_assertion(node: ast.AST) -> bool:
    """An ``assert`` whose condition is not a constant, or a call to an assertion API."""
    if isinstance(node, ast.Assert):
        return not isinstance(node.test, ast.Constant) or not node.test.value
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name.startswith("assert") or name in ASSERTION_CALL_NAMES
    return False


def _called_names(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name):
                names.add(sub.func.id)
            elif isinstance(sub.func, ast.Attribute):
                names.add(sub.func.attr)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            names.add(sub.id)  # helpers passed around (``map(check, cases)``) or used as decorators
    return names


def plan_tests(tree: ast.Module) -> list[str]:
    """The tests of a tests module, in the order the runner runs them.

    ``<module>`` (:data:`MODULE_TEST`) first when a top-level statement asserts something; then each top-level
    ``test*`` function and, for each top-level ``Test*`` class, each of its ``test*`` methods as
    ``Class.method``. A name defined twice counts once, at its first position (the last definition runs).
    """
    names: list[str] = []
    if any(
        not isinstance(stmt, _DEFINITIONS) and any(_is_assertion(n) for n in _walk_shallow(stmt))
        for stmt in tree.body
    ):
        names.append(MODULE_TEST)
    for stmt in tree.body:
        if _is_test_function(stmt):
            names.append(stmt.name)
        elif _is_test_class(stmt):
            names.extend(f"{stmt.name}.{m.name}" for m in stmt.body if _is_test_function(m))
    return list(dict.fromkeys(names))


def find_assertions(tree: ast.Module) -> int:
    """How many assertions the tests can reach: in top-level statements, in test functions and methods (with
    their nested code) and in helper functions or classes those call, transitively. A constant ``assert True``
    does not count."""
    defs: dict[str, list[ast.AST]] = {}
    roots: list[ast.AST] = []
    for stmt in tree.body:
        if isinstance(stmt, _DEFINITIONS):
            defs.setdefault(stmt.name, []).append(stmt)
            if _is_test_function(stmt):
                roots.append(stmt)
            elif _is_test_class(stmt):
                roots.extend(m for m in stmt.body if _is_test_function(m) or (
                    isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and m.name in {"setUp", "tearDown", "setUpClass", "setup_method", "setup_class"}
                ))
                for m in stmt.body:  # methods are reachable helpers through self.<name>()
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        defs.setdefault(m.name, []).append(m)
        else:
            roots.append(stmt)
    seen: set[int] = set()
    count = 0
    queue = list(roots)
    while queue:
        node = queue.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        count += sum(1 for sub in ast.walk(node) if _is_assertion(sub))
        for name in _called_names(node):
            queue.extend(defs.get(name, ()))
    return count


# --------------------------------------------------------------------------------------------------------------
# The audit hook. Built with private builtins and only captured C functions, so that a row that monkeypatches
# ``builtins``, ``os``, ``os.path`` or ``sys`` does not change what the hook sees or decides.
# --------------------------------------------------------------------------------------------------------------


def _hook_factory(cfg, report, capi):  # noqa: C901 - one dispatch table, kept together for review
    """Return ``(hook, guard_fork_exec)``. ``capi``: captured C functions and constants (see :func:`main`)."""
    lstat = capi["lstat"]
    readlink = capi["readlink"]
    getcwd = capi["getcwd"]
    getpid = capi["getpid"]
    fspath = capi["fspath"]
    s_islnk = capi["S_ISLNK"]
    s_isdir = capi["S_ISDIR"]
    write_flags = capi["WRITE_FLAGS"]
    af_unix = capi["AF_UNIX"]
    cwd_root = cfg["cwd"]
    deny = tuple(cfg["deny_read"])
    allow = tuple(cfg["allow_read"]) + (cwd_root,)
    max_written = cfg["max_files_written"]
    written = [0]
    resolved_dirs: dict = {}

    def under(path, root):
        return path == root or root == "/" or path.startswith(root + "/")

    def resolve(path):
        """Absolute, symlink-free form of ``path`` (components that do not exist are kept lexically)."""
        try:
            p = fspath(path)
        except TypeError:
            return None
        if isinstance(p, bytes):
            p = p.decode("utf-8", "surrogateescape")
        if not isinstance(p, str):
            return None
        if "\x00" in p:
            return None
        if not p.startswith("/"):
            p = getcwd() + "/" + p
        parts = [c for c in p.split("/") if c and c != "."]
        done = ""
        hops = 0
        missing = False
        while parts:
            part = parts.pop(0)
            if part == "..":
                done = done[: done.rfind("/")] if done else ""
                continue
            candidate = done + "/" + part
            if missing:
                done = candidate
                continue
            cached = resolved_dirs.get(candidate)
            if cached is not None:
                done = cached
                continue
            try:
                st = lstat(candidate)
            except (OSError, ValueError):
                missing = True
                done = candidate
                continue
            if s_islnk(st.st_mode):
                hops += 1
                if hops > 40:
                    return "/"  # a symlink loop: treat as the root (outside everything allowed for writes)
                target = readlink(candidate)
                if target.startswith("/"):
                    done = ""
                    parts = [c for c in target.split("/") if c and c != "."] + parts
                else:
                    parts = [c for c in target.split("/") if c and c != "."] + parts
                continue
            done = candidate
            if s_isdir(st.st_mode) and len(resolved_dirs) < 4096:
                resolved_dirs[candidate] = candidate
        return done or "/"

    def read_denied(real):
        best_deny = max((len(r) for r in deny if under(real, r)), default=-1)
        if best_deny < 0:
            parts = real.split("/")
            # other processes' /proc entries (environ, mem, cmdline of the gate itself)
            if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != str(getpid()):
                return True
            return False
        best_allow = max((len(r) for r in allow if under(real, r)), default=-1)
        return best_allow < best_deny

    def block(reason):
        report(reason)  # writes the violation record and exits; never returns

    def check_write(path, what="write"):
        if isinstance(path, int):
            return
        raw = path
        real = resolve(raw)
        if real is None:
            return
        if real in ("/dev/null",) or raw in ("/dev/null", "/dev/stdout", "/dev/stderr"):
            return
        if not under(real, cwd_root):
            block(f"sandbox: {what} outside the working directory blocked ({real})")

    def check_read(path):
        if isinstance(path, int) or path is None:
            return None
        real = resolve(path)
        if real is not None and read_denied(real):
            block(f"sandbox: read of a protected path blocked ({real})")
        return real

    def on_open(args):
        path, mode, flags = args[0], args[1], args[2]
        if isinstance(path, int):
            return
        writing = bool(flags & write_flags) if isinstance(flags, int) else False
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            writing = True
        if writing:
            check_write(path)
            written[0] += 1
            if written[0] > max_written:
                block(f"sandbox: more than {max_written} files opened for writing")
        real = check_read(path)
        if mode is None and real is not None and not under(real, cwd_root):
            try:
                is_dir = s_isdir(lstat(real).st_mode)
            except (OSError, ValueError):
                is_dir = False
            if is_dir:  # a directory fd outside the working directory would make dir_fd-relative paths escape
                block(f"sandbox: opening a directory outside the working directory blocked ({real})")

    def blocked(name):
        def handler(args):
            block(f"sandbox: {name} blocked")

        return handler

    def network(name):
        def handler(args):
            block(f"sandbox: network blocked ({name})")

        return handler

    def write_args(*indices):
        def handler(args):
            for i in indices:
                if i < len(args):
                    check_write(args[i])

        return handler

    def read_args(*indices):
        def handler(args):
            for i in indices:
                if i < len(args):
                    check_read(args[i])

        return handler

    def copy_args(args):
        if args:
            check_read(args[0])
        if len(args) > 1:
            check_write(args[1])

    def on_socket(args):
        family = args[1] if len(args) > 1 else None
        if family != af_unix:
            label = {2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}.get(family, family)
            block(f"sandbox: network blocked (socket.socket {label})")

    def on_kill(args):
        if args and args[0] != getpid() and args[0] != 0:
            block("sandbox: os.kill of another process blocked")
        if args and args[0] == 0:
            block("sandbox: os.kill of the process group blocked")

    def on_dlsym(args):
        name = args[1] if len(args) > 1 else None
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if isinstance(name, int):
            block("sandbox: ctypes lookup by ordinal blocked")
        if isinstance(name, str) and (name in denied_symbols or name.startswith(denied_prefixes) or "udit" in name):
            block(f"sandbox: ctypes access to {name[:60]} blocked")

    def on_sqlite(args):
        database = args[0] if args else None
        if isinstance(database, bytes):
            database = database.decode("utf-8", "surrogateescape")
        if database in (":memory:", "", None):
            return
        if isinstance(database, str) and database.startswith("file:"):
            block("sandbox: sqlite3 URI databases blocked")
        check_write(database)

    def on_import(args):
        if args and args[0] in ("_posixsubprocess",):
            block("sandbox: re-importing _posixsubprocess blocked")

    denied_symbols = capi["DENIED_SYMBOLS"]
    denied_prefixes = capi["DENIED_SYMBOL_PREFIXES"]
    handlers = {
        "open": on_open,
        "os.listdir": read_args(0),
        "os.scandir": read_args(0),
        "os.remove": write_args(0),
        "os.rmdir": write_args(0),
        "os.mkdir": write_args(0),
        "os.rename": write_args(0, 1),
        "os.truncate": write_args(0),
        "os.chmod": write_args(0),
        "os.chown": write_args(0),
        "os.utime": write_args(0),
        "os.chflags": write_args(0),
        "os.lchflags": write_args(0),
        "os.setxattr": write_args(0),
        "os.removexattr": write_args(0),
        "os.mkfifo": write_args(0),
        "os.mknod": write_args(0),
        "os.link": blocked("os.link"),
        "os.symlink": blocked("os.symlink"),
        "shutil.rmtree": write_args(0),
        "shutil.chown": write_args(0),
        "shutil.copyfile": copy_args,
        "shutil.copymode": copy_args,
        "shutil.copystat": copy_args,
        "shutil.copytree": copy_args,
        "shutil.move": write_args(0, 1),
        "shutil.make_archive": write_args(0),
        "shutil.unpack_archive": lambda args: (check_read(args[0]), check_write(args[1]) if len(args) > 1 else None),
        "os.system": blocked("os.system"),
        "os.exec": blocked("os.exec"),
        "os.fork": blocked("os.fork"),
        "os.forkpty": blocked("os.forkpty"),
        "os.posix_spawn": blocked("os.posix_spawn"),
        "os.spawn": blocked("os.spawn"),
        "os.startfile": blocked("os.startfile"),
        "pty.spawn": blocked("pty.spawn"),
        "subprocess.Popen": blocked("subprocess.Popen"),
        "os.kill": on_kill,
        "os.killpg": blocked("os.killpg"),
        "resource.setrlimit": blocked("resource.setrlimit"),
        "resource.prlimit": blocked("resource.prlimit"),
        "socket.__new__": on_socket,
        "socket.connect": network("socket.connect"),
        "socket.bind": network("socket.bind"),
        "socket.sendto": network("socket.sendto"),
        "socket.sendmsg": network("socket.sendmsg"),
        "socket.getaddrinfo": network("socket.getaddrinfo"),
        "socket.gethostbyname": network("socket.gethostbyname"),
        "socket.gethostbyaddr": network("socket.gethostbyaddr"),
        "socket.getnameinfo": network("socket.getnameinfo"),
        "socket.sethostname": network("socket.sethostname"),
        "ctypes.dlsym": on_dlsym,
        "gc.get_objects": blocked("gc.get_objects (interpreter introspection)"),
        "gc.get_referrers": blocked("gc.get_referrers (interpreter introspection)"),
        "gc.get_referents": blocked("gc.get_referents (interpreter introspection)"),
        "sys._current_frames": blocked("sys._current_frames (interpreter introspection)"),
        "sys.addaudithook": blocked("sys.addaudithook"),
        "import": on_import,
        "sqlite3.connect": on_sqlite,
        "sqlite3.enable_load_extension": blocked("sqlite3.enable_load_extension"),
        "sqlite3.load_extension": blocked("sqlite3.load_extension"),
    }
    get = handlers.get

    def hook(event, args):
        handler = get(event)
        if handler is not None:
            handler(args)

    def guard_fork_exec(*args, **kwargs):
        block("sandbox: _posixsubprocess.fork_exec blocked")

    return hook, guard_fork_exec


# --------------------------------------------------------------------------------------------------------------
# Probe and main.
# --------------------------------------------------------------------------------------------------------------

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def _unshare(flags: int) -> int:
    """``unshare(2)`` through libc (``os.unshare`` is Python 3.12+); returns 0 or the errno."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        return ctypes.get_errno() or -1
    return 0


def _network_reachable() -> bool:
    """True when a TCP connect is not refused by the network stack at once (used by the probe only)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.3)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: never answers; unreachable only without a route
        return True
    except OSError as e:
        import errno

        return e.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
    finally:
        s.close()


def probe() -> None:
    """``runner.py --probe``: print what this interpreter and uid can do, as JSON (run by the gate once)."""
    import json
    import os
    import sysconfig

    paths = sysconfig.get_paths()
    # with -S, ``site`` does not switch the prefix to a virtual environment: find its pyvenv.cfg as site would
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    for cfg_file in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(os.path.dirname(exe_dir), "pyvenv.cfg")):
        if os.path.isfile(cfg_file):
            venv = os.path.dirname(cfg_file)
            venv_paths = sysconfig.get_paths(vars={"base": venv, "platbase": venv})
            with open(cfg_file, encoding="utf-8") as f:
                system_site = any(
                    line.split("=", 1)[0].strip() == "include-system-site-packages"
                    and line.split("=", 1)[1].strip().lower() == "true"
                    for line in f
                    if "=" in line
                )
            base_paths = paths
            paths = dict(venv_paths, stdlib=base_paths["stdlib"], platstdlib=base_paths["platstdlib"])
            if system_site:
                paths["system_purelib"] = base_paths["purelib"]
                paths["system_platlib"] = base_paths["platlib"]
            break
    info = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "paths": paths,
        "sys_path": list(sys.path),
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "version": sys.version.split()[0],
    }
    readable = []
    for key in ("purelib", "platlib", "stdlib"):
        try:
            os.listdir(info["paths"][key])
            readable.append(key)
        except OSError:
            pass
    info["readable"] = readable
    err = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    info["unshare_errno"] = err
    info["userns"] = err == 0
    info["netns_isolated"] = err == 0 and not _network_reachable()
    print(json.dumps(info))


def _count_uid_tasks(uid: int) -> int:
    import os

    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            n += int(fields.get("Threads", "1").strip() or 1)
    return n


def _clip(text: str, limit: int = RECORD_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> None:  # noqa: C901 - the runner's whole life, in order
    import builtins
    import json
    import os
    import posix
    import resource
    import stat
    import types

    ctl_fd, res_fd, cfg_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    write = posix.write
    exit_now = posix._exit

    # 2. namespaces
    if cfg["unshare"]:
        err = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if err:
            write(res_fd, f"failed unshare errno {err}\n".encode())
            exit_now(70)

    # 3. limits (NPROC after the unshare: inside a fresh user namespace it counts this row's processes only)
    def limit(res, soft, hard=None):
        hard = soft if hard is None else hard
        cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))

    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_CPU, cfg["cpu_seconds"], cfg["cpu_seconds"] + 1)
    limit(resource.RLIMIT_AS, cfg["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, cfg["file_bytes"])
    limit(resource.RLIMIT_NOFILE, cfg["open_files"])
    if cfg["nproc"] == "userns":
        limit(resource.RLIMIT_NPROC, cfg["max_processes"])
    elif cfg["nproc"] == "uid":
        limit(resource.RLIMIT_NPROC, _count_uid_tasks(os.getuid()) + cfg["max_processes"])

    # 4. handshake: the nonce arrives once the gate has placed this process (cgroup)
    write(res_fd, b"ready\n")
    chunks = []
    while True:
        chunk = os.read(ctl_fd, 256)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(ctl_fd)
    nonce = b"".join(chunks).decode().strip()
    if not nonce:
        exit_now(71)
    prefix = (nonce + " ").encode()
    del nonce, chunks
    quote = json.encoder.c_encode_basestring_ascii or json.encoder.py_encode_basestring_ascii

    def encode(value) -> str:
        """JSON of the flat records (str, int, bool, None values), without the ``json`` module's Python code
        (which the row could patch)."""
        if value is True or value is False or value is None:
            return {True: "true", False: "false", None: "null"}[value]
        if type(value) is int:
            return int.__repr__(value)
        return quote(str.__str__(value) if isinstance(value, str) else "<not a string>")

    def record(obj) -> None:
        body = ",".join(quote(str(k)) + ":" + encode(v) for k, v in obj.items())
        line = prefix + ("{" + body + "}").encode("ascii") + b"\n"
        try:
            while line:
                line = line[write(res_fd, line[:3800]) :]
        except OSError:
            pass

    # the row's files (read before the hook: they are in the working directory anyway)
    cwd = cfg["cwd"]
    with open(cfg["solution_file"], encoding="utf-8") as f:
        solution_src = f.read()
    with open(cfg["tests_file"], encoding="utf-8") as f:
        tests_src = f.read()
    solution_lines = solution_src.splitlines()
    tests_lines = tests_src.splitlines()
    tests_tree = ast.parse(tests_src, "tests.py")
    names = plan_tests(tests_tree)

    sys.path[:] = [cwd] + [p for p in sys.path if p] + [p for p in cfg["site_dirs"] if p not in sys.path]
    sys.dont_write_bytecode = True

    # 5. hook (private builtins, captured C functions)
    def report_violation(reason: str) -> None:
        record({"k": "violation", "reason": _clip(reason)})
        exit_now(VIOLATION_EXIT)

    capi = {
        "lstat": posix.lstat,
        "readlink": posix.readlink,
        "getcwd": posix.getcwd,
        "getpid": posix.getpid,
        "fspath": os.fspath,
        "S_ISLNK": stat.S_ISLNK,
        "S_ISDIR": stat.S_ISDIR,
        "WRITE_FLAGS": os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
        "AF_UNIX": 1,
        "DENIED_SYMBOLS": DENIED_SYMBOLS,
        "DENIED_SYMBOL_PREFIXES": DENIED_SYMBOL_PREFIXES,
    }
    private_globals = {"__builtins__": dict(vars(builtins)), "__name__": "_sandbox_hook"}
    factory = types.FunctionType(_hook_factory.__code__, private_globals, "_hook_factory")
    hook, guard_fork_exec = factory(cfg, report_violation, capi)
    import _posixsubprocess

    _posixsubprocess.fork_exec = guard_fork_exec
    sys.addaudithook(hook)

    # helpers used after the row's code has run are bound now
    # (``main`` runs with a private copy of the builtins, see the end of this file; these are bound anyway)
    isinstance_, getattr_, hasattr_, type_, str_, len_ = isinstance, getattr, hasattr, type, str, len
    list_, tuple_, dict_, zip_ = list, tuple, dict, zip

    def describe(exc: BaseException) -> dict:
        """Exception type, message and the deepest line of the tests (else of the solution) it went through."""
        try:
            message = str_(exc)
        except BaseException:  # noqa: BLE001 - hostile __str__
            message = "<unprintable message>"
        info = {"etype": _clip(type_(exc).__name__, 80), "msg": _clip(message)}
        where = None
        tb = exc.__traceback__
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if name == "tests.py":
                where = ("tests", tb.tb_lineno)
            elif name == "solution.py" and (where is None or where[0] == "solution"):
                where = ("solution", tb.tb_lineno)
            tb = tb.tb_next
        if where is None and isinstance_(exc, SyntaxError) and exc.filename in ("tests.py", "solution.py"):
            where = (exc.filename[:-3], exc.lineno or 0)
        if where is not None:
            lines = tests_lines if where[0] == "tests" else solution_lines
            info["file"], info["line"] = where
            if 0 < where[1] <= len_(lines):
                info["src"] = _clip(lines[where[1] - 1].strip())
        return info

    # everything the tests need is compiled and created before the solution runs (it could patch ``ast``,
    # ``types``...)
    tests = types.ModuleType("tests")
    tests.__file__ = os.path.join(cwd, "tests.py")
    statements = [
        (
            isinstance_(stmt, _DEFINITIONS + (ast.Import, ast.ImportFrom)),
            compile(ast.Module([stmt], []), "tests.py", "exec", dont_inherit=True),
        )
        for stmt in tests_tree.body
    ]

    # the solution, as the module ``solution``
    solution = types.ModuleType("solution")
    solution.__file__ = os.path.join(cwd, "solution.py")
    sys.modules["solution"] = solution
    try:
        exec(compile(solution_src, "solution.py", "exec", dont_inherit=True), solution.__dict__)
    except BaseException as exc:  # noqa: BLE001 - anything the solution raises, SystemExit included
        record({"k": "solution", **describe(exc)})
        record({"k": "done"})
        exit_now(0)

    tests.__dict__.update({k: v for k, v in solution.__dict__.items() if not k.startswith("__")})
    sys.modules["tests"] = tests

    # the top-level statements (one pseudo-test when they assert something); after a failure only definitions
    # and imports still run, so that the test functions below exist
    module_error = None
    for is_definition, code in statements:
        if module_error is not None and not is_definition:
            continue
        try:
            exec(code, tests.__dict__)
        except BaseException as exc:  # noqa: BLE001
            if module_error is None:
                module_error = describe(exc)
    if names and names[0] == MODULE_TEST:
        record({"k": "test", "i": 0, "ok": module_error is None, **(module_error or {})})
    elif module_error is not None:
        record({"k": "setup", **module_error})

    def call(func, tmp_index=[0]):  # noqa: B006 - a counter for tmp_path directories
        """Call a test function: expand ``pytest.mark.parametrize`` marks, provide ``tmp_path``."""
        code = getattr_(func, "__code__", None)
        argnames = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if code is not None else ()
        if argnames and argnames[0] in ("self", "cls"):
            argnames = argnames[1:]
        defaults = len_(getattr_(func, "__defaults__", None) or ())
        required = list(argnames[: len_(argnames) - defaults]) if defaults else list(argnames)
        cases = [{}]
        for mark in reversed(list_(getattr_(func, "pytestmark", None) or [])):
            if getattr_(mark, "name", None) != "parametrize" or len_(getattr_(mark, "args", ())) < 2:
                continue
            keys, values = mark.args[0], mark.args[1]
            keys = [k.strip() for k in keys.split(",")] if isinstance_(keys, str) else list_(keys)
            rows = []
            for value in values:
                is_param = all(hasattr_(value, a) for a in ("values", "marks", "id"))  # pytest.param(...)
                vals = tuple_(value.values) if is_param else value
                if len_(keys) == 1:
                    rows.append({keys[0]: vals[0] if is_param else vals})
                else:
                    rows.append(dict_(zip_(keys, vals)))
            cases = [{**c, **r} for c in cases for r in rows]
        if not cases:
            raise ValueError("parametrize gives no cases: nothing runs")
        case_state[1] = len_(cases)
        for index, kwargs in enumerate(cases):
            case_state[0] = index + 1
            for name in required:
                if name in kwargs:
                    continue
                if name in ("tmp_path", "tmpdir"):
                    import pathlib

                    tmp_index[0] += 1
                    path = pathlib.Path(cwd) / "tmp" / f"test_{tmp_index[0]}"
                    path.mkdir(parents=True, exist_ok=True)
                    kwargs[name] = path
                else:
                    raise TypeError(f"needs the fixture {name!r}, which the sandbox does not provide")
            result = func(**kwargs)
            if getattr_(result, "__await__", None) is not None:
                import asyncio

                asyncio.run(result)
        return len_(cases)

    classes_done = set()
    case_state = [0, 0]  # (1-based index, count) of the parametrize case running
    for test_index, name in enumerate(names):
        if name == MODULE_TEST:
            continue
        case_state[0] = case_state[1] = 0
        try:
            if "." in name:
                cls_name, meth = name.split(".", 1)
                cls = tests.__dict__[cls_name]
                unittest = sys.modules.get("unittest")
                if unittest is not None and isinstance_(cls, type) and issubclass(cls, unittest.TestCase):
                    if cls_name not in classes_done:
                        classes_done.add(cls_name)
                        cls.setUpClass()
                    inst = cls(meth)
                    inst.setUp()
                    try:
                        call(getattr_(inst, meth))
                    finally:
                        inst.tearDown()
                else:
                    inst = cls()
                    bound = getattr_(inst, meth)
                    if hasattr(inst, "setup_method"):
                        inst.setup_method(bound)
                    try:
                        call(bound)
                    finally:
                        if hasattr(inst, "teardown_method"):
                            inst.teardown_method(bound)
            else:
                func = tests.__dict__[name]
                if not callable(func):
                    raise TypeError(f"{name} is not a function")
                call(func)
        except BaseException as exc:  # noqa: BLE001 - SystemExit, skips and KeyboardInterrupt fail a test too
            info = describe(exc)
            if case_state[1] > 1:
                info["case"], info["cases"] = case_state[0], case_state[1]
            record({"k": "test", "i": test_index, "ok": False, **info})
        else:
            record({"k": "test", "i": test_index, "ok": True})
    record({"k": "done"})
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    exit_now(0)


def _private_main() -> None:
    """Run :func:`main` with a private copy of the builtins: every function of this module is rebuilt over a copy
    of its globals whose ``__builtins__`` is a snapshot dict, so that a row replacing ``builtins.len``,
    ``builtins.isinstance``... changes neither the runner's bookkeeping nor the hook (hooks cannot be removed,
    and a monkeypatched ``sys.audit`` does not stop the C-level events)."""
    import builtins
    import types

    private = dict(globals())
    private["__builtins__"] = dict(vars(builtins))
    for key, value in list(private.items()):
        if isinstance(value, types.FunctionType) and value.__module__ == __name__:
            private[key] = types.FunctionType(
                value.__code__, private, value.__name__, value.__defaults__, value.__closure__
            )
    private["main"]()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe()
    else:
        _private_main()
