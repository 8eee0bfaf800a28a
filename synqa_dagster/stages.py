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

from synqa_dagster.gates.base import Gate

#: Extra inputs a stage's ``evaluate`` may declare (the keyword it receives).
PRIOR_INDEX = "prior"          # the dedup index of every batch accepted before this one (None in an audit)
EMBEDDINGS = "embeddings"      # one vector per row, aligned with the rows (the shared candidate_embeddings)
KNOWN_INPUTS = (PRIOR_INDEX, EMBEDDINGS)

#: Per-batch tables around the gates (asset names).
SEED_CORPUS = "seed_corpus"
CANDIDATES = "generated_candidates"
EMBEDDINGS_ASSET = "candidate_embeddings"
REFERENCE_ASSET = "reference_corpus"
DRIFT_FINDINGS = "drift_findings"
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
        inputs: extra keyword inputs of ``evaluate`` (:data:`KNOWN_INPUTS`).
        automatic: False for the human stage (it runs after the drift findings, on a sample reviewers decide).
        in_audit: ``synqa audit`` runs it on outside data.
        per_row: decisions depend on one row only, so the audit may evaluate it chunk by chunk (dedup needs the
            whole table).
        kinds: Dagster kinds of its asset; describe / asset_metadata: its UI description and static metadata,
            from its config section.
        audit_note: what the card says about this gate in an audit (e.g. dedup is within the dataset only).
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


def _quality(config: Any, env: GateEnvironment) -> Gate:
    from synqa_dagster.gates.quality import QualityGate

    return QualityGate(config)


def _dedup(config: Any, env: GateEnvironment) -> Gate:
    from synqa_dagster.gates.dedup import DedupGate

    return DedupGate(config)


def _toxicity(config: Any, env: GateEnvironment) -> Gate:
    return _cached_toxicity(config.model_dump_json())


@lru_cache(maxsize=4)
def _cached_toxicity(config_json: str) -> Gate:
    from synqa_dagster.gates.toxicity import ToxicityGate, ToxicityGateConfig

    return ToxicityGate(ToxicityGateConfig.model_validate(json.loads(config_json)))


def _contamination(config: Any, env: GateEnvironment) -> Gate:
    return _cached_contamination(config.model_dump_json(), env.embedder() if config.use_embeddings else None)


@lru_cache(maxsize=4)
def _cached_contamination(config_json: str, embedder: Any) -> Gate:
    from synqa_dagster.gates.contamination import ContaminationGate, ContaminationGateConfig

    return ContaminationGate(ContaminationGateConfig.model_validate(json.loads(config_json)), embedder=embedder)


# --------------------------------------------------------------------------------------------- the funnel

STAGES: tuple[GateStage, ...] = (
    GateStage(
        name="quality",
        asset="quality_gate",
        config_section="quality",
        make_gate=_quality,
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
        kinds=frozenset({"scikitlearn", "parquet"}),
        describe=lambda c: (
            f"Toxicity ({c.backend}): the fast profanity-check scorer, Detoxify from a local "
            "checkpoint, or a cascade of both. Per-slice (intent, locale) rates feed the batch escalation check."
        ),
        asset_metadata=lambda c: {"backend": c.backend},
    ),
    GateStage(
        name="contamination",
        asset="contamination_gate",
        config_section="contamination",
        make_gate=_contamination,
        inputs=(EMBEDDINGS,),
        describe=lambda c: (
            "Eval-set contamination: hashed word n-gram overlap and embedding cosine against the named "
            "eval sets. The reason names the eval set, item id and the overlap or cosine."
        ),
        asset_metadata=lambda c: {
            "eval_sets": [s.name for s in c.eval_sets], "ngram_size": c.ngram_size, "embedding_threshold": c.embedding_threshold,
        },
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
            out += [DRIFT_FINDINGS, REVIEW_QUEUE]
        out.append(s.asset)
    if DRIFT_FINDINGS not in out:
        out.append(DRIFT_FINDINGS)
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


def iter_stages(stages: Iterable[GateStage] | None = None) -> tuple[GateStage, ...]:
    """The registry to use: ``stages`` (validated) or :data:`STAGES`."""
    return STAGES if stages is None else validate_stages(stages)


validate_stages(STAGES)
