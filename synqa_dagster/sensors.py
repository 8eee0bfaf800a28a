"""Sensors: rebuild batches that were generated with an older recipe."""


import dagster as dg

from synqa_dagster.batches import stale_batches


def build_stale_batches_sensor(job_name: str, recipe_hash: str, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    """A sensor that requests one run per batch built with a recipe other than ``recipe_hash``.

    The run key is ``<batch>@<recipe hash>``, so each stale batch is rebuilt exactly once per recipe version.
    Off by default: turn it on in the UI (Automation → stale_batches_sensor) to backfill after a recipe change.
    """

    @dg.sensor(
        name="stale_batches_sensor",
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Rebuilds batches whose generated_candidates were built with a recipe hash other than {recipe_hash}.",
    )
    def stale_batches_sensor(context: dg.SensorEvaluationContext):
        stale = [b for b in stale_batches(context.instance, recipe_hash) if partitions.has_partition_key(b.batch)]
        if not stale:
            return dg.SkipReason(f"every batch is on recipe {recipe_hash}")
        return [
            dg.RunRequest(
                run_key=f"{b.batch}@{recipe_hash}",
                partition_key=b.batch,
                tags={"synqa/reason": f"recipe {b.recipe_hash} -> {recipe_hash}"},
            )
            for b in stale
        ]

    return stale_batches_sensor
