"""Sensors: rebuild batches that were generated with an older recipe."""


import dagster as dg

from synqa_dagster.batches import stale_batches
from synqa_dagster.resources import ReviewStoreResource


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


REVIEW_SENSOR = "review_decisions_sensor"


def review_run_key(batch: str, sample_version: str, final_reason: str) -> str:
    """Idempotent run key: at most one run per batch sample when it completes and one when its deadline passes."""
    return f"review:{batch}:{sample_version}:{final_reason}"


IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
)


def batch_in_flight(instance: dg.DagsterInstance, batch: str) -> bool:
    """Whether a run for this batch partition is queued or running (the review job must not race it)."""
    return bool(instance.get_run_ids(dg.RunsFilter(statuses=list(IN_FLIGHT), tags={"dagster/partition": batch}), limit=1))


def build_review_decisions_sensor(job_name: str, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    """A sensor that watches the review store and finishes batches whose review is done.

    For every batch whose current sample is complete (or whose deadline has passed) it requests one run of
    ``job_name`` (``human_review`` and everything downstream) for that batch partition; run keys and the cursor
    make it fire exactly once per completed sample (and once at its deadline, if that comes first). A batch with
    a run still queued or in progress is left for a later tick, so the review job never races the batch run. On every tick it also records review progress as an ``AssetObservation`` on the batch's
    ``review_queue`` partition, so the Dagster UI shows how far reviewers are (only when progress changed).
    """

    @dg.sensor(
        name=REVIEW_SENSOR,
        job_name=job_name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Launches human_review and everything downstream for a batch once its review sample is complete or its "
            "deadline has passed (once per batch and set of decisions); records review progress on review_queue."
        ),
    )
    def review_decisions_sensor(context: dg.SensorEvaluationContext, review_store: ReviewStoreResource):
        import datetime as dt
        import json

        store = review_store.store()
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = dt.datetime.now(dt.timezone.utc)
        runs, events = [], []
        for progress in store.all_progress():
            if not partitions.has_partition_key(progress.batch):
                continue
            state = f"{progress.sample_version}:{progress.decided}:{progress.decisions_digest[:16]}"
            seen = cursor.get(progress.batch, {})
            if seen.get("progress") != state:
                events.append(dg.AssetObservation(
                    asset_key="review_queue",
                    partition=progress.batch,
                    metadata={
                        "review_decided": progress.decided, "review_total": progress.total,
                        "review_accepted": progress.accepted, "review_rejected": progress.rejected,
                        "review_complete": progress.complete, "sample_version": progress.sample_version,
                    },
                ))
            final = "complete" if progress.complete else (
                "deadline" if progress.deadline is not None and now >= progress.deadline and progress.total > 0 else None
            )
            key = review_run_key(progress.batch, progress.sample_version, final) if final else None
            if key and seen.get("launched") != key and batch_in_flight(context.instance, progress.batch):
                key = seen.get("launched")  # try again on a later tick, once the batch's own run has finished
            elif key and seen.get("launched") != key:
                runs.append(dg.RunRequest(
                    run_key=key,
                    partition_key=progress.batch,
                    tags={"synqa/reason": f"human review {final}: {progress.decided}/{progress.total} decided"},
                ))
            cursor[progress.batch] = {"progress": state, "launched": key or seen.get("launched")}
        if not runs and not events:
            return dg.SkipReason("no review progress since the last tick")
        return dg.SensorResult(run_requests=runs, asset_events=events, cursor=json.dumps(cursor, sort_keys=True))

    return review_decisions_sensor
