"""One exception type for bad input files, and the helpers that make every input error name file, line and field.

Every problem with a file a user hands to synqa (recipe, gate config, seed corpus, taxonomy, reference sample, eval
set, audited dataset, review CSV) raises :class:`InputError` (or a subclass: ``ConfigError``, ``SeedCorpusError``,
``TaxonomyError``, ``ReferenceCorpusError``, ``EvalSetError``, ``AuditInputError``). Its ``str()`` names the file,
the line (or row) and the field, e.g.::

    recipes/x.yaml: line 7: not valid UTF-8 (byte 0xff at offset 123, column 5)
    recipes/x.yaml: line 35: field generator.sampling.temperature: Input should be a valid number (got 'hot')

so one ``except InputError`` in a command-line entry point (:func:`cli_errors`) prints a clear message and exits
with status 2, without a traceback; and inside Dagster the message at the top of the error is the clear one.

Helpers:

* :func:`read_text_strict` / :func:`decode_strict`: UTF-8 decoding whose failure names the line and byte offset.
* :func:`yaml_line_of`: the line of a YAML node addressed by a path (``("generator", "sampling", "temperature")``).
* :func:`yaml_error`, :func:`validation_error`: a YAML syntax error / a pydantic ``ValidationError`` of a YAML file
  as an :class:`InputError` with lines.
* :func:`require_text` / :func:`is_blank`: text that is required must not be missing, empty or whitespace-only.

This module imports nothing from synqa (and nothing from Dagster), so any module may use it.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Exit status of a command whose input is bad (argparse uses 2 for bad arguments too).
EXIT_BAD_INPUT = 2
#: A report of several problems lists at most this many (then "... and N more").
MAX_PROBLEMS_SHOWN = 20


def format_location(path: Any = None, line: int | None = None, field: str | None = None,
                    row: int | None = None) -> str:
    """``"<path>: line <n>: field <f>"`` (each part only when known; ``row`` alone: ``row <n>``; both:
    ``line <n> (record <row>)``)."""
    parts = []
    if path is not None and str(path):
        parts.append(str(path))
    if line is not None and row is not None:
        parts.append(f"line {line} (record {row})")
    elif line is not None:
        parts.append(f"line {line}")
    elif row is not None:
        parts.append(f"row {row}")
    if field:
        parts.append(f"field {field}")
    return ": ".join(parts)


class InputError(ValueError):
    """A user-supplied file (or value) is unusable; ``str()`` names the file, the line or row, and the field.

    Build it from parts (``InputError("is blank", path=p, line=7, field="text")`` ->
    ``"p: line 7: field text: is blank"``) or from a message that already names them (``InputError("p: line 7:
    ...")``, which is how the older subclasses still raise it). ``problems``: further one-line messages (several
    bad rows of one file), listed one per line under the first.

    Attributes:
        message: the bare message (without location); path / line / field / row: where (None when unknown);
        problems: the individual problems of a multi-problem report (empty for a single one).
    """

    def __init__(self, message: str, *, path: Any = None, line: int | None = None, field: str | None = None,
                 row: int | None = None, problems: Sequence[str] = ()):
        self.message = str(message)
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.row = row
        self.problems = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        where = format_location(self.path, self.line, self.field, self.row)
        head = f"{where}: {self.message}" if where else self.message
        if self.problems:
            head += "".join(f"\n  {p}" for p in self.problems)
        return head

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self._render()

    def __reduce__(self):  # keep the parts across pickling (multiprocessing workers, Dagster run workers)
        return (_rebuild, (type(self), self.args[0] if self.args else "", self.__dict__))


def _rebuild(cls: type, text: str, state: dict) -> InputError:
    exc = cls.__new__(cls)
    ValueError.__init__(exc, text)
    exc.__dict__.update(state)
    return exc


# ------------------------------------------------------------------------------------------------ text and UTF-8


def line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column in bytes) of byte ``offset`` in ``data``."""
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return line, column


def utf8_problem(data: bytes, *, skip_bom: bool = False) -> tuple[int, int, int, str] | None:
    """Where ``data`` stops being UTF-8: ``(line, column, offset, bytes shown)`` of the first bad byte (offset from the
    start of ``data``, BOM included), or None when it is valid. ``skip_bom``: a leading BOM is allowed."""
    start = 3 if skip_bom and data.startswith(b"\xef\xbb\xbf") else 0
    try:
        data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + start
        bad = data[offset:exc.end + start]
        line, column = line_and_column(data, offset)
        return line, column, offset, " ".join(f"0x{b:02x}" for b in bad[:4]) or "end of data"
    return None


def decode_strict(data: bytes, path: Any, *, encoding: str = "utf-8", what: str = "",
                  error: type[InputError] | None = None) -> str:
    """``data`` decoded as UTF-8 (``encoding="utf-8-sig"`` drops a leading BOM); on failure an :class:`InputError`
    (or ``error``, a subclass) naming ``path``, the line and the byte offset of the first bad byte. ``what``
    qualifies the offset (e.g. ``"of the decompressed data"``)."""
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8", "utf-8-sig"):
        raise ValueError(f"decode_strict reads UTF-8 only, not {encoding!r}")
    sig = encoding.lower().replace("_", "-") == "utf-8-sig"
    try:
        return data.decode("utf-8-sig" if sig else "utf-8")
    except UnicodeDecodeError:
        problem = utf8_problem(data, skip_bom=sig)
    assert problem is not None
    line, column, offset, shown = problem
    qualifier = f" {what}" if what else ""
    plural = "s" if " " in shown else ""
    raise (error or InputError)(f"not valid UTF-8 (byte{plural} {shown} at offset {offset}{qualifier}, column "
                                f"{column}); save the file as UTF-8", path=path, line=line)


def read_bytes_strict(path: Any, *, error: type[InputError] | None = None) -> bytes:
    """The bytes of ``path``; a missing or unreadable file raises :class:`InputError` (or ``error``) naming it."""
    cls = error or InputError
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise cls("file not found", path=path) from None
    except IsADirectoryError:
        raise cls("is a folder, not a file", path=path) from None
    except OSError as exc:
        raise cls(f"cannot read ({exc.strerror or exc})", path=path) from None


def read_text_strict(path: Any, *, encoding: str = "utf-8", error: type[InputError] | None = None) -> str:
    """The text of ``path`` decoded as UTF-8 (see :func:`decode_strict`); every failure is an :class:`InputError`
    (or ``error``, a subclass) naming the file (and, for bad UTF-8, the line and byte offset)."""
    return decode_strict(read_bytes_strict(path, error=error), path, encoding=encoding, error=error)


def split_lines(text: str) -> list[str]:
    """``text`` split into lines the way a text-mode file iterates them (``\\n``, ``\\r\\n`` or ``\\r`` end a line;
    unlike ``str.splitlines`` no other character does, so U+2028 inside a JSON string stays in its line)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def is_blank(value: Any) -> bool:
    """True for None, NaN / pandas NA / NaT, and strings that are empty or whitespace-only."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return bool(value != value)
    return type(value).__name__ in ("NAType", "NaTType")


def require_text(value: Any, *, path: Any = None, field: str | None = None, line: int | None = None,
                 row: int | None = None, error: type[InputError] | None = None) -> str:
    """``value`` if it is a string with at least one non-whitespace character; else ``error`` (default
    :class:`InputError`) naming the file, line/row and field: missing (None / NaN), not a string, or empty /
    whitespace-only."""
    cls = error or InputError
    if isinstance(value, str):
        if not value.strip():
            raise cls("is empty" if not value else "is blank (whitespace only)", path=path, line=line, field=field, row=row)
        return value
    if is_blank(value):
        raise cls("is missing (null)", path=path, line=line, field=field, row=row)
    raise cls(f"must be a string, got {type(value).__name__}", path=path, line=line, field=field, row=row)


def non_blank(value: str) -> str:
    """Pydantic after-validator: reject an empty or whitespace-only string (``ValueError``)."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty or whitespace-only")
    return value


# ----------------------------------------------------------------------------------------------------------- CSV


def csv_records(text: str, path: Any, *, delimiter: str = ",",
                error: type[InputError] | None = None) -> list[tuple[int, list[str]]]:
    """``(line, cells)`` for every record of the CSV ``text`` (the header included, blank lines skipped), where
    ``line`` is the 1-based physical line the record starts on: a quoted cell spanning lines makes later records
    start further down than their record number. A leading BOM is dropped.

    Quoting is read as pandas reads it: text after a closing quote is kept (``"b"c`` -> ``bc``), but a quoted cell
    still open at the end of the file is an error. A malformed record raises :class:`InputError` (or ``error``)
    naming ``path`` and the line the record starts on.
    """
    cls = error or InputError
    _raise_csv_field_limit()
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return _csv_records(text, delimiter, strict=True)
    except _CsvError as exc:
        if "unexpected end of data" in exc.reason:
            raise cls("malformed CSV: a quoted cell is never closed (the file ends inside it)", path=path,
                      line=exc.line) from None
        if "expected after" not in exc.reason:  # anything but text after a closing quote
            raise cls(f"malformed CSV ({exc.reason})", path=path, line=exc.line) from None
    try:
        return _csv_records(text, delimiter, strict=False)
    except _CsvError as exc:
        raise cls(f"malformed CSV ({exc.reason})", path=path, line=exc.line) from None


class _CsvError(Exception):
    def __init__(self, reason: str, line: int):
        super().__init__(reason)
        self.reason, self.line = reason, line


def _csv_records(text: str, delimiter: str, strict: bool) -> list[tuple[int, list[str]]]:
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=strict)
    out = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            raise _CsvError(str(exc), line) from None
        if cells:
            out.append((line, cells))


@functools.lru_cache(maxsize=1)
def _raise_csv_field_limit() -> None:
    """Let one CSV cell hold a long text (the csv module's default limit is 128 KiB; pandas has none)."""
    import csv

    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(max(csv.field_size_limit(), limit))
            return
        except OverflowError:
            limit //= 2


# ---------------------------------------------------------------------------------------------------------- YAML


def _compose(text: str):
    import yaml

    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def yaml_line_of(text: Any, loc: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at ``loc`` (mapping keys / sequence indexes) in ``text`` (or a composed node).

    Walks as deep as the path resolves: parts that are not in the document (pydantic's union / validator tags, a
    missing key) are skipped, so the line is that of the deepest node found (a missing field's parent). The line
    of a mapping entry is its key's line (the last one, for a repeated key). None when ``text`` is not YAML.
    """
    import yaml

    node = _compose(text) if isinstance(text, str) else text
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
            if found:  # a repeated key: the last one is the value that counts (as yaml.safe_load reads it)
                key, node = found[-1]
                line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def yaml_error(path: Any, exc: Exception, error: type[InputError] | None = None) -> InputError:
    """A ``yaml.YAMLError`` of the file at ``path`` as a one-line :class:`InputError` with the line and column."""
    cls = error or InputError
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{context}, {problem}" if context else problem
    if mark is None:
        return cls(f"not valid YAML ({detail})", path=path)
    return cls(f"not valid YAML: {detail} (column {mark.column + 1})", path=path, line=mark.line + 1)


def dotted(loc: Sequence[Any]) -> str:
    """A pydantic ``loc`` as a field path: ``generator.sampling.temperature``, ``prompt_templates[0].id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_fields_at(model: Any, loc: Sequence[Any]) -> list[str] | None:
    """Field names of the pydantic model reached by following ``loc`` from ``model`` (None if not found)."""
    from pydantic import BaseModel

    def models_in(annotation: Any) -> list[type]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        found = models_in(fields[part].annotation)
        if len(found) != 1:
            return None
        current = found[0]
    fields = getattr(current, "model_fields", None)
    return [name for name in fields if name != "source_path"] if fields else None  # set by the loader, not by hand


def _error_message(err: dict, model: Any = None) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    loc = tuple(err.get("loc") or ())
    if err.get("type") == "extra_forbidden" and loc:
        allowed = _model_fields_at(model, loc[:-1]) if model is not None else None
        msg = "unknown key"
        if allowed:
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg += f" (did you mean {close[0]!r}?)" if close else ""
            msg += f"; allowed: {', '.join(sorted(allowed))}"
        return msg
    value = err.get("input")
    if err.get("type") != "missing" and isinstance(value, (str, int, float, bool)):
        shown = repr(value)
        msg += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    return msg


def validation_problems(exc: Any, path: Any = None, text: str | None = None, model: Any = None,
                        prefix: Sequence[Any] = ()) -> list[InputError]:
    """One :class:`InputError` per error of a pydantic ``ValidationError``: the field is the dotted ``loc``; the line
    is the YAML node's (when ``text``, the YAML source, is given). ``prefix`` is prepended to every ``loc`` (the
    model was validated from a sub-document)."""
    node = _compose(text) if text is not None else None
    out = []
    for err in exc.errors():
        loc = tuple(prefix) + tuple(err.get("loc") or ())
        line = yaml_line_of(node, loc) if node is not None else None
        out.append(InputError(_error_message(err, model), path=path, line=line, field=dotted(loc) or None))
    return out


def validation_error(exc: Any, path: Any = None, text: str | None = None, model: Any = None,
                     error: type[InputError] | None = None) -> InputError:
    """A pydantic ``ValidationError`` of the YAML file ``path`` (source ``text``) as one :class:`InputError`: a
    single error gives one line (``path: line N: field a.b: message``); several give a header line and one line
    each."""
    cls = error or InputError
    problems = validation_problems(exc, path, text, model)
    if not problems:
        return cls(str(exc), path=path)
    if len(problems) == 1:
        p = problems[0]
        return cls(p.message, path=p.path, line=p.line, field=p.field)
    shown = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more")
    return cls(f"{len(problems)} invalid fields", path=path, problems=shown)


def describe_validation_error(exc: Any) -> str:
    """A pydantic ``ValidationError`` without a file: ``field a.b: message; field c: message`` (no docs URLs)."""
    return "; ".join(str(p) for p in validation_problems(exc)) or str(exc)


# ----------------------------------------------------------------------------------------------------------- CLI


def error_message(exc: BaseException) -> str | None:
    """The clear message of an input error (an :class:`InputError`, a pydantic ``ValidationError`` or a
    ``yaml.YAMLError``), or None for any other exception (a bug: let it show its traceback)."""
    if isinstance(exc, InputError):
        return str(exc)
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]  # noqa: N806
    if ValidationError and isinstance(exc, ValidationError):
        return f"{exc.title}: {describe_validation_error(exc)}"
    import yaml

    if isinstance(exc, yaml.YAMLError):
        return str(yaml_error(None, exc))
    return None


def cli_errors(func: Callable[..., Any], prog: str = "synqa") -> Callable[..., int]:
    """Wrap a command function so that input errors print ``<prog>: error: <message>`` on stderr and return
    :data:`EXIT_BAD_INPUT` (2), with no traceback; other exceptions propagate unchanged.
    ``SYNQA_TRACEBACK=1`` re-raises input errors too (to debug where one came from)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            message = error_message(exc)
            if message is None or os.environ.get("SYNQA_TRACEBACK") == "1":
                raise
            print(f"{prog}: error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return wrapper
