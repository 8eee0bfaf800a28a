"""Wall time and peak memory of ``synqa audit`` on a large external dataset.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_audit.py --rows 100000                 # shipped gate config (embeddings on)
    .venv/bin/python benchmarks/bench_audit.py --rows 100000 --no-embeddings # = synqa audit --no-embeddings

The dataset is ``bench_gates.build_rows`` (real third-party text from the shared data folder: BANKING77,
SST-2, self-instruct, GSM8K, with planted duplicates, loops, meta-prompt leaks, offensive tweets and eval-set
items) written as JSONL with ``row_id``, ``intent``, ``locale`` and ``text``; the reference is BANKING77 train
and GSM8K test is an extra ``--eval-set`` (its own text field ``question``, id = record number). The audit runs in a child process (``synqa_dagster.audit.run_audit``,
progress bars off) that reports its own peak RSS (``VmHWM``) and the largest peak of its forked workers. Files
go to a temporary folder (``--workdir``), never into the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SYNQA_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET_RSS_MB = 6 * 1024.0


def _bench_gates():
    spec = importlib.util.spec_from_file_location("bench_gates", REPO / "benchmarks" / "bench_gates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def write_dataset(n: int, data: Path, path: Path) -> dict[str, Any]:
    """Write ``n`` benchmark rows as JSONL; returns size figures."""
    t0 = time.perf_counter()
    rows = _bench_gates().build_rows(n, data)[["row_id", "intent", "locale", "technique", "text"]]
    rows.to_json(path, orient="records", lines=True, force_ascii=False)
    words = rows["text"].str.split().str.len()
    return {"rows": len(rows), "mean_words": round(float(words.mean()), 1), "bytes": path.stat().st_size,
            "build_s": round(time.perf_counter() - t0, 1)}


def child(dataset: str, reference: str, embeddings: str, out: str, gsm8k_test: str, gates: str = "") -> dict[str, Any]:
    """Run the audit in this process (``gates`` or the shipped gate config, strict profile; ``embeddings``
    ``"off"`` = the ``--no-embeddings`` switch) and report counts, step timings, the verdicts and peak RSS."""
    sys.path.insert(0, str(REPO))
    from synqa_dagster.audit import ColumnMap, eval_set_spec, run_audit
    from synqa_dagster.config import load_gate_config

    bench = _bench_gates()
    columns = ColumnMap(id_column="row_id", intent_column="intent", locale_column="locale")
    t0 = time.perf_counter()
    result = run_audit(
        Path(dataset), Path(reference), Path(out),
        eval_sets=[eval_set_spec("gsm8k_test", gsm8k_test, columns, text_fields=["question"])],
        columns=columns, gate_config=load_gate_config(gates or None), show_progress=False,
        embeddings=False if embeddings == "off" else None,
    )
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "candidates": result.candidates, "accepted": result.accepted, "rejected": result.rejected,
        "dropped_by_gate": {g: v["dropped"] for g, v in result.gates.items()},
        "drift": result.drift["summary"] if result.drift else result.drift_note,
        "checks": {c["name"]: f"{c['result']} ({c['severity']})" for c in result.checks},
        "steps_s": result.timings,
        "peak_rss_mb": round(bench._peak_rss_mb(), 1),
        "workers_peak_rss_mb": round(bench._children_peak_rss_mb(), 1),
    }


def measure(n: int, data: Path, workdir: Path, embeddings: bool = True, gates: Path | None = None) -> dict[str, Any]:
    """Build ``n`` rows, audit them in a child process, return the child's figures plus the dataset's."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = workdir / f"external_{n}.jsonl"
    info = write_dataset(n, data, dataset)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(dataset), str(data / "banking77" / "train.csv"),
           "on" if embeddings else "off", str(workdir / f"audit_{n}"), str(data / "gsm8k" / "test.jsonl"), str(gates or "")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"audit child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rows": n, "embeddings": embeddings, "dataset": info, "load_avg": [round(x, 2) for x in os.getloadavg()], **report}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON report per size; exit 1 when peak RSS exceeds 6 GB."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000])
    p.add_argument("--no-embeddings", action="store_true", help="switch the embedding check off (synqa audit --no-embeddings)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, help="where to write the dataset and audit folder (default: a temp dir)")
    p.add_argument("--gates", type=Path, help="gate-config YAML (default: gates/default.yaml)")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        for n in args.rows:
            report = measure(n, args.data, args.workdir or Path(tmp), embeddings=not args.no_embeddings, gates=args.gates)
            ok = max(report["peak_rss_mb"], report["workers_peak_rss_mb"]) <= TARGET_RSS_MB
            failed |= not ok
            print(json.dumps({**report, "rss_target_mb": TARGET_RSS_MB, "rss_ok": ok}, indent=2), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
