"""Batches as time-window partitions, with the cadence taken from the recipe."""

from __future__ import annotations

import dagster as dg

from synqa_dagster.config import BatchSpec

_FORMATS = {"hourly": "%Y-%m-%d-%H:%M", "daily": "%Y-%m-%d", "weekly": "%Y-%m-%d"}
_CRONS = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 1"}


def batch_partitions(spec: BatchSpec) -> dg.TimeWindowPartitionsDefinition:
    """One partition per batch window (default daily, starting at ``spec.start``)."""
    return dg.TimeWindowPartitionsDefinition(
        start=spec.start,
        cron_schedule=_CRONS[spec.cadence],
        fmt=_FORMATS[spec.cadence],
        timezone=spec.timezone,
    )
