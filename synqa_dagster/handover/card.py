"""The dataset card: :class:`CardFacts` (everything the card states) and its rendering as a Hugging Face README.

:func:`render_card` turns one batch's (or one audit's) facts into ``README.md``: YAML front matter that
``huggingface_hub.DatasetCard`` parses (pretty_name, license, language, task_categories, size_categories, tags,
``configs`` pointing at the accepted split and the reject log, and a ``synqa`` block with batches, recipe and
gate-config hashes, Merkle root and key id), then a body stating composition, real-vs-synthetic share,
generators, prompt templates, seed corpus, every gate with its thresholds and counts, eval sets, drift /
diversity / bias findings, human review, the review programme (each slice's ISO 2859-1 switching state entering
and after the batch, the plan used, the lot result and why; the OC table of every distinct plan and
``oc_curves.png``, see :func:`review_programme_facts` and :mod:`.oc_chart`), known limitations (with the measured figures of
``docs/measurements/``), lineage, the funnel and the files shipped with their SHA-256. :func:`render_rollup_card`
renders the dataset-level card across batches.

Nothing is invented: every number comes from the facts; a missing fact is said to be missing. Every string that
comes from rows or configs (intents, template ids, reasons, eval-set names, paths...) goes through
:func:`md_escape`, and the front matter is written with ``yaml.safe_dump``, so hostile text stays text. Output is
deterministic for the same facts (no clock is read).

References:
    - Hugging Face dataset cards: https://huggingface.co/docs/hub/datasets-cards (metadata fields, size buckets).
    - Gebru et al. 2021, "Datasheets for Datasets" (what a card should state).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from synqa_dagster.common import file_sha256
from synqa_dagster.handover.funnel_chart import funnel_report_markdown
# The markdown helpers live in .markdown (shared with .funnel_chart); re-exported here as the card's public API.
from synqa_dagster.handover.markdown import front_matter, md_code, md_escape, md_link_target, md_table

# ------------------------------------------------------------------------------------------------- the facts


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedCount(_Facts):
    """A name (intent, category...) and how many rows have it."""

    name: str
    count: int


class CompositionFacts(_Facts):
    """What the accepted rows are made of.

    Attributes:
        rows: accepted rows.
        by_technique / by_locale: rows per generation technique / locale.
        top_intents: the most frequent intents (name, rows), most frequent first.
        intents: number of distinct intents.
        by_turns: rows per number of conversation turns (keys are the turn counts as strings).
    """

    rows: int
    by_technique: dict[str, int] = Field(default_factory=dict)
    by_locale: dict[str, int] = Field(default_factory=dict)
    top_intents: list[NamedCount] = Field(default_factory=list)
    intents: int = 0
    by_turns: dict[str, int] = Field(default_factory=dict)


class GeneratorFacts(_Facts):
    """One generator (teacher model) and the sampling it ran with.

    Attributes:
        generator_id: model id; generator_version: its version (e.g. the GGUF's sha256); sampling: parameters;
        rows: accepted rows it produced.
    """

    generator_id: str
    generator_version: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    rows: int = 0


class SourceFacts(_Facts):
    """A data file used but not shipped (seed corpus, reference sample, audited file).

    Attributes:
        path: where it was read from; sha256: content hash (any prefix length); rows: rows read;
        origin: who made it, e.g. ``"ours: written by the synqa team"`` or ``"real: BANKING77 (CC BY 4.0)"``;
        taxonomy_version: label taxonomy version, where it has labels.
    """

    path: str
    sha256: str | None = None
    rows: int | None = None
    origin: str = "unknown"
    taxonomy_version: str | None = None


class ReasonCount(_Facts):
    """Rejections of one category by a gate, with the most common exact reason as an example."""

    category: str
    count: int
    example_reason: str | None = None


class GateFacts(_Facts):
    """One gate: thresholds that ran and its accept / reject counts.

    Attributes:
        name: gate name; thresholds: its settings (flattened ``a.b`` keys allowed); seen / kept / dropped: rows;
        reasons: dropped rows per category (with an example reason), largest first; notes: facts to add
        (e.g. ``"embedding check skipped"``).
    """

    name: str
    thresholds: dict[str, Any] = Field(default_factory=dict)
    seen: int
    kept: int
    dropped: int
    reasons: list[ReasonCount] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class EvalSetFacts(_Facts):
    """One eval set the contamination gate checked: name, items indexed, where it came from."""

    name: str
    items: int
    source: str = ""


class ContaminationFacts(_Facts):
    """The contamination check's targets and settings.

    Attributes:
        eval_sets: every eval set checked; ngram_size / min_ngram_overlap: the n-gram rule;
        embedding_check: ``ran``, ``disabled`` or why it was skipped; embedding_threshold / embedding_model: the
        cosine rule.
    """

    eval_sets: list[EvalSetFacts] = Field(default_factory=list)
    ngram_size: int
    min_ngram_overlap: int = 1
    embedding_check: str = "ran"
    embedding_threshold: float | None = None
    embedding_model: str | None = None
    #: which embedding route ran (``static_cascade`` / ``minilm``) and its recall measured on planted and real
    #: paraphrases (``docs/measurements/embedding-routes.md``), e.g. "paraphrased 44% (STS), edited 100% (GSM8K)"
    embedding_route: str | None = None
    embedding_route_recall: str | None = None
    gate_hits: int | None = None
    earlier_drops_checked: int | None = None
    earlier_drop_hits: int | None = None
    earlier_hits_by_gate: dict[str, int] = Field(default_factory=dict)


class PrivacyFacts(_Facts):
    """Personal data and real-data leakage: what the PII and memorisation gates found (apart from eval contamination).

    Attributes:
        pii_checked: rows the PII gate saw; pii_rows_redacted / pii_rows_rejected: rows it redacted (and kept) /
            rejected; pii_by_kind: rows with a hit, per kind; pii_actions: kind -> reject / redact / allow.
        leakage_checked: rows the memorisation gate saw (None: not run); real_rows: real rows compared against
            (seeds + reference); leakage_rows: rows rejected as copies of a real row; leakage_by_category:
            ``memorised_span`` / ``memorised_near_copy``; leakage_by_source: ``seed`` / ``reference``;
            leakage_sources: the real rows copied (ids), at most 20; min_span_words / min_span_chars /
            embedding_threshold: the rules.
    """

    pii_checked: int | None = None
    pii_rows_redacted: int = 0
    pii_rows_rejected: int = 0
    pii_by_kind: dict[str, int] = Field(default_factory=dict)
    pii_actions: dict[str, str] = Field(default_factory=dict)
    leakage_checked: int | None = None
    real_rows: int | None = None
    leakage_rows: int = 0
    leakage_by_category: dict[str, int] = Field(default_factory=dict)
    leakage_by_source: dict[str, int] = Field(default_factory=dict)
    leakage_sources: list[str] = Field(default_factory=list)
    min_span_words: int | None = None
    min_span_chars: int | None = None
    embedding_threshold: float | None = None


class CanaryFacts(_Facts):
    """One gate measured on this batch's planted canaries (:mod:`synqa_dagster.canaries`).

    Attributes:
        gate: the gate; positives / caught: planted rows it must drop and how many it dropped (recall);
        negatives / false_positives: planted rows it must keep and how many it dropped; min_recall /
        max_false_positive_rate: the floors of the gate config; passed: both held; kinds: what was planted;
        missed_kinds: kinds of positives it let through.
    """

    gate: str
    positives: int
    caught: int
    recall: float | None = None
    negatives: int = 0
    false_positives: int = 0
    false_positive_rate: float | None = None
    min_recall: float | None = None
    max_false_positive_rate: float | None = None
    passed: bool = True
    kinds: str = ""
    missed_kinds: str = ""


class MeasuredFacts(_Facts):
    """A gate's precision / recall measured on named, real, labelled data (not this batch).

    Attributes:
        gate: the gate; data: the labelled set (e.g. "TweetEval hate test"); precision / recall / f1 / auc /
        false_drop_rate: the figures (None where not applicable); note: how it was measured.
    """

    gate: str
    data: str
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    auc: float | None = None
    false_drop_rate: float | None = None
    note: str = ""


class ReviewFacts(_Facts):
    """Human review of a sample of the accepted rows.

    Attributes:
        status: ``not_reviewed``, ``pending`` (some reviewed) or ``reviewed`` (sample complete).
        plan: how the sample was drawn; guarantee: the statement the review supports (its exact text);
        sample_size: rows drawn for review; reviewed: rows reviewed so far; defects: rows judged defective;
        slices_returned: slices (e.g. intents) sent back to synthesis because of defects.
        agreement: reviewer agreement on the double-reviewed rows
            (:func:`synqa_dagster.review.agreement.agreement_report`: Cohen's kappa and raw agreement per batch and
            per reviewer pair, the disagreement policy and its outcomes); None: not recorded.
    """

    status: Literal["not_reviewed", "pending", "reviewed"] = "not_reviewed"
    plan: str | None = None
    guarantee: str | None = None
    sample_size: int | None = None
    reviewed: int = 0
    defects: int = 0
    slices_returned: list[str] = Field(default_factory=list)
    agreement: dict[str, Any] | None = None

    @property
    def defect_rate(self) -> float | None:
        """Defects / reviewed rows (None before any review)."""
        return self.defects / self.reviewed if self.reviewed else None


class ProgrammeSliceFacts(_Facts):
    """One slice's lot of this batch in the review programme (ISO 2859-1 switching rules across batches).

    Attributes:
        slice_key: the slice; state_entering: normal / tightened / reduced / discontinued when the sample was
        drawn, entering_reason: why it was in that state; plan_kind / severity / code_letter / lot_size /
        sample_size / acceptance_number / rejection_number: the plan used; result: accepted, accepted_limit
        (reduced plan, Ac < d < Re: accepted, normal reinstated), rejected, pending or incomplete; reviewed /
        defects: what review found; state_after / reason: the state after this lot and why; stale: the lot was
        sampled under another state than the replay of earlier lots now gives.
    """

    slice_key: str
    state_entering: str = "normal"
    entering_reason: str = ""
    plan_kind: str = "iso2859"
    severity: str = "normal"
    code_letter: str | None = None
    lot_size: int | None = None
    sample_size: int
    acceptance_number: int
    rejection_number: int
    result: str = "pending"
    reviewed: int = 0
    defects: int = 0
    state_after: str = "normal"
    reason: str = ""
    stale: bool = False


class OcCurveFacts(_Facts):
    """The operating characteristic of one distinct plan used this batch.

    Attributes:
        label: e.g. ``n=80, Ac=1, Re=2 (tightened, code J)``; plan_kind / severity / code_letter / sample_size /
        acceptance_number / rejection_number: the plan; slices: the slices that used it; p_accept: P(the slice
        is accepted) at each of :attr:`ReviewProgrammeFacts.oc_rates` (binomial); lq10: the defect rate accepted
        10% of the time; full_inspection_slices: slices of this plan reviewed in full (their binomial curve is
        about the process rate, not about the finite lot).
    """

    label: str
    plan_kind: str = "iso2859"
    severity: str = "normal"
    code_letter: str | None = None
    sample_size: int
    acceptance_number: int
    rejection_number: int
    slices: list[str] = Field(default_factory=list)
    p_accept: list[float] = Field(default_factory=list)
    lq10: float
    full_inspection_slices: list[str] = Field(default_factory=list)


class ReviewProgrammeFacts(_Facts):
    """Human review as a programme across batches: each slice's switching state and the plans' OC curves.

    Attributes:
        switching: the switching rules were applied (``review.sampling.switching``); allow_reduced: reduced
        inspection was permitted; standard: what the plans and rules come from; aql: the AQL (percent) of an
        ISO plan, None for zero-acceptance; slices: one row per slice; oc_rates: the defect rates of the OC
        table; oc_curves: one per distinct plan; oc_image: the PNG's file name (None: not drawn).
    """

    switching: bool = True
    allow_reduced: bool = False
    standard: str = ""
    aql: float | None = None
    slices: list[ProgrammeSliceFacts] = Field(default_factory=list)
    oc_rates: list[float] = Field(default_factory=list)
    oc_curves: list[OcCurveFacts] = Field(default_factory=list)
    oc_image: str | None = "oc_curves.png"

    @property
    def discontinued(self) -> list[str]:
        """Slices whose inspection is discontinued (ISO 2859-1 9.4) after this batch."""
        return sorted(x.slice_key for x in self.slices if x.state_after == "discontinued")


class LineageFacts(_Facts):
    """How the shipped files are bound together and signed.

    Attributes:
        merkle_root: root hash over the shipped files; leaf_construction: how a leaf hash is built;
        key_id: id of the signing key; public_key_pem: the Ed25519 public key itself (PEM), printed on the card so
        the card names who signed; public_key_file / manifest_file / signature_file: files in the folder.
    """

    merkle_root: str
    leaf_construction: str
    key_id: str | None = None
    public_key_pem: str | None = None
    public_key_file: str | None = None
    manifest_file: str | None = None
    signature_file: str | None = None


class FunnelStage(_Facts):
    """One row of :func:`synqa_dagster.funnel.funnel_table` (the last stage is ``accepted``)."""

    stage: str
    rows_in: int
    kept: int
    dropped: int
    pass_rate: float
    dropped_by: str = "-"


class FileFacts(_Facts):
    """A file shipped next to the card: relative path, SHA-256, size, rows (data files) and what it is."""

    path: str
    sha256: str
    bytes: int | None = None
    rows: int | None = None
    description: str = ""


#: What a check's outcome is called on the card and in ``audit.json``.
CheckResult = Literal["pass", "fail", "warn", "not tested"]
#: Verdicts of :mod:`synqa_dagster.stats.findings` meaning the check could not run.
UNTESTED_VERDICTS = frozenset({"too_few_rows", "not_tested"})


def check_result(tested: Any, passed: Any, severity: Any, verdict: Any = None) -> str:
    """A check's outcome in words: ``not tested`` (``tested`` false, or a ``too_few_rows`` / ``not_tested``
    verdict; never "pass"), ``pass``, ``fail`` (failed at severity ERROR) or ``warn`` (failed at WARN)."""
    if tested is False or str(verdict) in UNTESTED_VERDICTS:
        return "not tested"
    if passed:
        return "pass"
    return "fail" if str(severity).upper() == "ERROR" else "warn"


def finding_result(finding: dict[str, Any]) -> str:
    """:func:`check_result` of one finding dict (drift findings: ``tested, passed, severity, verdict``)."""
    return check_result(finding.get("tested", True), finding.get("passed"), finding.get("severity"), finding.get("verdict"))


class CheckFacts(_Facts):
    """One check's verdict with the severity it ran at (the audit's verdict table).

    Attributes:
        name: the check (``distribution_drift``, ``toxicity_slice_escalation``, ``gate_canaries``...).
        tested: False when it could not run (too few rows, no reference...); its result is then ``not tested``.
        passed: nothing failed (meaningless when not tested); severity: ``ERROR`` or ``WARN``; result: see
        :func:`check_result`; summary: one line; failing: the failing items (probes, slices, gates).
    """

    name: str
    tested: bool
    passed: bool
    severity: str
    result: CheckResult
    summary: str = ""
    failing: list[str] = Field(default_factory=list)


class SliceRow(_Facts):
    """One slice of a per-slice table: its labels, rows, rows lost and the rate against the bar.

    Attributes:
        labels: slice column -> value (``<missing>`` for a missing value; empty = all rows); rows: rows in the
        slice; dropped: rows it lost; rate: dropped / rows; over_bar: rate above the bar with enough rows;
        by_gate: rows lost per gate (the all-gates table).
    """

    labels: dict[str, str] = Field(default_factory=dict)
    rows: int
    dropped: int
    rate: float
    over_bar: bool = False
    by_gate: dict[str, int] = Field(default_factory=dict)


class SliceTableFacts(_Facts):
    """A per-slice table (toxicity escalation, or every gate's drops per slice).

    Attributes:
        name: ``toxicity`` (toxic drop rate per slice, the escalation check's table) or ``all_gates`` (rows lost
        to any gate); columns: the slice columns; bar / min_rows: a slice is over bar when its rate exceeds
        ``bar`` with at least ``min_rows`` rows (None: no bar); severity: of the escalation; rows: the slices,
        highest rate first; total_slices: slices before any cut of ``rows``.
    """

    name: str
    columns: list[str] = Field(default_factory=list)
    bar: float | None = None
    min_rows: int | None = None
    severity: str | None = None
    rows: list[SliceRow] = Field(default_factory=list)
    total_slices: int | None = None


class CardFacts(_Facts):
    """Everything a dataset card states, for one batch or one audit.

    Attributes:
        kind: ``dataset`` (synqa generated it) or ``audit`` (externally made data run through the gates).
        pretty_name, license, summary: identity; license is an SPDX id or ``other`` / ``unknown``.
        batches: batch keys (one for a batch card); created: a date to print, from the facts (never the clock).
        recipe_name / recipe_hash / gate_config_hash: the versions that made the rows.
        languages: ISO 639-1 codes of the rows (from their locales).
        candidates / accepted / rejected: row counts; seeds: seed rows used (None for audits).
        composition: what the accepted rows are; generators / prompt_template_ids / response_template_ids.
        seed_corpus / reference / audited_source: data used but not shipped.
        gates: every gate in funnel order; contamination: eval sets and rules; privacy: personal data found and
            real-data leakage (rows copying a real seed or reference row), None when neither gate ran.
        checks: each check's verdict with its severity (audits); severity_profile: which severities ran (audits:
            ``strict`` by default, ``demo`` = the gate config's); embeddings: the embedding check / probes were on.
        slices: per-slice tables (toxicity escalation; rows lost per slice to any gate).
        canaries / measured: each gate measured on planted rows of this run / on named labelled data.
        drift: :func:`synqa_dagster.stats.findings.drift_findings` output; drift_note: why it is missing or how
            it was sampled.
        review: human review; review_programme: the switching state of each slice and the OC curves of the
            plans (None: not recorded); lineage: Merkle root and signature (None = not signed).
        funnel: the funnel table rows; funnel_image: the PNG's file name.
        files: files shipped with their hashes; data_files: config name -> file for the ``configs`` block.
        limitations: extra limitations to state, on top of the standard ones.
    """

    kind: Literal["dataset", "audit"] = "dataset"
    pretty_name: str
    license: str = "unknown"
    summary: str | None = None
    batches: list[str] = Field(default_factory=list)
    created: str | None = None
    recipe_name: str | None = None
    recipe_hash: str | None = None
    gate_config_hash: str
    languages: list[str] = Field(default_factory=list)
    candidates: int
    accepted: int
    rejected: int
    seeds: int | None = None
    composition: CompositionFacts
    generators: list[GeneratorFacts] = Field(default_factory=list)
    prompt_template_ids: list[str] = Field(default_factory=list)
    response_template_ids: list[str] = Field(default_factory=list)
    seed_corpus: SourceFacts | None = None
    reference: SourceFacts | None = None
    audited_source: SourceFacts | None = None
    gates: list[GateFacts] = Field(default_factory=list)
    contamination: ContaminationFacts | None = None
    privacy: PrivacyFacts | None = None
    drift: dict[str, Any] | None = None
    drift_note: str | None = None
    review: ReviewFacts = Field(default_factory=ReviewFacts)
    review_programme: ReviewProgrammeFacts | None = None
    canaries: list[CanaryFacts] = Field(default_factory=list)
    measured: list[MeasuredFacts] = Field(default_factory=list)
    checks: list[CheckFacts] = Field(default_factory=list)
    severity_profile: str | None = None
    embeddings: bool | None = None
    slices: list[SliceTableFacts] = Field(default_factory=list)
    lineage: LineageFacts | None = None
    funnel: list[FunnelStage] = Field(default_factory=list)
    funnel_image: str | None = "funnel.png"
    files: list[FileFacts] = Field(default_factory=list)
    data_files: dict[str, str] = Field(default_factory=lambda: {"default": "accepted.jsonl", "rejected": "rejected.jsonl"})
    limitations: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------------------- building the facts

#: Gate settings that tune speed or memory, not decisions: left out of the card.
PERFORMANCE_SETTINGS = frozenset({
    "num_workers", "parallel_min_rows", "block_shingles", "docs_per_task", "num_threads", "embedding_chunk_size",
    "detoxify_batch_size", "device", "language_max_chars", "eval_sets", "allow_download",
})

def privacy_facts(gate_tables: Mapping[str, pd.DataFrame], gates: Any, real_rows: int | None) -> PrivacyFacts | None:
    """What the PII and memorisation gates found (None when neither ran), from their decision tables; ``real_rows``:
    how many real rows the memorisation gate compared with. Used by batch cards and audit cards alike."""
    from synqa_dagster.gates.base import edits_column

    pii, memo = gate_tables.get("pii"), gate_tables.get("memorisation")
    if pii is None and memo is None:
        return None
    facts: dict[str, Any] = {}
    if pii is not None:
        edits = pii[edits_column("pii")] if edits_column("pii") in pii.columns else pd.Series(pd.NA, index=pii.index)
        kinds: dict[str, int] = {}
        for value in edits.dropna():
            for kind in sorted({str(e.get("kind")) for e in json.loads(value)}):
                kinds[kind] = kinds.get(kind, 0) + 1
        kept = pii["kept"].astype(bool)
        facts.update(pii_checked=len(pii), pii_rows_redacted=int((kept & edits.notna()).sum()), pii_rows_rejected=int((~kept).sum()),
                     pii_by_kind=kinds, pii_actions={str(k): str(v) for k, v in gates.pii.actions.items()})
    if memo is not None:
        dropped = memo.loc[~memo["kept"].astype(bool)]
        sources = [m.group(0) for r in dropped["reject_reason"].dropna().astype(str)
                   for m in [re.search(r"\b(?:seed|reference):[\w.\-]+", r)] if m]
        config = gates.memorisation
        facts.update(
            leakage_checked=len(memo), real_rows=real_rows, leakage_rows=len(dropped),
            leakage_by_category={str(k): int(v) for k, v in dropped["reject_category"].value_counts().sort_index().items()},
            leakage_by_source={k: sum(s.startswith(k + ":") for s in sources) for k in ("seed", "reference") if any(s.startswith(k + ":") for s in sources)},
            leakage_sources=sorted(set(sources))[:20], min_span_words=config.min_span_words, min_span_chars=config.min_span_chars,
            embedding_threshold=(None if not config.use_embeddings else config.static_embedding_threshold
                                 if getattr(getattr(gates, "embedding", None), "route", None) == "static_cascade"
                                 else config.embedding_threshold),  # the threshold of the route that ran
        )
    return PrivacyFacts(**facts)


#: Hugging Face ``size_categories`` buckets: (exclusive upper bound, tag).
SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` rows (``n<1K``, ``1K<n<10K``...)."""
    for bound, tag in SIZE_BUCKETS:
        if n < bound:
            return tag
    return "n>1B" if n < 10_000_000_000 else "n>1T"


def languages_from_locales(locales: Iterable[Any]) -> list[str]:
    """Sorted ISO 639-1 codes from locales such as ``en-GB`` / ``en_US`` / ``de`` (missing values ignored)."""
    out = set()
    for loc in locales:
        if loc is None or (isinstance(loc, float) and math.isnan(loc)):
            continue
        code = re.split(r"[-_]", str(loc).strip())[0].lower()
        if re.fullmatch(r"[a-z]{2,3}", code):
            out.add(code)
    return sorted(out)


def _counts(series: pd.Series) -> dict[str, int]:
    vc = series.dropna().astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))}


def composition_facts(rows: pd.DataFrame, top_intents: int = 10) -> CompositionFacts:
    """Composition of ``rows`` (the accepted split): technique, locale, intent and turn counts where present."""
    intents = _counts(rows["intent"]) if "intent" in rows.columns else {}
    return CompositionFacts(
        rows=len(rows),
        by_technique=_counts(rows["technique"]) if "technique" in rows.columns else {},
        by_locale=_counts(rows["locale"]) if "locale" in rows.columns else {},
        top_intents=[NamedCount(name=k, count=v) for k, v in list(intents.items())[:top_intents]],
        intents=len(intents),
        by_turns=_counts(rows["n_turns"]) if "n_turns" in rows.columns else {},
    )


def generator_facts(rows: pd.DataFrame) -> list[GeneratorFacts]:
    """One entry per (generator_id, generator_version, sampling) in ``rows``, with its row count."""
    if "generator_id" not in rows.columns:
        return []
    cols = [c for c in ("generator_id", "generator_version", "sampling") if c in rows.columns]
    keys = rows[cols].astype(str).agg("\x1f".join, axis=1)
    out = []
    for key, n in sorted(Counter(keys).items()):
        parts = dict(zip(cols, key.split("\x1f")))
        try:
            sampling = json.loads(parts.get("sampling", "{}"))
        except json.JSONDecodeError:
            sampling = {"raw": parts.get("sampling")}
        out.append(GeneratorFacts(generator_id=parts["generator_id"], generator_version=parts.get("generator_version"),
                                  sampling=sampling if isinstance(sampling, dict) else {"value": sampling}, rows=int(n)))
    return out


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def gate_thresholds(config: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A gate config as flat ``key: value`` settings, without the speed/memory knobs (:data:`PERFORMANCE_SETTINGS`)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    out: dict[str, Any] = {}
    _flatten("", {k: v for k, v in data.items() if k not in PERFORMANCE_SETTINGS}, out)
    return out


def gate_facts(name: str, decisions: pd.DataFrame, thresholds: dict[str, Any], notes: Sequence[str] = ()) -> GateFacts:
    """Facts of one gate from its decision table (:func:`synqa_dagster.gates.base.decision_table`)."""
    kept = decisions["kept"].astype(bool)
    dropped = decisions.loc[~kept]
    reasons = []
    if len(dropped):
        for category, group in dropped.groupby(dropped["reject_category"].astype(str), sort=True):
            common = group["reject_reason"].dropna().astype(str).value_counts()
            example = sorted(common.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if len(common) else None
            reasons.append(ReasonCount(category=str(category), count=len(group), example_reason=example))
    reasons.sort(key=lambda r: (-r.count, r.category))
    return GateFacts(name=name, thresholds=thresholds, seen=len(decisions), kept=int(kept.sum()),
                     dropped=int((~kept).sum()), reasons=reasons, notes=list(notes))


def funnel_facts(table: pd.DataFrame) -> list[FunnelStage]:
    """:class:`FunnelStage` rows from a :func:`synqa_dagster.funnel.funnel_table` table."""
    return [FunnelStage(stage=str(r.stage), rows_in=int(r.rows_in), kept=int(r.kept), dropped=int(r.dropped),
                        pass_rate=float(r.pass_rate), dropped_by=str(r.dropped_by)) for r in table.itertuples()]


def funnel_frame(stages: Sequence[FunnelStage]) -> pd.DataFrame:
    """The funnel stages back as a :func:`synqa_dagster.funnel.funnel_table`-shaped table."""
    return pd.DataFrame([s.model_dump() for s in stages], columns=list(FunnelStage.model_fields))


def file_facts(path: Path, root: Path, rows: int | None = None, description: str = "") -> FileFacts:
    """:class:`FileFacts` of ``path`` (named relative to ``root``)."""
    path = Path(path)
    return FileFacts(path=path.relative_to(root).as_posix(), sha256=file_sha256(path), bytes=path.stat().st_size,
                     rows=rows, description=description)


def _cell(record: dict, key: str, default: Any = None) -> Any:
    value = record.get(key, default)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return default
    return value


def _result(record: dict) -> str:
    outcome = _cell(record, "outcome")
    if isinstance(outcome, str) and outcome:
        return outcome
    if bool(_cell(record, "rejected", False)):
        return "rejected"
    if bool(_cell(record, "accepted", False)):
        return "accepted_limit" if bool(_cell(record, "limit_zone", False)) else "accepted"
    return "pending"


def review_programme_facts(verdicts: pd.DataFrame, sampling: Any, oc_image: str | None = "oc_curves.png") -> ReviewProgrammeFacts | None:
    """The card's review-programme facts from the per-slice verdicts ``human_review`` stored
    (``slice_verdicts.json``: :func:`synqa_dagster.review.sampling.slice_verdicts` columns plus the programme
    columns of :func:`synqa_dagster.assets.review.with_programme`) and the review sampling config.

    Nothing is recomputed but the OC curves (binomial, from each plan's n, Ac and Re). Without programme columns
    (switching off, or verdicts stored before it existed) every slice is shown under normal inspection. Returns
    None when there are no verdicts.
    """
    from synqa_dagster.review.sampling import OC_DEFECT_RATES, Iso2859Plan, limiting_quality, operating_characteristic

    if verdicts is None or not len(verdicts):
        return None
    switching = bool(getattr(sampling, "switching", False))
    plan = sampling.plan
    iso = isinstance(plan, Iso2859Plan)
    rows, groups = [], {}
    for record in sorted(verdicts.to_dict(orient="records"), key=lambda r: str(r["slice_key"])):
        key = str(record["slice_key"])
        n, ac, re = int(record["sample_size"]), int(record["acceptance_number"]), int(record["rejection_number"])
        severity = str(_cell(record, "severity", "normal"))
        kind = str(_cell(record, "plan_kind", "iso2859"))
        letter = _cell(record, "code_letter")
        lot = _cell(record, "lot_size")
        has_programme = _cell(record, "state_entering") is not None
        entering = str(_cell(record, "state_entering", severity))
        after = str(_cell(record, "state_after", entering))
        if has_programme:
            why = str(_cell(record, "switch_reason", ""))
            entering_reason = str(_cell(record, "entering_reason", ""))
        elif switching:
            why, entering_reason = "not recorded in the switching ledger for this batch", ""
        else:
            why, entering_reason = "switching rules off: every batch is judged under normal inspection", ""
        rows.append(ProgrammeSliceFacts(
            slice_key=key, state_entering=entering, entering_reason=entering_reason, plan_kind=kind, severity=severity,
            code_letter=None if letter is None else str(letter), lot_size=None if lot is None else int(lot),
            sample_size=n, acceptance_number=ac, rejection_number=re, result=_result(record),
            reviewed=int(_cell(record, "reviewed", 0)), defects=int(_cell(record, "defects", 0)), state_after=after,
            reason=why, stale=bool(_cell(record, "stale", False))))
        group = groups.setdefault((n, ac, re, kind, severity, None if letter is None else str(letter)), ([], []))
        group[0].append(key)
        if lot is not None and int(lot) <= n:
            group[1].append(key)
    curves = []
    for (n, ac, re, kind, severity, letter), (keys, full) in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        detail = ", ".join(x for x in (severity, f"code {letter}" if letter else "", "zero-acceptance" if kind == "zero_acceptance" else "") if x)
        oc = operating_characteristic(n, ac, re, OC_DEFECT_RATES)
        curves.append(OcCurveFacts(
            label=f"n={n}, Ac={ac}, Re={re}" + (f" ({detail})" if detail else ""), plan_kind=kind, severity=severity,
            code_letter=letter, sample_size=n, acceptance_number=ac, rejection_number=re, slices=keys,
            p_accept=[oc[r] for r in OC_DEFECT_RATES], lq10=limiting_quality(n, re - 1, 0.10),
            full_inspection_slices=full))
    if iso:
        standard = ("ISO 2859-1:1999 single sampling: Table 2-A (normal) and Table 2-B (tightened); reduced plans as "
                    "MIL-STD-105E Table II-C / ISO 2859-1:1989 Table 2-C (the 1999 revision of the reduced plans is "
                    "not encoded); switching rules of clause 9")
    else:
        standard = ("zero-acceptance (c=0) success-run plans; under the ISO 2859-1:1999 clause 9 switching rules, "
                    "tightened = half the bounded defect rate, reduced = lower confidence (2/5 of the rows)")
    if not switching:
        standard += " (switching rules off)"
    return ReviewProgrammeFacts(
        switching=switching, allow_reduced=bool(getattr(sampling, "allow_reduced", False)), standard=standard,
        aql=float(plan.aql) if iso else None, slices=rows,
        oc_rates=list(OC_DEFECT_RATES), oc_curves=curves, oc_image=oc_image if curves else None)


# ---------------------------------------------------------------------------------------- measured figures

#: Figures measured on this project (``docs/measurements/``), quoted in the limitations, with their conditions.
MEASURED = {
    "toxicity_doc": "docs/measurements/toxicity-contamination.md",
    "drift_doc": "docs/measurements/drift.md",
    "profanity_threshold": 0.30,
    "profanity_auc_test": 0.8335,
    "profanity_precision_test": 0.790,
    "profanity_recall_test": 0.533,
    "banking77_benign_dropped": 0.0041,
    "banking77_worst_intent": "terminate_account 6.1%",
    "ngram_recall_mixed_edits": "79.6% (GSM8K) – 89.6% (HumanEval)",
    "gate_recall_bare_mixed_edits": "92.8% (GSM8K) – 93.3% (HumanEval)",
    "planted_edited_median_cosine": "0.63–0.65",
    "gsm8k_train_false_positive_rate": 0.00067,
    "embedding_threshold": 0.88,
    "drift_false_alarm_n50": 0.03,
}


def _fmt_num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4g}"
    return str(v)


def _pct(num: int, den: int) -> str:
    return f"{num / den:.1%}" if den else "n/a"


def _setting(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _fmt_num(value)


# ----------------------------------------------------------------------------------------------- rendering


def _yaml_front(facts: CardFacts) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pretty_name": facts.pretty_name,
        "license": facts.license,
        "language": facts.languages,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(facts.accepted)],
        "tags": ["synthetic", "synqa"] if facts.kind == "dataset" else ["synqa", "synqa-audit"],
    }
    if facts.kind == "dataset":
        data["annotations_creators"] = ["machine-generated"]
    if not data["language"]:
        del data["language"]  # no locale recorded: say nothing rather than a made-up code
    data["configs"] = [{"config_name": name, "data_files": [{"split": "train", "path": path}]}
                       for name, path in facts.data_files.items()]
    synqa: dict[str, Any] = {"kind": facts.kind}
    if len(facts.batches) == 1:
        synqa["batch"] = facts.batches[0]
    synqa["batches"] = list(facts.batches)
    synqa.update({
        "recipe_hash": facts.recipe_hash,
        "gate_config_hash": facts.gate_config_hash,
        "merkle_root": facts.lineage.merkle_root if facts.lineage else None,
        "key_id": facts.lineage.key_id if facts.lineage else None,
        "candidates": facts.candidates,
        "accepted": facts.accepted,
        "rejected": facts.rejected,
    })
    data["synqa"] = synqa
    return data


def _kv_list(counts: dict[str, int], total: int) -> str:
    if not counts:
        return "not recorded"
    return ", ".join(f"{md_escape(k)} {v} ({_pct(v, total)})" for k, v in counts.items())


#: How each :data:`CheckResult` is printed on the card.
RESULT_LABELS = {"pass": "pass", "fail": "FAIL", "warn": "WARN", "not tested": "not tested"}
#: Per-slice rows the card prints per table (the full tables are in the facts / ``audit.json``).
SLICE_ROWS_SHOWN = 30


def _subject(f: CardFacts) -> str:
    """What the rows under test are called: ``batch`` or ``audited`` (audited data is not generated by synqa)."""
    return "audited" if f.kind == "audit" else "batch"


def _source_label(f: CardFacts) -> str:
    """The funnel's first stage: ``generated`` for a synqa batch, ``audited`` for an audit."""
    return "audited" if f.kind == "audit" else "generated"


def audit_words(text: str) -> str:
    """A finding's text in an audit's words: audited rows are not returned to synthesis (nothing is regenerated)."""
    return text.replace("returned to synthesis", "fails at ERROR (a synqa batch would be returned to synthesis)")


def _words(f: CardFacts, text: Any) -> Any:
    return audit_words(text) if f.kind == "audit" and isinstance(text, str) else text


def _section_checks(f: CardFacts) -> list[str]:
    if not f.checks:
        return []
    out = ["## Verdict per check", ""]
    if f.kind == "audit":
        out += ["Advisory: nothing was blocked or regenerated. A check that fails at severity ERROR (`FAIL`) would "
                "stop a synqa batch; `WARN` would flag it; `not tested` means the check could not run (too few rows, "
                "no reference) and says nothing either way.", ""]
    rows = [[c.name, RESULT_LABELS[c.result], c.severity, _words(f, c.summary)] for c in f.checks]
    return out + [md_table(["check", "result", "severity", "summary"], rows, "llll"), ""]


def _slice_label(row: SliceRow, columns: Sequence[str]) -> list[str]:
    return [row.labels.get(c, "") for c in columns] if columns else ["(all rows)"]


def _section_slices(f: CardFacts) -> list[str]:
    if not f.slices:
        return []
    out = ["## Per-slice losses", ""]
    for t in f.slices:
        cols = list(t.columns)
        shown = t.rows[:SLICE_ROWS_SHOWN]
        total = t.total_slices if t.total_slices is not None else len(t.rows)
        over = sum(r.over_bar for r in t.rows)
        if t.name == "toxicity":
            out += ["### Toxicity drop rate per slice (escalation check)", "",
                    f"Rows the toxicity gate dropped as toxic, per slice of {', '.join(md_code(c) for c in cols) or 'all rows'}; "
                    f"a slice of at least {t.min_rows} rows over {_rate(t.bar)} escalates "
                    f"(severity {md_escape(t.severity or 'n/a')}). Slices over the bar: **{over}**.", ""]
            header = [*(cols or ["slice"]), "rows", "toxic drops", "rate", "bar", "over bar"]
            rows = [[*_slice_label(r, cols), r.rows, r.dropped, _rate(r.rate), _rate(t.bar), "**yes**" if r.over_bar else "no"]
                    for r in shown]
            rows = [[md_escape(c) for c in row[:-1]] + [row[-1]] for row in rows]
            out += [md_table(header, rows, "l" * max(1, len(cols)) + "rrrrl", escape=False), ""]
        else:
            gates = list(dict.fromkeys(g for r in t.rows for g in r.by_gate))
            label = "audited row" if f.kind == "audit" else "candidate"
            out += ["### Rows lost per slice (every gate)", "",
                    f"Share of each slice's {label}s that no gate let through, highest first"
                    + (f"; slices of at least {t.min_rows} rows losing more than {_rate(t.bar)} are marked" if t.bar is not None else "")
                    + ".", ""]
            marked = t.bar is not None
            header = [*(cols or ["slice"]), "rows", "lost", "lost share", *[f"by {md_escape(g)}" for g in gates],
                      *(["marked"] if marked else [])]
            rows = [[*(md_escape(c) for c in _slice_label(r, cols)), str(r.rows), str(r.dropped), _rate(r.rate),
                     *[str(r.by_gate.get(g, 0)) for g in gates], *((["**yes**" if r.over_bar else "no"]) if marked else [])]
                    for r in shown]
            out += [md_table(header, rows, "l" * max(1, len(cols)) + "rrr" + "r" * len(gates) + ("l" if marked else ""),
                             escape=False), ""]
        if total > len(shown):
            out += [f"({len(shown)} of {total} slices shown, highest rate first.)", ""]
    return out


def _section_summary(f: CardFacts) -> list[str]:
    title = md_escape(f.pretty_name)
    out = [f"# {title}", ""]
    if f.kind == "audit":
        src = f.audited_source
        out += [
            "> **AUDIT of externally made data.** synqa did not generate these rows: it ran its quality gates and drift "
            "checks over them in advisory mode. The generator is unknown, and these files carry "
            + ("a lineage signature (see Lineage)." if f.lineage else "no lineage signature."),
            "",
        ]
        if src is not None:
            out += [f"Audited file: {md_code(src.path)} ({src.rows if src.rows is not None else 'unknown'} rows, "
                    f"sha256 {md_code(src.sha256 or 'not recorded')}, origin: {md_escape(src.origin)}).", ""]
        blocking = [c.name for c in f.checks if c.result == "fail"]
        if f.checks:
            out += [("**Verdict: would not pass** — failed at severity ERROR: " + ", ".join(md_escape(n) for n in blocking)
                     + " (see Verdict per check)." if blocking else
                     "**Verdict: no check failed at severity ERROR** (see Verdict per check)."), ""]
    if f.summary:
        out += [md_escape(f.summary), ""]
    batches = ", ".join(f"{md_code(b)}" for b in f.batches) or "none recorded"
    out += [
        f"- **Rows:** {f.accepted} accepted of {f.candidates} candidates ({_pct(f.accepted, f.candidates)}); "
        f"{f.rejected} rejected (see the reject log)",
        f"- **Batch(es):** {batches}",
        (f"- **Recipe:** {md_escape(f.recipe_name) + ' ' if f.recipe_name else ''}hash {md_code(f.recipe_hash or 'none (not generated by synqa)')}"
         if f.kind == "dataset" or f.recipe_hash else "- **Recipe:** none (synqa did not make these rows)"),
        f"- **Gate config hash:** {md_code(f.gate_config_hash)}",
        f"- **License:** {md_escape(f.license)}",
    ]
    if f.created:
        out.append(f"- **Created:** {md_escape(f.created)}")
    if f.severity_profile:
        out.append(f"- **Severity profile:** {md_escape(f.severity_profile)}")
    if f.embeddings is not None:
        out.append("- **Embeddings:** " + ("on (embedding contamination rule and embedding drift probes ran)" if f.embeddings
                                          else "**off** (switched off: n-gram contamination rules only, no embedding drift probes)"))
    return out + [""]


def _section_composition(f: CardFacts) -> list[str]:
    c = f.composition
    out = ["## Composition", "", f"- **Rows:** {c.rows}", f"- **By technique:** {_kv_list(c.by_technique, c.rows)}",
           f"- **By locale:** {_kv_list(c.by_locale, c.rows)}",
           f"- **Languages:** {', '.join(md_escape(x) for x in f.languages) or 'not recorded'}",
           f"- **Turns per row:** {_kv_list(c.by_turns, c.rows)}"]
    if c.top_intents:
        out += [f"- **Intents:** {c.intents} distinct; top {len(c.top_intents)}:", "",
                md_table(["intent", "rows", "share"], [[i.name, i.count, _pct(i.count, c.rows)] for i in c.top_intents], "lrr")]
    else:
        out.append("- **Intents:** not recorded")
    return out + [""]


def _section_origin(f: CardFacts) -> list[str]:
    out = ["## Real vs synthetic", ""]
    if f.kind == "dataset":
        out.append(f"- **Synthetic:** all {f.accepted} accepted rows (100%) were generated by the model(s) listed under "
                   "Generators; no row of this split is human-written.")
    else:
        out.append(f"- **Audited rows:** {f.accepted} accepted of {f.candidates}; they were made outside synqa, so how "
                   "much of them is synthetic (and by which model) is **unknown** to this card.")
    for label, src, use in (("Seed corpus", f.seed_corpus, "used only as prompts; none of its rows is shipped"),
                            ("Reference sample", f.reference, "used only to measure drift; none of its rows is shipped")):
        if src is None:
            out.append(f"- **{label}:** none")
        else:
            out.append(f"- **{label}:** {src.rows if src.rows is not None else 'unknown'} rows, origin: "
                       f"{md_escape(src.origin)} — {use}.")
    return out + [""]


def _section_generators(f: CardFacts) -> list[str]:
    out = ["## Generators and prompts", ""]
    if f.generators:
        rows = [[g.generator_id, g.generator_version or "not recorded",
                 ", ".join(f"{k}={_setting(v)}" for k, v in sorted(g.sampling.items())) or "not recorded", g.rows]
                for g in f.generators]
        out += [md_table(["generator", "version", "sampling", "accepted rows"], rows, "lllr"), ""]
    else:
        out += ["Generator: **unknown** (not recorded in the data)." if f.kind == "audit" else "Generator: not recorded.", ""]
    ids = ", ".join(f"{md_code(t)}" for t in f.prompt_template_ids) or "not recorded"
    rids = ", ".join(f"{md_code(t)}" for t in f.response_template_ids) or "not recorded"
    out += [f"- **Prompt template ids:** {ids}", f"- **Response template ids:** {rids}", ""]
    s = f.seed_corpus
    if s is not None:
        out += [f"- **Seed corpus:** {md_code(s.path)}, sha256 {md_code(s.sha256 or 'not recorded')}, "
                f"{s.rows if s.rows is not None else 'unknown'} rows, taxonomy version "
                f"{md_code(s.taxonomy_version or 'not recorded')}"]
    r = f.reference
    if r is not None:
        out += [f"- **Reference sample:** {md_code(r.path)}, sha256 {md_code(r.sha256 or 'not recorded')}, "
                f"{r.rows if r.rows is not None else 'unknown'} rows"]
    return out + [""]


def _section_gates(f: CardFacts) -> list[str]:
    rows = "audited row" if f.kind == "audit" else "candidate"
    out = ["## Quality gates", "",
           f"Every {rows} went through the gates in this order; each gate saw the previous gate's survivors. "
           "Rejected rows are in the reject log with the gate, category, exact reason and score.", ""]
    for g in f.gates:
        out += [f"### {md_escape(g.name)}", "",
                f"{g.seen} rows in, {g.kept} kept, {g.dropped} rejected ({_pct(g.dropped, g.seen)}).", ""]
        if g.reasons:
            rows = [[md_escape(r.category), r.count, md_escape(r.example_reason, 160)] for r in g.reasons]
            out += [md_table(["category", "rejected", "example reason"], rows, "lrl", escape=False), ""]
        for note in g.notes:
            out += [f"- {md_escape(note)}"]
        if g.notes:
            out.append("")
        if g.thresholds:
            out += ["<details><summary>settings</summary>", "",
                    md_table(["setting", "value"], [[k, _setting(v)] for k, v in g.thresholds.items()]), "", "</details>", ""]
    return out


def _section_contamination(f: CardFacts) -> list[str]:
    c = f.contamination
    out = ["## Eval-set contamination", ""]
    if c is None:
        return out + ["Not checked.", ""]
    if c.eval_sets:
        out += [md_table(["eval set", "items", "source"], [[e.name, e.items, e.source] for e in c.eval_sets], "lrl"), ""]
    else:
        out += ["No eval set was configured.", ""]
    emb = (f"cosine ≥ {_fmt_num(c.embedding_threshold)} with {md_code(c.embedding_model or 'the configured model')}"
           if c.embedding_check == "ran" else md_escape(c.embedding_check))
    out += [f"- **n-gram rule:** a row sharing ≥ {c.min_ngram_overlap} word {c.ngram_size}-gram(s) with an item is rejected",
            f"- **embedding rule:** {emb}"]
    if c.embedding_route and c.embedding_check == "ran":
        how = {"static_cascade": "static model2vec vectors (distilled from MiniLM) find candidates; MiniLM re-scores "
                                 "them against the threshold above",
               "minilm": "every row embedded with the model above"}.get(c.embedding_route, "")
        line = f"- **embedding route:** {md_code(c.embedding_route)}" + (f" ({how})" if how else "")
        if c.embedding_route_recall:
            line += f"; measured recall: {md_escape(c.embedding_route_recall)}"
        out.append(line)
    if c.earlier_drops_checked is not None:
        total = (c.gate_hits or 0) + (c.earlier_drop_hits or 0)
        by_gate = ", ".join(f"{md_escape(g)} {n}" for g, n in sorted(c.earlier_hits_by_gate.items())) or "none"
        out += [f"- **every candidate checked:** the {c.earlier_drops_checked} row(s) other gates dropped first were "
                f"checked too; {c.earlier_drop_hits or 0} of them match an eval item as well (first dropped by: {by_gate}). "
                f"Eval-set matches among all candidates: **{total}** ({c.gate_hits or 0} rejected by this gate)."]
    return out + [""]


def _section_privacy(f: CardFacts) -> list[str]:
    """Personal data (PII gate) and real-data leakage (memorisation gate), reported apart from eval contamination."""
    p = f.privacy
    if p is None:
        return []
    out = ["## Personal data and real-data leakage", ""]
    if p.pii_checked is not None:
        kinds = ", ".join(f"{md_escape(k)} {n}" for k, n in sorted(p.pii_by_kind.items())) or "none"
        actions = ", ".join(f"{md_escape(k)}: {md_escape(v)}" for k, v in sorted(p.pii_actions.items()))
        out += [f"- **PII:** {p.pii_checked} row(s) scanned; {p.pii_rows_redacted} redacted (typed placeholders such as "
                f"`[EMAIL]`, each edit in the row's lineage) and {p.pii_rows_rejected} rejected. Rows with a hit, by kind: "
                f"{kinds}.",
                f"- **PII policy:** {actions or 'defaults'}."]
    if p.leakage_checked is not None:
        rules = [f"a shared verbatim span of ≥ {p.min_span_words} words or ≥ {p.min_span_chars} characters"]
        if p.embedding_threshold is not None:
            rules.append(f"an embedding near-copy (cosine ≥ {_fmt_num(p.embedding_threshold)})")
        by_source = ", ".join(f"{md_escape(k)} {n}" for k, n in sorted(p.leakage_by_source.items())) or "none"
        by_category = ", ".join(f"{md_escape(k)} {n}" for k, n in sorted(p.leakage_by_category.items())) or "none"
        copied = ", ".join(md_code(s) for s in p.leakage_sources) or "none"
        out += ["", "### Real-data leakage", "",
                f"Every row reaching this gate ({p.leakage_checked}) was compared with {p.real_rows if p.real_rows is not None else 'the'} "
                f"real row(s) {'the auditor supplied (--reference)' if f.kind == 'audit' else 'the batch is grounded on (every seed and the reference sample)'}: "
                f"{' or '.join(rules)} is a leak. "
                f"**{p.leakage_rows} row(s) rejected as copies of real data** (by kind: {by_category}; copied from: "
                f"{by_source}). Real rows copied: {copied}. This is separate from eval-set contamination above; the "
                "seeds themselves are the user's and are not part of the shipped rows."]
    return out + [""]


def _rate(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _canary_verdict(c: CanaryFacts) -> str:
    """``not tested`` when nothing was planted, ``pass`` / ``FAIL``, noting a recall that could not be measured."""
    if not c.positives and not c.negatives:
        return "not tested"
    if not c.passed:
        return "FAIL"
    return "pass (recall not tested: no positive planted)" if not c.positives else "pass"


def _section_gate_quality(f: CardFacts) -> list[str]:
    out = ["## How good each gate is (measured)", ""]
    run = "audit" if f.kind == "audit" else "batch"
    if f.canaries:
        if f.kind == "audit":
            out += ["**Canaries in this audit.** Besides the audited rows, each gate ran on seeded rows whose right "
                    "answer is known (planted positives it must drop, negatives it must keep), through the same gate "
                    "objects and settings that judged the audited rows; the planted rows are in none of the outputs.", ""]
        else:
            out += ["**Canaries in this batch.** Before the batch was trusted, each gate ran on seeded rows whose right "
                    "answer is known (planted positives it must drop, negatives it must keep), through the same gate "
                    "objects and settings as the batch; the planted rows never entered the data.", ""]
        rows = [[md_escape(c.gate), md_escape(c.kinds), f"{c.caught}/{c.positives}", _rate(c.recall),
                 f"{c.false_positives}/{c.negatives}", _rate(c.false_positive_rate),
                 "" if c.min_recall is None else _rate(c.min_recall), _canary_verdict(c),
                 md_escape(c.missed_kinds or "-")] for c in f.canaries]
        out += [md_table(["gate", "planted kinds", "caught", "recall", "false drops", "false-drop rate", "recall floor",
                          "verdict", "missed"], rows, "llrrrrrll", escape=False), ""]
    else:
        out += [f"No canaries were planted for this {run}.", ""]
    if f.measured:
        out += [f"**On named labelled data** (held-out splits, not this {run}'s rows):", ""]
        rows = [[md_escape(m.gate), md_escape(m.data), _rate(m.precision), _rate(m.recall), _fmt_num(m.f1),
                 _fmt_num(m.auc), _rate(m.false_drop_rate), md_escape(m.note, 160)] for m in f.measured]
        out += [md_table(["gate", "data", "precision", "recall", "F1", "AUC", "benign false drops", "note"], rows,
                         "llrrrrrl", escape=False), ""]
    elif f.kind == "audit":
        out += ["No gate reported precision / recall measured on named labelled data.", ""]
    return out


def _probe_rows(probes: list[dict[str, Any]]) -> list[list[Any]]:
    return [[p.get("name"), p.get("test"), _fmt_num(p.get("statistic")), _fmt_num(p.get("p")), _fmt_num(p.get("p_adj")),
             f"{p.get('effect_name', '')} {_fmt_num(p.get('effect'))}", _fmt_num(p.get("threshold")),
             "pass" if p.get("passed") else "FAIL"] for p in probes]


def _section_drift(f: CardFacts) -> list[str]:
    out = ["## Drift, diversity and bias vs the reference", ""]
    d = f.drift
    if f.drift_note:
        out += [md_escape(f.drift_note), ""]
    if not d:
        return out + (["Not run."] if not f.drift_note else []) + [""]
    checks = d.get("checks", {})
    out += [f"{d.get('rows_batch')} rows (column {md_code(d.get('text_column'))}) vs {d.get('rows_reference')} "
            f"reference rows; Benjamini–Hochberg false discovery rate {_fmt_num(d.get('alpha'))}. Overall: "
            f"{md_escape(d.get('summary'))}.", ""]
    out += [md_table(["check", "result", "severity", "summary"],
                     [[name, RESULT_LABELS[finding_result(c)], c.get("severity"), _words(f, c.get("summary"))]
                      for name, c in checks.items()], "llll"), ""]
    probes = checks.get("distribution_drift", {}).get("probes")
    if probes:
        out += ["**Distribution drift per probe** (a probe fails when its effect exceeds the threshold and p (BH) < alpha):", "",
                md_table(["probe", "test", "statistic", "p", "p (BH)", "effect", "threshold", "result"], _probe_rows(probes),
                         "llrrrrrl"), ""]
    metrics = checks.get("diversity_collapse", {}).get("metrics")
    if metrics:
        out += [f"**Diversity** ({_subject(f)} vs size-matched reference draws):", "",
                md_table(["metric", _subject(f), "reference", "ratio", "min ratio", "result"],
                         [[m.get("metric"), _fmt_num(m.get("batch")), _fmt_num(m.get("reference")), _fmt_num(m.get("ratio")),
                           _fmt_num(m.get("min_ratio")), "pass" if m.get("passed") else "FAIL"] for m in metrics], "lrrrrl"), ""]
    cats = checks.get("identity_term_rates", {}).get("categories")
    if cats:
        out += ["**Identity-term mention rates:**", "",
                md_table(["category", f"{_subject(f)} rate", "reference rate", "p (BH)", "result"],
                         [[c.get("category"), _fmt_num(c.get("batch_rate")), _fmt_num(c.get("reference_rate")),
                           _fmt_num(c.get("p_adjusted")), "pass" if c.get("passed") else "FAIL"] for c in cats], "lrrrl"), ""]
    cov = checks.get("intent_coverage", {})
    if cov.get("failing"):
        shown = cov["failing"][:20]
        out += [f"**Intents under the coverage minimum** ({len(cov['failing'])}): "
                + ", ".join(f"{md_code(i)}" for i in shown) + (" …" if len(cov["failing"]) > 20 else ""), ""]
    return out


def _section_review(f: CardFacts) -> list[str]:
    r = f.review
    out = ["## Human review", ""]
    if r.status == "not_reviewed":
        out.append("**Not reviewed**: no human has reviewed a sample of these rows.")
    elif r.status == "pending":
        out.append(f"**Review pending: {r.reviewed} of {r.sample_size if r.sample_size is not None else 'unknown'}** sampled rows reviewed so far.")
    else:
        out.append(f"**Reviewed:** {r.reviewed} of {r.sample_size if r.sample_size is not None else r.reviewed} sampled rows.")
    if r.plan:
        out.append(f"- **Plan:** {md_escape(r.plan)}")
    if r.guarantee:
        out.append(f"- **Guarantee:** {md_escape(r.guarantee)}")
    if r.sample_size is not None:
        out.append(f"- **Sample size:** {r.sample_size}")
    if r.status != "not_reviewed":
        rate = r.defect_rate
        out += [f"- **Reviewed:** {r.reviewed}", f"- **Defects:** {r.defects}",
                f"- **Defect rate:** {f'{rate:.1%}' if rate is not None else 'n/a'}",
                "- **Slices returned to synthesis:** " + (", ".join(f"{md_code(s)}" for s in r.slices_returned) or "none")]
    return out + [""] + _review_agreement(r.agreement)


def _num(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _review_agreement(a: dict[str, Any] | None) -> list[str]:
    """Reviewer agreement: Cohen's kappa and raw agreement on the double-reviewed rows, per batch and reviewer pair."""
    if a is None:
        return []
    out = ["### Reviewer agreement", ""]
    policy = {"third_reviewer": "a third reviewer, who is neither of the first two, decides",
              "defect": "the row counts as a defect"}.get(str(a.get("disagreement_policy")), md_escape(str(a.get("disagreement_policy"))))
    if not a.get("double_reviewed"):
        return out + ["Not measured in this batch: no sampled row was given to a second reviewer "
                      "(`review.agreement.second_review_fraction` / `min_double_reviewed` in the gate config).", ""]
    kappa = _num(a.get("kappa")) if a.get("kappa") is not None else f"n/a ({md_escape(str(a.get('kappa_note') or 'not defined'))})"
    out += [f"- **Double-reviewed:** {a.get('double_reviewed')} of {a.get('sampled')} sampled rows went to a second, "
            f"independent reviewer (never the same person; the second does not see the first verdict); "
            f"{a.get('pairs', 0)} judged by both so far, {a.get('awaiting_second', 0)} awaiting the second review, "
            f"{a.get('awaiting_third', 0)} awaiting a third.",
            f"- **Cohen's kappa (accept / reject):** {kappa}; raw agreement {_rate(a.get('agreement'))}; "
            f"{a.get('disagreements', 0)} disagreement(s).",
            f"- **On disagreement:** {policy}."]
    third = a.get("third_reviewer") or {}
    if third.get("decided"):
        out.append(f"- **Third reviews:** {third.get('decided')} decided ({third.get('accepted', 0)} accept, "
                   f"{third.get('rejected', 0)} reject); sided with the first reviewer {third.get('sided_with_first', 0)}, "
                   f"with the second {third.get('sided_with_second', 0)}.")
    if a.get("defects_from_disagreement"):
        out.append(f"- **Defects from disagreement:** {a.get('defects_from_disagreement')}.")
    pairs = a.get("by_pair") or []
    if pairs:
        rows = [[" / ".join(md_code(x) for x in p.get("reviewers", [])), p.get("n", 0), _rate(p.get("agreement")),
                 _num(p.get("kappa")) if p.get("kappa") is not None else md_escape(str(p.get("kappa_note") or "n/a")),
                 p.get("disagreements", 0), md_escape(p.get("note") or "")] for p in pairs]
        out += ["", md_table(["reviewer pair (HMAC prefix)", "rows", "agreement", "kappa", "disagreements", "note"], rows,
                             "lrrrrl", escape=False)]
    return out + [""]


_STATE_WORD = {"normal": "normal", "tightened": "tightened", "reduced": "reduced", "discontinued": "**DISCONTINUED**"}
_RESULT_WORD = {"accepted": "accepted", "accepted_limit": "accepted (Ac < d < Re: normal reinstated)",
                "rejected": "not accepted", "pending": "pending", "incomplete": "incomplete (deadline passed)"}


def _section_review_programme(f: CardFacts) -> list[str]:
    """Review programme: each slice's switching state entering and after this batch, its plan, lot result and
    why; then the operating characteristic of each distinct plan (table + oc_curves.png)."""
    rp = f.review_programme
    if rp is None:
        return []
    out = ["## Review programme", ""]
    rules = ("Switching rules across batches **on** (ISO 2859-1:1999 clause 9, per slice: tightened after 2 of 5 "
             "or fewer consecutive lots not accepted, normal after 5 consecutive accepted lots, discontinued after 5 "
             "lots not accepted on tightened inspection; reduced inspection "
             + ("permitted once the switching score reaches 30 with steady production)." if rp.allow_reduced
                else "not permitted by the config).")) if rp.switching else \
        "Switching rules across batches **off**: every slice of every batch is judged under normal inspection."
    out += [rules, "", f"Plans: {md_escape(rp.standard)}.", ""]
    if rp.discontinued:
        out += [f"**DISCONTINUED (ISO 2859-1 9.4):** {', '.join(md_code(x) for x in rp.discontinued)}: 5 lots not "
                "accepted on tightened inspection. Acceptance by sampling has stopped for these slices until "
                "corrective action is recorded; their rows were still reviewed under the tightened plan.", ""]
    stale = [x.slice_key for x in rp.slices if x.stale]
    if stale:
        out += [f"**Stale:** {', '.join(md_code(x) for x in stale)} were sampled under a state that the replay of "
                "earlier batches no longer gives (an earlier batch was re-run or decided later); re-draw their "
                "sample to follow the programme.", ""]
    rows = []
    for x in rp.slices:
        plan = f"n={x.sample_size}, Ac={x.acceptance_number}, Re={x.rejection_number}"
        if x.code_letter:
            plan += f" (code {md_escape(x.code_letter)})"
        if x.plan_kind == "zero_acceptance":
            plan += " zero-acceptance"
        result = _RESULT_WORD.get(x.result, md_escape(x.result))
        if x.result != "pending" or x.reviewed:
            result += f", {x.defects} defect(s) in {x.reviewed}"
        why = md_escape(x.reason, 400)
        if x.entering_reason and x.state_entering != "normal":
            why = f"entering: {md_escape(x.entering_reason, 300)}; {why}"
        rows.append([md_code(x.slice_key), _STATE_WORD.get(x.state_entering, md_escape(x.state_entering)), plan, result,
                     _STATE_WORD.get(x.state_after, md_escape(x.state_after)), why])
    out += [md_table(["slice", "state entering this batch", "plan used", "lot result", "state after", "why"], rows,
                     "llllll", escape=False), ""]
    if rp.oc_curves:
        rates = [f"{100 * r:g}%" for r in rp.oc_rates]
        out += ["### Operating characteristic of this batch's plans", "",
                "P(a slice is accepted) at each defect rate (binomial: a process or an infinite lot at that rate; a "
                "lot is accepted with fewer than Re defects in its sample). LQ10 is the defect rate accepted only "
                "10% of the time." + (f" AQL {rp.aql:g}%." if rp.aql is not None else ""), ""]
        table = []
        for c in rp.oc_curves:
            slices = ", ".join(md_code(k) for k in c.slices[:8]) + (f" … ({len(c.slices)})" if len(c.slices) > 8 else "")
            table.append([md_escape(c.label), slices, *[f"{p:.3f}" for p in c.p_accept], f"{100 * c.lq10:.1f}%"])
        out += [md_table(["plan", "slices", *rates, "LQ10"], table, "ll" + "r" * (len(rates) + 1), escape=False), ""]
        full = sorted({k for c in rp.oc_curves for k in c.full_inspection_slices})
        if full:
            out += [f"Inspected in full (every row reviewed; the curve describes the process rate, not the lot): "
                    f"{', '.join(md_code(k) for k in full)}.", ""]
        if rp.oc_image:
            out += [f"![OC curves: P(slice accepted) by defect rate, one curve per plan]({md_link_target(rp.oc_image)})", ""]
    return out


def _toxicity_limitation(f: CardFacts) -> str:
    tox = next((g for g in f.gates if g.name.startswith("toxicity")), None)
    backend = str(tox.thresholds.get("backend", "profanity_check")) if tox else "profanity_check"
    thr = tox.thresholds.get("profanity_threshold") if tox else None
    m = MEASURED
    if backend == "learned":
        return ("**The toxicity scorer has its own biases.** The learned scorer (logistic regression on MiniLM "
                "sentence embeddings and character n-grams) was trained on English tweets and forum posts (TweetEval, "
                "HateXplain) with benign support, maths and review text as negatives: it is weaker on profanity-driven "
                "offence than on hate speech, has seen few threats and little technical text, and is untested on "
                "other languages and dialects. Its held-out precision, recall and benign false drops are in \"How good "
                "each gate is\" above; this batch's canaries show what it caught and missed here.")
    text = (
        "**The toxicity scorer has its own biases.** profanity-check (alt-profanity-check) is a lexical linear model "
        "trained on English web comments: it misses implicit hate, sarcasm and coded language, over-flags reclaimed "
        "slurs and dialect (e.g. African-American English), and produces identity-term false positives (a row that "
        "merely names a group can score as toxic)."
    )
    if thr is not None and abs(float(thr) - m["profanity_threshold"]) < 1e-9:
        text += (f" Measured at this threshold ({m['profanity_threshold']:.2f}) on TweetEval offensive test: AUC "
                 f"{m['profanity_auc_test']:.3f}, precision {m['profanity_precision_test']:.2f}, recall "
                 f"{m['profanity_recall_test']:.2f} (about half of offensive tweets pass); it drops "
                 f"{m['banking77_benign_dropped']:.2%} of benign BANKING77 support queries (worst intent "
                 f"{m['banking77_worst_intent']}) ({m['toxicity_doc']}).")
    elif thr is not None:
        text += (f" This run used threshold {_fmt_num(thr)}; the measured figures ({m['toxicity_doc']}) are for "
                 f"{m['profanity_threshold']:.2f} only.")
    if backend in ("detoxify", "cascade"):
        text += (" Detoxify (a Jigsaw-trained transformer) scored some rows; its precision and recall were **not** "
                 "measured on this project (no checkpoint available offline) and such models are known to over-score "
                 "identity terms.")
    return text


def _limitations(f: CardFacts) -> list[str]:
    m = MEASURED
    items = [_toxicity_limitation(f)]
    c = f.contamination
    if c is not None:
        names = ", ".join(f"{md_code(e.name)}" for e in c.eval_sets) or "none"
        items.append(
            f"**Contamination is checked only against the named eval sets** ({names}). What it catches was measured, "
            f"not assumed ({m['toxicity_doc']}; figures in \"How good each gate is\" above and this batch's canaries): "
            "every eval item is indexed, verbatim and re-wrapped copies are caught, real paraphrases only about half "
            "the time (with embeddings), and a short item (< 8 words) quoted inline inside a longer sentence is a "
            "known gap. Translations of eval items are not detected."
        )
    items.append(
        f"**Drift thresholds were calibrated on short English customer-support messages** (BANKING77; false-alarm "
        f"rate ≤ {m['drift_false_alarm_n50']:.0%} at 50 rows, {m['drift_doc']}); on other domains a failing or passing "
        "probe is a prompt to look, not a verdict. The identity-term lexicon is small, English-only and counts "
        "mentions, not offensiveness."
    )
    reviewed = ("(no human reviewed any of these rows)" if f.kind == "audit" or f.review.status == "not_reviewed"
                else "outside the human-reviewed sample")
    if f.embeddings is False:
        items.append("**Embeddings were off:** contamination was checked with the n-gram rules only (an edited or "
                     "reworded eval item that the embedding rule would catch was not looked for) and the drift checks' "
                     "embedding probes (nearest-reference distance, pairwise distance, cluster entropy) did not run.")
    pii_ran = f.privacy is not None and f.privacy.pii_checked is not None
    pii = ("personal data beyond what the PII gate detects (its kinds and measured recall are in "
           "docs/measurements/pii.md: names only in customer context and from its name lists, addresses only with a "
           "house number and street, English-language cues)") if pii_ran else "personal data (no PII scan ran)"
    items.append(
        f"**Not verified:** factual accuracy and helpfulness of responses {reviewed}; content in "
        "languages other than English (the quality gate only checks the language label, the toxicity and bias "
        f"screens are English-only); {pii}; licensing and terms of use of the generator's "
        "outputs; correctness of code or maths in responses; safety beyond lexical toxicity."
    )
    if f.privacy is not None and f.privacy.leakage_checked is not None:
        items.append(
            f"**Real-data leakage is checked against the real rows the batch was given** (seeds and the reference "
            f"sample): verbatim spans of ≥ {f.privacy.min_span_words} words / ≥ {f.privacy.min_span_chars} characters "
            "and embedding near-copies. A copy of a real message shorter than that, or a heavily reworded one, passes "
            "(docs/measurements/memorisation.md); real data the pipeline was never given cannot be checked.")
    if f.kind == "audit":
        items.append("**Audit mode:** the generator, prompts and sampling of these rows are unknown; the gates ran in "
                     "advisory mode (nothing was regenerated), and thresholds tuned for synqa's own rows may not suit them.")
    items += [md_escape(x) for x in f.limitations]
    return ["## Known limitations", ""] + [f"- {x}" for x in items] + [""]


def _section_lineage(f: CardFacts) -> list[str]:
    out = ["## Lineage", ""]
    ln = f.lineage
    if ln is None:
        return out + ["**Not signed**: this folder carries no Merkle root or signature; the SHA-256 of each file is "
                      "listed under Files.", ""]
    out += [f"- **Merkle root:** {md_code(ln.merkle_root)}",
            f"- **Leaf construction:** {md_escape(ln.leaf_construction)}",
            f"- **Key id:** {md_code(ln.key_id or 'none')}",
            f"- **Public key file:** {md_code(ln.public_key_file or 'none')}",
            f"- **Manifest file:** {md_code(ln.manifest_file or 'none')}"]
    if ln.signature_file:
        out.append(f"- **Signature file:** {md_code(ln.signature_file)}")
    if ln.public_key_pem and all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=- \n" for c in ln.public_key_pem):
        out += ["", "Public key (Ed25519, the key id is the first 16 hex digits of the SHA-256 of its raw 32 bytes):", "",
                "```", ln.public_key_pem.strip(), "```"]
    out += ["", "Verify the folder (hashes, Merkle root and signature) with:", "", "```bash", "synqa verify <folder>", "```", ""]
    return out


def _section_funnel(f: CardFacts) -> list[str]:
    out = ["## Funnel", ""]
    if not f.funnel:
        return out + ["Not recorded.", ""]
    out += [funnel_report_markdown(funnel_frame(f.funnel), f.seeds, source_label=_source_label(f))]
    if f.funnel_image:
        out += [f"![funnel: rows kept and dropped per stage]({md_link_target(f.funnel_image)})", ""]
    return out


def _section_files(f: CardFacts) -> list[str]:
    out = ["## Files", ""]
    if not f.files:
        return out + ["None listed.", ""]
    rows = [[x.path, "" if x.rows is None else x.rows, "" if x.bytes is None else x.bytes, x.sha256, x.description]
            for x in f.files]
    return out + [md_table(["file", "rows", "bytes", "sha256", "what"], rows, "lrrll"), ""]


def render_card(facts: CardFacts) -> str:
    """The dataset card (``README.md`` text) of one batch or audit: YAML front matter + markdown body.

    Deterministic for the same facts; every row/config-derived string is escaped (see module docstring).
    """
    sections = [
        _section_summary(facts), _section_checks(facts), _section_composition(facts), _section_origin(facts),
        _section_generators(facts), _section_gates(facts), _section_slices(facts), _section_gate_quality(facts),
        _section_contamination(facts), _section_privacy(facts), _section_drift(facts),
        _section_review(facts), _section_review_programme(facts),
        _limitations(facts), _section_lineage(facts), _section_funnel(facts), _section_files(facts),
    ]
    body = "\n".join(line for section in sections for line in section).rstrip() + "\n"
    return front_matter(_yaml_front(facts)) + "\n" + body


def render_rollup_card(
    batch_facts: Sequence[CardFacts],
    pretty_name: str,
    license: str | None = None,
    batch_dirs: dict[str, str] | None = None,
    summary: str | None = None,
) -> str:
    """The dataset-level card across batches: totals, per-batch table (with each batch's Merkle root) and a
    ``configs`` block listing every batch's accepted file and reject log.

    Args:
        batch_facts: one :class:`CardFacts` per batch (each with exactly one batch key).
        pretty_name / license / summary: of the whole dataset (license defaults to the batches' if they agree).
        batch_dirs: batch key -> folder holding that batch's files (default: the batch key itself).
    """
    if not batch_facts:
        raise ValueError("render_rollup_card needs at least one batch")
    facts = sorted(batch_facts, key=lambda b: (b.batches[0] if b.batches else "", b.gate_config_hash))
    keys = [b.batches[0] if b.batches else f"#{i}" for i, b in enumerate(facts)]
    dirs = {k: (batch_dirs or {}).get(k, k) for k in keys}
    licenses = sorted({b.license for b in facts})
    license = license or (licenses[0] if len(licenses) == 1 else "other")
    cand, acc, rej = (sum(getattr(b, a) for b in facts) for a in ("candidates", "accepted", "rejected"))
    langs = sorted({x for b in facts for x in b.languages})
    data_files = {}
    for name in facts[0].data_files:
        data_files[name] = [{"split": "train", "path": [f"{dirs[k]}/{b.data_files.get(name, '')}" for k, b in zip(keys, facts)]}]
    front: dict[str, Any] = {
        "pretty_name": pretty_name,
        "license": license,
        "language": langs,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(acc)],
        "tags": ["synthetic", "synqa"],
        "configs": [{"config_name": n, "data_files": d} for n, d in data_files.items()],
        "synqa": {
            "kind": "rollup",
            "batches": keys,
            "merkle_roots": {k: (b.lineage.merkle_root if b.lineage else None) for k, b in zip(keys, facts)},
            "candidates": cand, "accepted": acc, "rejected": rej,
        },
    }
    if not langs:
        del front["language"]
    techniques: Counter[str] = Counter()
    categories: Counter[tuple[str, str]] = Counter()
    for b in facts:
        techniques.update(b.composition.by_technique)
        for g in b.gates:
            for r in g.reasons:
                categories[(g.name, r.category)] += r.count
    lines = [f"# {md_escape(pretty_name)}", ""]
    if summary:
        lines += [md_escape(summary), ""]
    lines += [
        "## Totals", "",
        f"- **Batches:** {len(facts)}",
        f"- **Rows:** {acc} accepted of {cand} candidates ({_pct(acc, cand)}); {rej} rejected",
        f"- **By technique:** {_kv_list(dict(sorted(techniques.items(), key=lambda kv: (-kv[1], kv[0]))), acc)}",
        f"- **Languages:** {', '.join(md_escape(x) for x in langs) or 'not recorded'}",
        f"- **Human review:** {sum(b.review.reviewed for b in facts)} rows reviewed, {sum(b.review.defects for b in facts)} defects",
        "",
        "## Batches", "",
        md_table(["batch", "candidates", "accepted", "accept rate", "recipe", "gate config", "merkle root", "key id", "review", "card"],
                 [[k, b.candidates, b.accepted, _pct(b.accepted, b.candidates), b.recipe_hash or "", b.gate_config_hash,
                   b.lineage.merkle_root if b.lineage else "not signed", (b.lineage.key_id if b.lineage else None) or "",
                   b.review.status.replace("_", " "), f"{dirs[k]}/README.md"] for k, b in zip(keys, facts)],
                 "lrrrllllll"),
        "",
        "## Rejections by gate and category (all batches)", "",
        md_table(["gate", "category", "rejected"], [[g, c, n] for (g, c), n in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))], "llr")
        if categories else "None.",
        "",
        "Each batch folder holds its own card (thresholds, drift findings, review, limitations) and its signed "
        "manifest; verify a batch with `synqa verify <batch folder>`.",
        "",
    ]
    return front_matter(front) + "\n" + "\n".join(lines).rstrip() + "\n"
