"""Throughput and peak memory of the non-embedding gates on realistic synthetic-looking rows.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_gates.py --rows 100000 500000

For each size it builds a deterministic table of instruction rows from real third-party text in the shared
data folder (BANKING77, SST-2, self-instruct, GSM8K, plus a few planted duplicates, loops, meta-prompt leaks,
offensive tweets and eval-set items), writes it to a temporary parquet file (never into the repository), and
measures each gate in its own subprocess so that peak RSS (``ru_maxrss``) is per gate:

* ``load``: reading the table only (the RSS floor every other line includes);
* ``quality``, ``dedup``, ``toxicity`` (profanity-check backend), ``contamination`` (n-gram index only, no
  embeddings): gate construction time and ``evaluate`` throughput;
* ``baseline-datasketch``: datasketch's per-row ``MinHash.update()`` loop (same normalisation and word 3-gram
  shingles, default sha1 hash) on a subsample (``--baseline-rows``), extrapolated to rows/s, and
  ``MinHash.bulk`` on the same subsample for reference;
* ``pipeline``: quality -> dedup -> toxicity -> contamination in one process, each gate on the survivors of
  the previous one, wall time including gate construction.

Toxicity and contamination are included when their modules import; otherwise their lines say why.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SYNQA_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET_PIPELINE_S = 120.0
TARGET_PIPELINE_RSS_MB = 4096.0
TARGET_DEDUP_SPEEDUP = 10.0


# --------------------------------------------------------------------------------------------------- data


def _read_sources(data: Path) -> dict[str, list[str]]:
    """Real sentences grouped by role (instructions, responses, extras)."""

    def lines(path: Path) -> list[str]:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]

    def jsonl(path: Path) -> list[dict[str, Any]]:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    with open(data / "banking77" / "train.csv", encoding="utf-8") as f:
        banking = [r["text"] for r in csv.DictReader(f)]
    sst2 = [line.split("\t")[0].strip() for line in lines(data / "sst2" / "train.tsv")[1:]]
    sst2 = [s for s in sst2 if len(s.split()) >= 8]
    gsm = jsonl(data / "gsm8k" / "train.jsonl")
    si_instr, si_out = [], []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for task in jsonl(data / "self_instruct" / name):
            for inst in task["instances"]:
                si_instr.append("\n".join(x for x in (task["instruction"], inst["input"]) if x))
                si_out.append(inst["output"])
    offensive = [
        t
        for t, y in zip(
            lines(data / "tweeteval" / "offensive" / "train_text.txt"),
            lines(data / "tweeteval" / "offensive" / "train_labels.txt"),
        )
        if y.strip() == "1"
    ]
    gsm_test = [r["question"] for r in jsonl(data / "gsm8k" / "test.jsonl")]
    humaneval = [r["prompt"] for r in jsonl(data / "humaneval" / "HumanEval.jsonl.gz")]
    return {
        "banking": banking,
        "sst2": sst2,
        "gsm_q": [r["question"] for r in gsm],
        "gsm_a": [r["answer"] for r in gsm],
        "si_instr": si_instr,
        "si_out": si_out,
        "offensive": offensive,
        "contaminated": gsm_test + humaneval,
    }


def _perturb(text: str, rng: random.Random, edits: int) -> str:
    w = text.split(" ")
    for _ in range(edits):
        i = rng.randrange(len(w))
        op = rng.random()
        if op < 0.4:
            w[i] = w[i].upper() if rng.random() < 0.5 else w[i].lower()
        elif op < 0.7 and len(w) > 4:
            del w[i]
        elif i + 1 < len(w):
            w[i], w[i + 1] = w[i + 1], w[i]
    return " ".join(w)


def _sentences(pool: list[str], rng: random.Random) -> str:
    return " ".join(rng.choice(pool) for _ in range(rng.randint(2, 5)))


def build_rows(n: int, data: Path, seed: int = 0) -> "Any":
    """``n`` deterministic instruction rows (``row_id``, ``batch``, ``seed_id``, ``intent``, ``locale``,
    ``technique``, ``text``): ~36% support (BANKING77 query + 2-5 SST-2 sentences), 30% maths (GSM8K question +
    a GSM8K worked answer), 25% self-instruct (task + its reference output for 15%, else SST-2 sentences), 30% of
    those lightly perturbed; 3.5% exact duplicates (re-cased / re-spaced copies of earlier rows), 3.5% near
    duplicates (1-2 word edits), 1.4% planted defects (meta-prompt leaks, sentence loops, offensive tweets,
    GSM8K-test / HumanEval items)."""
    import pandas as pd

    src = _read_sources(data)
    rng = random.Random(seed)
    texts, techniques = [], []
    for i in range(n):
        r = rng.random()
        if r < 0.035 and i > 100:  # exact duplicate of an earlier row, reformatted
            text = texts[rng.randrange(i)].upper() if rng.random() < 0.5 else texts[rng.randrange(i)] + "  "
            tech = "planted_exact_dup"
        elif r < 0.07 and i > 100:
            text = _perturb(texts[rng.randrange(i)], rng, rng.randint(1, 2))
            tech = "planted_near_dup"
        elif r < 0.075:
            text = "Rewritten Prompt: " + rng.choice(src["banking"]) + "\n" + rng.choice(src["sst2"])
            tech = "planted_meta_leak"
        elif r < 0.08:
            s = rng.choice(src["sst2"])
            text = rng.choice(src["banking"]) + "\n" + " ".join([s] * rng.randint(3, 6))
            tech = "planted_loop"
        elif r < 0.083:
            text = rng.choice(src["banking"]) + "\n" + rng.choice(src["offensive"])
            tech = "planted_offensive"
        elif r < 0.084:
            text = "Solve this:\n" + rng.choice(src["contaminated"])
            tech = "planted_contamination"
        elif r < 0.45:
            text = rng.choice(src["banking"]) + "\n" + _sentences(src["sst2"], rng)
            tech = "support_qa"
        elif r < 0.75:  # a maths question with a (different) worked answer: realistic length and style
            text = rng.choice(src["gsm_q"]) + "\n" + rng.choice(src["gsm_a"])
            tech = "math"
        else:  # a self-instruct task; 15% keep the task's own reference output
            k = rng.randrange(len(src["si_instr"]))
            resp = src["si_out"][k] if rng.random() < 0.15 else _sentences(src["sst2"], rng)
            text = src["si_instr"][k] + "\n" + resp
            tech = "self_instruct"
        if tech in ("support_qa", "math", "self_instruct") and rng.random() < 0.3:
            text = _perturb(text, rng, rng.randint(1, 3))
        texts.append(text)
        techniques.append(tech)
    return pd.DataFrame(
        {
            "row_id": [f"r{i:07d}" for i in range(n)],
            "batch": "bench",
            "seed_id": [f"s{rng.randrange(5000)}" for _ in range(n)],
            "intent": [rng.choice(("card", "transfer", "math", "writing", "code")) for _ in range(n)],
            "locale": [rng.choice(("en-US", "en-GB")) for _ in range(n)],
            "technique": techniques,
            "text": texts,
        }
    )


# --------------------------------------------------------------------------------------------------- gates


def _contamination_gate() -> Any:
    from synqa_dagster.gates.contamination import ContaminationGate, ContaminationGateConfig
    from synqa_dagster.gates.eval_sets import EvalSetSpec

    specs = [
        EvalSetSpec(name="humaneval", source="humaneval"),
        EvalSetSpec(name="gsm8k_test", path=str(DEFAULT_DATA / "gsm8k" / "test.jsonl"), text_fields=["question"]),
    ]
    return ContaminationGate(ContaminationGateConfig(eval_sets=specs, use_embeddings=False))


def _toxicity_gate() -> Any:
    from synqa_dagster.gates.toxicity import ToxicityGate, ToxicityGateConfig

    return ToxicityGate(ToxicityGateConfig(backend="profanity_check"))


def _quality_gate() -> Any:
    from synqa_dagster.gates.quality import QualityGate

    return QualityGate()


def _dedup_gate() -> Any:
    from synqa_dagster.gates.dedup import DedupGate

    return DedupGate()


GATES: dict[str, Callable[[], Any]] = {
    "quality": _quality_gate,
    "dedup": _dedup_gate,
    "toxicity": _toxicity_gate,
    "contamination": _contamination_gate,
}


def _peak_rss_mb() -> float:
    """Peak RSS of this process. ``VmHWM`` is per address space, so unlike ``ru_maxrss`` (which Linux carries
    across ``execve`` from the parent's fork) it is not inflated by the driver's own memory."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _children_peak_rss_mb() -> float:
    """Largest peak RSS of any waited-for child (forked workers of a gate), 0 if none."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def worker(task: str, parquet: str, baseline_rows: int) -> dict[str, Any]:
    """Run one measurement in this (child) process and return its figures."""
    import pandas as pd

    t0 = time.perf_counter()
    rows = pd.read_parquet(parquet)
    out: dict[str, Any] = {"task": task, "rows": len(rows), "load_s": round(time.perf_counter() - t0, 2)}
    if task == "load":
        pass
    elif task in GATES:
        t1 = time.perf_counter()
        gate = GATES[task]()
        t2 = time.perf_counter()
        result = gate.evaluate(rows)
        t3 = time.perf_counter()
        c = result.counters()
        out.update(setup_s=round(t2 - t1, 2), eval_s=round(t3 - t2, 2), rows_per_s=round(len(rows) / (t3 - t2)))
        out.update(dropped=c["dropped"], by_category=c["dropped_by_category"])
        if task == "dedup":
            m = result.metrics
            keys = ("bands", "rows", "candidate_pairs", "skipped_by_estimate", "pairs_checked",
                    "false_positive_candidates", "timings_s")
            out["detail"] = {k: m[k] for k in keys}
        if task == "quality":
            out["detail"] = {**result.metrics["timings_s"], "workers": result.metrics["workers"]}
    elif task == "baseline-datasketch":
        out.update(_baseline(rows, baseline_rows))
    elif task == "pipeline":
        out.update(_pipeline(rows))
    else:
        raise SystemExit(f"unknown task {task}")
    out["peak_rss_mb"] = round(_peak_rss_mb())
    children = _children_peak_rss_mb()
    if children:
        out["worker_peak_rss_mb"] = round(children)
    return out


def _baseline(rows: Any, n: int) -> dict[str, Any]:
    """datasketch per-row ``update()`` loop and ``MinHash.bulk`` on the first ``n`` rows, same shingles."""
    from datasketch import MinHash

    from synqa_dagster.gates.dedup import shingles
    from synqa_dagster.gates.text import normalize_text

    texts = rows["text"].tolist()[:n]
    t0 = time.perf_counter()
    for text in texts:
        m = MinHash(num_perm=128, seed=1)
        for sh in shingles(normalize_text(text), "word", 3):
            m.update(sh.encode("utf-8"))
    t1 = time.perf_counter()
    sets = [[sh.encode("utf-8") for sh in shingles(normalize_text(t), "word", 3)] for t in texts]
    MinHash.bulk(sets, num_perm=128, seed=1)
    t2 = time.perf_counter()
    return {
        "sample_rows": len(texts),
        "update_loop_s": round(t1 - t0, 2),
        "rows_per_s": round(len(texts) / (t1 - t0)),
        "bulk_rows_per_s": round(len(texts) / (t2 - t1)),
    }


def _pipeline(rows: Any) -> dict[str, Any]:
    """The registry's automatic gates (quality -> dedup -> toxicity -> contamination, n-gram) on successive
    survivors; wall time with setup."""
    from synqa_dagster.stages import automatic_stages

    t0 = time.perf_counter()
    stages = []
    current = rows
    for name in (s.name for s in automatic_stages() if s.name in GATES):
        ts = time.perf_counter()
        try:
            gate = GATES[name]()
        except ImportError as err:
            stages.append({"gate": name, "skipped": f"not importable: {err}"})
            continue
        kept, _rejected, result = gate(current)
        stages.append({"gate": name, "in": len(current), "kept": len(kept), "s": round(time.perf_counter() - ts, 2)})
        current = kept
    return {"wall_s": round(time.perf_counter() - t0, 2), "stages": stages, "final_rows": len(current)}


# --------------------------------------------------------------------------------------------------- driver


def _run_child(task: str, parquet: Path, baseline_rows: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", task, "--parquet", str(parquet), "--baseline-rows", str(baseline_rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"task": task, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _importable(task: str) -> str | None:
    if task not in ("toxicity", "contamination"):
        return None
    try:
        __import__(f"synqa_dagster.gates.{task}")
    except ImportError as err:
        return f"not importable yet: {err}"
    return None


def _fmt_row(r: dict[str, Any], baseline: float | None) -> str:
    if "error" in r or "skipped" in r:
        return f"| {r['task']} | - | - | - | - | {r.get('error') or r.get('skipped')} |"
    rps = r.get("rows_per_s")
    notes = ""
    if r["task"] == "dedup" and baseline:
        notes = f"{rps / baseline:.0f}x baseline; " + json.dumps(r.get("detail", {}))
    elif r["task"] == "baseline-datasketch":
        notes = (f"measured on {r['sample_rows']} rows and extrapolated; MinHash.bulk: {r['bulk_rows_per_s']} rows/s")
    elif r["task"] == "load":
        notes = f"read parquet only ({r['load_s']} s): the RSS floor of every line"
    elif "by_category" in r:
        notes = f"dropped {r['dropped']} {json.dumps(r['by_category'])}"
        if "detail" in r:
            notes += f"; timings {json.dumps(r['detail'])}"
    if "worker_peak_rss_mb" in r:
        notes += f"; forked workers' peak RSS {r['worker_peak_rss_mb']} MB each (shared pages counted in both)"
    setup = r.get("setup_s", "-")
    ev = r.get("eval_s", r.get("update_loop_s", "-"))
    return f"| {r['task']} | {setup} | {ev} | {rps if rps is not None else '-'} | {r['peak_rss_mb']} | {notes} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 500_000])
    p.add_argument("--baseline-rows", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, default=None, help="where the parquet tables go (default: a temp dir)")
    p.add_argument("--tasks", nargs="+", default=["load", "quality", "dedup", "baseline-datasketch", "toxicity",
                                                   "contamination", "pipeline"])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--parquet", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.parquet, args.baseline_rows)))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="synqa-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# gate benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load avg at start "
          f"{os.getloadavg()[0]:.1f}; tables in {workdir}\n")
    for n in args.rows:
        t0 = time.perf_counter()
        table = build_rows(n, args.data, args.seed)
        parquet = workdir / f"rows_{n}.parquet"
        table.to_parquet(parquet)
        words = table["text"].str.split().str.len()
        print(f"## {n} rows (built in {time.perf_counter() - t0:.1f} s; mean {words.mean():.0f} words, "
              f"{table['text'].str.len().mean():.0f} chars per row)\n")
        print("| task | setup s | evaluate s | rows/s | peak RSS MB | notes |")
        print("|---|---|---|---|---|---|")
        results: dict[str, dict[str, Any]] = {}
        for task in args.tasks:
            skip = _importable(task)
            results[task] = {"task": task, "skipped": skip} if skip else _run_child(task, parquet, args.baseline_rows)
        baseline = results.get("baseline-datasketch", {}).get("rows_per_s")
        for task in args.tasks:
            if task != "pipeline":
                print(_fmt_row(results[task], baseline))
        pipe = results.get("pipeline")
        if pipe and "wall_s" in pipe:
            ok_t = pipe["wall_s"] <= TARGET_PIPELINE_S
            ok_m = pipe["peak_rss_mb"] <= TARGET_PIPELINE_RSS_MB
            print(f"| pipeline (quality->dedup->toxicity->contamination) | incl. | {pipe['wall_s']} | "
                  f"{round(n / pipe['wall_s'])} | {pipe['peak_rss_mb']} | {json.dumps(pipe['stages'])} |")
            print(f"\ntargets: pipeline {pipe['wall_s']} s {'<=' if ok_t else '>'} {TARGET_PIPELINE_S:.0f} s "
                  f"[{'PASS' if ok_t else 'FAIL'}], peak RSS {pipe['peak_rss_mb']} MB "
                  f"{'<=' if ok_m else '>'} {TARGET_PIPELINE_RSS_MB:.0f} MB [{'PASS' if ok_m else 'FAIL'}]", end="")
        elif pipe:
            print(f"| pipeline | - | - | - | - | {pipe.get('error')} |")
        dedup = results.get("dedup", {}).get("rows_per_s")
        if dedup and baseline:
            speedup = dedup / baseline
            print(f"; dedup {speedup:.0f}x the datasketch update() loop "
                  f"[{'PASS' if speedup >= TARGET_DEDUP_SPEEDUP else 'FAIL'} >= {TARGET_DEDUP_SPEEDUP:.0f}x]")
        print(f"\nload average now {os.getloadavg()[0]:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
