"""deploy/postgres/dagster.yaml on a real PostgreSQL server: one instance shared by two "machines".

Machine A is a DagsterInstance built the way every synqa process builds it: DAGSTER_HOME = a folder holding a copy
of the shipped yaml, ``SYNQA_DAGSTER_PG_*`` = the test server (a fresh schema, chosen with libpq's ``PGOPTIONS``). It materializes part of the real
synqa funnel (``seed_corpus`` → ``pii_gate`` → ``quality_gate`` from ``build_definitions``, over a stored candidates table of
real customer messages, so no LLM runs) for two batches, queues a third batch through its run coordinator, and
records schedule and sensor state and ticks. Machine B is a second DagsterInstance with its own DAGSTER_HOME (its
own copy of the yaml, same URL); it must see all of it: the runs, their event logs, the materializations per
partition with their code versions, the queued run, the instigator states and ticks. The tables are then looked
up in PostgreSQL itself with psycopg. Nothing is mocked; a yaml that is not PostgreSQL storage, or reads another
variable, fails here; so does the same instance given a plain ``postgresql://`` URL (why the yaml pins the driver).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import dagster as dg
import pandas as pd
import psycopg
import pytest
import yaml
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorTick,
    InstigatorType,
    ScheduleInstigatorData,
    SensorInstigatorData,
    TickData,
    TickStatus,
)
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from synqa_dagster.batches import latest_batch_versions
from synqa_dagster.config import load_recipe
from synqa_dagster.definitions import BATCH_JOB, build_definitions
from synqa_dagster.storage import TableStore
from tests.conftest import REPO_ROOT, write_recipe

YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
PG_ENV = ("SYNQA_DAGSTER_PG_HOST", "SYNQA_DAGSTER_PG_PORT", "SYNQA_DAGSTER_PG_DB", "SYNQA_DAGSTER_PG_USER",
          "SYNQA_DAGSTER_PG_PASSWORD")
BATCHES = ["2026-11-02", "2026-11-03"]
QUEUED_BATCH = "2026-11-04"
SELECTION = ["seed_corpus", "pii_gate", "quality_gate"]


def _home(path: Path) -> Path:
    """A machine's DAGSTER_HOME: a folder holding a copy of the shipped yaml and nothing else."""
    path.mkdir()
    shutil.copy(YAML, path / "dagster.yaml")
    return path


def _connect_env(monkeypatch, url: str) -> None:
    """Give the yaml's variables the parts of a test URL, and its schema through libpq's PGOPTIONS."""
    parts = urlsplit(url)
    values = dict(zip(PG_ENV, (parts.hostname, str(parts.port), parts.path.lstrip("/"), unquote(parts.username),
                               unquote(parts.password or ""))))
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PGOPTIONS", dict(parse_qsl(parts.query))["options"])


def _candidates(batch: str, offset: int) -> pd.DataFrame:
    """A stored ``generated_candidates`` table: held-out real customer messages with a fixed answer (no LLM)."""
    lines = (REPO_ROOT / "data" / "demo" / "reference_customers.jsonl").read_text().splitlines()[offset:offset + 12]
    rows = []
    for i, m in enumerate(json.loads(line) for line in lines):
        answer = f"Thanks for getting in touch. I have looked into request {i} and will update you within two working days."
        rows.append({
            "row_id": f"{batch}-row{i:03d}", "batch": batch, "seed_id": f"s{i % 3}", "intent": m["label"],
            "taxonomy_version": "v2", "locale": m["locale"], "technique": "self_instruct", "instruction": m["text"],
            "response": answer,
            "conversation": json.dumps([{"role": "user", "content": m["text"]}, {"role": "assistant", "content": answer}]),
            "text": m["text"] + "\n" + answer, "n_turns": 1, "generator_id": "test", "generator_version": "0",
            "prompt_template_id": "p", "response_template_id": "r", "sampling": "{}", "recipe_hash": "h",
            "created_at": batch + "T00:00:00+00:00",
        })
    return pd.DataFrame(rows)


def _schema(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["options"].removeprefix("-csearch_path=")


REPOSITORY = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("synqa_dagster.definitions"), "__repository__")


def _origin(name: str) -> RemoteInstigatorOrigin:
    """Where the daemon would say a schedule/sensor comes from: the synqa code location's repository."""
    return RemoteInstigatorOrigin(REPOSITORY, name)


def test_two_machines_share_one_postgres_instance(tmp_path, monkeypatch, postgres_schema_url):
    _connect_env(monkeypatch, postgres_schema_url)
    monkeypatch.setenv("SYNQA_HOME", str(tmp_path / "synqa_home"))
    storage = tmp_path / "storage"  # the Parquet tables: a shared store (S3 in production), not the instance
    monkeypatch.setenv("SYNQA_STORAGE", str(storage))
    home_a, home_b = _home(tmp_path / "machine_a"), _home(tmp_path / "machine_b")
    recipe_path = write_recipe(tmp_path / "recipe.yaml")
    recipe_hash = load_recipe(recipe_path).content_hash()
    defs = build_definitions(str(recipe_path), storage_base=str(storage), handover_base=str(tmp_path / "handover"))
    for i, batch in enumerate(BATCHES):
        TableStore(str(storage)).write("generated_candidates", batch, _candidates(batch, 300 + 12 * i))

    # ---------------------------------------------------------------- machine A: the instance as synqa builds it
    monkeypatch.setenv("DAGSTER_HOME", str(home_a))
    with dg.DagsterInstance.get() as a:
        assert isinstance(a.run_storage, PostgresRunStorage), type(a.run_storage)
        assert isinstance(a.event_log_storage, PostgresEventLogStorage), type(a.event_log_storage)
        assert isinstance(a.schedule_storage, PostgresScheduleStorage), type(a.schedule_storage)
        assert isinstance(a.run_coordinator, QueuedRunCoordinator)
        assert a.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert not a.telemetry_enabled
        # the per-machine scratch stays under this machine's DAGSTER_HOME (absolute), never under the cwd
        assert Path(a.root_directory).resolve() == home_a.resolve()
        assert Path(a.storage_directory()).resolve().is_relative_to(home_a.resolve())

        run_ids = {}
        for batch in BATCHES:
            result = dg.materialize(
                [*defs.assets, *defs.asset_checks], selection=SELECTION, partition_key=batch,
                resources=defs.resources, instance=a, raise_on_error=False, tags={"synqa/machine": "a"},
            )
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            run_ids[batch] = result.run_id

        # a batch queued on A (what the webserver / a backfill does), for the daemon on any machine to dequeue
        job = defs.resolve_job_def(BATCH_JOB)
        queued = a.create_run_for_job(job, tags={"dagster/partition": QUEUED_BATCH, "synqa/machine": "a"},
                                      remote_job_origin=RemoteJobOrigin(REPOSITORY, BATCH_JOB))
        a.run_coordinator.submit_run(SubmitRunContext(queued, workspace=None))  # type: ignore[arg-type]

        # schedule and sensor state and ticks, as the daemon writes them
        schedule = InstigatorState(
            _origin("synqa_batch_schedule"), InstigatorType.SCHEDULE, InstigatorStatus.RUNNING,
            ScheduleInstigatorData(cron_schedule="5 0 * * *", start_timestamp=1_700_000_000.0),
        )
        sensor = InstigatorState(
            _origin("stale_batches_sensor"), InstigatorType.SENSOR, InstigatorStatus.RUNNING,
            SensorInstigatorData(last_tick_timestamp=1_700_000_100.0, cursor="2026-11-03"),
        )
        a.add_instigator_state(schedule)
        a.add_instigator_state(sensor)
        a.create_tick(TickData(
            instigator_origin_id=schedule.instigator_origin_id, instigator_name="synqa_batch_schedule",
            instigator_type=InstigatorType.SCHEDULE, status=TickStatus.SUCCESS, timestamp=1_700_000_000.0,
            selector_id=schedule.selector_id, run_ids=[run_ids[BATCHES[1]]], run_keys=[BATCHES[1]],
        ))
        a.create_tick(TickData(
            instigator_origin_id=sensor.instigator_origin_id, instigator_name="stale_batches_sensor",
            instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED, timestamp=1_700_000_100.0,
            selector_id=sensor.selector_id, skip_reason=f"every batch is on recipe {recipe_hash}",
        ))

    # ---------------------------------------------------------------- machine B: a second instance, same database
    monkeypatch.setenv("DAGSTER_HOME", str(home_b))
    with dg.DagsterInstance.get() as b:
        assert Path(b.root_directory).resolve() == home_b.resolve()
        # the runs, with their tags and status
        for batch, run_id in run_ids.items():
            run = b.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, (batch, run)
            assert run.tags["dagster/partition"] == batch and run.tags["synqa/machine"] == "a"
        by_partition = b.get_runs(dg.RunsFilter(tags={"dagster/partition": BATCHES[0]}))
        assert [r.run_id for r in by_partition] == [run_ids[BATCHES[0]]]
        # each run's event log, start to success, with one materialization per selected asset
        for batch, run_id in run_ids.items():
            events = [r.event_log_entry.dagster_event for r in b.get_records_for_run(run_id).records
                      if r.event_log_entry.dagster_event is not None]
            types = [e.event_type for e in events]
            assert dg.DagsterEventType.RUN_START in types and types[-1] == dg.DagsterEventType.RUN_SUCCESS, types
            mats = [e for e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
            assert sorted(e.asset_key.to_user_string() for e in mats) == sorted(SELECTION)
            assert {e.partition for e in mats} == {batch}
        # the materializations per partition, through the asset APIs (what the UI, `synqa stale` and sensors read)
        for asset in SELECTION:
            key = dg.AssetKey(asset)
            assert b.get_materialized_partitions(key) == set(BATCHES), asset
            latest = latest_batch_versions(b, key)  # synqa's own reader of the event log
            assert sorted(latest) == BATCHES
            assert {v.run_id for v in latest.values()} == set(run_ids.values())
            if asset == "seed_corpus":
                assert {v.recipe_hash for v in latest.values()} == {recipe_hash}
        quality = b.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("quality_gate"), asset_partitions=[BATCHES[1]]), limit=10)
        [record] = quality.records
        assert record.run_id == run_ids[BATCHES[1]]
        assert record.asset_materialization.metadata  # the gate's row counts travel with the event
        # the queued batch, visible to a daemon on this machine
        [waiting] = b.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
        assert waiting.run_id == queued.run_id and waiting.tags["dagster/partition"] == QUEUED_BATCH
        assert waiting.job_name == BATCH_JOB
        # schedule and sensor state and their ticks
        states = {s.name: s for s in b.all_instigator_state()}
        assert states["synqa_batch_schedule"].status == InstigatorStatus.RUNNING
        assert states["synqa_batch_schedule"].instigator_type == InstigatorType.SCHEDULE
        assert states["stale_batches_sensor"].instigator_data.cursor == "2026-11-03"
        [tick] = b.get_ticks(schedule.instigator_origin_id, schedule.selector_id)
        assert isinstance(tick, InstigatorTick) and tick.status == TickStatus.SUCCESS
        assert tick.run_ids == [run_ids[BATCHES[1]]]
        [tick] = b.get_ticks(sensor.instigator_origin_id, sensor.selector_id)
        assert tick.status == TickStatus.SKIPPED and recipe_hash in tick.skip_reason
        # B writes too (the daemon may run on any machine): stopping the sensor lands in the shared table
        b.update_instigator_state(states["stale_batches_sensor"].with_status(InstigatorStatus.STOPPED))

    # ---------------------------------------------------------------- and it all lives in PostgreSQL
    schema = _schema(postgres_schema_url)
    with psycopg.connect(postgres_schema_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
        assert {"runs", "run_tags", "event_logs", "asset_keys", "jobs", "job_ticks", "instigators",
                "alembic_version"} <= tables, sorted(tables)
        n_runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        assert n_runs == len(BATCHES) + 1
        partitions = conn.execute(
            "SELECT asset_key, partition, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "GROUP BY asset_key, partition ORDER BY 1, 2").fetchall()
        assert [(json.loads(k)[0], p, n) for k, p, n in partitions] == [
            (asset, batch, 1) for asset in sorted(SELECTION) for batch in BATCHES]
        stopped = conn.execute("SELECT status FROM jobs WHERE job_origin_id = %s",
                               (sensor.instigator_origin_id,)).fetchone()
        assert stopped == ("STOPPED",)
    # and nothing went to the local default: no SQLite files under either DAGSTER_HOME
    assert not [p for home in (home_a, home_b) for p in home.rglob("*.db")]


def test_the_instance_does_not_start_without_its_connection_variables(tmp_path, monkeypatch, postgres_schema_url):
    """Each connection field is read from the environment; a missing one stops the instance (no SQLite fallback)."""
    _connect_env(monkeypatch, postgres_schema_url)
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path / "home")))
    for missing in PG_ENV:
        with monkeypatch.context() as m:
            m.delenv(missing)
            with pytest.raises(Exception, match=missing):
                dg.DagsterInstance.get()


def test_a_plain_postgresql_url_breaks_dagster_postgres(tmp_path, monkeypatch, postgres_schema_url):
    """Why the yaml pins ``scheme: postgresql+psycopg2``: the same yaml given ``postgres_url: postgresql://...``
    gets SQLAlchemy 2.1's default driver, psycopg 3, and dagster-postgres 0.29.27 fails on the first run event.
    If this starts passing (a fixed dagster-postgres), a single-URL yaml becomes an option."""
    config = yaml.safe_load(YAML.read_text())
    config["storage"]["postgres"] = {"postgres_url": {"env": "SYNQA_TEST_PLAIN_URL"}}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("SYNQA_TEST_PLAIN_URL", postgres_schema_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
        with pytest.raises(Exception, match="NOTIFY run_events"):
            instance.report_engine_event("hello", run)
