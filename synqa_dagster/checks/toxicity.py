"""Batch-level toxicity escalation: a slice (intent, locale) whose toxic drop rate is over its bar."""


import dagster as dg
import pandas as pd

from synqa_dagster.metadata import preview_markdown
from synqa_dagster.stages import stage
from synqa_dagster.config import GateConfig
from synqa_dagster.gates.base import result_from_decisions
from synqa_dagster.gates.toxicity import slice_toxicity_rates


def build_toxicity_checks(gates: GateConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """``toxicity_slice_escalation`` on ``toxicity_gate`` (WARN by default, ERROR from the gate config)."""
    config = gates.toxicity
    severity = dg.AssetCheckSeverity.ERROR if config.escalation_severity == "ERROR" else dg.AssetCheckSeverity.WARN

    @dg.asset_check(
        asset=stage("toxicity").asset,
        name="toxicity_slice_escalation",
        description=(
            f"Escalates the batch when a slice ({', '.join(config.slice_columns)}) of at least {config.slice_min_rows} "
            f"rows has a toxic drop rate over {config.slice_max_rate:.0%} (severity {config.escalation_severity})."
        ),
        blocking=True,
        partitions_def=partitions,
    )
    def toxicity_slice_escalation(toxicity_gate: pd.DataFrame):
        rates = slice_toxicity_rates(toxicity_gate, result_from_decisions(toxicity_gate, "toxicity"), config)
        over = rates.loc[rates["over_bar"]]
        cols = list(config.slice_columns) + ["n", "dropped", "rate", "bar", "over_bar"]
        return dg.AssetCheckResult(
            passed=over.empty,
            severity=severity,
            metadata={
                "slices": len(rates),
                "slices_over_bar": len(over),
                "bar": config.slice_max_rate,
                "batch_toxic_rate": float(rates["dropped"].sum() / max(1, rates["n"].sum())),
                "slice_rates": dg.MetadataValue.md(preview_markdown(rates, cols, rows=20)),
            },
        )

    return [toxicity_slice_escalation]
