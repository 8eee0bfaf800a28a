"""The one-screen summary the demo prints: where the outputs are, the funnel, reasons, and a few accepted rows."""

from __future__ import annotations

import re
import textwrap

import dagster as dg
import pandas as pd

from synqa_dagster.funnel import funnel_table
from synqa_dagster.stages import CANDIDATES, SEED_CORPUS, batch_tables, gate_assets
from synqa_dagster.storage import TableStore


def _store(defs: dg.Definitions) -> TableStore:
    return defs.resources["store"].store


def batch_summary(defs: dg.Definitions, batch: str, seconds: float, checks: list | None = None,
                  failed_run: str | None = None) -> str:
    """Summary of ``batch`` from what is published (works for partial runs: missing stages are named).

    ``checks``: the run's ``AssetCheckEvaluation`` events, shown with their verdicts and failing probes.
    ``failed_run``: the id of a run that failed — it was rolled back, so the summary says so and describes the
    batch's last committed outputs (if any) as such, never as that run's.
    """
    store = _store(defs)
    if failed_run is not None:
        out = [f"\nbatch {batch}: run {failed_run} FAILED after {seconds:.0f} s and was rolled back — nothing it "
               "wrote was published"]
        if not store.exists(CANDIDATES, batch):
            out.append("the batch has no committed outputs")
            return "\n".join(out)
        source = _latest_run(defs, CANDIDATES, batch)
        out.append(f"the batch still holds the outputs of its last committed run{f' ({source})' if source else ''}:")
        checks = None  # the failed run's checks judged outputs that were thrown away
    else:
        out = [f"\nbatch {batch} finished in {seconds:.0f} s", f"outputs under {store.base}:"]
    for asset in (SEED_CORPUS, CANDIDATES, *batch_tables()):
        out.append(f"  {asset:<22} {store.uri(asset, batch) if store.exists(asset, batch) else '(not materialized)'}")
    if not store.exists("generated_candidates", batch):
        return "\n".join(out)
    candidates = store.read("generated_candidates", batch)
    gen_meta = _latest_metadata(defs, "generated_candidates", batch)
    out.append(f"\ngeneration: {len(candidates)} candidates from {candidates['seed_id'].nunique()} seeds "
               f"({', '.join(f'{k} {v}' for k, v in candidates['technique'].value_counts().sort_index().items())})")
    if gen_meta:
        out.append(f"            {gen_meta.get('rows_per_second', 0):.2f} rows/s, {gen_meta.get('tokens_per_second', 0):.1f} tokens/s, "
                   f"generator {gen_meta.get('generator_id', '')} {str(gen_meta.get('generator_version', ''))[:19]}")
    tables = {g: store.read(a, batch) for g, a in gate_assets().items() if store.exists(a, batch)}
    if tables:
        funnel = funnel_table(len(candidates), tables)
        out.append("\nfunnel:")
        out.append(textwrap.indent(funnel.to_string(index=False), "  "))
    if store.exists("reject_log", batch):
        log = store.read("reject_log", batch)
        if len(log):
            out.append("\nsample reject reasons:")
            for gate, group in log.groupby("gate", sort=False):
                for reason in group["reject_reason"].head(2):
                    out.append(f"  [{gate}] {_short(reason, 110)}")
    if checks:
        out.append("\nchecks:")
        for ev in sorted(checks, key=lambda e: e.check_name):
            verdict = "passed" if ev.passed else f"FAILED ({ev.severity.value})"
            meta = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
            detail = ""
            if not ev.passed and meta.get("failing_probes"):
                detail = f" — failing probes: {', '.join(map(str, meta['failing_probes']))}"
            if meta.get("verdict"):
                detail += f" [{meta['verdict']}]"
            out.append(f"  {ev.check_name:<32} {verdict}{detail}")
    if store.exists("accepted_dataset", batch):
        accepted = store.read("accepted_dataset", batch)
        out.append(f"\naccepted: {len(accepted)} of {len(candidates)} ({len(accepted) / max(1, len(candidates)):.0%}); e.g.")
        for row in accepted.head(3).itertuples():
            out.append(f"  [{row.technique}] Q: {_short(row.instruction, 90)}")
            out.append(f"  {'':{len(row.technique) + 2}} A: {_short(row.response, 90)}")
    out.extend(_review_lines(defs, batch))
    out.extend(_handover_lines(defs, batch))
    out.append("\nopen the lineage in the Dagster UI: make ui  →  http://127.0.0.1:3000")
    return "\n".join(out)


def _review_lines(defs: dg.Definitions, batch: str) -> list[str]:
    """Where the batch's human review stands and how to do it."""
    try:
        progress = defs.resources["review_store"].store().progress(batch)
    except Exception:  # no sample pushed for this batch (review disabled, or the run stopped before review_queue)
        return []
    return [
        f"\nhuman review: {progress.decided}/{progress.total} sampled rows decided "
        f"({progress.accepted} accepted, {progress.rejected} rejected){' — complete' if progress.complete else ''}",
        "  review in the browser: .venv/bin/synqa review add-reviewer YOUR_NAME  (prints a sign-in token), then make review",
        f"  then apply the decisions: .venv/bin/synqa apply-review --batch {batch}  (or let review_decisions_sensor do it under make ui)",
    ]


def _handover_lines(defs: dg.Definitions, batch: str) -> list[str]:
    """The batch's handover folder and what `synqa verify` says about it."""
    from synqa_dagster.lineage.verify import verify_location

    folders = defs.resources["store"].handover_folders(defs.resources["handover"].base_path)
    name = f"batch={batch}"
    if not folders.complete(name):
        return []
    folder = folders.uri(name)
    report = verify_location(folder, expected_batch=batch, client=getattr(getattr(folders, "objects", None), "client", None))
    state = f"OK — {report.row_count} lineage rows, Merkle root {str(report.merkle_root)[:16]}…, key {report.key_id}" if report.ok \
        else f"{len(report.problems)} PROBLEM(S)"
    return [f"\nhandover folder: {folder}", f"  synqa verify: {state}", f"  dataset card: {folder.rstrip('/')}/README.md"]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _short(text: object, width: int) -> str:
    """One line of row text for the terminal: control characters (escape sequences) become ``?``."""
    s = " ".join(_CONTROL.sub("?", str(text)).split())
    return s if len(s) <= width else s[: width - 1] + "…"


def _latest_metadata(defs: dg.Definitions, asset: str, batch: str) -> dict:
    """The metadata of the materialization whose output is published (the newest by a committed run)."""
    from synqa_dagster.batches import latest_committed_record

    record = latest_committed_record(dg.DagsterInstance.get(), asset, batch)
    meta = record.asset_materialization.metadata if record is not None else {}
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def _latest_run(defs: dg.Definitions, asset: str, batch: str) -> str | None:
    """The id of the committed run whose ``asset`` output for ``batch`` is published."""
    from synqa_dagster.batches import latest_committed_record

    record = latest_committed_record(dg.DagsterInstance.get(), asset, batch)
    return record.run_id if record is not None else None
