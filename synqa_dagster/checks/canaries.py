"""``gate_canary_recall``: a gate whose recall on this batch's canaries is under its floor stops the batch."""

import dagster as dg
import pandas as pd

from synqa_dagster import canaries as planted
from synqa_dagster.config import GateConfig
from synqa_dagster.metadata import preview_markdown
from synqa_dagster.stages import CANARIES


def build_canary_checks(gates: GateConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The blocking check on ``gate_canaries`` (severity from ``canaries.severity``, ERROR by default)."""
    config = gates.canaries
    severity = dg.AssetCheckSeverity.ERROR if config.severity == "ERROR" else dg.AssetCheckSeverity.WARN

    @dg.asset_check(
        asset=CANARIES,
        name="gate_canary_recall",
        description=(
            "Every gate catches its planted positives at or above its floor and drops no more planted negatives than "
            f"allowed (floors: {', '.join(f'{g} {v:.0%}' for g, v in config.min_recall.items())}; severity "
            f"{config.severity}). A broken gate — a lost eval set, a wrong threshold, a scorer that no longer "
            "loads its model — fails here before the batch is reviewed or shipped."
        ),
        blocking=True,
        partitions_def=partitions,
    )
    def gate_canary_recall(gate_canaries: pd.DataFrame):
        summary = planted.summarize(gate_canaries, config)
        failing = summary.loc[~summary["passed"].astype(bool), "gate"].tolist() if len(summary) else []
        return dg.AssetCheckResult(
            passed=not failing,
            severity=severity,
            metadata={
                "failing_gates": dg.MetadataValue.json(failing),
                "per_gate": dg.MetadataValue.md(preview_markdown(summary, list(summary.columns), rows=50)),
                **{f"recall_{r.gate}": float(r.recall) for r in summary.itertuples() if pd.notna(r.recall)},
            },
            description=(f"under the floor: {', '.join(failing)}" if failing else "every gate caught its canaries"),
        )

    return [gate_canary_recall]
