#!/usr/bin/env python
"""Measured recall and false positives of the contamination gate, on real eval sets and real benign text.

    .venv/bin/python scripts/measure_contamination.py                  # all tables (embeddings cached)
    .venv/bin/python scripts/measure_contamination.py --no-embeddings  # text methods only (~1 min)

Eval sets: HumanEval (bundled; prompt + canonical solution), GSM8K test (question), BANKING77 test (query; 29.5%
of its items are under 8 words) and SemEval STS pairs with gold similarity >= 4.5 (sentence 1 = the item,
sentence 2 = its real, human-judged paraphrase; a seeded sample). Benign text: GSM8K train (same style as GSM8K
test, no overlap), BANKING77 test (against the other sets), BANKING77 train (against BANKING77 test: the same
domain, the worst case for short items; it contains genuine cross-split near-duplicates, counted apart).

Canaries come from :func:`synqa_dagster.gates.contamination.plant_eval_canaries` (``verbatim``, ``rewrapped``,
``truncated`` to 60%, ``embedded`` inline in a longer answer, ``paraphrased`` for STS). Embeddings (all-MiniLM-
L6-v2, CPU) are cached per text in ``.synqa/cache/contamination-embeddings.sqlite``. Prints the markdown tables of
the contamination section of ``docs/measurements/toxicity-contamination.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from synqa_dagster.gates.contamination import (
    CANARY_KINDS,
    ContaminationGate,
    ContaminationGateConfig,
    canary_recall,
    normalize_for_matching,
    plant_eval_canaries,
)
from synqa_dagster.gates.eval_sets import EvalSetSpec, load_eval_sets

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)
SHORT = 8  # "short item" in the tables: fewer words than the default min_span_words


# ------------------------------------------------------------------------------------------------------ data


def shared_data_dir() -> Path:
    return Path(os.environ.get("SYNQA_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


def load_sts(data: Path, n: int, seed: int, min_score: float = 4.5) -> pd.DataFrame:
    """SemEval STS pairs (gold >= ``min_score``, normalised texts differ) as eval items with a paraphrase."""
    rows = []
    for f in sorted((data / "semeval_sts").glob("*/*.tsv")):
        for i, line in enumerate(f.read_text(encoding="utf-8").split("\n")):
            parts = line.split("\t")
            if len(parts) < 3 or not parts[0].strip() or float(parts[0]) < min_score:
                continue
            a, b = parts[1].strip(), parts[2].strip()
            if normalize_for_matching(a) != normalize_for_matching(b):
                rows.append((f"{f.parent.name}/{f.stem}/{i}", a, b))
    frame = pd.DataFrame(rows, columns=["item_id", "text", "paraphrase"])
    frame = frame.drop_duplicates("text").sample(min(n, len(frame)), random_state=seed).sort_index()
    return frame.assign(eval_set="sts")[["eval_set", "item_id", "text", "paraphrase"]].reset_index(drop=True)


def load_all(data: Path, sts_items: int, seed: int) -> dict[str, object]:
    specs = [
        EvalSetSpec(name="humaneval", source="humaneval"),
        EvalSetSpec(name="gsm8k_test", path=str(data / "gsm8k" / "test.jsonl"), text_fields=["question"]),
        EvalSetSpec(name="banking77_test", path=str(data / "banking77" / "test.csv"), text_fields=["text"]),
    ]
    items = load_eval_sets(specs).assign(paraphrase=None)
    items = pd.concat([items, load_sts(data, sts_items, seed)], ignore_index=True)
    read = lambda p: [json.loads(x)["question"] for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]  # noqa: E731
    return {
        "items": items,
        "gsm8k_train": read(data / "gsm8k" / "train.jsonl"),
        "banking_test": pd.read_csv(data / "banking77" / "test.csv")["text"].astype(str).tolist(),
        "banking_train": pd.read_csv(data / "banking77" / "train.csv")["text"].astype(str).tolist(),
    }


# ------------------------------------------------------------------------------------------------ embeddings


class EmbeddingCache:
    """all-MiniLM-L6-v2 vectors cached per exact text (sqlite; safe to interrupt and resume)."""

    def __init__(self, path: Path):
        from synqa_dagster.embedding import Embedder

        self.embedder = Embedder()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(path, timeout=60)
        self.con.execute("create table if not exists v (k text primary key, v blob)")

    def _key(self, text: str) -> str:
        return hashlib.sha256(self.embedder.model_id.encode() + b"\0" + text.encode("utf-8", "surrogatepass")).hexdigest()

    def encode(self, texts: list[str], label: str = "") -> np.ndarray:
        keys = [self._key(t) for t in texts]
        have: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(keys))
        for s in range(0, len(uniq), 900):
            part = uniq[s : s + 900]
            q = f"select k, v from v where k in ({','.join('?' * len(part))})"
            have.update((k, np.frombuffer(b, dtype=np.float32)) for k, b in self.con.execute(q, part))
        todo = list({k: t for k, t in zip(keys, texts) if k not in have}.items())
        t0 = time.perf_counter()
        for s in range(0, len(todo), 256):
            part = todo[s : s + 256]
            vec = self.embedder.encode([t for _, t in part])
            self.con.executemany("insert or replace into v values (?, ?)",
                                 [(k, v.astype(np.float32).tobytes()) for (k, _), v in zip(part, vec)])
            self.con.commit()
            have.update((k, v) for (k, _), v in zip(part, vec))
            done = s + len(part)
            print(f"  embedded {label}: {done}/{len(todo)} new ({done / (time.perf_counter() - t0):.0f}/s)",
                  file=sys.stderr, flush=True)
        return np.stack([have[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 384), np.float32)


# ---------------------------------------------------------------------------------------------------- output


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "–" if v != v else f"{v:.3f}"
        return str(v)

    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def pct(x: float, n: int | None = None) -> str:
    if x != x:
        return "–"
    s = f"{100 * x:.1f}%" if x not in (0.0, 1.0) else ("0" if x == 0 else "100%")
    if 0 < x < 0.001:
        s = f"{100 * x:.3f}%"
    elif 0 < x < 0.01:
        s = f"{100 * x:.2f}%"
    return f"{s} ({round(x * n)})" if n is not None and 0 < x < 1 and round(x * n) < 100 else s


def section(title: str) -> None:
    print(f"\n### {title}\n")


# ------------------------------------------------------------------------------------------------- measures


def gate_for(items: pd.DataFrame, **cfg) -> ContaminationGate:
    return ContaminationGate(ContaminationGateConfig(use_embeddings=False, **cfg), eval_items=items)


def text_flags(gate: ContaminationGate, texts: list[str]) -> tuple[np.ndarray, pd.Series]:
    d = gate.index.match_details(texts, gate.config.min_ngram_overlap)
    return d.item >= 0, pd.Series(d.method[d.item >= 0], dtype=object).value_counts()


def as_turn(texts: pd.Series) -> list[str]:
    return [f"Sure, happy to help with that.\n{t}\nLet me know if anything is unclear." for t in texts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir())
    ap.add_argument("--canaries", type=int, default=200, help="canary items per eval set (default 200)")
    ap.add_argument("--sts-items", type=int, default=400, help="STS paraphrase pairs sampled as an eval set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-embeddings", action="store_true", help="text methods only (no model, no cache)")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache (default .synqa/cache/...sqlite)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    d = load_all(args.data, args.sts_items, args.seed)
    items: pd.DataFrame = d["items"]  # type: ignore[assignment]
    gsm_train: list[str] = d["gsm8k_train"]  # type: ignore[assignment]
    bank_test: list[str] = d["banking_test"]  # type: ignore[assignment]
    bank_train: list[str] = d["banking_train"]  # type: ignore[assignment]
    sets = list(dict.fromkeys(items["eval_set"]))
    long_sets = items[items["eval_set"].isin(["humaneval", "gsm8k_test"])].reset_index(drop=True)
    bank_items = items[items["eval_set"] == "banking77_test"].reset_index(drop=True)

    after = gate_for(items)
    before = gate_for(items, exact_item_match=False)  # = the previous behaviour: items < 8 words unindexed
    n_words = after.index.items["n_words"].to_numpy()
    print(f"<!-- scripts/measure_contamination.py --canaries {args.canaries} --sts-items {args.sts_items} "
          f"--seed {args.seed}{' --no-embeddings' if args.no_embeddings else ''} -->")

    # ---------------------------------------------------------------------------------------------- coverage
    section("Eval items per method (default configuration)")
    cov = after.coverage()
    rows = []
    for r in cov.itertuples(index=False):
        sel = (after.index.items["eval_set"] == r.eval_set).to_numpy()
        rows.append([r.eval_set, r.items, pct(float((n_words[sel] < SHORT).mean())), r.ngram, r.span, r.exact,
                     r.items, r.unindexed])
    rows.append(["**all**", len(items), pct(float((n_words < SHORT).mean())), *[int(cov[c].sum()) for c in
                 ("ngram", "span", "exact")], len(items), int(cov["unindexed"].sum())])
    print(md_table(["eval set", "items", "< 8 words", "13-gram", "whole-item span (8-12 words)",
                    "exact row/line (< 8 words)", "embedding", "unindexed"], rows))
    print(f"\n`unindexed_items()`: {len(after.unindexed_items())} with embeddings, "
          f"{len(after.unindexed_items(include_embedding=False))} by text methods alone.")

    # ------------------------------------------------------------------------------------- verbatim recall
    section("Verbatim recall, text methods (before = items under 8 words not indexed → after)")
    rows = []
    texts = items["text"].tolist()
    turns = as_turn(items["text"])
    hit = {(name, kind): text_flags(g, t)[0] for name, g in (("before", before), ("after", after))
           for kind, t in (("row", texts), ("turn", turns))}
    for s in [*sets, "all"]:
        sel = np.ones(len(items), bool) if s == "all" else (items["eval_set"] == s).to_numpy()
        short = sel & (n_words < SHORT)
        cells = [f"**{s}**" if s == "all" else s, int(sel.sum()), int(short.sum())]
        for kind in ("row", "turn"):
            for part in (sel, short):
                b, a = hit[("before", kind)][part], hit[("after", kind)][part]
                cells.append("–" if not part.any() else f"{pct(float(b.mean()))} → {pct(float(a.mean()))}")
        rows.append(cells)
    print(md_table(["eval set", "items", "< 8 words", "as the row: all", "as the row: < 8 words",
                    "as a turn: all", "as a turn: < 8 words"], rows))

    # ---------------------------------------------------------------------------------------- false positives
    section("False positives of the text methods on benign text")
    benign = [
        ("GSM8K train", gsm_train, long_sets, "HumanEval + GSM8K test"),
        ("BANKING77 test", bank_test, long_sets, "HumanEval + GSM8K test"),
        ("GSM8K train", gsm_train, bank_items, "BANKING77 test"),
        ("BANKING77 train", bank_train, bank_items, "BANKING77 test"),
    ]
    rows = []
    for name, texts_b, ev, ev_name in benign:
        flags, by = text_flags(gate_for(ev), texts_b)
        ident = np.array([normalize_for_matching(t) for t in texts_b])
        dup = np.isin(ident, [normalize_for_matching(t) for t in ev["text"]])
        rows.append([name, ev_name, len(texts_b), pct(float(flags.mean()), len(texts_b)), int(dup.sum()),
                     pct(float((flags & ~dup).mean()), len(texts_b)),
                     ", ".join(f"{k} {v}" for k, v in by.items()) or "–"])
    print(md_table(["benign rows", "eval sets", "rows", "flagged", "identical to an item",
                    "flagged, identical excluded", "by method"], rows, "llrrrrl"))

    section("The short-item guard: BANKING77 train queries flagged against BANKING77 test items")
    ident = np.array([normalize_for_matching(t) for t in bank_train])
    dup = np.isin(ident, [normalize_for_matching(t) for t in bank_items["text"]])
    rows = []
    bw = gate_for(bank_items).index.items["n_words"].to_numpy()
    for m in (4, 5, 6, 7, 8, 9, 10):
        g = gate_for(bank_items, min_span_words=m)
        f, by = text_flags(g, bank_train)
        span_fp = int(by.get("span", 0))
        rows.append([f"min_span_words = {m}" + (" (default)" if m == 8 else ""), pct(float((bw < m).mean())),
                     pct(float((f & ~dup).mean()), len(bank_train)), span_fp])
    for m in (8, 10):
        g = gate_for(bank_items, short_ngram_size=m)
        f, by = text_flags(g, bank_train)
        rows.append([f"short_ngram_size = {m} ({m}-grams of {m + 1}-12-word items)", pct(float((bw < 8).mean())),
                     pct(float((f & ~dup).mean()), len(bank_train)), int(by.get("short_ngram", 0))])
    print(md_table(["setting", "items matched only as a whole row/line", "BANKING77 train flagged (identical excl.)",
                    "of which span / short n-gram"], rows, "lrrr"))

    # ---------------------------------------------------------------------------------------------- canaries
    canaries = plant_eval_canaries(items, args.canaries, seed=args.seed)
    nw = dict(zip(zip(items["eval_set"], items["item_id"]), n_words))
    canaries["item_words"] = [nw[(s, i)] for s, i in zip(canaries["eval_set"], canaries["item_id"])]
    canaries["length"] = np.where(canaries["item_words"] < SHORT, "< 8 words", ">= 8 words")
    emb_gate = ContaminationGate(ContaminationGateConfig(use_embeddings=True), eval_items=items)
    cache = None
    cvec = None
    if not args.no_embeddings:
        cache = EmbeddingCache(args.cache or ROOT / ".synqa" / "cache" / "contamination-embeddings.sqlite")
        emb_gate._eval_embeddings = cache.encode(items["text"].tolist(), "eval items")
        emb_gate._embedder = cache.embedder
        cvec = cache.encode(canaries["text"].tolist(), "canaries")
    res_text = emb_gate.evaluate(canaries)
    res_emb = emb_gate.evaluate(canaries, embeddings=cvec) if cvec is not None else None
    section(f"Canary recall per planting kind ({args.canaries} items per set, seed {args.seed}; "
            f"embedding threshold {emb_gate.config.embedding_threshold})")
    tt = canary_recall(canaries, res_text)
    te = canary_recall(canaries, res_emb) if res_emb is not None else None
    kinds = [k for k in CANARY_KINDS if k in set(canaries["canary_kind"])]
    rows = []
    for s in [*sets, "all"]:
        cells = [f"**{s}**" if s == "all" else s]
        for k in kinds:
            r = tt[(tt["eval_set"] == s) & (tt["canary_kind"] == k)]
            if r.empty:
                cells.append("–")
                continue
            txt = pct(float(r["recall_text"].iat[0]))
            if te is not None:
                e = te[(te["eval_set"] == s) & (te["canary_kind"] == k)]
                txt += f" / {pct(float(e['recall'].iat[0]))}"
            cells.append(txt)
        rows.append(cells)
    note = "text methods / + embeddings" if te is not None else "text methods"
    print(md_table(["eval set"] + [f"{k} ({note})" for k in kinds], rows))
    # by item length (BANKING77 test holds the short items)
    rows = []
    for length in ("< 8 words", ">= 8 words"):
        cells = [length]
        for k in kinds:
            sel = (canaries["length"] == length) & (canaries["canary_kind"] == k)
            if not sel.any():
                cells.append("–")
                continue
            txt = pct(float((np.array(res_text.category)[sel] == "ngram_overlap").mean()))
            if res_emb is not None:
                txt += f" / {pct(float((~res_emb.keep[sel.to_numpy()]).mean()))}"
            cells.append(f"{txt} (n={int(sel.sum())})")
        rows.append(cells)
    print()
    print(md_table(["item length"] + [f"{k} ({note})" for k in kinds], rows))

    if cache is None:
        print(f"\n(embedding tables skipped; {time.perf_counter() - t_start:.0f} s)")
        return 0

    # ----------------------------------------------------------------------------------- embedding threshold
    section("Embedding threshold: benign rows at or above each cosine (embedding check alone)")
    ev_long = ContaminationGate(ContaminationGateConfig(), eval_items=long_sets,
                                eval_embeddings=emb_gate.eval_embeddings[items["eval_set"].isin(["humaneval", "gsm8k_test"]).to_numpy()])
    ev_bank = ContaminationGate(ContaminationGateConfig(), eval_items=bank_items,
                                eval_embeddings=emb_gate.eval_embeddings[(items["eval_set"] == "banking77_test").to_numpy()])
    ev_sts = ContaminationGate(ContaminationGateConfig(), eval_items=items[items["eval_set"] == "sts"].reset_index(drop=True),
                               eval_embeddings=emb_gate.eval_embeddings[(items["eval_set"] == "sts").to_numpy()])
    gvec = cache.encode(gsm_train, "GSM8K train")
    btvec = cache.encode(bank_test, "BANKING77 test")
    brvec = cache.encode(bank_train, "BANKING77 train")
    rows = []
    for name, vec, g, ev_name, excl in [
        ("GSM8K train", gvec, ev_long, "HumanEval + GSM8K test", None),
        ("BANKING77 test", btvec, ev_long, "HumanEval + GSM8K test", None),
        ("GSM8K train", gvec, ev_bank, "BANKING77 test", None),
        ("BANKING77 train", brvec, ev_bank, "BANKING77 test", dup),
        ("GSM8K train", gvec, ev_sts, "STS sentences", None),
        ("BANKING77 test", btvec, ev_sts, "STS sentences", None),
    ]:
        cos, _ = g.max_cosine(vec)
        if excl is not None:
            cos = cos[~excl]
        rows.append([name + (" (identical excl.)" if excl is not None else ""), ev_name, len(cos),
                     *[pct(float((cos >= t).mean()), len(cos)) for t in THRESHOLDS]])
    print(md_table(["benign rows", "eval sets", "rows", *[f"{t:.2f}" for t in THRESHOLDS]], rows, "llr" + "r" * len(THRESHOLDS)))

    section("Embedding threshold: canaries at or above each cosine with their own item (embedding check alone)")
    pos = {(s, i): j for j, (s, i) in enumerate(zip(items["eval_set"], items["item_id"]))}
    own = np.array([pos[(s, i)] for s, i in zip(canaries["eval_set"], canaries["item_id"])])
    own_cos = np.einsum("ij,ij->i", cvec, emb_gate.eval_embeddings[own])
    rows = []
    for s in [*sets, "all"]:
        for k in kinds:
            sel = ((canaries["eval_set"] == s) if s != "all" else np.ones(len(canaries), bool)) & (canaries["canary_kind"] == k)
            sel = np.asarray(sel)
            if not sel.any() or k in ("verbatim", "rewrapped"):
                continue
            rows.append([s, k, int(sel.sum()), *[pct(float((own_cos[sel] >= t).mean())) for t in THRESHOLDS]])
    print(md_table(["eval set", "kind", "n", *[f"{t:.2f}" for t in THRESHOLDS]], rows, "llr" + "r" * len(THRESHOLDS)))
    print(f"\n({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
