"""API grounding gate for code rows: every module, name and attribute chain a solution uses must really exist.

The failure it stops: a teacher LLM invents an API (``pd.DataFrame.fooo``, ``numpy.linalg.normalize``,
``os.path.joinn``, ``import pandaz``) and the dataset ships it. Rows of a code recipe carry Python source in a
``solution`` column; the gate reads it with :mod:`ast` only — **the row's code is never executed, compiled or
imported** — and resolves what it names against the packages really installed in this environment.

What is checked (statically, intra-module, flow-insensitive):

* every ``import x``, ``import x.y``, ``import x.y as z`` and ``from x import y`` (``y`` an attribute of ``x`` or
  a submodule): the module must be findable (``importlib.util.find_spec``), found inside the standard library or
  the environment's site-packages, and (with ``allowed_modules``) on the allow-list; the imported name must exist;
* every attribute chain rooted at a name bound by an import (``np.linalg.norm``, ``pd.DataFrame.from_dict``,
  ``DataFrame.fooo`` after ``from pandas import DataFrame``, ``os.path.joinn``) or at an unshadowed builtin
  (``str.joinn``, ``dict.fromkeys``), walked with :func:`inspect.getattr_static` first (so properties and other
  descriptors are never triggered), ``getattr`` as the fallback (lazy module attributes such as numpy's
  ``__getattr__``), and submodules by spec. The walk continues through modules and classes only: it stops, without
  judging, at the first value that is neither (an instance such as ``os.environ``, a function, a property);
* with ``check_arity``, every call of a fully resolved callable (``np.linalg.norm(x, axes=1)``, ``math.sqrt(1, 2)``,
  ``json.dumps()``, and builtins such as ``len(1, 2)``): the call's positional count and keyword names are bound
  against :func:`inspect.signature`. Skipped when no signature is available (C builtins such as ``max``, ``dict``,
  ``range``), and when the call unpacks (``f(*parts)``, ``f(**kw)``); ``*args`` / ``**kwargs`` parameters swallow
  what they swallow (``print(sep="-")`` binds). Calling a resolved non-callable (``math.pi()``) is a bad call.

Name tracking precision: a name is tracked when every binding of it anywhere in the module is an import of one
and the same target. A name bound anywhere else (``np = 3``, a parameter ``pd``, ``for json in ...``, ``def len``,
``except E as os``, a comprehension variable, a ``match`` capture, ``del``) is not tracked anywhere in the module,
nor is a name imported from two different targets (``try: import ujson as json / except ImportError: import
json``). Builtins are tracked unless shadowed, and not at all in a module with ``from x import *``. An attribute
the row itself assigns (``np.foo = 1``) is not checked on reads. Not covered: attributes of instances (``df =
pd.DataFrame(); df.fooo``, ``os.environ.gett``), results of calls (``np.random.default_rng().integerz``),
``getattr``/``importlib``/``__import__`` with strings, ``eval``/``exec`` text, string annotations, relative imports
(``from . import x``: a local package) and star imports.

Guards: references inside code that expects them to be missing are not rejected when missing: ``try`` bodies whose
handlers catch ``ImportError``/``ModuleNotFoundError`` (imports), ``AttributeError`` (attributes), ``TypeError``
(calls), ``Exception``/``BaseException``/bare ``except`` (all); ``with contextlib.suppress(...)`` likewise; ``if``
blocks testing ``hasattr(...)``/``getattr(...)`` (attributes); and ``if`` blocks on ``sys.version_info``,
``sys.platform``, ``os.name``, ``platform.*``... (everything: version- and platform-specific code). A module
outside the allow-list or outside the environment is rejected even when guarded.

Safety. Resolving a module imports it *in this process* (installed packages are the environment's own code, not the
row's), on a daemon thread with a timeout (``import_timeout_seconds``; a timed-out or failing import leaves the
module unverified, never dropped). Three rules keep a row from making the gate run code of its choosing:

* a module whose spec is found outside the standard library and site-packages directories of ``sys.prefix`` /
  ``sys.base_prefix`` (a file in the working directory, in a folder put on ``sys.path``, an editable install such
  as this project's own source tree, the user site-packages) is rejected as "not an installed package" and never
  imported; for a package, every directory of its ``__path__`` must be inside (a namespace package extended by a
  planted folder is rejected too);
* a parent package is vetted before a dotted name is looked up (``find_spec("a.b")`` imports ``a``);
* :data:`SPEC_ONLY_MODULES`: standard-library modules with side effects on import (``antigravity`` opens a
  browser, ``this`` and ``__hello__`` print, ``idlelib`` / ``turtledemo`` start GUIs, ``test`` modules run suites,
  every ``*.__main__`` runs a command line, ``__main__`` is the running program) are resolved by spec only: their
  existence is checked, their attributes are not.

Categories: ``unparseable`` (the solution is missing, not a string, or not valid Python: ``ast.parse`` fails),
``unknown_api`` (a module that is not installed, or a name or attribute that does not exist), ``disallowed_module``
(outside ``allowed_modules``, or found outside the environment), ``bad_call`` (arguments that do not bind). A row
is reported under its first problem in source order. Reasons (data-safe: every name from the row is stripped of
control and format characters and capped, and the whole reason is capped)::

    module 'pandaz' is not installed: line 1
    pandas.DataFrame.fooo does not exist (pandas 3.1.1): line 4
    numpy.linalg.norm() got an unexpected keyword argument 'axes' (line 7)
    module 'os' is not in the allowed modules: line 2
    module 'helpers' is not an installed package (found outside the standard library and site-packages): line 1

Score: the number of API references checked in the row (imported names plus attribute chains and calls of
tracked names that the gate could judge). Results depend on the installed packages and the Python version: a row
is grounded in *this* environment (record it with the dataset; :func:`coverage_note` says so for the card).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import os
import platform
import site
import sys
import sysconfig
import threading
import time
import types
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from synqa_dagster.gates.base import Gate, GateResult
from synqa_dagster.gates.text import is_missing

__all__ = [
    "ApiGroundingGate",
    "ApiGroundingGateConfig",
    "CATEGORIES",
    "SPEC_ONLY_MODULES",
    "coverage_note",
]

CATEGORIES = ("unparseable", "unknown_api", "disallowed_module", "bad_call")

#: Standard-library modules (and packages: their submodules too) with side effects on import; they are found by
#: spec only, never imported, so their attributes are not checked. Any dotted name with a ``__main__`` part is
#: spec-only as well (``unittest.__main__`` runs the test runner on import).
SPEC_ONLY_MODULES: frozenset[str] = frozenset(
    {"antigravity", "this", "__hello__", "__phello__", "__main__", "idlelib", "turtledemo", "test"}
)

_MAX_NAME = 80  # characters of one name (module, attribute, keyword) from the row in a reason
_MAX_REASON = 300  # characters of a whole reason
_CACHE_LIMIT = 200_000  # resolution cache entries (keys hold names from rows) before the caches are emptied

# Guard kinds: what a surrounding try/with/if tells us the code expects to fail.
_G_IMPORT, _G_ATTR, _G_CALL, _G_VERSION = "import", "attr", "call", "version"
_SUPPRESSED_BY = {"unknown_module": {_G_IMPORT, _G_VERSION}, "unknown_attr": {_G_ATTR, _G_VERSION},
                  "bad_call": {_G_CALL, _G_VERSION}}
_HANDLER_GUARDS = {
    "ImportError": {_G_IMPORT}, "ModuleNotFoundError": {_G_IMPORT}, "AttributeError": {_G_ATTR},
    "TypeError": {_G_CALL}, "Exception": {_G_IMPORT, _G_ATTR, _G_CALL},
    "BaseException": {_G_IMPORT, _G_ATTR, _G_CALL},
}
_VERSION_ATTRS = {"version_info", "hexversion", "platform", "implementation"}


class ApiGroundingGateConfig(BaseModel):
    """Configuration of :class:`ApiGroundingGate`.

    Attributes:
        solution_column: the column holding each row's Python source.
        allowed_modules: ``None`` = any module installed in the environment (standard library or site-packages);
            otherwise an allow-list of module names: a module is allowed when it is listed or is a submodule of a
            listed one (``"os"`` allows ``os.path``). Anything else is rejected ``disallowed_module`` ("not in the
            allowed modules"); list the standard-library modules you accept too. ``__future__`` is always allowed;
            builtins are not modules and are always allowed.
        import_timeout_seconds: how long the import of one module (done once per gate, on a daemon thread) may
            take before the module is left unverified (its references are counted as unverified, never dropped);
            ``None`` imports in the calling thread without a limit.
        check_arity: bind the arguments of calls on resolved callables against their signatures (``bad_call``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    solution_column: str = Field("solution", min_length=1, description="Column holding the Python source.")
    allowed_modules: tuple[str, ...] | None = Field(
        None, description="Allow-list of modules (submodules included); None = anything installed."
    )
    import_timeout_seconds: float | None = Field(
        20.0, gt=0, description="Limit on importing one module; a timed-out module is left unverified."
    )
    check_arity: bool = Field(True, description="Bind call arguments against inspect.signature (bad_call).")

    @field_validator("allowed_modules")
    @classmethod
    def _dotted_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        for name in value:
            if not name or not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"allowed_modules: {name!r} is not a dotted module name")
        return tuple(sorted(set(value)))


def coverage_note(config: ApiGroundingGateConfig | None = None) -> str:
    """What the gate checks and does not check, in plain words, for the dataset card."""
    c = config or ApiGroundingGateConfig()
    allowed = (
        "any module installed in this environment (standard library or site-packages)"
        if c.allowed_modules is None
        else "only the allowed modules (" + ", ".join(c.allowed_modules) + ", and their submodules)"
    )
    arity = (
        "Calls of resolved functions and classes (builtins included) are bound against their signatures (argument "
        "count and keyword names; skipped where no signature is available or the call unpacks *args/**kwargs)."
        if c.check_arity
        else "Call arguments are not checked."
    )
    return (
        f"API grounding (column '{c.solution_column}'): the Python source is parsed, never executed. Checked: "
        f"every import resolves to {allowed}; every imported name exists; every attribute chain on an imported "
        "module, class or function, or on a builtin, exists (walked through modules and classes). "
        f"{arity} Checked against Python {platform.python_version()} and the packages installed when the gate ran, "
        "so version- or platform-specific code is judged for this environment (code inside version/platform "
        "checks, hasattr checks and try/except blocks that expect the failure is not rejected). Not checked: "
        "attributes of instances and of call results (df.fooo after df = pd.DataFrame()), names rebound in the "
        "row's own code (tracking is per module and flow-insensitive), getattr/importlib/__import__ with strings, "
        "eval/exec, relative and star imports, and whether the code runs or is correct."
    )


# ---------------------------------------------------------------------------------------------- data safety


def _safe(text: object, limit: int = _MAX_NAME) -> str:
    """``text`` with control/format/separator characters replaced by ``?`` and capped at ``limit`` characters."""
    s = "".join(ch if (ch == " " or ch.isprintable()) else "?" for ch in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _dotted(parts: tuple[str, ...] | list[str]) -> str:
    return _safe(".".join(_safe(p) for p in parts), 2 * _MAX_NAME)


# --------------------------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class _Res:
    """One resolution: ``kind`` is ``ok`` (``value`` known), ``leaf`` (exists, value not taken: a descriptor),
    ``unverified`` (could not be judged), ``missing`` or ``blocked`` (with ``reason``, without the line)."""

    kind: str
    value: Any = None
    reason: str | None = None
    note: str | None = None  # why unverified (metrics)


_UNVERIFIED = _Res("unverified")
_LEAF = _Res("leaf")
_SAFE_TO_GET = (
    types.FunctionType, classmethod, staticmethod, types.BuiltinFunctionType, types.MethodDescriptorType,
    types.ClassMethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
)


def _walkable(value: Any) -> bool:
    return isinstance(value, (types.ModuleType, type))


def _allowed_roots() -> tuple[str, ...]:
    """Real paths of the standard-library and site-packages directories of ``sys.prefix`` and ``sys.base_prefix``."""
    roots: set[str] = set()
    schemes = [None, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
                      "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}]
    for vars_ in schemes:
        try:
            paths = sysconfig.get_paths(vars=vars_) if vars_ else sysconfig.get_paths()
        except Exception:  # pragma: no cover - exotic sysconfig
            continue
        roots.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(k))
    try:
        roots.update(site.getsitepackages())
    except Exception:  # pragma: no cover - old virtualenv's site module
        pass
    return tuple(sorted({os.path.join(os.path.realpath(r), "") for r in roots}))


class _Resolver:
    """Resolves modules, attributes and calls against the running environment, with caches (one per gate)."""

    def __init__(self, config: ApiGroundingGateConfig) -> None:
        self.config = config
        self.roots = _allowed_roots()
        self.modules: dict[tuple[str, bool], _Res] = {}
        self.attrs: dict[tuple[Any, ...], _Res] = {}
        self.calls: dict[tuple[Any, ...], str | None] = {}
        self.versions: dict[str, str] = {}
        self._distributions: dict[str, list[str]] | None = None
        self.import_timeouts = 0
        self.import_errors = 0

    def bound_caches(self) -> None:
        """Empty the caches once they hold :data:`_CACHE_LIMIT` entries (rows full of distinct invented names
        must not grow memory without bound); results do not change, only speed."""
        if len(self.attrs) + len(self.calls) + len(self.modules) > _CACHE_LIMIT:
            self.attrs.clear()
            self.calls.clear()
            self.modules.clear()

    # -- modules

    def allowed(self, name: str) -> bool:
        allow = self.config.allowed_modules
        if allow is None or name == "__future__":
            return True
        return any(name == a or name.startswith(a + ".") for a in allow)

    @staticmethod
    def spec_only(name: str) -> bool:
        parts = name.split(".")
        return "__main__" in parts or any(".".join(parts[: i + 1]) in SPEC_ONLY_MODULES for i in range(len(parts)))

    def inside_environment(self, spec: importlib.machinery.ModuleSpec) -> bool:
        if spec.loader in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter) or spec.origin in (
            "built-in", "frozen"
        ):
            return True
        paths = []
        if spec.origin and spec.has_location:
            paths.append(spec.origin)
        paths.extend(list(spec.submodule_search_locations or ()))
        if not paths:  # a module without a file from a non-builtin loader: cannot tell where its code comes from
            return False
        return all(any(os.path.realpath(p).startswith(root) for root in self.roots) for p in paths)

    def module(self, name: str, check_allowed: bool = True) -> _Res:
        key = (name, check_allowed)
        if key not in self.modules:
            self.modules[key] = self._module(name, check_allowed)
        return self.modules[key]

    def _module(self, name: str, check_allowed: bool) -> _Res:
        shown = _safe(name, 2 * _MAX_NAME)
        if check_allowed and not self.allowed(name):
            return _Res("blocked", reason=f"module '{shown}' is not in the allowed modules")
        parent = name.rpartition(".")[0]
        if parent:
            up = self.module(parent, check_allowed=False)
            if up.kind != "ok":
                return up if up.kind in ("missing", "blocked") else _Res("unverified", note=up.note)
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        except Exception:  # a module in sys.modules without a spec, a broken finder...
            return _Res("unverified", note="no spec")
        if spec is None:
            if parent:
                return _Res("missing", reason=f"module '{shown}' does not exist ({self.version(name)})")
            return _Res("missing", reason=f"module '{shown}' is not installed")
        if not self.inside_environment(spec):
            return _Res("blocked", reason=f"module '{shown}' is not an installed package (found outside the "
                                          "standard library and site-packages)")
        if self.spec_only(name):
            return _Res("unverified", note="spec only")
        if name in sys.modules:
            return _Res("ok", sys.modules[name])
        return self._import(name)

    def _import(self, name: str) -> _Res:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    box["module"] = importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 - an installed package failing to import is not the row's
                box["error"] = exc

        timeout = self.config.import_timeout_seconds
        if timeout is None:
            run()
        else:
            worker = threading.Thread(target=run, name=f"api-grounding-import-{name[:40]}", daemon=True)
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                self.import_timeouts += 1
                return _Res("unverified", note="import timed out")
        if "module" not in box:
            self.import_errors += 1
            return _Res("unverified", note="import failed")
        return _Res("ok", box["module"])

    def version(self, name: str) -> str:
        """``pandas 3.1.1`` / ``Python 3.11.7`` for the top-level package of ``name``."""
        top = name.partition(".")[0]
        if top not in self.versions:
            self.versions[top] = self._version(top)
        return self.versions[top]

    def _version(self, top: str) -> str:
        if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "builtins":
            return f"Python {platform.python_version()}"
        shown = _safe(top)
        mod = sys.modules.get(top)
        v = getattr(mod, "__version__", None) if mod is not None else None
        if isinstance(v, str):
            return f"{shown} {_safe(v, 40)}"
        try:
            if self._distributions is None:
                self._distributions = importlib.metadata.packages_distributions()
            dists = self._distributions.get(top)
            if dists:
                return f"{shown} {_safe(importlib.metadata.version(dists[0]), 40)}"
        except Exception:
            pass
        return f"{shown}, version unknown"

    # -- attributes

    def attribute(self, owner: Any, attr: str) -> _Res:
        """``attr`` of a module or class ``owner``: ``ok`` with the value, ``leaf``, ``missing`` or ``unverified``."""
        if isinstance(owner, types.ModuleType):
            namespace = getattr(owner, "__dict__", {})
            if attr in namespace:
                return _Res("ok", namespace[attr])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return _Res("ok", getattr(owner, attr))  # lazy module attributes (module __getattr__)
            except AttributeError:
                pass
            except Exception:
                return _UNVERIFIED
            if hasattr(owner, "__path__"):  # a submodule not imported yet
                sub = self.module(f"{owner.__name__}.{attr}", check_allowed=False)
                if sub.kind != "missing":
                    return sub if sub.kind in ("ok", "blocked") else _Res("unverified", note=sub.note)
            return _Res("missing")
        try:
            static = inspect.getattr_static(owner, attr)
        except AttributeError:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return _Res("ok", getattr(owner, attr))  # metaclass __getattr__, enum members...
            except AttributeError:
                return _Res("missing")
            except Exception:
                return _UNVERIFIED
        if isinstance(static, _SAFE_TO_GET):
            try:
                return _Res("ok", getattr(owner, attr))  # bound classmethod, unbound function...
            except Exception:
                return _LEAF
        if not hasattr(type(static), "__get__"):
            return _Res("ok", static)  # a plain class attribute, a nested class
        return _LEAF  # a property or other descriptor: it exists; its value is not taken

    def chain(self, root: tuple[Any, ...], parts: tuple[str, ...]) -> tuple[_Res, int]:
        """Resolve ``parts`` from ``root``; returns the last resolution and how many parts it covered (the walk
        stops early at a value that is neither a module nor a class, or at a problem)."""
        res = self.root(root)
        done = 0
        for i in range(len(parts)):
            if res.kind != "ok" or not _walkable(res.value):
                break
            key = (root, parts[: i + 1])
            if key not in self.attrs:
                self.attrs[key] = self.attribute(res.value, parts[i])
            res = self.attrs[key]
            done = i + 1
        return res, done

    def root(self, root: tuple[Any, ...]) -> _Res:
        key = (root, ())
        if key not in self.attrs:
            kind = root[0]
            if kind == "module":
                self.attrs[key] = self.module(root[1])
            elif kind == "builtin":
                self.attrs[key] = _Res("ok", vars(builtins)[root[1]])
            else:  # ("from", module, name)
                mod = self.module(root[1])
                self.attrs[key] = self.attribute(mod.value, root[2]) if mod.kind == "ok" else mod
        return self.attrs[key]

    # -- calls

    def call_problem(self, key: tuple[Any, ...], shown: str, value: Any, n_pos: int, keywords: tuple[str, ...]
                     ) -> str | None:
        """The reason a call with ``n_pos`` positional arguments and ``keywords`` does not bind, or None."""
        ckey = (key, n_pos, keywords)
        if ckey not in self.calls:
            self.calls[ckey] = self._call_problem(shown, value, n_pos, keywords)
        return self.calls[ckey]

    @staticmethod
    def _call_problem(shown: str, value: Any, n_pos: int, keywords: tuple[str, ...]) -> str | None:
        if not callable(value):
            return f"{shown}() is not callable: '{_safe(type(value).__name__)}' object"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                signature = inspect.signature(value)
        except Exception:
            return None  # no signature (C builtins without text signatures): not judged
        try:
            signature.bind(*([None] * n_pos), **dict.fromkeys(keywords))
        except TypeError as exc:
            return f"{shown}() {_safe(exc, 2 * _MAX_NAME)}"
        return None


# ----------------------------------------------------------------------------------------------- the row


@dataclass
class _Bindings:
    """Who binds each name of a module (whole module, every scope: flow-insensitive)."""

    imports: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    other: set[str] = field(default_factory=set)
    star: bool = False
    assigned: set[tuple[str, ...]] = field(default_factory=set)  # attribute chains the row assigns / deletes

    def target(self, name: str) -> tuple[Any, ...] | None:
        """What ``name`` is tracked as: ``("module", m)``, ``("from", m, n)``, ``("builtin", n)``; None if untracked."""
        targets = self.imports.get(name)
        if targets is not None:
            return next(iter(targets)) if len(targets) == 1 and name not in self.other else None
        if not self.star and name in _BUILTIN_NAMES and name not in self.other:
            return ("builtin", name)
        return None


#: Builtins tracked as call targets and chain roots (dunder names other than ``__import__`` are not APIs).
_BUILTIN_NAMES = frozenset(n for n in vars(builtins) if not n.startswith("_")) | {"__import__"}


def _name_chain(node: ast.AST) -> tuple[str, tuple[str, ...]] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, tuple(reversed(parts))
    return None


def _bindings(tree: ast.AST) -> _Bindings:
    b = _Bindings()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    b.imports.setdefault(alias.asname, set()).add(("module", alias.name))
                else:
                    top = alias.name.partition(".")[0]
                    b.imports.setdefault(top, set()).add(("module", top))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    b.star = True
                elif node.level or not node.module:
                    b.other.add(alias.asname or alias.name)  # relative import: a local package, not tracked
                else:
                    b.imports.setdefault(alias.asname or alias.name, set()).add(("from", node.module, alias.name))
        elif isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                b.other.add(node.id)
        elif isinstance(node, ast.arg):
            b.other.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            b.other.add(node.name)
        elif isinstance(node, ast.ExceptHandler):
            if node.name:
                b.other.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)):
            if node.name:
                b.other.add(node.name)
        elif isinstance(node, ast.MatchMapping):
            if node.rest:
                b.other.add(node.rest)
        elif isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load):
            chain = _name_chain(node)
            if chain is not None:
                b.assigned.add((chain[0], *chain[1]))
        elif type(node).__name__ in ("TypeVar", "ParamSpec", "TypeVarTuple"):  # PEP 695 type parameters
            b.other.add(getattr(node, "name", ""))
    return b


def _handler_guards(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {_G_IMPORT, _G_ATTR, _G_CALL}
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    out: set[str] = set()
    for n in names:
        label = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
        out |= _HANDLER_GUARDS.get(label, set())
    return out


def _if_guards(test: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute):
            if node.attr in _VERSION_ATTRS or (node.attr == "name" and isinstance(node.value, ast.Name)
                                               and node.value.id == "os"):
                out.add(_G_VERSION)
            elif isinstance(node.value, ast.Name) and node.value.id == "platform":
                out.add(_G_VERSION)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            out.add(_G_ATTR)
    return out


def _with_guards(node: ast.With | ast.AsyncWith) -> set[str]:
    out: set[str] = set()
    for item in node.items:
        call = item.context_expr
        if isinstance(call, ast.Call):
            func = call.func
            label = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if label == "suppress":
                for arg in call.args:
                    out |= _handler_guards(ast.ExceptHandler(type=arg, name=None, body=[]))
    return out


@dataclass
class _RowReport:
    references: int = 0
    calls: int = 0
    unverified: int = 0
    named: dict[str, str] = field(default_factory=dict)  # module the row's imports name -> resolution kind
    problems: list[tuple[int, int, str, str]] = field(default_factory=list)  # (line, col, category, reason)


class _RowChecker:
    """Walks one parsed solution (iteratively: deep code cannot exhaust the Python stack) and reports problems."""

    def __init__(self, resolver: _Resolver, tree: ast.Module, check_arity: bool) -> None:
        self.r = resolver
        self.tree = tree
        self.check_arity = check_arity
        self.bindings = _bindings(tree)
        self._targets: dict[str, tuple[Any, ...] | None] = {}
        self.report = _RowReport()

    def target(self, name: str) -> tuple[Any, ...] | None:
        if name not in self._targets:
            self._targets[name] = self.bindings.target(name)
        return self._targets[name]

    def problem(self, node: ast.AST, guards: frozenset[str], kind: str, category: str, reason: str,
                call_style: bool = False) -> None:
        if guards & _SUPPRESSED_BY.get(kind, set()):
            return
        line = getattr(node, "lineno", 0)
        text = f"{reason} (line {line})" if call_style else f"{reason}: line {line}"
        self.report.problems.append((line, getattr(node, "col_offset", 0), category, _safe(text, _MAX_REASON)))

    def resolved(self, node: ast.AST, guards: frozenset[str], res: _Res, kind: str, shown: str) -> None:
        """Record the outcome of one reference."""
        if res.kind == "unverified":
            self.report.unverified += 1
            return
        self.report.references += 1
        if res.kind == "blocked":
            self.problem(node, frozenset(), kind, "disallowed_module", res.reason or shown)
        elif res.kind == "missing":
            self.problem(node, guards, kind, "unknown_api", res.reason or shown)

    def run(self) -> _RowReport:
        stack: list[tuple[ast.AST, frozenset[str]]] = [(self.tree, frozenset())]
        while stack:
            node, guards = stack.pop()
            children = self.visit(node, guards)
            if children is not None:
                stack.extend(reversed(children))
        return self.report

    def visit(self, node: ast.AST, guards: frozenset[str]) -> list[tuple[ast.AST, frozenset[str]]] | None:
        """Check ``node``; return the children still to visit (with their guards)."""
        plain = lambda nodes, g=guards: [(n, g) for n in nodes]  # noqa: E731
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.check_import(node, guards, alias.name)
            return None
        if isinstance(node, ast.ImportFrom):
            if not node.level and node.module:
                self.check_from(node, guards, node.module, [a.name for a in node.names])
            return None
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            caught = frozenset(set().union(*(_handler_guards(h) for h in node.handlers)) if node.handlers else ())
            return (plain(node.body, guards | caught) + plain(node.handlers) + plain(node.orelse)
                    + plain(node.finalbody))
        if isinstance(node, ast.If):
            inner = guards | frozenset(_if_guards(node.test))
            return plain([node.test]) + plain(node.body, inner) + plain(node.orelse, inner)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            return plain(node.items) + plain(node.body, guards | frozenset(_with_guards(node)))
        if isinstance(node, ast.Call):
            chain = _name_chain(node.func)
            if chain is not None and self.target(chain[0]) is not None:
                self.check_chain(node.func, guards, chain, call=node)
                return plain(node.args) + plain(node.keywords)
            return plain(ast.iter_child_nodes(node))
        if isinstance(node, ast.Attribute):
            chain = _name_chain(node)
            if chain is None:
                inner = node.value
                while isinstance(inner, ast.Attribute):
                    inner = inner.value
                return plain([inner])
            if self.target(chain[0]) is not None:
                if isinstance(node.ctx, ast.Load):
                    self.check_chain(node, guards, chain)
                else:
                    self.check_chain(node, guards, (chain[0], chain[1][:-1]))
            return None
        return plain(ast.iter_child_nodes(node))

    # -- imports

    def check_import(self, node: ast.AST, guards: frozenset[str], name: str) -> None:
        res = self.r.module(name)
        self.report.named[name] = res.kind
        self.resolved(node, guards, res, "unknown_module", f"module '{_safe(name)}'")

    def check_from(self, node: ast.AST, guards: frozenset[str], module: str, names: list[str]) -> None:
        mod = self.r.module(module)
        self.report.named[module] = mod.kind
        if mod.kind != "ok":
            self.resolved(node, guards, mod, "unknown_module", f"module '{_safe(module)}'")
            return
        for name in names:
            if name == "*":
                continue
            res = self.r.root(("from", module, name))
            if res.kind == "missing":
                res = _Res("missing", reason=f"{_dotted((module, name))} does not exist ({self.r.version(module)})")
            self.resolved(node, guards, res, "unknown_module", name)

    # -- attribute chains and calls

    def check_chain(self, node: ast.AST, guards: frozenset[str], chain: tuple[str, tuple[str, ...]],
                    call: ast.Call | None = None) -> None:
        name, parts = chain
        root = self.target(name)
        assert root is not None
        for k in range(1, len(parts) + 1):  # an attribute the row assigns itself is not checked from there on
            if (name, *parts[:k]) in self.bindings.assigned:
                parts, call = parts[: k - 1], None
                break
        if not parts and root[0] != "builtin" and call is None:
            return  # a bare imported name: its import statement was checked
        base = self.r.root(root)
        if base.kind != "ok":
            if base.kind == "unverified":
                self.report.unverified += 1
            return  # the import statement reports a missing or blocked root (once)
        res, done = self.r.chain(root, parts)
        full = self.display(root, parts[:done])
        if res.kind == "missing":
            version = self.r.version("builtins" if root[0] == "builtin" else root[1])
            self.resolved(node, guards, _Res("missing", reason=f"{full} does not exist ({version})"), "unknown_attr",
                          full)
            return
        if res.kind == "blocked":
            self.resolved(node, guards, res, "unknown_attr", full)
            return
        if res.kind == "unverified" or (done == 0 and not parts and call is None):
            self.report.unverified += res.kind == "unverified"
            return
        self.report.references += 1
        if call is None or not self.check_arity or done < len(parts) or res.kind != "ok":
            return
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            return  # *a / **k unpacking: the argument count is unknown
        keywords = tuple(k.arg for k in call.keywords if k.arg is not None)
        self.report.calls += 1
        reason = self.r.call_problem((root, parts), full, res.value, len(call.args), keywords)
        if reason is not None:
            self.problem(call, guards, "bad_call", "bad_call", reason, call_style=True)

    @staticmethod
    def display(root: tuple[Any, ...], parts: tuple[str, ...]) -> str:
        if root[0] == "builtin":
            return _dotted((root[1], *parts))
        if root[0] == "module":
            return _dotted((root[1], *parts))
        return _dotted((root[1], root[2], *parts))


# ---------------------------------------------------------------------------------------------- the gate


def _parse(source: Any) -> tuple[ast.Module | None, str | None]:
    """The module's AST, or None and an ``unparseable`` reason (data-safe)."""
    if is_missing(source):
        return None, "unparseable: solution is missing"
    if not isinstance(source, str):
        return None, f"unparseable: solution is not a string ({_safe(type(source).__name__)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for invalid escapes, DeprecationWarning...
            return ast.parse(source), None
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return None, _safe(f"unparseable: {type(exc).__name__}: {exc.msg}{where}", _MAX_REASON)
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return None, _safe(f"unparseable: {type(exc).__name__}: {exc}", _MAX_REASON)


class ApiGroundingGate(Gate):
    """Drop code rows whose solution uses a module, name, attribute or call signature that does not exist here.

    Inputs:
        rows: a table with the configured ``solution_column`` (Python source, one module per row); other columns
            are ignored. A table without the column raises ``ValueError`` (the gate is configured for a code
            recipe; silently keeping every row would hide a wiring mistake).

    Output:
        :class:`GateResult`, one decision per row, categories :data:`CATEGORIES` (see the module docstring for
        what each means and the reason formats). Score: the number of API references checked in the row (0 for
        unparseable rows), for kept and dropped rows alike. ``metrics``: the configuration, counters, per-category
        drops (every category, zeros included), ``references_checked``, ``calls_checked``,
        ``references_unverified`` (timed-out or failing imports, spec-only modules, values that could not be
        read), ``modules_resolved`` / ``modules_missing`` / ``modules_blocked`` (distinct modules named by the
        batch's imports), ``import_timeouts`` / ``import_errors`` (cumulative for this gate), timings and
        ``rows_per_s``.

    Attributes:
        config: the configuration.
        resolver: the environment resolver with its caches (modules, attribute chains and call bindings are
            resolved once per gate, so repeated APIs cost a dictionary lookup).

    Examples:
        >>> gate = ApiGroundingGate()
        >>> rows = pd.DataFrame({"row_id": ["a", "b"],
        ...                      "solution": ["import os\\nos.path.join('a', 'b')", "import os\\nos.path.joinn('a')"]})
        >>> gate.evaluate(rows).reason
        [None, 'os.path.joinn does not exist (Python 3.11.7): line 2']
    """

    name: ClassVar[str] = "api_grounding"

    def __init__(self, config: ApiGroundingGateConfig | None = None, **overrides: Any) -> None:
        base = config or ApiGroundingGateConfig()
        self.config = ApiGroundingGateConfig(**{**base.model_dump(), **overrides}) if overrides else base
        self.resolver = _Resolver(self.config)

    def coverage_note(self) -> str:
        """:func:`coverage_note` for this gate's configuration."""
        return coverage_note(self.config)

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        """Parse and resolve every row's solution (see the class docstring); returns one decision per row."""
        t0 = time.perf_counter()
        column = self.config.solution_column
        if column not in rows.columns:
            raise ValueError(f"api_grounding: rows have no {column!r} column (set solution_column)")
        sources = rows[column].tolist()
        result = GateResult.all_kept(self.name, len(sources))
        totals = Counter()
        named: dict[str, str] = {}
        t_parse = 0.0
        for i, source in enumerate(sources):
            self.resolver.bound_caches()
            tp = time.perf_counter()
            tree, error = _parse(source)
            t_parse += time.perf_counter() - tp
            if tree is None:
                result.drop(i, "unparseable", error or "unparseable", 0.0)
                continue
            report = _RowChecker(self.resolver, tree, self.config.check_arity).run()
            totals["references"] += report.references
            totals["calls"] += report.calls
            totals["unverified"] += report.unverified
            named.update(report.named)
            for line, _col, category, reason in sorted(report.problems)[:1]:
                result.drop(i, category, reason, report.references)
            if result.keep[i]:
                result.score[i] = float(report.references)
        kinds = Counter(named.values())
        total = time.perf_counter() - t0
        counters = result.counters()
        result.metrics = {
            "config": self.config.model_dump(mode="json"),
            **counters,
            "drops_per_category": {c: counters["dropped_by_category"].get(c, 0) for c in CATEGORIES},
            "references_checked": int(totals["references"]),
            "calls_checked": int(totals["calls"]),
            "references_unverified": int(totals["unverified"]),
            "modules_resolved": int(kinds["ok"]),
            "modules_missing": int(kinds["missing"]),
            "modules_blocked": int(kinds["blocked"]),
            "modules_unverified": int(kinds["unverified"]),
            "import_timeouts": self.resolver.import_timeouts,
            "import_errors": self.resolver.import_errors,
            "python": platform.python_version(),
            "timings_s": {"parse": round(t_parse, 4), "total": round(total, 4)},
            "rows_per_s": round(len(sources) / max(total, 1e-9), 1),
        }
        return result
