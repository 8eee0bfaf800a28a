"""The row-stage engine (synqa_dagster.engine): the same bytes whichever executor ran a stage.

Real parts only: real gates from the registry, real datatrove executors (LocalPipelineExecutor worker processes,
RayPipelineExecutor on a real local Ray cluster started by ``tests/ray_support.py``), real Parquet via TableStore.
Rows are real sentences (the benchmark's generator over the shared data sets), a few thousand so the test stays lean.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synqa_dagster.config import ExecutorConfig, GateConfig, load_gate_config
from synqa_dagster.engine import EngineError, run_stage
from synqa_dagster.engine.shards import shard_bounds
from synqa_dagster.gates.base import Gate, GateResult, decision_table
from synqa_dagster.gates.dedup import DedupGate
from synqa_dagster.stages import GateStage
from synqa_dagster.storage import TableStore

N = 3000


@pytest.fixture(scope="module")
def rows(shared_data) -> pd.DataFrame:
    from benchmarks.bench_gates import build_rows

    frame = build_rows(N, shared_data, seed=3)
    # a planted near-duplicate pair straddling the two shards: row 5 (shard 0) and a one-word edit of it near the end
    text = frame.loc[5, "text"]
    assert len(text.split()) >= 20
    frame.loc[N - 7, "text"] = text + " tonight"
    frame.loc[5, "row_id"], frame.loc[N - 7, "row_id"] = "straddle-a", "straddle-b"
    return frame


@pytest.fixture(scope="module")
def prior(shared_data, rows) -> pd.DataFrame:
    """The cross-batch index: another batch's accepted rows, one of them a near-duplicate of a current row."""
    from benchmarks.bench_gates import build_rows

    earlier = build_rows(400, shared_data, seed=11).assign(batch="2026-11-01")
    earlier["row_id"] = "p" + earlier["row_id"]
    earlier.loc[0, "text"] = rows.loc[1200, "text"] + " thanks"
    return DedupGate().index_frame(earlier)


def _executors(ray_address: str, tmp_path: Path) -> dict[str, ExecutorConfig]:
    return {
        "inline": ExecutorConfig(kind="inline"),
        "local": ExecutorConfig(kind="local", tasks=2, workers=2, shard_rows_min=0, run_dir=str(tmp_path / "local")),
        "ray": ExecutorConfig(kind="ray", tasks=2, address=ray_address, shard_rows_min=0, run_dir=str(tmp_path / "ray")),
    }


def _stored_bytes(tmp_path: Path, name: str, table: pd.DataFrame) -> bytes:
    store = TableStore(str(tmp_path / f"store-{name}"))
    path = store.write("gate", "2026-11-02", table)
    return Path(path).read_bytes()


def _same_everywhere(stage_name, rows, gates, executors, tmp_path, **inputs) -> dict[str, GateResult]:
    results, blobs = {}, {}
    for name, cfg in executors.items():
        result = run_stage(stage_name, rows, gates, cfg, **inputs)
        assert result.metrics["engine"]["executor"] == name
        if name != "inline":
            assert result.metrics["engine"]["tasks"] == 2 and result.metrics["engine"]["shard_rows"] == [
                hi - lo for lo, hi in shard_bounds(len(rows), 2)]
            assert not any(Path(cfg.run_dir).iterdir())  # the run folder is removed after the merge
        results[name] = result
        blobs[name] = _stored_bytes(tmp_path, name, decision_table(rows, result))
    ref = results["inline"]
    for name, result in results.items():
        assert result.keep.tolist() == ref.keep.tolist(), name
        assert result.reason == ref.reason and result.category == ref.category, name
        np.testing.assert_array_equal(result.score, ref.score)
        assert blobs[name] == blobs["inline"], f"{stage_name}: {name} parquet bytes differ from inline"
    return results


def test_quality_and_dedup_identical_inline_local_ray(rows, prior, ray_address, tmp_path):
    gates = GateConfig()
    executors = _executors(ray_address, tmp_path)
    quality = _same_everywhere("quality", rows, gates, executors, tmp_path)
    assert (~quality["inline"].keep).sum() > 0
    kept = rows.loc[quality["inline"].keep].reset_index(drop=True)
    dedup = _same_everywhere("dedup", kept, gates, executors, tmp_path, prior=prior)
    ref = dedup["inline"]
    # the in-process gate is the reference: the same decisions as DedupGate.evaluate, metrics included
    direct = DedupGate(gates.dedup).evaluate(kept, prior=prior)
    assert direct.reason == ref.reason and direct.keep.tolist() == ref.keep.tolist()
    for name in ("local", "ray"):
        for key in ("candidate_pairs", "skipped_by_estimate", "pairs_checked", "false_positive_candidates",
                    "exact_duplicates", "near_duplicates", "bands", "rows"):
            assert dedup[name].metrics[key] == direct.metrics[key], (name, key)
    reasons = dict(zip(kept["row_id"], ref.reason))
    assert "straddle-a" in (reasons["straddle-b"] or "")          # caught across the shard boundary
    assert "(batch 2026-11-01)" in (reasons[rows.loc[1200, "row_id"]] or "")  # caught against the prior index
    counts = ref.counters()["dropped_by_category"]
    assert counts.get("exact_duplicate", 0) > 0 and counts.get("near_duplicate", 0) > 0


def test_toxicity_and_contamination_identical_inline_local_ray(rows, shared_data, ray_address, tmp_path):
    gates = GateConfig.model_validate({
        "toxicity": {"backend": "profanity_check"},
        "contamination": {"use_embeddings": False, "eval_sets": [
            {"name": "gsm8k_test", "source": "file", "path": str(shared_data / "gsm8k" / "test.jsonl"),
             "text_fields": ["question"]}]},
    })
    sample = rows.iloc[:1200].reset_index(drop=True)
    executors = _executors(ray_address, tmp_path)
    tox = _same_everywhere("toxicity", sample, gates, executors, tmp_path)
    cont = _same_everywhere("contamination", sample, gates, executors, tmp_path)
    assert (~tox["inline"].keep).any() and (~cont["inline"].keep).any()


# ---------------------------------------------------------------------------------------- failure


class _FailsOnMarker(Gate):
    name = "boom"

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        if (rows["row_id"] == "BOOM").any():
            raise RuntimeError("planted failure on the marked row")
        return GateResult.all_kept(self.name, len(rows))


def _fails_on_marker(config, env) -> Gate:
    return _FailsOnMarker()


BOOM = GateStage(name="boom", asset="boom_gate", config_section="quality", make_gate=_fails_on_marker)


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_failing_shard_fails_the_run_naming_stage_and_shard(kind, rows, ray_address, tmp_path):
    batch = rows.iloc[:400].reset_index(drop=True)
    batch.loc[300, "row_id"] = "BOOM"  # shard 1 of 2
    run_dir = tmp_path / "runs"
    cfg = ExecutorConfig(kind=kind, tasks=2, shard_rows_min=0, run_dir=str(run_dir), address=ray_address)
    with pytest.raises(EngineError) as err:
        run_stage(BOOM, batch, GateConfig(), cfg)
    message = str(err.value)
    assert "stage 'boom'" in message and "shard 1 of 2" in message and "planted failure" in message
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing partial left behind
    # the same stage on rows without the marker runs fine
    assert run_stage(BOOM, rows.iloc[:400], GateConfig(), cfg).keep.all()


# ---------------------------------------------------------------------------------------- units


def test_small_batches_run_inline_and_shards_keep_row_order():
    cfg = ExecutorConfig(kind="local", tasks=2, shard_rows_min=1000)
    batch = pd.DataFrame({"row_id": [f"r{i}" for i in range(10)], "text": ["a few words here"] * 10})
    assert run_stage("quality", batch, GateConfig(), cfg).metrics["engine"]["executor"] == "inline"
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)] and shard_bounds(2, 8) == [(0, 1), (1, 2)]


def test_executor_section_validates_and_stays_out_of_the_hash(tmp_path):
    shipped = load_gate_config()
    assert shipped.executor.kind == "local"
    moved = shipped.model_copy(update={"executor": ExecutorConfig(kind="ray", address="127.0.0.1:1")})
    assert moved.content_hash() == shipped.content_hash()
    with pytest.raises(ValueError, match="address"):
        ExecutorConfig(kind="ray")


def test_the_engine_is_dagster_free():
    for path in (Path(__file__).resolve().parents[1] / "synqa_dagster" / "engine").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "dagster" or n.startswith(("dagster.", "dagster_", "synqa_dagster.assets",
                                                            "synqa_dagster.resources")) for n in names), path


def test_default_embedding_route_runs_the_same_in_workers(rows, shared_data, tmp_path):
    """The shipped defaults (learned toxicity cascade, contamination with the static route and MiniLM re-scoring)
    decide the same in datatrove workers as in process: the workers build their gates on the gate config's
    embedding route, so they read the shared static vectors and re-score with the same MiniLM."""
    from synqa_dagster.resources.models import EmbedderResource

    gates = GateConfig.model_validate({"contamination": {"eval_sets": [
        {"name": "gsm8k_test", "source": "file", "path": str(shared_data / "gsm8k" / "test.jsonl"),
         "text_fields": ["question"]}]}})
    sample = rows.iloc[:400].reset_index(drop=True)
    import json as _json
    questions = [_json.loads(line)["question"] for line in open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8")][:3]
    # planted: a light edit of a GSM8K test question (for the embedding rule) in each shard
    for i, q in zip((10, 390), questions):
        sample.loc[i, "text"] = "Here is a maths problem for you. " + q.replace(" has ", " owns ") + " Please answer."
    env = EmbedderResource.from_gate_config(gates)
    vectors = env.embedder().encode(sample["text"].tolist())
    executors = {"inline": ExecutorConfig(kind="inline"),
                 "local": ExecutorConfig(kind="local", tasks=2, workers=2, shard_rows_min=0, run_dir=str(tmp_path / "local"))}
    results = {}
    for stage_name in ("toxicity", "contamination"):
        for name, cfg in executors.items():
            results[stage_name, name] = run_stage(stage_name, sample, gates, cfg, environment=env, embeddings=vectors)
        ref, other = results[stage_name, "inline"], results[stage_name, "local"]
        assert other.keep.tolist() == ref.keep.tolist() and other.reason == ref.reason, stage_name
        np.testing.assert_allclose(other.score, ref.score, rtol=0, atol=1e-6)
    cont = results["contamination", "inline"]
    assert cont.metrics.get("embedding_route") == "static_cascade"
    assert not cont.keep[10] and not cont.keep[390], [cont.reason[10], cont.reason[390]]
