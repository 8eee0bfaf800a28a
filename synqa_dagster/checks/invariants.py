"""Invariant checks on every batch's accepted split (ERROR, blocking: a violation stops everything downstream).

* ``every_candidate_accounted_once`` — each candidate is in exactly one of accepted / reject log, no duplicates.
* ``no_eval_ngram_in_accepted`` — no exact n-gram (default 13) of any named eval item in the accepted split.
"""


import dagster as dg
import pandas as pd

from synqa_dagster.metadata import preview_markdown
from synqa_dagster.config import GateConfig
from synqa_dagster.gates.contamination import exact_ngram_hits
from synqa_dagster.resources import EmbedderResource, ScorerResource


def accounting_violations(candidates: pd.Series, accepted: pd.Series, rejected: pd.Series) -> dict[str, list[str]]:
    """Row ids breaking the accounting invariant, by kind (all lists empty when the funnel adds up)."""
    cand, acc, rej = set(candidates), set(accepted), set(rejected)
    return {
        "accepted_and_rejected": sorted(acc & rej),
        "unaccounted": sorted(cand - acc - rej),
        "unknown_rows": sorted((acc | rej) - cand),
        "duplicated_in_accepted": sorted(accepted[accepted.duplicated()].unique()),
        "duplicated_in_reject_log": sorted(rejected[rejected.duplicated()].unique()),
        "duplicated_candidates": sorted(candidates[candidates.duplicated()].unique()),
    }


def build_invariant_checks(gates: GateConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The invariant checks on ``accepted_dataset``."""

    @dg.asset_check(
        asset="accepted_dataset",
        name="every_candidate_accounted_once",
        description=(
            "Every candidate is accepted or rejected, exactly once; no row is both; and the batch is not empty "
            "(no candidates, or none accepted, fails: an empty batch must not pass as a success)."
        ),
        blocking=True,
        partitions_def=partitions,
        additional_ins={"generated_candidates": dg.AssetIn("generated_candidates"), "reject_log": dg.AssetIn("reject_log")},
    )
    def every_candidate_accounted_once(accepted_dataset: pd.DataFrame, generated_candidates: pd.DataFrame, reject_log: pd.DataFrame):
        empty = pd.Series([], dtype=object)
        violations = accounting_violations(
            generated_candidates["row_id"],
            accepted_dataset["row_id"] if len(accepted_dataset) else empty,
            reject_log["row_id"] if len(reject_log) else empty,
        )
        bad = {k: v for k, v in violations.items() if v}
        if len(generated_candidates) == 0:
            bad["no_candidates"] = ["generation produced no rows for this batch"]
        elif len(accepted_dataset) == 0:
            bad["nothing_accepted"] = [f"all {len(generated_candidates)} candidates were rejected: see reject_log"]
        return dg.AssetCheckResult(
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "candidates": len(generated_candidates),
                "accepted": len(accepted_dataset),
                "rejected": len(reject_log),
                "violations": dg.MetadataValue.json({k: v[:20] for k, v in bad.items()}),
            },
        )

    @dg.asset_check(
        asset="accepted_dataset",
        name="no_eval_ngram_in_accepted",
        description=f"No exact {gates.contamination.ngram_size}-gram of a named eval item appears in the accepted split.",
        blocking=True,
        partitions_def=partitions,
    )
    def no_eval_ngram_in_accepted(accepted_dataset: pd.DataFrame, scorers: ScorerResource, embedder: EmbedderResource):
        gate = scorers.gate("contamination", gates, embedder)
        texts = accepted_dataset["text"].tolist() if len(accepted_dataset) else []
        hits = exact_ngram_hits(texts, gate.index)
        if len(hits):
            hits = hits.assign(row_id=[accepted_dataset["row_id"].iloc[int(i)] for i in hits["row"]])
        return dg.AssetCheckResult(
            passed=len(hits) == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "accepted_rows": len(texts),
                "eval_sets": [s.name for s in gates.contamination.eval_sets],
                "ngram_size": gates.contamination.ngram_size,
                "hits": len(hits),
                "hit_preview": dg.MetadataValue.md(preview_markdown(hits, ["row_id", "eval_set", "item_id", "shared"])),
            },
        )

    return [every_candidate_accounted_once, no_eval_ngram_in_accepted]
