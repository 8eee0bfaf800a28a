#!/usr/bin/env python
"""Held-out measurement of the learned toxicity scorer, side by side with profanity-check at its 0.30 threshold.

    .venv/bin/python scripts/measure_toxicity.py            # print the tables
    .venv/bin/python scripts/measure_toxicity.py --write    # ... and store them in the model's JSON metadata

Reads only the TEST splits (TweetEval hate/offensive test, HateXplain test, BANKING77 test, GSM8K test, SST-2
test, Self-Instruct user-oriented instructions) — none of them is used in training or threshold selection
(``scripts/train_toxicity.py``). Embeddings come from the same cache as training (``.synqa/cache``).
Prints markdown tables (the ones in ``docs/measurements/toxicity-contamination.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_toxicity as T  # noqa: E402  (same folder: data loaders, embedding cache, metrics)

from synqa_dagster.gates.toxicity import (  # noqa: E402
    DEFAULT_PROFANITY_THRESHOLD,
    LearnedToxicityScorer,
    ProfanityCheckScorer,
)

#: Benign rows that the lexical model is known to drop (issue 11), and obviously toxic ones. Hand-written, not
#: used in training; printed for both scorers.
PROBES_BENIGN = [
    "How do I check my tires' pressure?",
    "My car's front tires are worn unevenly, should I rotate them?",
    "What's the best way to roast a pig for a party of 40?",
    "Can you give me a Bloody Mary recipe?",
    "Run npm init to create a package.json file.",
    "She has 5 nuts and 3 balls. How many items does she have?",
    "I want to kill the background process that hangs my terminal.",
    "This movie was a dull, boring waste of two hours.",
]
PROBES_TOXIC = [
    "You are a worthless piece of shit and everyone hates you.",
    "Shut the fuck up, you stupid idiot.",
    "Immigrants are vermin and should all be sent back where they came from.",
    "Women are too stupid to be allowed to vote.",
    "I will find where you live and beat you to death.",
]


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) >= 0.001 or v == 0 else f"{v:.4f}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def routes_table(data: Path) -> int:
    """P / R / F1 (toxic test sets) and false drops (benign test sets) of the two heads and the cascade, computed
    through :class:`ToxicityGate` (MiniLM vectors from the training script's cache = what MiniLM computes)."""
    import pandas as pd

    from synqa_dagster.embedding import StaticEmbedder
    from synqa_dagster.gates.toxicity import ToxicityGate, ToxicityGateConfig

    static = StaticEmbedder()
    splits = T.load_all(data)["test"]
    mini = ToxicityGate(ToxicityGateConfig())
    print("| test set | rows | MiniLM-only P / R / F1 | static-only P / R / F1 | cascade P / R / F1 | re-scored by MiniLM |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    la = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    for sp in splits:
        rows = pd.DataFrame({"row_id": [str(i) for i in range(len(sp))], "text": sp.texts})
        vm = T.embed_cached(sp, verbose=False)
        vs = static.encode(sp.texts)
        r_m = mini.evaluate(rows, embeddings=vm)
        gate_c = ToxicityGate(ToxicityGateConfig())
        r_c = gate_c.evaluate(rows, embeddings=vs)
        st = gate_c.static_scorer
        flag_s = st.score(sp.texts, embeddings=vs) >= st.threshold
        cells = []
        for flag in (~r_m.keep, flag_s, ~r_c.keep):
            if sp.benign:
                cells.append(f"false drops {flag.mean():.2%}")
            else:
                m = T.prf_auc(sp.labels, flag.astype(float), 0.5)
                cells.append(f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}")
        print(f"| {sp.name} | {len(sp)} | " + " | ".join(cells) + f" | {r_c.metrics['cascade_minilm_rate']:.1%} |")
    print(f"\nband ±{ToxicityGateConfig().static_band} around the static head's threshold {st.threshold}; "
          f"MiniLM head threshold {mini.threshold}; load average {la}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=T.shared_data_dir())
    ap.add_argument("--model", type=Path, default=None, help="learned model .npz (default: the shipped one)")
    ap.add_argument("--write", action="store_true", help="store the held-out figures in the model's JSON")
    ap.add_argument("--routes", action="store_true",
                    help="MiniLM-only vs static-only vs the static_cascade route (static head, MiniLM head in its band) "
                         "on the test splits; prints the table of docs/measurements/embedding-routes.md")
    args = ap.parse_args(argv)
    if args.routes:
        return routes_table(args.data)

    scorer = LearnedToxicityScorer(args.model, embedder=T.embedder())
    thr = scorer.threshold
    prof = ProfanityCheckScorer()
    pthr = DEFAULT_PROFANITY_THRESHOLD
    test = T.load_all(args.data)["test"]
    embs = [T.embed_cached(s) for s in test]

    learned, profan = {}, {}
    t_score = 0.0
    n_scored = 0
    for s, e in zip(test, embs):
        t0 = time.perf_counter()
        learned[s.name] = scorer.score(s.texts, embeddings=e)
        t_score += time.perf_counter() - t0
        n_scored += len(s)
        profan[s.name] = prof.score(s.texts)

    print(f"# learned scorer {scorer.scorer_id} ({scorer.label}), threshold {thr:.2f}; profanity-check at {pthr:.2f}\n")

    # ---- held-out toxic sets
    heldout, heldout_p, rows = [], [], []
    toxic_sets = [s for s in test if not s.benign]
    extra_views = []
    for s in toxic_sets:
        extra_views.append((s.name, s, np.ones(len(s), bool)))
        if "source" in s.extra:  # HateXplain: forum (Gab) vs Twitter; hate speech only vs normal
            src = np.array(s.extra["source"])
            fine = np.array(s.extra["label"])
            extra_views.append((f"{s.name}: Gab (forum) posts", s, src == "gab"))
            extra_views.append((f"{s.name}: Twitter posts", s, src == "twitter"))
            extra_views.append((f"{s.name}: hatespeech vs normal", s, fine != "offensive"))
            extra_views.append((f"{s.name}: offensive vs normal", s, fine != "hatespeech"))
    for name, s, m in extra_views:
        a = T.prf_auc(s.labels[m], learned[s.name][m], thr)
        b = T.prf_auc(s.labels[m], profan[s.name][m], pthr)
        if name == s.name:
            heldout.append({"data": name, **a})
            heldout_p.append({"data": name, **b})
        rows.append([name, a["n_pos"], a["n_neg"], a["precision"], a["recall"], a["f1"], a["auc"],
                     b["precision"], b["recall"], b["f1"], b["auc"]])
    print("## Held-out toxic/hateful test sets (learned vs profanity-check)\n")
    print(md_table(["test set", "pos", "neg", "learned P", "R", "F1", "AUC", "prof-check P", "R", "F1", "AUC"], rows))

    # ---- benign false drops
    benign_sets = [s for s in test if s.benign]
    bfd, bfd_p, rows = [], [], []
    tot_n = tot_l = tot_p = 0
    for s in benign_sets:
        a = T.benign_drop(s, learned[s.name], thr)
        b = T.benign_drop(s, profan[s.name], pthr)
        tot_n += a["n"]
        tot_l += a["dropped"]
        tot_p += b["dropped"]
        bfd.append({k: a[k] for k in ("data", "n", "dropped", "rate", "worst_slice", "worst_rate")
                    if k in a} | ({k: a[k] for k in ("slices", "slices_over_2pct")} if "slices" in a else {}))
        bfd_p.append({k: b[k] for k in ("data", "n", "dropped", "rate", "worst_slice", "worst_rate") if k in b})
        rows.append([s.name, a["n"], f"{pct(a['rate'])} ({a['dropped']})",
                     f"{a['worst_slice']} {pct(a['worst_rate'])}" if a.get("worst_slice") else
                     ("none dropped (0 of %d)" % a["slices"] if a.get("slices") else "–"),
                     f"{pct(b['rate'])} ({b['dropped']})",
                     f"{b['worst_slice']} {pct(b['worst_rate'])}" if b.get("worst_slice") else
                     ("none dropped (0 of %d)" % b["slices"] if b.get("slices") else "–")])
    overall = {"data": "all benign test sets", "n": tot_n, "dropped": tot_l, "rate": round(tot_l / tot_n, 5)}
    bfd.insert(0, {**overall, "worst_slice": max(bfd, key=lambda r: r["worst_rate"])["data"],
                   "worst_rate": max(r["worst_rate"] for r in bfd)})
    bfd_p.insert(0, {"data": "all benign test sets", "n": tot_n, "dropped": tot_p, "rate": round(tot_p / tot_n, 5)})
    rows.insert(0, ["**all benign test sets**", tot_n, f"{pct(tot_l / tot_n)} ({tot_l})", "",
                    f"{pct(tot_p / tot_n)} ({tot_p})", ""])
    print("\n## Benign false-drop rate (rows dropped / rows; worst slice = BANKING77 intent, SST-2 polarity)\n")
    print(md_table(["benign test set", "rows", "learned dropped", "learned worst slice",
                    "prof-check dropped", "prof-check worst slice"], rows))

    bank = next(s for s in benign_sets if s.name.startswith("BANKING77"))
    import pandas as pd

    per = pd.DataFrame({"intent": bank.slices, "learned": learned[bank.name] >= thr,
                        "profanity": profan[bank.name] >= pthr}).groupby("intent").agg(["mean", "sum", "size"])
    print(f"\nBANKING77 test intents: learned > 2%: {int((per[('learned', 'mean')] > 0.02).sum())} of {len(per)}, "
          f"> 0%: {int((per[('learned', 'sum')] > 0).sum())}; profanity-check > 2%: "
          f"{int((per[('profanity', 'mean')] > 0.02).sum())}, > 0%: {int((per[('profanity', 'sum')] > 0).sum())}")
    top = per.sort_values([("learned", "mean"), ("profanity", "mean")], ascending=False).head(8)
    print(md_table(["intent (worst 8, learned)", "rows", "learned", "prof-check"],
                   [[i, int(r[("learned", "size")]), f"{pct(r[('learned', 'mean')])} ({int(r[('learned', 'sum')])})",
                     f"{pct(r[('profanity', 'mean')])} ({int(r[('profanity', 'sum')])})"] for i, r in top.iterrows()]))
    for s in benign_sets:
        idx = np.flatnonzero(learned[s.name] >= thr)
        if len(idx):
            ex = sorted(idx, key=lambda i: -learned[s.name][i])[:4]
            print(f"\n{s.name}: learned drops e.g. " + "; ".join(
                f"{learned[s.name][i]:.2f} {s.texts[i][:90]!r}" for i in ex))

    # ---- threshold trade-off on test (for the record; the threshold was chosen on validation)
    rows = []
    for t in sorted({round(thr - 0.10, 2), round(thr - 0.05, 2), thr, round(thr + 0.05, 2), round(thr + 0.10, 2)}):
        if not 0 < t < 1:
            continue
        f1 = [T.prf_auc(s.labels, learned[s.name], t) for s in toxic_sets]
        b = sum(int((learned[s.name] >= t).sum()) for s in benign_sets)
        wb = T.benign_drop(bank, learned[bank.name], t)
        rows.append([f"{t:.2f}" + (" (chosen)" if t == thr else ""), *[f"{m['recall']:.3f} / {m['f1']:.3f}" for m in f1],
                     pct(b / tot_n), f"{wb['worst_slice']} {pct(wb['worst_rate'])}" if wb["worst_slice"] else "none"])
    print("\n## Learned threshold trade-off on test (recall / F1 per set; chosen on validation)\n")
    print(md_table(["threshold", *[s.name for s in toxic_sets], "benign dropped", "worst BANKING77 intent"], rows))

    # ---- probes
    probes = PROBES_BENIGN + PROBES_TOXIC
    ls = scorer.score(probes)
    ps = prof.score(probes)
    print("\n## Hand-written probes (not in any training data)\n")
    print(md_table(["text", "expected", "learned", "prof-check"],
                   [[repr(t), "benign" if i < len(PROBES_BENIGN) else "toxic",
                     f"{ls[i]:.2f}{' DROP' if ls[i] >= thr else ''}", f"{ps[i]:.2f}{' DROP' if ps[i] >= pthr else ''}"]
                    for i, t in enumerate(probes)]))
    print(f"\nlearned scoring (precomputed embeddings): {n_scored / t_score:,.0f} rows/s over {n_scored} rows")

    if args.write:
        meta = json.loads(scorer.metadata_path.read_text(encoding="utf-8"))
        meta["heldout"] = heldout
        meta["benign_false_drop"] = bfd
        meta["heldout_profanity_check"] = {"threshold": pthr, "heldout": heldout_p, "benign_false_drop": bfd_p}
        meta["measured_at"] = time.strftime("%Y-%m-%d")
        scorer.metadata_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote held-out figures into {scorer.metadata_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
