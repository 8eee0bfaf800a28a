"""The human review gate as assets: ``review_queue`` (draw + push the sample) and ``human_review`` (apply decisions).

``review_queue`` draws the batch's risk-tier-sized, stratified sample from the contamination gate's survivors
(reproducibly: same batch, seed and rows -> same sample) and pushes it to the review store, where reviewers work
through it in the review web app (``synqa review serve``). ``human_review`` reads the decisions back and applies
:class:`~synqa_dagster.gates.human_review.HumanReviewGate`; the ``review_decisions_sensor`` re-runs it (and
everything downstream) when a batch's sample is complete or its deadline passes.

Review as a programme (``review.sampling.switching``, on by default): each slice's plan follows the ISO 2859-1
switching rules across batches (:mod:`synqa_dagster.review.switching`). ``review_queue`` asks the switching
ledger (:class:`~synqa_dagster.review.ledger.SwitchingLedger`, in the review store) for the state each slice
enters the batch in -- derived from the lots of earlier batches only -- sizes each slice's sample with the
normal, tightened or reduced plan, records the plans in the ledger and reports the states and why they switched
(metadata and an observation). ``human_review`` records each lot's result, which replays the slice's states; the
per-slice verdicts it stores (``slice_verdicts.json``, read by the card) carry the state entering and leaving the
batch and the reason. A slice whose inspection is DISCONTINUED (ISO 2859-1 9.4) is logged as an error on every run.
"""


import datetime as dt
import json
import time

import dagster as dg
import pandas as pd

from typing import Sequence

from synqa_dagster.assets.gates import run_gate
from synqa_dagster.config import GateConfig, Recipe, canonical_hash
from synqa_dagster.gates.base import survivors
from synqa_dagster.gates.human_review import HumanReviewGate
from synqa_dagster.handover.batch import write_rollup
from synqa_dagster.handover.markdown import md_table
from synqa_dagster.metadata import batch_asset_settings, preview_markdown, table_metadata
from synqa_dagster.resources import HandoverResource, ReviewStoreResource, StoreResource
from synqa_dagster.review.agreement import agreement_report, select_double_review
from synqa_dagster.review.ledger import SwitchingLedger
from synqa_dagster.review.sampling import SLICE_FRAME_COLUMNS, draw_sample, guarantee_text, slice_keys
from synqa_dagster.review.store import redact_url
from synqa_dagster.stages import CANARIES, DRIFT_FINDINGS, REVIEW_QUEUE, SEED_CORPUS, STAGES, GateStage, held_tables, last_automatic

GROUP = "review"
#: What a reviewer sees of a row, besides its id, slice and position.
DISPLAY_COLUMNS = [
    "instruction", "response", "conversation", "text", "seed_id", "seed_text", "technique", "intent", "locale",
    "prompt_template_id", "generator_id",
]
SAMPLE_COLUMNS = ["row_id", "slice_key", "sample_position", "sample_version"]
#: The human stage's per-slice verdicts, stored beside its table.
SLICE_VERDICTS_FILE = "slice_verdicts.json"
#: Columns the review programme adds to the stored per-slice verdicts (see :func:`with_programme`).
PROGRAMME_VERDICT_COLUMNS = ("code_letter", "outcome", "state_entering", "entering_reason", "state_after",
                             "switched", "switch_reason", "status", "stale", "production_steady")


def with_programme(verdicts: pd.DataFrame, programme: pd.DataFrame) -> pd.DataFrame:
    """The per-slice verdicts with each slice's review-programme row of this batch merged in
    (:data:`PROGRAMME_VERDICT_COLUMNS`: the state entering and after the batch, why, ...). Unchanged when the
    ledger has no row for the batch."""
    if not len(programme) or not len(verdicts):
        return verdicts
    extra = programme.rename(columns={"state_leaving": "state_after", "reason": "switch_reason"})
    extra = extra[["slice_key", *PROGRAMME_VERDICT_COLUMNS]]
    base = verdicts.drop(columns=[c for c in PROGRAMME_VERDICT_COLUMNS if c in verdicts.columns])
    return base.merge(extra, on="slice_key", how="left", validate="one_to_one")


def programme_markdown(programme: pd.DataFrame, after: bool = False) -> str:
    """The review programme of one batch as a markdown table: slice, state, plan, (result, state after,) why."""
    rows = []
    for r in programme.itertuples():
        state = r.state_entering.upper() if r.state_entering == "discontinued" else r.state_entering
        row = [r.slice_key, state, f"n={r.sample_size}, Ac={r.acceptance_number}, Re={r.rejection_number}"
               + (f" (code {r.code_letter})" if isinstance(r.code_letter, str) and r.code_letter else "")]
        if after:
            row += [r.outcome, r.state_leaving.upper() if r.state_leaving == "discontinued" else r.state_leaving,
                    r.reason + (" [stale: sampled under another state; re-materialize review_queue]" if r.stale else "")]
        else:
            row += [r.entering_reason, r.status]
        rows.append(row)
    columns = ["slice", "state", "plan"] + (["result", "state after", "why"] if after else ["why", "status"])
    return md_table(columns, rows)  # every cell escaped, none truncated (the reasons carry the clause numbers)


def _programme_metadata(programme: pd.DataFrame, after: bool = False) -> dict:
    states = programme["state_leaving" if after else "state_entering"] if len(programme) else pd.Series(dtype=str)
    meta = {
        "review_programme": dg.MetadataValue.md(programme_markdown(programme, after) if len(programme) else "no slices"),
        **{f"slices_{s}": int((states == s).sum()) for s in ("normal", "tightened", "reduced", "discontinued")},
    }
    discontinued = sorted(programme.loc[states == "discontinued", "slice_key"]) if len(programme) else []
    if discontinued:
        meta["review_programme_alert"] = (f"DISCONTINUED (ISO 2859-1 9.4): {', '.join(discontinued)}: 5 lots not "
                                          f"accepted on tightened inspection; record corrective action to resume")
    if after and len(programme) and programme["stale"].any():
        meta["review_programme_stale"] = ", ".join(sorted(programme.loc[programme["stale"], "slice_key"]))
    return meta


def slice_verdicts_json(verdicts: pd.DataFrame) -> bytes:
    """Per-slice verdicts as JSON records (what :func:`read_slice_verdicts` reads back)."""
    return verdicts.to_json(orient="records", force_ascii=False).encode("utf-8")


#: The reviewer-agreement report stored beside the verdicts (:func:`synqa_dagster.review.agreement.agreement_report`).
AGREEMENT_FILE = "agreement.json"


def read_agreement(store: StoreResource, asset: str, batch: str) -> dict | None:
    """The reviewer-agreement report the human stage stored for ``batch`` (None when it stored none)."""
    try:
        return json.loads(store.store.read_bytes(asset, batch, AGREEMENT_FILE).decode("utf-8"))
    except (FileNotFoundError, OSError):
        return None


def _agreement_metadata(report: dict) -> dict:
    """Reviewer agreement for the Dagster UI: kappa, raw agreement, pairs, waiting rows."""
    kappa = report.get("kappa")
    return {
        "double_reviewed": int(report.get("double_reviewed") or 0),
        "reviewer_pairs_judged": int(report.get("pairs") or 0),
        "cohen_kappa": float(kappa) if kappa is not None else dg.MetadataValue.text(report.get("kappa_note") or "not measured"),
        "raw_agreement": float(report["agreement"]) if report.get("agreement") is not None else dg.MetadataValue.text("no pairs yet"),
        "awaiting_second_review": int(report.get("awaiting_second") or 0),
        "awaiting_third_review": int(report.get("awaiting_third") or 0),
    }


def read_slice_verdicts(store: StoreResource, asset: str, batch: str) -> pd.DataFrame:
    """The per-slice verdicts the human stage stored for ``batch`` (empty when it stored none)."""
    import io

    try:
        payload = store.store.read_bytes(asset, batch, SLICE_VERDICTS_FILE)
    except (FileNotFoundError, OSError):
        return pd.DataFrame()
    frame = pd.read_json(io.BytesIO(payload), orient="records", dtype=False)
    return frame


def sample_version(batch: str, sample: pd.DataFrame, slices: pd.DataFrame, sampling: dict) -> str:
    """Content id of a drawn sample: the batch, the sampled row ids, each slice's plan and the sampling config.

    Nothing else goes in, so a change elsewhere in the recipe or gate config that leaves the same rows sampled
    under the same plans keeps the sample — and the decisions already made on it.
    """
    return canonical_hash(
        {
            "batch": batch,
            "rows": sorted(sample["row_id"].tolist()),
            "slices": slices.sort_values("slice_key").astype(str).to_dict("records"),
            "sampling": sampling,
        },
        length=16,
    )


def review_deadline(window_end: dt.datetime, hours: float | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """When a batch is decided on the decisions made so far: ``hours`` after its window closes or after the
    sample is pushed, whichever is later (a rebuilt old batch gets the full review time, not a past deadline)."""
    if hours is None:
        return None
    start = max(window_end.astimezone(dt.timezone.utc), now or dt.datetime.now(dt.timezone.utc))
    return start + dt.timedelta(hours=hours)


def _progress_metadata(progress) -> dict:
    return {
        "review_total": progress.total,
        "review_decided": progress.decided,
        "review_accepted": progress.accepted,
        "review_rejected": progress.rejected,
        "review_complete": progress.complete,
        "review_deadline": progress.deadline.isoformat() if progress.deadline else "none",
    }


def build_review_assets(
    recipe: Recipe, gates: GateConfig, partitions: dg.PartitionsDefinition, stages: Sequence[GateStage] = STAGES
) -> list[dg.AssetsDefinition]:
    """``review_queue`` and ``human_review`` for one recipe + gate config.

    Both read the survivors of the registry's last automatic stage; ``review_queue`` waits for ``drift_findings``
    (a blocking ERROR finding stops the batch before a sample is pushed).
    """
    review = gates.review
    source = last_automatic(stages).asset
    review_stage = next(s for s in stages if not s.automatic)
    held = held_tables(stages)
    versions, common = batch_asset_settings(recipe, gates, partitions, GROUP)
    sampling = review.sampling
    tier = sampling.risk_tier
    plan = sampling.tiers[tier]
    switching = sampling.switching

    @dg.asset(
        name=REVIEW_QUEUE,
        ins={"tested": dg.AssetIn(source), SEED_CORPUS: dg.AssetIn(SEED_CORPUS)},
        deps=[DRIFT_FINDINGS, CANARIES],
        kinds={"python", "sqlite", "parquet"},
        description=(
            f"The batch's human-review sample: risk tier '{tier}' ({plan.kind}), stratified by "
            f"{', '.join(review.sampling.strata)}; each slice is a lot with its own sample size and acceptance "
            "number. Drawn reproducibly and pushed to the review store; reviewers work through it in the review "
            f"web app ({review.app_url}). Progress shows as observations on this asset."
            + (" Each slice's plan follows the ISO 2859-1 switching rules across batches (normal / tightened"
               + (" / reduced" if sampling.allow_reduced else "") + "); its state and why are in the metadata."
               if switching else "")
        ),
        metadata={"risk_tier": tier, "plan": dg.MetadataValue.json(plan.model_dump(mode="json")), "review_app": dg.MetadataValue.url(review.app_url),
                  "switching": switching, "allow_reduced": sampling.allow_reduced},
        **common,
    )
    def review_queue(
        context: dg.AssetExecutionContext,
        tested: pd.DataFrame,
        seed_corpus: pd.DataFrame,
        review_store: ReviewStoreResource,
    ):
        started = time.perf_counter()
        batch = context.partition_key
        rows = survivors(tested)
        seeds = dict(zip(seed_corpus["seed_id"], seed_corpus["text"])) if len(seed_corpus) else {}
        rows = rows.assign(seed_text=[seeds.get(s, "") for s in rows["seed_id"]]) if len(rows) else rows.assign(seed_text=pd.Series(dtype=str))
        if not review.enabled:
            empty = pd.DataFrame({c: pd.Series(dtype=str) for c in SAMPLE_COLUMNS})
            return dg.Output(empty, metadata={"review": "disabled in the gate config", **versions})
        store = review_store.store()
        ledger, entering = None, {}
        if switching:
            # the state each slice enters this batch in: from the lots of earlier batches only (backfill-safe)
            ledger = SwitchingLedger(store, sampling.allow_reduced)
            keys = slice_keys(rows, sampling.strata).unique().tolist() if len(rows) else []
            entering = ledger.states_for(batch, keys)
        draw = draw_sample(rows, sampling, batch, {k: s.severity for k, s in entering.items()})
        version = sample_version(batch, draw.rows, draw.slices, sampling.model_dump(mode="json"))
        # Each sampled row carries its slice's plan, so the sample alone says how the slice is judged.
        plans = draw.slices[[c for c in SLICE_FRAME_COLUMNS if c != "slice_key"] + ["slice_key"]]
        sample = draw.rows.assign(sample_version=version).merge(plans, on="slice_key", how="left", validate="many_to_one")
        sample = sample.sort_values("sample_position").reset_index(drop=True)
        items = sample[SAMPLE_COLUMNS[:3] + [c for c in DISPLAY_COLUMNS if c in sample.columns] + [c for c in sample.columns if c.startswith("score_")]]
        deadline = review_deadline(context.partition_time_window.end, review.deadline_hours)
        agreement = review.agreement
        double = select_double_review(items["row_id"], batch, agreement)
        pushed = store.push_sample(batch, version, items, draw.slices, deadline, double_review=double,
                                   disagreement_policy=agreement.disagreement_policy)
        progress = store.progress(batch)
        context.log.info(
            f"review sample {version}: {len(sample)} of {len(rows)} rows in {len(draw.slices)} slices "
            f"({'pushed' if pushed else 'already in the store'}); {progress.decided}/{progress.total} decided; "
            f"{len(double)} row(s) for a second, independent reviewer ({agreement.disagreement_policy} on disagreement)"
        )
        programme_meta = {}
        if ledger is not None:
            programme = ledger.record_plan(batch, version, draw.slices)
            programme_meta = _programme_metadata(programme)
            _log_programme(context, batch, programme, after=False)
            context.log_event(dg.AssetObservation(asset_key=REVIEW_QUEUE, partition=batch, metadata={
                "stage": "sampled", **programme_meta}))
        return dg.Output(
            sample[SAMPLE_COLUMNS + [c for c in sample.columns if c not in SAMPLE_COLUMNS]],
            metadata=table_metadata(
                sample, ["row_id", "slice_key", "technique", "instruction"], time.perf_counter() - started,
                lot_rows=len(rows),
                sample_version=version,
                double_reviewed=len(double),
                disagreement_policy=agreement.disagreement_policy,
                slices=dg.MetadataValue.md(preview_markdown(draw.slices, list(draw.slices.columns), rows=100)),
                guarantee=dg.MetadataValue.md(guarantee_text(plan, switching, sampling.allow_reduced)),
                **programme_meta,
                store=redact_url(review_store.resolved_url()),
                review_app=dg.MetadataValue.url(review.app_url),
                **_progress_metadata(progress),
                **versions,
            ),
        )

    @dg.asset(
        name=review_stage.asset,
        ins={"tested": dg.AssetIn(source), REVIEW_QUEUE: dg.AssetIn(REVIEW_QUEUE)},
        kinds={"python", "parquet"},
        output_required=False,
        description=(
            f"Gate {list(stages).index(review_stage) + 1} of {len(stages)} — human review: rows a reviewer rejected are dropped with the reviewer's reason; a slice whose "
            "sample defect count exceeds its acceptance number is rejected whole and returned to synthesis. "
            + ("Holds the batch (skips everything downstream) until the sample is complete or its deadline passes."
               if review.block_until_complete else
               "Ships with the decisions made so far; the review_decisions sensor re-runs it when the sample completes.")
        ),
        **common,
    )
    def human_review(
        context: dg.AssetExecutionContext,
        tested: pd.DataFrame,
        review_queue: pd.DataFrame,
        review_store: ReviewStoreResource,
        store: StoreResource,
        handover: HandoverResource,
    ):
        batch = context.partition_key
        rows = survivors(tested)
        if not review.enabled or not len(review_queue):
            gate = HumanReviewGate(review.sampling.strata, review_queue, _empty_slices(), _empty_decisions())
            status = "not reviewed (review disabled)" if not review.enabled else "not reviewed (empty sample)"
        else:
            reviews = review_store.store()
            progress = reviews.progress(batch)
            version = str(review_queue["sample_version"].iloc[0])
            if progress.sample_version != version:
                raise dg.Failure(
                    f"review store holds sample {progress.sample_version} for batch {batch}, but review_queue drew "
                    f"{version}: re-materialize review_queue for this batch first"
                )
            deadline_passed = progress.deadline is not None and dt.datetime.now(dt.timezone.utc) >= progress.deadline
            if not progress.complete and review.block_until_complete and not deadline_passed:
                context.log.info(f"awaiting review: {progress.decided}/{progress.total} decided; holding batch {batch}")
                _withdraw(batch, store, handover, recipe, context, held)
                context.log_event(dg.AssetObservation(
                    asset_key=review_stage.asset, partition=batch,
                    metadata={"status": "awaiting review", **_progress_metadata(progress)},
                ))
                return
            status = "complete" if progress.complete else ("deadline passed" if deadline_passed else "pending")
            # the decisions of exactly the sample this run checked (a push in between cannot mix samples)
            gate = HumanReviewGate(review.sampling.strata, review_queue, reviews.slices(batch),
                                   reviews.decisions(batch, sample_version=version))
        output = run_gate(context, gate, rows, versions)
        verdicts, programme_meta = gate.verdicts, {}
        if switching and review.enabled and len(review_queue):
            # each lot's result goes into the ledger, which replays the slice's states in batch order
            ledger = SwitchingLedger(reviews, sampling.allow_reduced)
            programme = ledger.record_results(batch, version, gate.verdicts,
                                              incomplete=status == "deadline passed")
            verdicts = with_programme(gate.verdicts, programme)
            if len(programme):
                programme_meta = _programme_metadata(programme, after=True)
                _log_programme(context, batch, programme, after=True)
        # the per-slice verdicts, stored once beside the table (the handover card reads them; nothing recomputes them)
        store.store.write_bytes(review_stage.asset, batch, slice_verdicts_json(verdicts), SLICE_VERDICTS_FILE)
        agreement_meta = {}
        if review.enabled and len(review_queue):
            report = agreement_report(reviews, batch, version, min_pair_items=review.agreement.min_pair_items)
            store.store.write_bytes(review_stage.asset, batch, json.dumps(report, sort_keys=True).encode("utf-8"), AGREEMENT_FILE)
            agreement_meta = _agreement_metadata(report)
        table = pd.concat([output.value, gate.review_columns(rows).reset_index(drop=True)], axis=1)
        metadata = dict(output.metadata)
        metadata.update(review_status=status, **_verdict_metadata(gate), **programme_meta, **agreement_meta)
        yield dg.Output(table, metadata=metadata)

    return [review_queue, human_review]


def _log_programme(context, batch: str, programme: pd.DataFrame, after: bool) -> None:
    """Log each slice's switch; a DISCONTINUED slice as an error (it must not go unnoticed)."""
    column = "state_leaving" if after else "state_entering"
    for r in programme.itertuples():
        state = getattr(r, column)
        if state == "discontinued":
            context.log.error(f"review programme: slice {r.slice_key} inspection DISCONTINUED (ISO 2859-1 9.4) in batch "
                              f"{batch}: {r.reason if after else r.entering_reason}")
        elif after and r.switched:
            context.log.warning(f"review programme: slice {r.slice_key} {r.state_entering} -> {state}: {r.reason}")
        elif not after and state != "normal":
            context.log.info(f"review programme: slice {r.slice_key} sampled under {state} inspection: {r.entering_reason}")
        if after and r.stale:
            context.log.warning(f"review programme: slice {r.slice_key} of batch {batch} was sampled under "
                                f"{r.severity} inspection but its replayed state is {r.state_entering}: re-materialize "
                                f"review_queue for this batch")


def _withdraw(batch: str, store: StoreResource, handover: HandoverResource, recipe: Recipe, context, held: Sequence[str]) -> None:
    """Remove a held batch's earlier outputs (:func:`synqa_dagster.stages.held_tables`: it would ship, or feed later
    batches' dedup, unreviewed) and handover folder, and rewrite the roll-up without it."""
    removed = [a for a in held if store.store.delete(a, batch)]
    folders = store.handover_folders(handover.base_path)  # local or S3, as the handover assets write them
    if folders.delete(f"batch={batch}"):
        removed.append(f"handover folder {folders.uri(f'batch={batch}')}")
        write_rollup(folders, recipe.card.pretty_name, recipe.card.license, recipe.card.summary or None)
    if removed:
        context.log.info(f"batch {batch} is held for review: withdrew {', '.join(removed)}")


def _verdict_metadata(gate: HumanReviewGate) -> dict:
    """Per-slice verdicts as a markdown table plus the headline counts."""
    v, d = gate.verdicts, gate.decisions
    return {
        "slice_verdicts": dg.MetadataValue.md(preview_markdown(v, list(v.columns), rows=100)),
        "reviewed": int(len(d)),
        "defects": int((d["verdict"] == "reject").sum()) if len(d) else 0,
        "slices_returned_to_synthesis": int(v["rejected"].astype(bool).sum()) if len(v) else 0,
    }


def _empty_slices() -> pd.DataFrame:
    return pd.DataFrame({"slice_key": pd.Series(dtype=str), "lot_size": pd.Series(dtype=int), "sample_size": pd.Series(dtype=int),
                         "acceptance_number": pd.Series(dtype=int), "rejection_number": pd.Series(dtype=int)})


def _empty_decisions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in ("row_id", "slice_key", "verdict", "reason_category", "reason_text", "reviewer_hmac")})
