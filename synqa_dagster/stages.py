"""The funnel, declared once: the stage registry (Dagster-free).

:data:`STAGES` lists every gate in funnel order, each declared once with what it needs — its name, the section
of the gate config that configures it, how to build the gate object, the extra inputs its ``evaluate`` takes
(``prior``: the dedup index of earlier batches; ``embeddings``: the shared candidate vectors), and how it looks
in the Dagster UI. Every part that walks the funnel derives from it, the way datatrove and distilabel run a list
of steps that each declare their inputs and outputs:

* the gate assets (``synqa_dagster.assets.gates``: one per automatic stage, each reading the previous stage's
  survivors; ``candidate_embeddings`` is placed before the first stage that declares ``embeddings``),
* the review assets (``review_queue`` / ``human_review`` read the last automatic stage),
* the drift findings and their checks (on the last automatic stage's survivors),
* ``reject_log``, ``accepted_dataset``, the lineage records, the handover folder and its card, the demo summary,
* ``synqa audit`` (:func:`synqa_dagster.audit.run_gates` runs the same stages outside Dagster),
* the per-batch outputs cleared when a batch is regenerated, and the definitions test.

Adding a gate = its module under ``synqa_dagster/gates/`` (a :class:`~synqa_dagster.gates.base.Gate`), its config
section on :class:`~synqa_dagster.config.GateConfig` (+ the YAML), one :class:`GateStage` entry here, its tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Protocol, Sequence

from synqa_dagster import canaries as planted
from synqa_dagster.gates.base import Gate

#: Extra inputs a stage's ``evaluate`` may declare (the keyword it receives).
PRIOR_INDEX = "prior"          # the dedup index of every batch accepted before this one (None in an audit)
EMBEDDINGS = "embeddings"      # one vector per row, aligned with the rows (the shared candidate_embeddings)
REAL_ROWS = "real"             # the real rows the batch is grounded on: seed corpus + reference sample
#                                (synqa_dagster.corpus.real.real_rows; an audit: its --reference rows)
KNOWN_INPUTS = (PRIOR_INDEX, EMBEDDINGS, REAL_ROWS)

#: Per-batch tables around the gates (asset names).
SEED_CORPUS = "seed_corpus"
CANDIDATES = "generated_candidates"
EMBEDDINGS_ASSET = "candidate_embeddings"
REFERENCE_ASSET = "reference_corpus"
DRIFT_FINDINGS = "drift_findings"
CANARIES = "gate_canaries"
REVIEW_QUEUE = "review_queue"
REJECT_LOG = "reject_log"
ACCEPTED = "accepted_dataset"
DEDUP_INDEX = "dedup_index"
HANDOVER = "handover_pack"
DATASET_CARD = "dataset_card"
#: What the funnel ships per batch, after the last gate.
OUTPUT_TABLES = (REJECT_LOG, ACCEPTED, DEDUP_INDEX)


class GateEnvironment(Protocol):
    """What a stage may need to build its gate: the shared embedding model (loaded once, on first use)."""

    def embedder(self) -> Any:  # pragma: no cover - protocol
        ...


@dataclass(frozen=True)
class GateStage:
    """One gate of the funnel.

    Attributes:
        name: the gate's name: the ``gate`` value in the reject log, the key of its lineage entry, ``score_<name>``.
        asset: the Dagster asset holding its decision table (every row it saw, kept or dropped with reason).
        config_section: dotted attribute path of its config on :class:`~synqa_dagster.config.GateConfig`.
        make_gate: ``(section config, environment) -> Gate``; None for a stage whose assets are built by hand
            (human review needs the review store and sensor, see ``synqa_dagster.assets.review``).
        inputs: extra keyword inputs of ``evaluate`` (:data:`KNOWN_INPUTS`): ``prior``, ``embeddings``, ``real``.
        automatic: False for the human stage (it runs after the drift findings, on a sample reviewers decide).
        in_audit: ``synqa audit`` runs it on outside data.
        per_row: decisions depend on one row only, so the audit may evaluate it chunk by chunk (dedup needs the
            whole table).
        kinds: Dagster kinds of its asset; describe / asset_metadata: its UI description and static metadata,
            from its config section.
        audit_note: what the card says about this gate in an audit (e.g. dedup is within the dataset only).
        canaries: ``(batch, canary config, gate) -> CanarySet``: the known positives and negatives planted for this
            gate in every batch (:mod:`synqa_dagster.canaries`); None plants nothing.
        census: also judge every row an earlier stage dropped (stored apart, in :attr:`census_asset`, never
            changing what the funnel ships), so a leak is counted whichever gate happened to drop it first.
    """

    name: str
    asset: str
    config_section: str
    make_gate: Callable[[Any, GateEnvironment], Gate] | None = None
    inputs: tuple[str, ...] = ()
    automatic: bool = True
    in_audit: bool = True
    per_row: bool = True
    kinds: frozenset[str] = frozenset({"python", "parquet"})
    describe: Callable[[Any], str] = field(default=lambda config: "")
    asset_metadata: Callable[[Any], dict[str, Any]] = field(default=lambda config: {})
    audit_note: str | None = None
    canaries: Callable[[str, Any, Gate | None], Any] | None = None
    census: bool = False

    @property
    def census_asset(self) -> str:
        """The asset holding this stage's verdicts on the rows earlier stages dropped (``census`` stages)."""
        return f"{self.name}_census"

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(KNOWN_INPUTS)
        if unknown:
            raise ValueError(f"stage {self.name!r}: unknown inputs {sorted(unknown)} (known: {', '.join(KNOWN_INPUTS)})")

    def config(self, gate_config: Any) -> Any:
        """This stage's section of ``gate_config``."""
        value = gate_config
        for part in self.config_section.split("."):
            value = getattr(value, part)
        return value

    def build(self, gate_config: Any, environment: GateEnvironment, section: Any = None) -> Gate:
        """The gate object, configured from ``gate_config`` (or an explicit ``section`` override)."""
        if self.make_gate is None:
            raise TypeError(f"stage {self.name!r} has no automatic gate (its assets are built by hand)")
        return self.make_gate(self.config(gate_config) if section is None else section, environment)


# ------------------------------------------------------------------------------------------ gate builders
# Gates that hold heavy state (a trained scorer, an embedded eval index) are built once per configuration.


@lru_cache(maxsize=8)
def _built_once(module: str, gate_class: str, config_class: str, config_json: str) -> Gate:
    """``synqa_dagster.gates.<module>.<gate_class>(<config_class>(config))``, built once per configuration."""
    import importlib

    mod = importlib.import_module(f"synqa_dagster.gates.{module}")
    return getattr(mod, gate_class)(getattr(mod, config_class).model_validate(json.loads(config_json)))


def _pii(config: Any, env: GateEnvironment) -> Gate:
    return _built_once("pii", "PiiGate", "PiiGateConfig", config.model_dump_json())


def _memorisation(config: Any, env: GateEnvironment) -> Gate:
    return _cached_memorisation(config.model_dump_json(), env.embedder() if config.use_embeddings else None)


@lru_cache(maxsize=4)
def _cached_memorisation(config_json: str, embedder: Any) -> Gate:
    # one per configuration: the batch's gate, its canaries and a re-run share the index of the same real rows
    from synqa_dagster.gates.memorisation import MemorisationGateConfig, RealRowsMemorisationGate

    return RealRowsMemorisationGate(MemorisationGateConfig.model_validate(json.loads(config_json)), embedder=embedder)


def _quality(config: Any, env: GateEnvironment) -> Gate:
    from synqa_dagster.gates.quality import QualityGate

    return QualityGate(config)


def _dedup(config: Any, env: GateEnvironment) -> Gate:
    from synqa_dagster.gates.dedup import DedupGate

    return DedupGate(config)


def _toxicity(config: Any, env: GateEnvironment) -> Gate:
    return _built_once("toxicity", "ToxicityGate", "ToxicityGateConfig", config.model_dump_json())


def _contamination(config: Any, env: GateEnvironment) -> Gate:
    return _cached_contamination(config.model_dump_json(), env.embedder() if config.use_embeddings else None)


@lru_cache(maxsize=4)
def _cached_contamination(config_json: str, embedder: Any) -> Gate:
    from synqa_dagster.gates.contamination import ContaminationGate, ContaminationGateConfig

    return ContaminationGate(ContaminationGateConfig.model_validate(json.loads(config_json)), embedder=embedder)


# --------------------------------------------------------------------------------------------- the funnel

STAGES: tuple[GateStage, ...] = (
    GateStage(
        name="pii",
        asset="pii_gate",
        config_section="pii",
        make_gate=_pii,
        canaries=planted.plant_pii,
        describe=lambda c: (
            "PII, at the door: e-mail addresses, phone numbers, Luhn-valid payment cards, IBANs, street addresses, IP "
            "addresses, account / order ids and names in customer context, in every text column. Per kind the config "
            "rejects, redacts (a typed placeholder such as [EMAIL], recorded in lineage) or allows; every later gate, "
            "the accepted split and the reject log see the redacted row only. The reason names the kind and the span, "
            "masked."
        ),
        asset_metadata=lambda c: {"actions": c.model_dump(mode="json").get("actions", {})},
    ),
    GateStage(
        name="quality",
        asset="quality_gate",
        config_section="quality",
        make_gate=_quality,
        canaries=planted.plant_quality,
        describe=lambda c: (
            "Quality heuristics: empty, too short/long, repetition, leaked meta-prompt text "
            "(\"Rewritten Prompt:\", template markers), wrong language, echoed instruction. Stores every candidate "
            "with keep/drop, reason and score."
        ),
        asset_metadata=lambda c: {"thresholds": c.model_dump(mode="json")},
    ),
    GateStage(
        name="dedup",
        asset="dedup_gate",
        config_section="dedup",
        make_gate=_dedup,
        canaries=planted.plant_dedup,
        inputs=(PRIOR_INDEX,),
        per_row=False,
        kinds=frozenset({"datasketch", "parquet"}),
        describe=lambda c: (
            "Dedup: exact (normalised hash) and MinHash-LSH near-duplicates confirmed by exact Jaccard, "
            "within the batch and against every batch accepted before it (the persistent dedup_index). The "
            "reason names the duplicated row, its batch and the similarity."
        ),
        asset_metadata=lambda c: {"threshold": c.threshold, "num_perm": c.num_perm, "shingle": f"{c.shingle}-{c.ngram}"},
        audit_note="within the audited dataset only (no earlier batches)",
    ),
    GateStage(
        name="toxicity",
        asset="toxicity_gate",
        config_section="toxicity",
        make_gate=_toxicity,
        canaries=planted.plant_toxicity,
        inputs=(EMBEDDINGS,),  # the learned scorer reads the shared MiniLM vectors (the others ignore them)
        kinds=frozenset({"scikitlearn", "parquet"}),
        describe=lambda c: (
            f"Toxicity ({c.backend}): the learned scorer (logistic regression on the shared MiniLM embeddings and "
            "character n-grams, shipped in the package), profanity-check, Detoxify from a local checkpoint, or a "
            "cascade. Per-slice (intent, locale) rates feed the batch escalation check."
        ),
        asset_metadata=lambda c: {"backend": c.backend},
    ),
    GateStage(
        name="contamination",
        asset="contamination_gate",
        config_section="contamination",
        make_gate=_contamination,
        canaries=planted.plant_contamination,
        inputs=(EMBEDDINGS,),
        census=True,
        describe=lambda c: (
            "Eval-set contamination: hashed word n-gram overlap and embedding cosine against the named "
            "eval sets. The reason names the eval set, item id and the overlap or cosine."
        ),
        asset_metadata=lambda c: {
            "eval_sets": [s.name for s in c.eval_sets], "ngram_size": c.ngram_size, "embedding_threshold": c.embedding_threshold,
        },
    ),
    GateStage(
        name="memorisation",
        asset="memorisation_gate",
        config_section="memorisation",
        make_gate=_memorisation,
        canaries=planted.plant_memorisation,
        inputs=(EMBEDDINGS, REAL_ROWS),
        per_row=False,  # holds the real-row index for the whole table (in process; it is fast)
        describe=lambda c: (
            f"Real-data leakage (memorisation): a row sharing a verbatim span of ≥ {c.min_span_words} words or "
            f"≥ {c.min_span_chars} characters with any real seed or reference row, or an embedding near-copy of one "
            f"(cosine ≥ {c.embedding_threshold}), is rejected with the real row's id. Reported apart from eval "
            "contamination."
        ),
        asset_metadata=lambda c: {"min_span_words": c.min_span_words, "min_span_chars": c.min_span_chars,
                                  "embedding_threshold": c.embedding_threshold, "use_embeddings": c.use_embeddings},
        audit_note="against the audit's --reference rows (its real data)",
    ),
    GateStage(
        name="human_review",
        asset="human_review",
        config_section="review.sampling",
        automatic=False,
        in_audit=False,
        per_row=False,
    ),
)


# ------------------------------------------------------------------------------------------------ queries


def validate_stages(stages: Sequence[GateStage]) -> tuple[GateStage, ...]:
    """``stages`` as a tuple, checked: unique names and assets, automatic stages before the human ones."""
    stages = tuple(stages)
    for attr in ("name", "asset"):
        values = [getattr(s, attr) for s in stages]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"stage registry: duplicate {attr}s {dupes}")
    seen_manual = False
    for s in stages:
        if not s.automatic:
            seen_manual = True
        elif seen_manual:
            raise ValueError(f"stage registry: automatic stage {s.name!r} comes after a human stage")
    if not any(s.automatic for s in stages):
        raise ValueError("stage registry: no automatic stage")
    return stages


def gate_names(stages: Sequence[GateStage] = STAGES) -> list[str]:
    """Gate names in funnel order."""
    return [s.name for s in stages]


def gate_assets(stages: Sequence[GateStage] = STAGES) -> dict[str, str]:
    """Gate name -> the asset holding its decision table, in funnel order."""
    return {s.name: s.asset for s in stages}


def stage(name: str, stages: Sequence[GateStage] = STAGES) -> GateStage:
    """The stage called ``name``."""
    for s in stages:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r} (stages: {', '.join(gate_names(stages))})")


def automatic_stages(stages: Sequence[GateStage] = STAGES) -> list[GateStage]:
    """The stages that run unattended, in order (everything before human review)."""
    return [s for s in stages if s.automatic]


def last_automatic(stages: Sequence[GateStage] = STAGES) -> GateStage:
    """The stage whose survivors the drift findings test and the review sample is drawn from."""
    return automatic_stages(stages)[-1]


def input_asset(s: GateStage, stages: Sequence[GateStage] = STAGES) -> str:
    """The asset whose survivors ``s`` reads: the previous stage's, or the generated candidates for the first."""
    names = gate_names(stages)
    i = names.index(s.name)
    return CANDIDATES if i == 0 else stages[i - 1].asset


def embeddings_stage(stages: Sequence[GateStage] = STAGES) -> GateStage | None:
    """The first stage that needs the shared embeddings (``candidate_embeddings`` embeds its input rows)."""
    return next((s for s in stages if EMBEDDINGS in s.inputs), None)


def batch_tables(stages: Sequence[GateStage] = STAGES) -> list[str]:
    """Every per-batch table built from a batch's candidates, in funnel order (cleared when it is regenerated)."""
    out: list[str] = []
    needs_embeddings = embeddings_stage(stages)
    for s in stages:
        if s is needs_embeddings:
            out.append(EMBEDDINGS_ASSET)
        if not s.automatic and DRIFT_FINDINGS not in out:
            out += [DRIFT_FINDINGS, CANARIES, REVIEW_QUEUE]
        out.append(s.asset)
        if s.census:
            out.append(s.census_asset)
    if DRIFT_FINDINGS not in out:
        out += [DRIFT_FINDINGS, CANARIES]
    return out + list(OUTPUT_TABLES)


def held_tables(stages: Sequence[GateStage] = STAGES) -> list[str]:
    """What a batch held for human review must not keep from an earlier run (it would ship unreviewed)."""
    return [s.asset for s in stages if not s.automatic] + list(OUTPUT_TABLES)


def ordered_tables(tables: dict[str, Any], stages: Sequence[GateStage] = STAGES) -> dict[str, Any]:
    """``{gate name: decision table}`` from ``tables`` keyed by gate name or asset name, in funnel order
    (stages without a table are left out)."""
    out = {}
    for s in stages:
        if s.name in tables:
            out[s.name] = tables[s.name]
        elif s.asset in tables:
            out[s.name] = tables[s.asset]
    return out


def earlier_drops(stage_: GateStage, tables: dict[str, Any], stages: Sequence[GateStage] = STAGES) -> Any:
    """The rows the stages before ``stage_`` dropped (with ``dropped_by``, the gate that dropped each), from their
    decision tables ``tables`` (keyed by gate name or asset)."""
    import pandas as pd

    from synqa_dagster.gates.base import DECISION_COLUMNS

    parts = []
    for s in stages[: list(stages).index(stage_)]:
        table = tables.get(s.name, tables.get(s.asset))
        if table is None:
            continue
        dropped = table.loc[~table["kept"].astype(bool)]
        parts.append(dropped.drop(columns=[c for c in DECISION_COLUMNS if c in dropped.columns]).assign(dropped_by=s.name))
    if not parts:
        return pd.DataFrame(columns=["row_id", "text", "dropped_by"])
    return pd.concat(parts, ignore_index=True)


def census(gate: Gate, dropped: Any, embeddings: Any = None) -> Any:
    """``gate``'s verdict on rows earlier gates dropped: one row each (``row_id``, ``dropped_by``, ``hit``,
    ``category``, ``reason``, ``score``). ``embeddings`` aligned with ``dropped`` (or None: the gate's other
    methods only)."""
    import pandas as pd

    if not len(dropped):
        return pd.DataFrame({"row_id": pd.Series(dtype=str), "dropped_by": pd.Series(dtype=str), "hit": pd.Series(dtype=bool),
                             "category": pd.Series(dtype="string"), "reason": pd.Series(dtype="string"),
                             "score": pd.Series(dtype=float)})
    rows = dropped.reset_index(drop=True)
    result = gate.evaluate(rows, **({EMBEDDINGS: embeddings} if embeddings is not None else {}))
    return pd.DataFrame({
        "row_id": rows["row_id"].to_numpy(), "dropped_by": rows["dropped_by"].to_numpy(), "hit": ~result.keep,
        "category": pd.array(result.category, dtype="string"), "reason": pd.array(result.reason, dtype="string"),
        "score": result.score,
    })


def measured_quality(gate_config: Any, environment: GateEnvironment, stages: Sequence[GateStage] = STAGES,
                     gates: dict[str, Gate] | None = None) -> list[dict[str, Any]]:
    """Each automatic gate's precision / recall on named labelled data, as the gate itself reports it (a gate
    with a ``measured()`` method returning rows ``{data, precision, recall, f1, auc, false_drop_rate, note}``)."""
    out: list[dict[str, Any]] = []
    for s in stages:
        if s.make_gate is None:
            continue
        gate = (gates or {}).get(s.name) or s.build(gate_config, environment)
        report = getattr(gate, "measured", None) or getattr(getattr(gate, "model_scorer", None), "measured", None)
        for row in _measured_rows(report() if callable(report) else None):
            out.append({"gate": s.name, **row})
    return out


def _measured_rows(report: Any) -> list[dict[str, Any]]:
    """A gate's ``measured()`` report as card rows: a list as it is, or a scorer's ``{"heldout": [...],
    "benign_false_drop": [...]}`` (precision/recall per labelled test set, false drops per benign set)."""
    if not report:
        return []
    if isinstance(report, list):
        return list(report)
    keep = ("data", "precision", "recall", "f1", "auc")
    rows = [{**{k: r.get(k) for k in keep}, "note": f"held-out test split; {r.get('n_pos', '?')} positives, {r.get('n_neg', '?')} negatives"}
            for r in report.get("heldout", [])]
    for r in report.get("benign_false_drop", []):
        worst = f"; worst slice {r['worst_slice']} {r['worst_rate']:.1%}" if r.get("worst_slice") else ""
        rows.append({"data": r.get("data"), "false_drop_rate": r.get("rate"), "note": f"benign text, {r.get('n', '?')} rows{worst}"})
    return rows


def run_canaries(batch: str, gate_config: Any, environment: GateEnvironment, stages: Sequence[GateStage] = STAGES,
                 gates: dict[str, Gate] | None = None, real: Any = None) -> Any:
    """Plant every stage's canaries (:mod:`synqa_dagster.canaries`) and run them through that stage's gate.

    ``gates`` (name -> gate) reuses gates already built (the audit builds its own); other gates are built from
    ``gate_config`` as the funnel builds them. Inputs are resolved the way the funnel resolves them for planted
    rows: ``embeddings`` = the rows embedded with the shared model, ``prior`` = no earlier batch.
    Returns the per-row results (:data:`synqa_dagster.canaries.RESULT_COLUMNS`), stage by stage.
    """
    import pandas as pd

    config = gate_config.canaries
    parts = []
    for s in stages:
        if s.canaries is None or s.make_gate is None or not config.enabled:
            continue
        if REAL_ROWS in s.inputs and real is None:
            continue
        gate = (gates or {}).get(s.name) or s.build(gate_config, environment)
        canary_set = s.canaries(batch, config, gate, **({REAL_ROWS: real} if REAL_ROWS in s.inputs else {}))
        inputs: dict[str, Any] = {}
        embedder = environment.embedder() if EMBEDDINGS in s.inputs else None
        if embedder is not None:
            inputs[EMBEDDINGS] = embedder.encode(canary_set.rows["text"].astype(str).tolist())
        if PRIOR_INDEX in s.inputs:
            inputs[PRIOR_INDEX] = None
        if REAL_ROWS in s.inputs:
            inputs[REAL_ROWS] = real
        parts.append(planted.measure(gate, canary_set, **inputs))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(planted.RESULT_COLUMNS))


def iter_stages(stages: Iterable[GateStage] | None = None) -> tuple[GateStage, ...]:
    """The registry to use: ``stages`` (validated) or :data:`STAGES`."""
    return STAGES if stages is None else validate_stages(stages)


validate_stages(STAGES)
