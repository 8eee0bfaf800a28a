"""Human review gate: the pure gate, the review_decisions sensor against a real SQLite review store, and the
review_queue / human_review assets in a real Dagster instance."""

from __future__ import annotations

import json
import warnings

import dagster as dg
import pandas as pd
import pytest

from synqa_dagster.gates.human_review import RETURNED_TO_SYNTHESIS, HumanReviewGate
from synqa_dagster.resources import ReviewStoreResource
from synqa_dagster.review.sampling import ReviewSamplingConfig, draw_sample
from synqa_dagster.review.store import ReviewStore
from synqa_dagster.sensors import REVIEW_SENSOR, build_review_decisions_sensor

warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def batch_rows(n_per_slice: int = 12) -> pd.DataFrame:
    rows = []
    for technique in ("self_instruct", "magpie_single_turn"):
        for i in range(n_per_slice):
            rows.append({"row_id": f"{technique[:4]}-{i:03d}", "technique": technique, "intent": "billing.refund",
                         "locale": "en-GB", "text": f"row {i} of {technique}", "instruction": f"q{i}", "response": f"a{i}"})
    return pd.DataFrame(rows)


def config(aql: float = 4.0) -> ReviewSamplingConfig:
    return ReviewSamplingConfig.model_validate(
        {"risk_tier": "t", "strata": ["technique"], "tiers": {"t": {"kind": "iso2859", "inspection_level": "II", "aql": aql}}}
    )


def decide(sample: pd.DataFrame, rejects: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"row_id": r, "slice_key": k, "verdict": "reject" if r in rejects else "accept",
          "reason_category": rejects.get(r), "reason_text": "wrong amount" if r in rejects else "",
          "reviewer_hmac": "hmac-sha256:abc"} for r, k in zip(sample["row_id"], sample["slice_key"])]
    )


def test_reviewer_reject_drops_the_row_and_a_slice_over_its_acceptance_number_is_returned_to_synthesis():
    rows = batch_rows()
    draw = draw_sample(rows, config(), "2026-11-20")
    slices = draw.slices.set_index("slice_key")
    assert (slices["acceptance_number"] == 0).all(), "lots of 12 at AQL 4.0 give c = 0 (ISO 2859-1 code B/C)"
    magpie = draw.rows.loc[draw.rows["slice_key"] == "magpie_single_turn", "row_id"].iloc[0]
    gate = HumanReviewGate(["technique"], draw.rows, draw.slices, decide(draw.rows, {magpie: "factual_error"}))
    result = gate.evaluate(rows)
    dropped = rows.loc[~result.keep, "row_id"].tolist()
    # The whole magpie slice goes back (1 defect > c = 0); the self_instruct slice ships.
    assert sorted(dropped) == sorted(rows.loc[rows["technique"] == "magpie_single_turn", "row_id"])
    by_id = dict(zip(rows["row_id"], zip(result.category, result.reason)))
    assert by_id[magpie][0] == "human_factual_error" and "wrong amount" in by_id[magpie][1]
    assert "slice magpie_single_turn defect rate 1/" in by_id[magpie][1], "the slice verdict is on every row of the slice"
    other = next(r for r in dropped if r != magpie)
    n = int(slices.loc["magpie_single_turn", "sample_size"])
    assert by_id[other] == (RETURNED_TO_SYNTHESIS, f"human review: slice magpie_single_turn defect rate 1/{n} > AQL plan 0/{n}")
    lineage = gate.review_columns(rows).assign(row_id=rows["row_id"]).set_index("row_id")
    assert lineage.loc[magpie, "reviewer_id_hashed"] == "hmac-sha256:abc"
    assert lineage["review_sampled"].sum() == len(draw.rows)


def test_a_slice_within_its_acceptance_number_ships_except_the_rejected_rows():
    rows = batch_rows(60)  # lots of 60 at AQL 4.0 level II: code E, n = 13, c = 1
    draw = draw_sample(rows, config(), "2026-11-20")
    assert set(draw.slices["acceptance_number"]) == {1}
    first = draw.rows["row_id"].iloc[0]
    gate = HumanReviewGate(["technique"], draw.rows, draw.slices, decide(draw.rows, {first: "unsafe"}))
    result = gate.evaluate(rows)
    assert rows.loc[~result.keep, "row_id"].tolist() == [first]


def test_unreviewed_rows_pass_while_review_is_pending():
    rows = batch_rows()
    draw = draw_sample(rows, config(), "2026-11-20")
    gate = HumanReviewGate(["technique"], draw.rows, draw.slices, decide(draw.rows.iloc[0:0], {}))
    assert gate.evaluate(rows).keep.all()


def _sensor_context(instance, url: str, cursor: str | None = None):
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources={"review_store": ReviewStoreResource(url=url)})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A real review store: SQLite in tmp_path, or a fresh schema on the session's real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    from tests.postgres_support import fresh_schema_url

    return fresh_schema_url(request.getfixturevalue("postgres_url"))


def test_sensor_requests_exactly_one_run_per_completed_batch(store_url):
    url = store_url
    store = ReviewStore.from_url(url)
    partitions = dg.DailyPartitionsDefinition(start_date="2026-11-01")
    sensor = build_review_decisions_sensor("synqa_review_job", partitions)
    assert sensor.name == REVIEW_SENSOR
    draw = draw_sample(batch_rows(), config(), "2026-11-20")
    store.push_sample("2026-11-20", "v1", draw.rows[["row_id", "slice_key", "sample_position", "text"]], draw.slices)
    with dg.instance_for_test() as instance:
        result = sensor(_sensor_context(instance, url))
        assert result.run_requests == [] and len(result.asset_events) == 1, "progress is observed, no run yet"
        assert result.asset_events[0].metadata["review_decided"].value == 0
        cursor = result.cursor
        for i, (row_id, key) in enumerate(zip(draw.rows["row_id"], draw.rows["slice_key"])):
            verdict = "reject" if i == 0 else "accept"
            status = store.record_decision("2026-11-20", row_id, sample_version="v1", reviewer_hmac="hmac-sha256:r1",
                                           verdict=verdict, reason_category="unsafe" if i == 0 else None)
            assert status == "recorded"
            if i == 0:  # partial progress: observation only
                partial = sensor(_sensor_context(instance, url, cursor))
                assert partial.run_requests == [] and partial.asset_events
                cursor = partial.cursor
        done = sensor(_sensor_context(instance, url, cursor))
        assert [r.partition_key for r in done.run_requests] == ["2026-11-20"]
        again = sensor(_sensor_context(instance, url, done.cursor))
        assert isinstance(again, dg.SkipReason) or not again.run_requests, "a completed batch triggers once"
        # A fresh cursor (e.g. the sensor was reset) gives the same run key, so Dagster still runs it only once.
        replay = sensor(_sensor_context(instance, url))
        assert replay.run_requests[0].run_key == done.run_requests[0].run_key
        assert json.loads(done.cursor)["2026-11-20"]["launched"] == done.run_requests[0].run_key


def test_the_deadline_counts_from_the_push_when_the_window_is_long_past():
    import datetime as dt

    from synqa_dagster.assets.review import review_deadline

    utc = dt.timezone.utc
    window_end = dt.datetime(2026, 11, 2, tzinfo=utc)
    now = dt.datetime(2026, 11, 21, 12, tzinfo=utc)
    assert review_deadline(window_end, 72, now) == now + dt.timedelta(hours=72)  # a rebuilt old batch
    assert review_deadline(now + dt.timedelta(hours=1), 72, now) == now + dt.timedelta(hours=73)  # a fresh batch
    assert review_deadline(window_end, None, now) is None


def test_a_held_batch_materializes_nothing_and_withdraws_what_an_earlier_run_shipped(tmp_path, monkeypatch):
    """block_until_complete: human_review yields no output (downstream is skipped) and the batch's earlier
    accepted split, reject log, dedup index and handover folder are removed, so nothing unreviewed ships."""
    import yaml

    from synqa_dagster.definitions import build_definitions
    from synqa_dagster.storage import TableStore
    from tests.conftest import REPO_ROOT

    gates = yaml.safe_load((REPO_ROOT / "gates" / "default.yaml").read_text())
    gates["review"]["block_until_complete"] = True
    gates_path = tmp_path / "gates.yaml"
    gates_path.write_text(yaml.safe_dump(gates))
    storage, handover, url = tmp_path / "storage", tmp_path / "handover", f"sqlite:///{tmp_path / 'review.db'}"
    defs = build_definitions(None, str(gates_path), str(storage), url, str(handover))
    batch = "2026-11-20"
    rows = batch_rows()
    tables = TableStore(str(storage))
    from synqa_dagster.stages import last_automatic

    last = last_automatic()  # the stage whose survivors the review reads
    decided = rows.assign(kept=True, gate=last.name, reject_category=pd.Series([None] * len(rows), dtype="string"),
                          reject_reason=pd.Series([None] * len(rows), dtype="string"), gate_score=float("nan"),
                          **{f"score_{last.name}": 0.1})
    tables.write(last.asset, batch, decided)
    draw = draw_sample(rows, load_sampling(gates_path), batch)
    sample = draw.rows.assign(sample_version="v1").merge(draw.slices, on="slice_key")
    tables.write("review_queue", batch, sample)
    store = ReviewStore.from_url(url)
    store.push_sample(batch, "v1", draw.rows[["row_id", "slice_key", "sample_position", "text"]], draw.slices)
    for old in ("accepted_dataset", "reject_log", "dedup_index", "human_review"):
        tables.write(old, batch, rows)
    (handover / f"batch={batch}").mkdir(parents=True)
    (handover / f"batch={batch}" / "card_facts.json").write_text("{}")
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("synqa_review_job")
        result = job.execute_in_process(partition_key=batch, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        assert not result.get_asset_materialization_events(), "a held batch materializes nothing downstream"
        for old in ("accepted_dataset", "reject_log", "dedup_index", "human_review"):
            assert not tables.exists(old, batch), old
        assert not (handover / f"batch={batch}").exists()
        observed = instance.fetch_observations(dg.AssetKey("human_review"), limit=1).records
        assert observed and observed[0].asset_observation.metadata["status"].value == "awaiting review"


def load_sampling(gates_path):
    from synqa_dagster.config import load_gate_config

    return load_gate_config(gates_path).review.sampling
