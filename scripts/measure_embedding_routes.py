#!/usr/bin/env python
"""Recall, false positives and throughput of the embedding routes, side by side (MiniLM-only, static-only,
the static cascade), on real eval sets and real benign text.

    .venv/bin/python scripts/measure_embedding_routes.py              # prints the markdown of embedding-routes.md
    .venv/bin/python scripts/measure_embedding_routes.py --quick      # fewer canaries / benign rows

Eval sets: HumanEval (prompt + canonical solution) and GSM8K test (question), plus SemEval STS pairs with gold
>= 4.5 (item = sentence 1, real human paraphrase = sentence 2). Positives per item (seeded): ``verbatim``,
``embedded`` inline in a longer answer, ``edited`` (a planted paraphrase: every 5-8 words one word is replaced by
a synonym, dropped, or swapped with its neighbour, and a lead-in sentence is added, so that no 13-gram of the item
survives in most rows), and ``paraphrased`` (STS, the real paraphrase). Benign: GSM8K train questions (same style
as GSM8K test, no overlap), BANKING77 test queries and the ~84-word bench rows of ``benchmarks/bench_gates.py``
(its planted contamination rows removed).

Every decision goes through :class:`synqa_dagster.gates.contamination.ContaminationGate` itself:

* ``minilm``: MiniLM vectors for every row (the route ``minilm``), threshold 0.88;
* ``static``: static vectors for every row and the same gate with the static vectors as if they were the
  route's only vectors, at the static thresholds listed (no re-scoring): what static alone would decide;
* ``cascade``: the route ``static_cascade`` (static candidates at ``contamination_static_threshold``, MiniLM
  re-score of the candidates against 0.88).

MiniLM vectors are cached per text in ``.synqa/cache/contamination-embeddings.sqlite`` (the same cache as
``scripts/measure_contamination.py``) so the tables can be rebuilt; rows/s figures are measured separately on
uncached text, with the load average printed next to each.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from measure_contamination import EmbeddingCache, load_sts, md_table, pct, shared_data_dir  # noqa: E402

from synqa_dagster.embedding import (  # noqa: E402
    CascadeEmbedder,
    EmbeddingConfig,
    StaticEmbedder,
)
from synqa_dagster.gates.contamination import (  # noqa: E402
    CATEGORY_EMBEDDING,
    ContaminationGate,
    ContaminationGateConfig,
    plant_eval_canaries,
)
from synqa_dagster.gates.eval_sets import EvalSetSpec, load_eval_sets  # noqa: E402

STATIC_THRESHOLDS = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.88, 0.90)
MINILM_THRESHOLD = 0.88

_SYN = {
    "how": "in what way", "many": "several", "much": "a lot", "has": "owns", "have": "hold", "buys": "purchases",
    "bought": "purchased", "each": "every", "total": "overall", "then": "afterwards", "there": "here", "are": "were",
    "is": "was", "gets": "receives", "makes": "produces", "the": "this", "a": "one", "and": "plus", "of": "from",
    "return": "give back", "returns": "gives back", "list": "array", "number": "value", "numbers": "values",
    "string": "text", "given": "provided", "function": "routine", "if": "when", "for": "over", "in": "inside",
    "to": "towards", "with": "using", "week": "7 days", "day": "daily period", "money": "cash", "costs": "is priced at",
    "more": "additional", "than": "compared to", "what": "which", "she": "the woman", "he": "the man",
}
_LEAD = ("Here is a problem for you.", "Try this one:", "A question from my homework:", "Consider the following.")


def plant_edited(text: str, rng: random.Random) -> str:
    """A planted paraphrase: one word edit every 5-8 words (synonym / drop / swap) and a lead-in sentence."""
    words = text.split()
    out: list[str] = []
    i, nxt = 0, rng.randint(2, 6)
    while i < len(words):
        w = words[i]
        if i == nxt:
            nxt = i + rng.randint(5, 8)
            key = re.sub(r"\W", "", w.lower())
            op = rng.random()
            if key in _SYN and op < 0.7:
                out.append(_SYN[key])
            elif op < 0.85 and i + 1 < len(words):
                out.extend([words[i + 1], w])
                i += 2
                continue
            # else: dropped
        else:
            out.append(w)
        i += 1
    return rng.choice(_LEAD) + " " + " ".join(out)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class CachedMiniLM:
    """The MiniLM rescorer backed by the per-text cache (the same vectors the wheel's MiniLM computes)."""

    route = "minilm"

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        self.model_id = cache.embedder.model_id
        self.dim = 384
        self.calls = 0
        self.rows = 0

    def encode(self, texts, show_progress_bar: bool = False):
        self.calls += 1
        self.rows += len(texts)
        return self.cache.encode(list(texts), "rescore")


class AsRoute:
    """An embedder stand-in that tells the gate which route its vectors came from."""

    def __init__(self, route: str, model_id: str, rescorer=None, config=None):
        self.route, self.model_id, self.rescorer, self.config = route, model_id, rescorer, config


def bench_rows(n: int, data: Path) -> list[str]:
    from bench_gates import build_rows

    rows = build_rows(n, data)
    rows = rows[rows["technique"] != "planted_contamination"]
    return rows["text"].tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir())
    ap.add_argument("--canaries", type=int, default=200, help="items per eval set (default 200)")
    ap.add_argument("--sts-items", type=int, default=400)
    ap.add_argument("--bench-rows", type=int, default=1500, help="~84-word bench rows as benign text")
    ap.add_argument("--speed-rows", type=int, default=200, help="uncached rows for the MiniLM rows/s figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.canaries, args.sts_items, args.bench_rows, args.speed_rows = 60, 150, 1500, 60
    t_start = time.perf_counter()
    data = args.data

    specs = [
        EvalSetSpec(name="humaneval", source="humaneval"),
        EvalSetSpec(name="gsm8k_test", path=str(data / "gsm8k" / "test.jsonl"), text_fields=["question"]),
    ]
    items = load_eval_sets(specs).assign(paraphrase=None)
    items = pd.concat([items, load_sts(data, args.sts_items, args.seed)], ignore_index=True)
    items = items[["eval_set", "item_id", "text", "paraphrase"]]

    canaries = plant_eval_canaries(items, args.canaries, args.seed, kinds=["verbatim", "embedded", "paraphrased"])
    rng = random.Random(f"edited:{args.seed}")
    long_items = items[items["eval_set"] != "sts"]
    extra = []
    for name, grp in long_items.groupby("eval_set", sort=False):
        pick = sorted(rng.sample(range(len(grp)), min(args.canaries, len(grp))))
        for j in pick:
            r = grp.iloc[j]
            extra.append((f"edited:{name}/{r.item_id}", plant_edited(str(r.text), rng), "edited", name, str(r.item_id)))
    canaries = pd.concat([canaries, pd.DataFrame(extra, columns=canaries.columns)], ignore_index=True)
    canaries = canaries[~((canaries["eval_set"] == "sts") & (canaries["canary_kind"] != "paraphrased"))].reset_index(drop=True)

    read = lambda p: [__import__("json").loads(x)["question"] for x in p.read_text().splitlines() if x.strip()]  # noqa: E731
    benign = {
        "GSM8K train questions": read(data / "gsm8k" / "train.jsonl"),
        "BANKING77 test": pd.read_csv(data / "banking77" / "test.csv")["text"].astype(str).tolist(),
        f"bench rows (~84 words, {args.bench_rows})": bench_rows(args.bench_rows, data),
    }
    if args.quick:
        benign = {k: v[:1500] for k, v in benign.items()}
    # benign rows are judged against the long eval sets only (STS items are generic sentences, not an eval set)
    long_mask = (items["eval_set"] != "sts").to_numpy()

    cache = EmbeddingCache(ROOT / ".synqa" / "cache" / "contamination-embeddings.sqlite")
    static = StaticEmbedder()
    t0 = time.perf_counter()
    static.model  # noqa: B018 - distil or load
    static_load = time.perf_counter() - t0
    man = static.manifest()
    cfg = EmbeddingConfig()
    minilm = CachedMiniLM(cache)

    print(f"<!-- scripts/measure_embedding_routes.py --canaries {args.canaries} --sts-items {args.sts_items} "
          f"--bench-rows {args.bench_rows} --seed {args.seed}{' --quick' if args.quick else ''}; "
          f"loadavg at start {loadavg()} -->")
    print(f"\nStatic model `{static.model_id}`: distilled in {man['distill_seconds']} s "
          f"(load average then {man.get('loadavg')}); this run loaded it in {static_load:.2f} s.\n")

    ev_static = static.encode(items["text"].astype(str).tolist())
    ev_minilm = cache.encode(items["text"].astype(str).tolist(), "eval items")

    def gate(sub: np.ndarray, route: str, thr: float = MINILM_THRESHOLD, vecs=None, static_thr=None):
        ev = items[sub].reset_index(drop=True)
        c = ContaminationGateConfig(eval_sets=specs, embedding_threshold=thr)
        if route == "cascade":
            if static_thr is not None:
                c = c.model_copy(update={"static_candidate_threshold": static_thr})
            emb = CascadeEmbedder(static, minilm, cfg)
        else:
            emb = AsRoute(route, static.model_id if route == "static" else minilm.model_id)
        return ContaminationGate(c, embedder=emb, eval_items=ev, eval_embeddings=vecs[sub])

    every = np.ones(len(items), dtype=bool)
    can_texts = canaries["text"].astype(str).tolist()
    can_static = static.encode(can_texts)
    can_minilm = cache.encode(can_texts, "canaries")
    rows_out = {}

    def recall_rows(result, label):
        caught = ~result.keep
        emb_caught = np.array([c == CATEGORY_EMBEDDING for c in result.category])
        for (s, k), idx in canaries.groupby(["eval_set", "canary_kind"], sort=False).groups.items():
            idx = np.asarray(idx)
            rows_out.setdefault((s, k), {"n": len(idx)})[label] = (float(caught[idx].mean()), float(emb_caught[idx].mean()))

    r_m = gate(every, "minilm", vecs=ev_minilm).evaluate(canaries, embeddings=can_minilm)
    recall_rows(r_m, "minilm 0.88")
    for t in (0.80, 0.85, 0.88):
        r_s = gate(every, "static", thr=t, vecs=ev_static).evaluate(canaries, embeddings=can_static)
        recall_rows(r_s, f"static {t:.2f}")
    r_c = gate(every, "cascade", vecs=ev_static).evaluate(canaries, embeddings=can_static)
    recall_rows(r_c, "cascade")
    cascade_rescored_canaries = r_c.metrics.get("embedding_candidates")
    labels = ["minilm 0.88", "static 0.80", "static 0.85", "static 0.88", "cascade"]

    print("### Recall on planted and real paraphrases (whole gate / embedding check alone)\n")
    print(f"Cascade: static candidates at cosine ≥ {ContaminationGateConfig().static_candidate_threshold:.2f}, top "
          f"{ContaminationGateConfig().static_top_k} items re-scored with MiniLM at {MINILM_THRESHOLD}. Cells: recall of the "
          "whole gate (text methods + embeddings) / share caught by the embedding check.\n")
    table = []
    for (s, k), d in rows_out.items():
        table.append([s, k, d["n"], *[f"{pct(d[lab][0])} / {pct(d[lab][1])}" for lab in labels]])
    print(md_table(["eval set", "kind", "n", *labels], table, "llr" + "r" * len(labels)))
    print(f"\nThe cascade re-scored {cascade_rescored_canaries} of {len(canaries)} canary rows with MiniLM.")

    # the static-cosine distribution of the positives the MiniLM route catches by embedding
    sbest = gate(every, "cascade", vecs=ev_static).cascade_cosine(can_texts, can_static)[3]
    m_emb = np.array([c == CATEGORY_EMBEDDING for c in r_m.category])
    print("\nCentred static cosine of the canaries MiniLM catches by embedding alone (their nearest item): "
          f"n = {int(m_emb.sum())}, min {sbest[m_emb].min():.3f}, 1st percentile {np.quantile(sbest[m_emb], 0.01):.3f}, "
          f"median {np.median(sbest[m_emb]):.3f}." if m_emb.any() else "")
    miss = m_emb & ~(~r_c.keep)
    print(f"MiniLM-caught canaries the cascade misses: {int(miss.sum())}.")

    # ------------------------------------------------------------------------------------------ benign rows
    print("\n### False positives on benign rows (against HumanEval + GSM8K test)\n")
    table = []
    for name, texts in benign.items():
        bs = static.encode(texts)
        bm = cache.encode(texts, name)
        cells = [name, len(texts)]
        gm = gate(long_mask, "minilm", vecs=ev_minilm).evaluate(pd.DataFrame({"text": texts, "row_id": range(len(texts))}), embeddings=bm)
        cells.append(pct(float((np.array(gm.category) == CATEGORY_EMBEDDING).mean()), len(texts)))
        g_s = gate(long_mask, "static", vecs=ev_static)
        sb, _ = g_s.max_cosine(bs)
        for t in (0.80, 0.85, 0.88):
            cells.append(pct(float((sb >= t).mean()), len(texts)))
        minilm.rows = 0
        gc = gate(long_mask, "cascade", vecs=ev_static).evaluate(pd.DataFrame({"text": texts, "row_id": range(len(texts))}), embeddings=bs)
        cells.append(pct(float((np.array(gc.category) == CATEGORY_EMBEDDING).mean()), len(texts)))
        cells.append(pct(gc.metrics.get("embedding_candidate_rate", 0.0), len(texts)))
        table.append(cells)
    print(md_table(["benign rows", "rows", "minilm 0.88", "static 0.80", "static 0.85", "static 0.88", "cascade",
                    "cascade: re-scored by MiniLM"], table))

    # ------------------------------------------------------------------------------------------ throughput
    print("\n### Throughput (rows/s, ~84-word bench rows, 2 shared cores)\n")
    speed_texts = bench_rows(max(args.bench_rows, 2000), data)
    speed_texts = [t + f" (#{i})" for i, t in enumerate(speed_texts)]  # uncached text
    table = []
    la = loadavg()
    t0 = time.perf_counter()
    sv = static.encode(speed_texts)
    dt = time.perf_counter() - t0
    table.append(["static encode", len(speed_texts), f"{len(speed_texts) / dt:,.0f}", la])
    from synqa_dagster.embedding import Embedder

    real = Embedder()
    real.encode(["warm up"])
    sub = speed_texts[: args.speed_rows]
    la = loadavg()
    t0 = time.perf_counter()
    real.encode(sub)
    dt_m = time.perf_counter() - t0
    table.append(["MiniLM encode (sentence-transformers)", len(sub), f"{len(sub) / dt_m:,.1f}", la])
    # the cascade gate end to end with the real (uncached) MiniLM re-scorer: static encode + static search +
    # MiniLM on the candidates only
    la = loadavg()
    gate_c = ContaminationGate(ContaminationGateConfig(eval_sets=specs), embedder=CascadeEmbedder(static, real, cfg),
                               eval_items=items[long_mask].reset_index(drop=True))
    gate_c.eval_embeddings  # noqa: B018 - the per-gate one-off (static vectors of the eval items)
    t0 = time.perf_counter()
    vec = static.encode(speed_texts)
    res = gate_c.evaluate(pd.DataFrame({"text": speed_texts, "row_id": range(len(speed_texts))}), embeddings=vec)
    dt_c = time.perf_counter() - t0
    table.append([f"cascade: static encode + contamination gate (MiniLM re-scored "
                  f"{res.metrics.get('embedding_candidates')} rows, {res.metrics.get('embedding_minilm_eval_items')} eval items)",
                  len(speed_texts), f"{len(speed_texts) / dt_c:,.0f}", la])
    print(md_table(["what", "rows", "rows/s", "load average (1/5/15 min)"], table, "lrrl"))
    print(f"\nMiniLM at that rate: 500k rows ≈ {500_000 / (len(sub) / dt_m) / 3600:.1f} h; static: "
          f"≈ {500_000 / (len(speed_texts) / dt) / 60:.1f} min.")
    print(f"\n<!-- {time.perf_counter() - t_start:.0f} s; loadavg at end {loadavg()} -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
