"""The whole funnel at scale: wall time, rows/s and peak RSS per stage, and the cost per row at each size.

Usage (from the repository root; ``make bench`` runs the default sizes)::

    .venv/bin/python benchmarks/bench_funnel.py --rows 10000 100000 500000

For each size it builds the realistic table of :mod:`bench_gates` (real third-party text from the shared data
folder, recombined into ~84-word instruction rows, with planted duplicates, loops, meta-prompt leaks, offensive
tweets and eval-set items), gives it the columns of ``generated_candidates``, and runs, in one child process, the
stages a batch runs after generation, with the shipped gate config (``gates/default.yaml``, plus GSM8K test as a
second declared eval set):

    quality -> dedup -> embeddings -> toxicity -> contamination (n-gram + embedding) -> drift findings -> lineage pack

each stage on the previous one's survivors, exactly as the registry (:mod:`synqa_dagster.stages`) orders them;
``embeddings`` is the shared ``candidate_embeddings`` step (the configured embedding route), ``drift findings``
the five drift/diversity/bias findings against a 2,000-row reference sample (embedded with the same route), and
``lineage pack`` what :func:`synqa_dagster.handover.batch.write_batch_handover` does per row: the lineage
records, the Merkle root for the card, ``accepted.jsonl`` / ``rejected.jsonl`` and the signed manifest (Merkle tree,
Ed25519 DSSE); the card, charts and config copies are per batch, not per row, and are left out. The peak RSS of each stage is measured on its own (``VmHWM`` is reset through
``/proc/self/clear_refs`` before each stage; it includes what the process already holds: the table and the
previous stages' outputs).

Side-by-side lines, in the same run and on the same rows (a subsample of ``--side-rows`` rows, extrapolated):

* MinHash signatures: synqa's vectorised :class:`~synqa_dagster.gates.dedup.MinHasher`, rensa's
  ``RMinHash.digest_matrix_from_token_sets`` and datatrove's ``MinhashDedupSignature`` (its own shingling and
  hashing), with each one's recall of near-duplicate pairs at the gate's threshold (pairs whose exact Jaccard is
  at or above it) and its mean absolute error against the exact Jaccard;
* the MiniLM-only embedding route (sentence-transformers all-MiniLM-L6-v2) on ``--minilm-rows`` rows (5k),
  extrapolated to the size.

Cost per row must stay flat: for each stage the cost per row at the largest size is compared with the smallest
size's times ``log(n_max)/log(n_min)`` (an ``n log n`` allowance) plus 25% for timing noise; a stage that grows
faster is reported as FAIL. Targets (2 cores): the whole funnel at 500k rows in <= 10 min and <= 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_gates import DEFAULT_DATA, _perturb, build_rows  # noqa: E402

TARGET_TOTAL_S = 600.0
TARGET_RSS_MB = 4096.0
NLOGN_SLACK = 1.25
REFERENCE_ROWS = 2000


# --------------------------------------------------------------------------------------------------- memory


def _hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_hwm() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Stages:
    """Times each stage and records its own peak RSS."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.overall_peak = 0.0
        self.can_reset = _reset_hwm()

    def run(self, name: str, rows_in: int, fn, **notes: Any):
        self.overall_peak = max(self.overall_peak, _hwm_mb())
        _reset_hwm()
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        peak = _hwm_mb()
        self.overall_peak = max(self.overall_peak, peak)
        line = {"stage": name, "rows_in": rows_in, "s": round(seconds, 2),
                "rows_per_s": round(rows_in / seconds) if seconds > 0 else None,
                "us_per_row": round(seconds / max(rows_in, 1) * 1e6, 1), "peak_rss_mb": round(peak), **notes}
        self.lines.append(line)
        return out, line


# --------------------------------------------------------------------------------------------------- table


def candidates_table(n: int, data: Path, seed: int = 0):
    """``n`` realistic rows with every column of ``generated_candidates`` that the lineage records read."""
    rows = build_rows(n, data, seed)
    parts = rows["text"].str.partition("\n")
    first, rest = parts[0], parts[2]
    rows["instruction"] = first
    rows["response"] = rest
    rows["conversation"] = [json.dumps([{"role": "user", "content": a}, {"role": "assistant", "content": b}])
                        for a, b in zip(first, rest)]
    rows["n_turns"] = 1
    rows["taxonomy_version"] = "bench-1"
    rows["generator_id"] = "bench/recombined-real-text"
    rows["generator_version"] = "1"
    rows["sampling"] = json.dumps({"temperature": 0.0, "seed": seed})
    rows["prompt_template_id"] = rows["technique"]
    rows["response_template_id"] = None
    rows["recipe_hash"] = "bench"
    rows["created_at"] = "2026-12-07T00:00:00Z"
    return rows


def gate_config():
    """The shipped gate config, plus GSM8K test as a declared eval set (the bench table plants its items)."""
    from synqa_dagster.config import GateConfig, load_gate_config

    base = load_gate_config().model_dump(mode="json")
    base["contamination"]["eval_sets"].append({
        "name": "gsm8k_test", "source": "file", "path": str(DEFAULT_DATA / "gsm8k" / "test.jsonl"),
        "id_field": None, "text_fields": ["question"]})
    base["contamination"]["eval_sets"][-1] = {k: v for k, v in base["contamination"]["eval_sets"][-1].items() if v is not None}
    return GateConfig.model_validate(base)


# --------------------------------------------------------------------------------------------------- funnel


class _Environment:
    """What a stage needs to build its gate (the registry's GateEnvironment): the configured embedder."""

    def __init__(self, gates: Any) -> None:
        from synqa_dagster.resources.models import EmbedderResource

        self.resource = EmbedderResource.from_gate_config(gates) if hasattr(EmbedderResource, "from_gate_config") \
            else EmbedderResource(model_path=gates.embedding_model_path)

    def embedder(self):
        return self.resource.embedder()

    def __getattr__(self, name: str):  # anything else the resource offers (e.g. a re-scoring embedder)
        return getattr(self.resource, name)


def funnel(parquet: str, executor: str = "config") -> dict[str, Any]:
    """Every stage after generation on the table at ``parquet``, timed one by one; the gate stages run through
    the row-stage engine (:func:`synqa_dagster.engine.run_stage`) on ``executor`` (``config`` = the gate
    config's ``executor`` section, as a batch runs them; or ``inline`` / ``local``)."""
    import numpy as np
    import pandas as pd

    from synqa_dagster.embedding import vectors_for
    from synqa_dagster.gates.base import decision_table, survivors
    from synqa_dagster.handover.records import lineage_records
    from synqa_dagster.lineage.keys import SigningKey
    from synqa_dagster.lineage.pack import write_signed_pack
    from synqa_dagster.corpus.real import real_rows
    from synqa_dagster.stages import EMBEDDINGS, PRIOR_INDEX, REAL_ROWS, automatic_stages, embeddings_stage
    from synqa_dagster.stats.findings import batch_findings

    from synqa_dagster.engine import run_stage

    timer = _Stages()
    candidates, _ = timer.run("load", 0, lambda: pd.read_parquet(parquet))
    timer.lines[-1]["rows"] = len(candidates)
    gates = gate_config()
    executor_config = gates.executor if executor == "config" else gates.executor.model_copy(update={"kind": executor})
    env = _Environment(gates)
    needs = embeddings_stage()
    built: dict[str, Any] = {}
    for s in automatic_stages():  # gate construction (eval sets embedded, scorers loaded): its own line
        built[s.name], _ = timer.run(f"build {s.name}", 0, lambda s=s: s.build(gates, env))
    # the real-traffic sample of the drift findings (drawn from the same data as the candidates)
    reference_rows = candidates_table(REFERENCE_ROWS, DEFAULT_DATA, seed=1)
    reference_rows = reference_rows[~reference_rows["technique"].str.startswith("planted")].reset_index(drop=True)
    # the real rows the memorisation gate compares with: the demo's seeds and reference customers (disjoint from
    # the candidates' sources, as a team's own seeds are, so the stage is timed at its lookup cost and drops only
    # real copies)
    demo = Path(__file__).resolve().parents[1] / "data" / "demo"
    grounding = real_rows(pd.read_json(demo / "seeds.jsonl", lines=True), pd.read_json(demo / "reference_customers.jsonl", lines=True))
    tables: dict[str, pd.DataFrame] = {}
    current = candidates
    embeddings = None
    for s in automatic_stages():
        if s is needs:
            def embed(rows=current):
                vectors = env.embedder().encode(rows["text"].tolist())
                return pd.DataFrame({"row_id": rows["row_id"], "embedding": list(vectors)})
            embeddings, _ = timer.run("embeddings", len(current), embed, model=getattr(env.embedder(), "model_id", "?"))
        kwargs: dict[str, Any] = {}
        if PRIOR_INDEX in s.inputs:
            kwargs[PRIOR_INDEX] = None
        if EMBEDDINGS in s.inputs:
            kwargs[EMBEDDINGS] = vectors_for(current, embeddings)
        if REAL_ROWS in s.inputs:
            kwargs[REAL_ROWS] = grounding

        def evaluate(rows=current, name=s.name, kwargs=kwargs):
            result = run_stage(name, rows, gates, executor_config, environment=env.resource, **kwargs)
            return decision_table(rows, result), result.metrics
        (table, metrics), line = timer.run(s.name, len(current), evaluate)
        engine = metrics.get("engine", {})
        line["executor"] = f"{engine.get('executor', '?')}" + (f" x{engine['tasks']}" if engine.get("tasks") else "")
        tables[s.name] = table
        current = survivors(table)
        line["kept"] = len(current)
        # how much of the stage went to the MiniLM re-scorer (the cascade's cost)
        line.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))
                     and any(t in k for t in ("rescor", "candidate_rate", "embedding_candidates", "cascade_minilm", "route"))})

    def drift():
        ref_vectors = env.embedder().encode(reference_rows["text"].tolist())
        batch_vectors = vectors_for(current, embeddings)
        return batch_findings(current, reference_rows, gates.drift, batch_vectors, ref_vectors)
    found, line = timer.run("drift findings", len(current), drift)
    line["verdicts"] = {f.check: f.verdict for f in found}

    def pack():
        folder = Path(tempfile.mkdtemp(prefix="synqa-bench-pack-"))
        records, accepted, rejected = lineage_records(candidates, tables, gate_config_hash=gates.content_hash(),
                                                      seed_corpus_hash="bench")
        from synqa_dagster.lineage.canonical import canonical_json
        from synqa_dagster.lineage.pack import prepare_lineage

        prepared = prepare_lineage(records, "bench")  # as handover/batch.py: the card states the root, then signs

        for name, objects in (("accepted.jsonl", accepted), ("rejected.jsonl", rejected)):
            with open(folder / name, "wb") as f:
                for obj in objects:
                    f.write(canonical_json(obj) + b"\n")
        manifest = write_signed_pack(folder, batch="bench", records=records,
                                     data_files=["accepted.jsonl", "rejected.jsonl"],
                                     predicate={"bench": True}, key=SigningKey.generate(), prepared=prepared)
        size = sum(p.stat().st_size for p in folder.iterdir())
        return len(accepted), size, manifest.merkle_root
    (accepted_n, size, _root), line = timer.run("lineage pack", len(candidates), pack)
    line.update(accepted=accepted_n, pack_mb=round(size / 1e6, 1))

    total = sum(x["s"] for x in timer.lines)
    return {"rows": len(candidates), "stages": timer.lines, "total_s": round(total, 2), "executor": executor_config.kind,
            "peak_rss_mb": round(max(timer.overall_peak, _hwm_mb())), "accepted": accepted_n,
            "hwm_reset": timer.can_reset}


# --------------------------------------------------------------------------------------------------- side by side


def minhash_side(parquet: str, n: int) -> dict[str, Any]:
    """synqa's MinHasher vs rensa vs datatrove on the same normalised rows, plus recall of near-duplicates."""
    import numpy as np
    import pandas as pd

    from synqa_dagster.gates.dedup import DedupGate, shingles
    from synqa_dagster.gates.text import normalize_text

    rows = pd.read_parquet(parquet, columns=["text"]).head(n)
    rng = random.Random(7)
    base = rows["text"].tolist()
    edited = [_perturb(t, rng, rng.randint(1, 3)) for t in base[: n // 10]]
    texts = base + edited  # the last n//10 rows are near-copies of the first n//10
    gate = DedupGate()
    cfg = gate.config
    normalized = [normalize_text(t) for t in texts]
    kind, ngram = cfg.shingle, cfg.ngram
    out: dict[str, Any] = {"sample_rows": len(texts), "num_perm": cfg.num_perm, "threshold": cfg.threshold,
                           "shingle": f"{kind} {ngram}-grams"}

    def exact(i: int, j: int) -> float:
        a, b = set(shingles(normalized[i], kind, ngram)), set(shingles(normalized[j], kind, ngram))
        return len(a & b) / len(a | b) if a | b else 1.0

    m = len(edited)
    pairs = [(i, len(base) + i) for i in range(m)]
    truth = np.array([exact(i, j) for i, j in pairs])

    def score(sig: np.ndarray) -> dict[str, Any]:
        est = np.array([float(np.mean(sig[i] == sig[j])) for i, j in pairs])
        positive = truth >= cfg.threshold
        found = est >= cfg.threshold
        return {"recall": round(float((found & positive).sum() / max(positive.sum(), 1)), 4),
                "mae_vs_exact": round(float(np.abs(est - truth).mean()), 4), "pairs_at_or_above": int(positive.sum())}

    t0 = time.perf_counter()
    ours = gate.minhasher.signatures(normalized)  # all three start from the same normalised text
    t_ours = time.perf_counter() - t0
    out["synqa"] = {"s": round(t_ours, 2), "rows_per_s": round(len(texts) / t_ours), **score(np.asarray(ours))}

    import rensa

    t0 = time.perf_counter()
    token_sets = [shingles(x, kind, ngram) for x in normalized]
    t_shingle = time.perf_counter() - t0
    t1 = time.perf_counter()
    matrix = rensa.RMinHash.digest_matrix_from_token_sets(token_sets, cfg.num_perm, 1)
    t_rensa = time.perf_counter() - t1
    sig = np.asarray(matrix.to_rows(), dtype=np.uint64) if hasattr(matrix, "to_rows") else np.asarray(matrix)
    total = t_shingle + t_rensa
    out["rensa"] = {"s": round(total, 2), "rows_per_s": round(len(texts) / total),
                    "hash_only_rows_per_s": round(len(texts) / t_rensa), "shingling_s": round(t_shingle, 2),
                    **score(sig)}
    # the fairest pairing: synqa's vectorised shingle hashes fed to rensa's permutations (flat buffer + offsets)
    t0 = time.perf_counter()
    step_docs = gate.minhasher.docs_per_task  # the same chunking synqa's MinHasher uses
    chunks = []
    for lo in range(0, len(normalized), step_docs):
        hv, doc = gate.minhasher.shingle_hashes(normalized[lo: lo + step_docs])
        counts = np.bincount(doc, minlength=len(normalized[lo: lo + step_docs]))
        chunks.append((hv.astype(np.uint64), np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)))
    t_hash = time.perf_counter() - t0
    t1 = time.perf_counter()
    flat = np.concatenate([h for h, _ in chunks])
    counts = np.concatenate([np.diff(o) for _, o in chunks])
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, cfg.num_perm, 1)  # one call
    t_perm = time.perf_counter() - t1
    sig = np.asarray(matrix.to_rows(), dtype=np.uint64)
    out["rensa_on_synqa_shingles"] = {"s": round(t_hash + t_perm, 2), "rows_per_s": round(len(texts) / (t_hash + t_perm)),
                                      "shingle_hash_s": round(t_hash, 2), "permute_s": round(t_perm, 2), **score(sig)}

    try:
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
        from datatrove.utils.hashing import HashConfig
        from datatrove.utils.word_tokenizers import WordTokenizer

        class SplitTokenizer(WordTokenizer):  # datatrove's own tokenizers all need spaCy: split on whitespace
            def word_tokenize(self, text: str) -> list[str]:
                return text.split()

            def sent_tokenize(self, text: str) -> list[str]:
                return [text]

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                return [(0, len(text))]

        k = min(m, 2_000)  # the first k near-copy pairs plus base rows up to 20k documents
        idx = list(range(min(len(base), 20_000 - k))) + [len(base) + i for i in range(k)]
        step = MinhashDedupSignature(output_folder=tempfile.mkdtemp(prefix="synqa-dt-"),
                                     config=MinhashConfig(n_grams=ngram, num_buckets=14, hashes_per_bucket=8,
                                                          hash_config=HashConfig(precision=64)),
                                     language=SplitTokenizer())
        t0 = time.perf_counter()
        sigs = {i: np.concatenate([np.asarray(b) for b in step.get_signature(step.get_shingles(texts[i]))]) for i in idx}
        t_dt = time.perf_counter() - t0
        est = np.array([float(np.mean(sigs[i] == sigs[j])) for i, j in pairs[:k]])
        pos = truth[:k] >= cfg.threshold
        dt = {"s_measured": round(t_dt, 2), "measured_rows": len(idx), "rows_per_s": round(len(idx) / t_dt),
              "num_perm": int(next(iter(sigs.values())).shape[0]),
              "recall": round(float(((est >= cfg.threshold) & pos).sum() / max(pos.sum(), 1)), 4),
              "mae_vs_exact": round(float(np.abs(est - truth[:k]).mean()), 4),
              "shingles": f"datatrove word {ngram}-grams (its own simplify_text, str.split tokens: its word tokenizers need spaCy)"}
        out["datatrove"] = dt
    except Exception as exc:  # noqa: BLE001 - report, never hide
        out["datatrove"] = {"error": f"{type(exc).__name__}: {exc}"}
    out["peak_rss_mb"] = round(_hwm_mb())
    return out


def minilm_side(parquet: str, n: int) -> dict[str, Any]:
    """The MiniLM-only route (sentence-transformers all-MiniLM-L6-v2, the pre-cascade default) on ``n`` rows."""
    import pandas as pd

    from synqa_dagster.embedding import Embedder

    texts = pd.read_parquet(parquet, columns=["text"]).head(n)["text"].tolist()
    model = Embedder()
    model.encode(texts[:8])  # load
    t0 = time.perf_counter()
    model.encode(texts)
    seconds = time.perf_counter() - t0
    return {"rows": len(texts), "s": round(seconds, 2), "rows_per_s": round(len(texts) / seconds, 1),
            "peak_rss_mb": round(_hwm_mb())}


# --------------------------------------------------------------------------------------------------- driver


def _child(task: str, parquet: Path, n: int, executor: str = "config") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", task, "--parquet", str(parquet), "--n", str(n), "--executor", executor]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["?"]
        return {"error": " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def _print_funnel(n: int, res: dict[str, Any], side: dict[str, Any], minilm: dict[str, Any]) -> None:
    print("| stage | rows in | wall s | rows/s | µs/row | peak RSS MB | notes |")
    print("|---|---|---|---|---|---|---|")
    for line in res["stages"]:
        notes = {k: v for k, v in line.items() if k not in ("stage", "rows_in", "s", "rows_per_s", "us_per_row", "peak_rss_mb")}
        print(f"| {line['stage']} | {line['rows_in']} | {line['s']} | {line['rows_per_s'] or '-'} | "
              f"{line['us_per_row'] if line['rows_in'] else '-'} | {line['peak_rss_mb']} | {json.dumps(notes) if notes else ''} |")
    ok_t, ok_m = res["total_s"] <= TARGET_TOTAL_S, res["peak_rss_mb"] <= TARGET_RSS_MB
    print(f"| **total** | {n} | **{res['total_s']}** | {round(n / res['total_s'])} | "
          f"{round(res['total_s'] / n * 1e6, 1)} | **{res['peak_rss_mb']}** | {res['accepted']} accepted |")
    print(f"\ntarget (500k rows on 2 cores: <= {TARGET_TOTAL_S:.0f} s, <= {TARGET_RSS_MB:.0f} MB): "
          f"{res['total_s']} s [{'PASS' if ok_t else 'FAIL'}], {res['peak_rss_mb']} MB [{'PASS' if ok_m else 'FAIL'}]"
          + ("" if n >= 500_000 else f" (at {n} rows)"))
    if side and "error" not in side:
        m = side["sample_rows"]
        print(f"\nMinHash signatures, same {m} rows ({m // 11} near-copies appended), num_perm {side['num_perm']}, "
              f"threshold {side['threshold']}:\n")
        print("| library | rows/s | time at this size s | recall of pairs >= threshold | MAE vs exact J | notes |")
        print("|---|---|---|---|---|---|")
        for lib in ("synqa", "rensa", "rensa_on_synqa_shingles", "datatrove"):
            r = side.get(lib, {})
            if "error" in r:
                print(f"| {lib} | - | - | - | - | {r['error']} |")
                continue
            note = ""
            if lib == "rensa":
                note = f"hash only {r['hash_only_rows_per_s']} rows/s; Python shingling {r['shingling_s']} s"
            if lib == "rensa_on_synqa_shingles":
                note = f"synqa's numpy shingle hashes {r['shingle_hash_s']} s + rensa permutations {r['permute_s']} s"
            if lib == "datatrove":
                note = f"measured on {r['measured_rows']} rows; {r['shingles']}; {r['num_perm']} perms (14x8)"
            print(f"| {lib} | {r['rows_per_s']} | {round(n / r['rows_per_s'], 1)} | {r.get('recall')} | "
                  f"{r.get('mae_vs_exact', '-')} | {note} |")
        ours = side["synqa"]["rows_per_s"]
        best = max(("rensa", "rensa_on_synqa_shingles"), key=lambda k: side[k]["rows_per_s"])
        theirs = side[best]["rows_per_s"]
        equal = side[best]["recall"] >= side["synqa"]["recall"] - 0.01
        verdict = "adopt rensa" if theirs >= 3 * ours and equal else "keep synqa's MinHasher"
        print(f"\nfastest rensa route ({best}) / synqa = {theirs / ours:.2f}x from normalised text: {verdict} "
              f"(rule: adopt if >= 3x at equal recall; rensa's digests are not datasketch-compatible, so adopting "
              f"it would also mean re-signing the cross-batch dedup index)")
    if minilm and "error" not in minilm:
        emb = next((x for x in res["stages"] if x["stage"] == "embeddings"), None)
        extrapolated = (emb["rows_in"] if emb else n) / minilm["rows_per_s"]
        print(f"\nMiniLM-only embedding route: {minilm['rows_per_s']} rows/s on {minilm['rows']} rows -> "
              f"{extrapolated:.0f} s ({extrapolated / 60:.1f} min) for the {emb['rows_in'] if emb else n} rows this "
              f"size embeds" + (f"; the configured route took {emb['s']} s" if emb else ""))
    elif minilm:
        print(f"\nMiniLM-only line: {minilm['error']}")


def _flatness(results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(n for n, r in results.items() if "stages" in r)
    if len(sizes) < 2:
        return
    lo, hi = sizes[0], sizes[-1]
    allowance = math.log(hi) / math.log(lo) * NLOGN_SLACK
    print(f"\n## Cost per row (µs/row) across sizes; FAIL if it grows more than n log n allows "
          f"(x{allowance:.2f} from {lo} to {hi} rows)\n")
    print("| stage | " + " | ".join(str(n) for n in sizes) + " | ratio | verdict |")
    print("|---|" + "---|" * (len(sizes) + 2))
    names = [x["stage"] for x in results[hi]["stages"] if x["rows_in"]]
    for name in names:
        cost = {n: next((x["us_per_row"] for x in results[n]["stages"] if x["stage"] == name), None) for n in sizes}
        if not cost[lo] or cost[hi] is None:
            continue
        ratio = cost[hi] / cost[lo]
        print(f"| {name} | " + " | ".join(str(cost[n]) for n in sizes) + f" | {ratio:.2f} | "
              f"{'flat' if ratio <= allowance else 'FAIL: grows faster than n log n'} |")
    tot = {n: results[n]["total_s"] / n * 1e6 for n in sizes}
    print("| total | " + " | ".join(f"{tot[n]:.1f}" for n in sizes) + f" | {tot[hi] / tot[lo]:.2f} | "
          f"{'flat' if tot[hi] / tot[lo] <= allowance else 'FAIL'} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    p.add_argument("--side-rows", type=int, default=100_000, help="MinHash side-by-side subsample (per size)")
    p.add_argument("--minilm-rows", type=int, default=5_000)
    p.add_argument("--no-side", action="store_true", help="skip the side-by-side lines")
    p.add_argument("--executor", choices=["config", "inline", "local"], default="config",
                   help="where the gate stages run (config = the gate config's executor section, as a batch)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--parquet", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "funnel":
        print(json.dumps(funnel(args.parquet, args.executor)))
        return 0
    if args.worker == "minhash":
        print(json.dumps(minhash_side(args.parquet, args.n)))
        return 0
    if args.worker == "minilm":
        print(json.dumps(minilm_side(args.parquet, args.n)))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="synqa-bench-funnel-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# full-funnel benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"load average at start {_load()}; tables in {workdir}\n")
    results: dict[int, dict[str, Any]] = {}
    minilm = {} if args.no_side else _child("minilm", _table(workdir, max(args.minilm_rows, 1), args.data), args.minilm_rows)
    for n in args.rows:
        parquet = _table(workdir, n, args.data)
        print(f"## {n} rows (load average {_load()} before)\n")
        res = _child("funnel", parquet, n, args.executor)
        if "error" in res:
            print(f"funnel failed: {res['error']}\n")
            continue
        side = {} if args.no_side else _child("minhash", parquet, min(n, args.side_rows))
        results[n] = res
        _print_funnel(n, res, side, minilm)
        print(f"\nload average after: {_load()}\n")
    _flatness(results)
    return 0


def _table(workdir: Path, n: int, data: Path) -> Path:
    path = workdir / f"candidates_{n}.parquet"
    if not path.exists():
        candidates_table(n, data).to_parquet(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
