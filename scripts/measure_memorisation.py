"""Calibrate and measure the memorisation gate (``synqa_dagster/gates/memorisation.py``) on real data.

Real rows: the demo's seed messages and reference customer messages (``data/demo/``). Negatives (rows the gate
must keep): the demo's stored generated candidates (minus the real leaks the span check finds in them), the
messages of *other* real customers (leave-one-out: every real row against the rest, the same-intent ones
reported separately), support texts written for synqa on the same topics (``SAME_TOPIC``), BANKING77 support
queries, and SemEval STS pairs with gold similarity >= 4 that are *not* copies (longest common word run < 5,
word Jaccard < 0.5: how high genuine paraphrase cosine goes). Positives: real messages with light edits (a few
words changed, dropped, inserted, swapped, sentences reordered, typos, a greeting added), as the customer turn
on its own and inside a row with an answer.

Outputs: the cosine distributions (static model2vec vectors, the default route, and MiniLM), the recall / false
drop per threshold, the chosen thresholds' figures, span-check figures (demo candidates, boundary checks) and
throughput on 50k synthetic-ish rows (GSM8K / BANKING77 texts) against the demo real rows and against a 10k-row
real index. ``docs/measurements/memorisation.md`` records a run.

    DAGSTER_HOME=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SYNQA_SHARED_DATA=../shared/data \\
        .venv/bin/python scripts/measure_memorisation.py [--cache /tmp/mem-cache] [--skip-minilm] [--json out.json]

``--cache`` keeps the vectors of every text in a pickle per model (re-runs skip the MiniLM encodes).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synqa_dagster.gates.memorisation import (  # noqa: E402
    SAME_TOPIC,
    MemorisationGate,
    MemorisationGateConfig,
    normalize_for_memorisation,
)

SHARED = Path(os.environ.get("SYNQA_SHARED_DATA", ROOT.parent / "shared" / "data"))


# ------------------------------------------------------------------------------------------------------ data


def load_real() -> pd.DataFrame:
    seeds = [json.loads(x) for x in (ROOT / "data/demo/seeds.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    ref = [json.loads(x) for x in (ROOT / "data/demo/reference_customers.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = [{"source_id": f"seed:{r['seed_id']}", "label": r["label"], "text": r["text"]} for r in seeds]
    rows += [{"source_id": f"reference:{r['message_id']}", "label": r["label"], "text": r["text"]} for r in ref]
    return pd.DataFrame(rows).astype(object)


def load_candidates() -> pd.DataFrame:
    paths = sorted(glob.glob(str(ROOT / ".synqa/storage/generated_candidates/batch=*/data.parquet")))
    if not paths:
        return pd.DataFrame({"text": [], "instruction": [], "response": []}, dtype=object)
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def load_sts(min_score: float = 4.0) -> pd.DataFrame:
    rows = []
    for f in sorted((SHARED / "semeval_sts").glob("*/*.tsv")):
        for line in f.read_text(encoding="utf-8").split("\n"):
            p = line.split("\t")
            if len(p) < 3 or not p[0].strip():
                continue
            try:
                s = float(p[0])
            except ValueError:
                continue
            if s >= min_score and p[1].strip() and p[2].strip():
                rows.append((s, p[1], p[2], f.parent.name + "/" + f.name))
    return pd.DataFrame(rows, columns=["score", "a", "b", "file"])


def longest_common_run(a: list[str], b: list[str]) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def word_jaccard(a: list[str], b: list[str]) -> float:
    A, B = set(a), set(b)
    return len(A & B) / max(1, len(A | B))


# ----------------------------------------------------------------------------------------------------- edits

SUBS = ["really", "totally", "box", "thing", "account", "today", "week", "phone", "again", "honestly"]


def _sub(w, rng, k):
    w = list(w)
    for i in rng.sample(range(len(w)), min(k, len(w))):
        w[i] = rng.choice([s for s in SUBS if s != w[i].lower()])
    return w


def _drop(w, rng, k):
    w = list(w)
    for i in sorted(rng.sample(range(len(w)), min(k, len(w) - 1)), reverse=True):
        del w[i]
    return w


def _insert(w, rng, k):
    w = list(w)
    for _ in range(k):
        w.insert(rng.randrange(len(w) + 1), rng.choice(["just", "really", "please", "still"]))
    return w


def _swap(w, rng, k):
    w = list(w)
    for _ in range(k):
        if len(w) > 1:
            i = rng.randrange(len(w) - 1)
            w[i], w[i + 1] = w[i + 1], w[i]
    return w


def _typo(w, rng, k):
    w = list(w)
    pos = [i for i, x in enumerate(w) if len(x) >= 4]
    for i in rng.sample(pos, min(k, len(pos))):
        x = w[i]
        j = rng.randrange(len(x) - 1)
        w[i] = x[:j] + x[j + 1] + x[j] + x[j + 2 :]
    return w


def _reorder(text, rng):
    s = [x for x in re.split(r"(?<=[.!?])\s+", text) if x]
    if len(s) >= 2:
        j = rng.randrange(1, len(s))
        return " ".join(s[j:] + s[:j])
    w = text.split()
    h = len(w) // 2
    return " ".join(w[h:] + w[:h])


EDITS = {
    "sub1": lambda t, r: " ".join(_sub(t.split(), r, 1)),
    "sub2": lambda t, r: " ".join(_sub(t.split(), r, 2)),
    "drop2": lambda t, r: " ".join(_drop(t.split(), r, 2)),
    "insert2": lambda t, r: " ".join(_insert(t.split(), r, 2)),
    "swap2": lambda t, r: " ".join(_swap(t.split(), r, 2)),
    "typo2": lambda t, r: " ".join(_typo(t.split(), r, 2)),
    "reorder": _reorder,
    "greeting": lambda t, r: f"Hi there, {t} Thanks in advance!",
    "mixed": lambda t, r: " ".join(_typo(_swap(_sub(t.split(), r, 1), r, 1), r, 1)),
    "mixed_heavy": lambda t, r: " ".join(_typo(_swap(_sub(_drop(t.split(), r, 1), r, 2), r, 1), r, 1)),
}


# --------------------------------------------------------------------------------------------------- vectors


class CachedEncoder:
    """An embedder wrapper that remembers every text's vector (optionally in a pickle); keeps ``route`` and
    ``model_id`` so the gate picks the right threshold."""

    def __init__(self, model, route: str, path: Path | None):
        self.model, self.route, self.path = model, route, path
        self.model_id = getattr(model, "model_id", route)
        self.cache = pickle.loads(path.read_bytes()) if path and path.is_file() else {}

    def encode(self, texts):
        texts = [str(t) for t in texts]
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.model.encode(todo)))
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_bytes(pickle.dumps(self.cache))
        return np.stack([self.cache[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, 1), np.float32)


def q(x, ps=(0, 0.01, 0.05, 0.5, 0.95, 0.99, 1)):
    x = np.asarray(x, dtype=float)
    if not len(x):
        return {}
    return {("max" if p == 1 else "min" if p == 0 else f"p{round(p * 100, 1):g}"): round(float(np.quantile(x, p)), 3) for p in ps}


def rate(mask) -> float:
    mask = np.asarray(mask, dtype=bool)
    return round(float(mask.mean()), 4) if len(mask) else float("nan")


def span_false_positives(shared: Path) -> dict:
    """Independent customers sharing spans: BANKING77 test queries against BANKING77 train as the real rows, and
    the demo's reference messages against its seeds, at several span lengths."""
    train = pd.read_csv(shared / "banking77" / "train.csv")["text"].astype(str).tolist()
    test = pd.read_csv(shared / "banking77" / "test.csv")["text"].astype(str).tolist()
    real = load_real()
    seeds = real[real.source_id.str.startswith("seed:")]
    refs = real[real.source_id.str.startswith("reference:")]
    out = {}
    for k in (6, 8, 10, 12):
        cfg = MemorisationGateConfig(min_span_words=k, min_span_chars=10_000, use_embeddings=False)
        g = MemorisationGate(cfg, pd.DataFrame({"source_id": [f"reference:b{i}" for i in range(len(train))], "text": train}))
        r = g.evaluate(pd.DataFrame({"text": test}))
        g2 = MemorisationGate(cfg, seeds)
        r2 = g2.evaluate(refs[["text"]])
        out[f"{k}_words"] = {"banking77_test_vs_train": rate(~r.keep), "demo_reference_vs_seeds": rate(~r2.keep),
                             "example": next((x for x in r.reason if x), None)}
    for c in (40, 50, 60):
        cfg = MemorisationGateConfig(min_span_words=10_000, min_span_chars=c, use_embeddings=False)
        g = MemorisationGate(cfg, pd.DataFrame({"source_id": [f"reference:b{i}" for i in range(len(train))], "text": train}))
        r = g.evaluate(pd.DataFrame({"text": test}))
        r2 = MemorisationGate(cfg, seeds).evaluate(refs[["text"]])
        out[f"{c}_chars"] = {"banking77_test_vs_train": rate(~r.keep), "demo_reference_vs_seeds": rate(~r2.keep)}
    g = MemorisationGate(MemorisationGateConfig(use_embeddings=False),
                         pd.DataFrame({"source_id": [f"reference:b{i}" for i in range(len(train))], "text": train}))
    r = g.evaluate(pd.DataFrame({"text": test}))
    r2 = MemorisationGate(MemorisationGateConfig(use_embeddings=False), seeds).evaluate(refs[["text"]])
    out["default_10_words_or_50_chars"] = {"banking77_test_vs_train": rate(~r.keep), "demo_reference_vs_seeds": rate(~r2.keep),
                                           "examples": [x for x in r.reason if x][:4]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--speed-rows", type=int, default=50_000)
    args = ap.parse_args()
    from synqa_dagster.embedding import Embedder, StaticEmbedder

    out: dict = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                 "loadavg": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None}
    defaults = MemorisationGateConfig()
    real = load_real()
    cand = load_candidates()
    sts = load_sts()
    banking = pd.read_csv(SHARED / "banking77" / "test.csv")["text"].astype(str).tolist()
    models = {"static_cascade": StaticEmbedder()}
    if not args.skip_minilm:
        models["minilm"] = Embedder()
    enc = {k: CachedEncoder(m, k, args.cache / f"{k}.pkl" if args.cache else None) for k, m in models.items()}

    span_only = MemorisationGateConfig(use_embeddings=False)
    gate = MemorisationGate(span_only, real)
    nwords = gate.real_word_counts
    out["real_rows"] = {"n": len(real), "seed": int(real["source_id"].str.startswith("seed:").sum()),
                        "words_median": float(np.median(nwords)), "under_8_words": int((nwords < 8).sum()),
                        "index_windows": gate.index_windows}

    # ---- span check: demo candidates; independent customers sharing spans
    res = gate.evaluate(cand) if len(cand) else None
    if res is not None:
        out["demo_candidates_span"] = {"n": len(cand), "dropped": int((~res.keep).sum()),
                                       "reasons": [r for r in res.reason if r]}
    out["span_false_positives"] = span_false_positives(SHARED)

    # ---- positives: light edits of real messages, as the customer turn of a row with an answer
    rng = random.Random(2026)
    answers = cand["response"].astype(str).tolist() if len(cand) else [s[1] for s in SAME_TOPIC]
    pos = []
    for k, text in enumerate(real["text"]):
        for kind, f in EDITS.items():
            edited = f(text, rng)
            if normalize_for_memorisation(edited) == normalize_for_memorisation(text) and kind not in ("greeting", "reorder"):
                continue
            answer = answers[rng.randrange(len(answers))]
            pos.append({"src": k, "kind": kind, "instruction": edited, "response": answer,
                        "text": f"{edited}\n{answer}", "words": int(nwords[k])})
    pos = pd.DataFrame(pos)
    pres = gate.evaluate(pos)
    pos["span_caught"] = ~pres.keep
    out["positives"] = {"n": len(pos), "source_words_ge_8": int((pos.words >= 8).sum()),
                        "span_caught_by_kind": pos.groupby("kind")["span_caught"].mean().round(3).to_dict(),
                        "span_caught_all": rate(pos["span_caught"])}

    sts_a = [normalize_for_memorisation(t).split() for t in sts["a"]]
    sts_b = [normalize_for_memorisation(t).split() for t in sts["b"]]
    sts["lcr"] = [longest_common_run(a, b) for a, b in zip(sts_a, sts_b)]
    sts["jac"] = [word_jaccard(a, b) for a, b in zip(sts_a, sts_b)]
    sts["min_words"] = [min(len(a), len(b)) for a, b in zip(sts_a, sts_b)]
    sts_nc = sts[(sts.lcr < 5) & (sts.jac < 0.5)].reset_index(drop=True)
    out["sts"] = {"pairs_gold_ge4": len(sts), "non_copy_pairs": len(sts_nc), "non_copy_gold_ge4.5": int((sts_nc.score >= 4.5).sum()),
                  "non_copy_both_ge8_words": int((sts_nc.min_words >= 8).sum())}

    own = pd.DataFrame({"instruction": [s[0] for s in SAME_TOPIC], "response": [s[1] for s in SAME_TOPIC],
                        "text": [f"{a}\n{b}" for a, b in SAME_TOPIC]})
    keep_cand = cand.loc[res.keep].reset_index(drop=True) if res is not None else cand
    thresholds = np.round(np.arange(0.88, 0.996, 0.005), 3)
    dists: dict = {}
    for name, e in enc.items():
        R = e.encode(real["text"].tolist())
        d: dict = {}
        # distributions (max cosine with an eligible real row), per minimum real-row length
        S = R @ R.T
        np.fill_diagonal(S, -1)
        lab = real["label"].to_numpy(dtype=object)
        same = lab[:, None] == lab[None, :]
        by_min: dict = {}
        for mw in (4, 6, 8, 10):
            elig = nwords >= mw
            loo = S[:, elig].max(axis=1)[elig]
            loo_same = np.where(same, S, -1)[:, elig].max(axis=1)[elig]
            A = e.encode(sts_nc["a"].tolist())
            B = e.encode(sts_nc["b"].tolist())
            sc = np.sum(A * B, axis=1)[sts_nc.min_words.to_numpy() >= mw]
            by_min[mw] = {"other_customers_loo": q(loo, (0.5, 0.99, 1)), "same_intent_max": round(float(loo_same.max()), 3),
                          "sts_non_copy": {"n": int(len(sc)), **q(sc, (0.5, 0.99, 0.999, 1))}}
        d["negatives_by_min_words"] = by_min
        elig = nwords >= defaults.embedding_min_words
        ei = np.flatnonzero(elig)
        top = np.argsort(-S[:, elig].max(axis=1) * elig)[:2]
        d["closest_real_pairs"] = [(round(float(S[i, elig].max()), 3), real["text"].iat[i][:90],
                                    real["text"].iat[int(ei[S[i, elig].argmax()])][:90]) for i in top]
        Re = R[elig]

        def maxcos(texts):
            V = e.encode(list(texts))
            return (V @ Re.T).max(axis=1) if len(V) else np.zeros(0)

        A = e.encode(sts_nc["a"].tolist())
        B = e.encode(sts_nc["b"].tolist())
        sts_mask = sts_nc.min_words.to_numpy() >= defaults.embedding_min_words
        neg = {
            "demo_candidates_instruction": maxcos(keep_cand["instruction"]) if len(keep_cand) else np.zeros(0),
            "demo_candidates_text": maxcos(keep_cand["text"]) if len(keep_cand) else np.zeros(0),
            "other_customers_loo": S[:, elig].max(axis=1)[elig],
            "same_topic_written": np.maximum(maxcos(own["instruction"]), maxcos(own["text"])),
            "banking77_test": maxcos(banking),
            "sts_non_copy_pairs": np.sum(A * B, axis=1)[sts_mask],
        }
        d["negatives"] = {k: {"n": int(len(v)), **q(v, (0.5, 0.99, 0.999, 1))} for k, v in neg.items()}
        need = pos[(~pos.span_caught) & (pos.words >= defaults.embedding_min_words)].reset_index(drop=True)
        src = np.searchsorted(ei, need["src"].to_numpy())
        ci = np.sum(e.encode(need["instruction"].tolist()) * Re[src], axis=1)
        ct = np.sum(e.encode(need["text"].tolist()) * Re[src], axis=1)
        need = need.assign(cos=np.maximum(ci, ct))
        d["positives_span_missed"] = {"n": len(need), "cos_instruction": q(ci, (0.05, 0.5)), "cos_text": q(ct, (0.05, 0.5, 0.95)),
                                      "by_kind": {k: {"n": int(len(g)), **q(g["cos"], (0, 0.25, 0.5))} for k, g in need.groupby("kind")}}
        table = []
        for thr in thresholds:
            row = {"threshold": float(thr), "recall_span_missed": rate(need["cos"] >= thr)}
            row.update({f"fp_{k}": rate(v >= thr) for k, v in neg.items()})
            table.append(row)
        d["threshold_table"] = table

        # the chosen threshold, end to end through the gate (span + embedding, real embedder route)
        full = MemorisationGate(MemorisationGateConfig(), real, embedder=e)
        d["chosen_threshold"] = full.threshold
        rp = full.evaluate(pos, embeddings=e.encode(pos["text"].tolist()))
        caught = ~rp.keep
        near = np.array([c == "memorised_near_copy" for c in rp.category])
        big = pos.words.to_numpy() >= defaults.embedding_min_words
        d["chosen_positives"] = {
            "recall_all": rate(caught), f"recall_source_ge_{defaults.embedding_min_words}_words": rate(caught[big]),
            "by_near_copy_check": rate(near), "caught_n": int(caught.sum()),
            "caught_naming_own_message_n": int(sum(r is not None and f"{real['source_id'].iat[s]}:" in r + ":"
                                                   or (r is not None and f"{real['source_id'].iat[s]} (" in r)
                                                   for r, s in zip(rp.reason, pos["src"]))),
            "by_kind": {k: rate(caught[(pos.kind == k).to_numpy() & big]) for k in EDITS},
        }
        fps = {}
        for k, frame in (("demo_candidates", keep_cand), ("same_topic_written", own),
                         ("banking77_test", pd.DataFrame({"instruction": banking, "text": banking}))):
            if len(frame):
                rr = full.evaluate(frame, embeddings=e.encode(frame["text"].tolist()))
                fps[k] = {"n": len(frame), "false_drop_rate": rate(~rr.keep)}
        d["chosen_false_drops"] = fps
        dists[name] = d
    out["models"] = dists

    # ---- speed: 50k synthetic-ish rows (BANKING77 test / GSM8K question + a GSM8K answer)
    gsm = [json.loads(x) for x in (SHARED / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    btrain = pd.read_csv(SHARED / "banking77" / "train.csv")["text"].astype(str).tolist()
    r2 = random.Random(5)
    n = args.speed_rows
    instr = [r2.choice(banking) if i % 2 else r2.choice(gsm)["question"] for i in range(n)]
    resp = [r2.choice(gsm)["answer"] for _ in range(n)]
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "instruction": instr, "response": resp,
                         "text": [f"{a}\n{b}" for a, b in zip(instr, resp)]})
    speed: dict = {"rows": n, "mean_words": round(sum(len(t.split()) for t in rows["text"]) / n, 1)}
    t0 = time.perf_counter()
    rs = gate.evaluate(rows)
    speed["span_vs_demo_real_rows_per_s"] = round(n / (time.perf_counter() - t0))
    speed["span_vs_demo_real_drops"] = int((~rs.keep).sum())
    big_real = pd.DataFrame({"source_id": [f"reference:b{i}" for i in range(len(btrain))], "text": btrain})
    t0 = time.perf_counter()
    big = MemorisationGate(span_only, big_real)
    speed["index_banking77_train_build_s"] = round(time.perf_counter() - t0, 3)
    speed["index_banking77_train_rows"] = len(btrain)
    speed["index_banking77_train_windows"] = big.index_windows
    t0 = time.perf_counter()
    rb = big.evaluate(rows)
    speed["span_vs_banking77_train_rows_per_s"] = round(n / (time.perf_counter() - t0))
    speed["span_vs_banking77_train_drops"] = int((~rb.keep).sum())
    static = models["static_cascade"]
    t0 = time.perf_counter()
    vec = static.encode(rows["text"].tolist())
    speed["static_encode_text_rows_per_s"] = round(n / (time.perf_counter() - t0))
    full = MemorisationGate(MemorisationGateConfig(), real, embedder=static)
    t0 = time.perf_counter()
    rf = full.evaluate(rows, embeddings=vec)
    speed["full_gate_static_rows_per_s"] = round(n / (time.perf_counter() - t0))
    speed["full_gate_metrics"] = {k: rf.metrics[k] for k in ("span_seconds", "embedding_seconds", "dropped_memorised_span",
                                                              "dropped_memorised_near_copy")}
    out["speed"] = speed

    text = json.dumps(out, indent=1, default=str, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
