"""Tests of the eval-set registry and the contamination gate on real eval sets (HumanEval, GSM8K) planted into
real support queries (BANKING77): verbatim recall, edited-item recall, GSM8K train-vs-test false positives,
the embedding check and n-gram throughput. Figures are recorded in docs/measurements/toxicity-contamination.md."""

from __future__ import annotations

import gzip
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from synqa_dagster.gates.contamination import (
    ContaminationGate,
    ContaminationGateConfig,
    NgramIndex,
    exact_ngram_hits,
)
from synqa_dagster.gates.eval_sets import (
    EvalSetError,
    EvalSetSpec,
    humaneval_data_path,
    load_eval_set,
    load_eval_sets,
)

# ------------------------------------------------------------------------------------------------- edits

FILLER = ["really", "very", "blue", "table", "quickly", "maybe", "green", "house", "seven", "often"]


def _tokens(text: str) -> list[str]:
    return re.split(r"(\s+)", text)


def edit_whitespace_case(text: str, rng: random.Random) -> str:
    """Change spacing (extra spaces, newlines, tabs) and case of random words."""
    out = []
    for tok in _tokens(text):
        if tok.isspace():
            out.append(rng.choice([tok, tok + " ", "  ", "\n", "\t"]) if rng.random() < 0.3 else tok)
        else:
            r = rng.random()
            out.append(tok.upper() if r < 0.1 else tok.lower() if r < 0.3 else tok.title() if r < 0.4 else tok)
    return "".join(out)


def _word_positions(toks: list[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if not t.isspace() and len(t) >= 3]


def edit_typos(text: str, rng: random.Random, k: int = 3) -> str:
    """Introduce a typo (swap, drop or double a character) in ``k`` random words."""
    toks = _tokens(text)
    for i in rng.sample(_word_positions(toks), min(k, len(_word_positions(toks)))):
        w = toks[i]
        j = rng.randrange(len(w) - 1)
        op = rng.choice(["swap", "drop", "dup"])
        if op == "swap":
            toks[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif op == "drop":
            toks[i] = w[:j] + w[j + 1 :]
        else:
            toks[i] = w[:j] + w[j] + w[j:]
    return "".join(toks)


def edit_substitute(text: str, rng: random.Random, k: int = 3) -> str:
    """Replace ``k`` random words by unrelated words."""
    toks = _tokens(text)
    for i in rng.sample(_word_positions(toks), min(k, len(_word_positions(toks)))):
        toks[i] = rng.choice(FILLER)
    return "".join(toks)


def edit_mixed(text: str, rng: random.Random) -> str:
    """2 typos + 2 substituted words + spacing/case changes."""
    return edit_whitespace_case(edit_substitute(edit_typos(text, rng, 2), rng, 2), rng)


EDITS = {
    "whitespace_case": edit_whitespace_case,
    "typos3": edit_typos,
    "substitute3": edit_substitute,
    "mixed": edit_mixed,
}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gsm8k_spec(shared_data: Path) -> EvalSetSpec:
    return EvalSetSpec(name="gsm8k_test", path=str(shared_data / "gsm8k" / "test.jsonl"), text_fields=["question"])


@pytest.fixture(scope="module")
def eval_items(gsm8k_spec) -> pd.DataFrame:
    return load_eval_sets([EvalSetSpec(name="humaneval", source="humaneval"), gsm8k_spec])


@pytest.fixture(scope="module")
def ngram_gate(eval_items) -> ContaminationGate:
    return ContaminationGate(ContaminationGateConfig(use_embeddings=False), eval_items=eval_items)


@pytest.fixture(scope="module")
def humaneval_prompts() -> list[tuple[str, str]]:
    with gzip.open(humaneval_data_path(), "rt", encoding="utf-8") as fh:
        return [(r["task_id"], r["prompt"]) for r in map(json.loads, fh)]


@pytest.fixture(scope="module")
def gsm8k_test(shared_data) -> list[str]:
    with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["question"] for line in fh]


@pytest.fixture(scope="module")
def gsm8k_train(shared_data) -> list[str]:
    with open(shared_data / "gsm8k" / "train.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["question"] for line in fh]


@pytest.fixture(scope="module")
def banking(shared_data) -> list[str]:
    return pd.read_csv(shared_data / "banking77" / "test.csv")["text"].tolist()


def plant(items: list[str], banking: list[str], seed: int = 0) -> list[str]:
    """Wrap each item between two real support queries, as a leaked item would sit inside a generated dialogue."""
    rng = random.Random(seed)
    return [f"{rng.choice(banking)}\n{item}\n{rng.choice(banking)}" for item in items]


def rows_of(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(len(texts))], "text": texts})


class CountingEmbedder:
    """Wraps the real embedder (or a fake function), counting encode calls and texts."""

    def __init__(self, fn=None):
        self.fn = fn
        self.calls = 0
        self.texts = 0
        self.model_id = "counting"

    def encode(self, texts):
        self.calls += 1
        self.texts += len(texts)
        if self.fn is None:
            raise AssertionError("the embedder must not be used here")
        return self.fn(texts)


# ------------------------------------------------------------------------------------------------ eval sets


def test_load_humaneval_from_package():
    df = load_eval_set(EvalSetSpec(name="humaneval", source="humaneval"))
    assert list(df.columns) == ["eval_set", "item_id", "text"]
    assert len(df) == 164
    assert df["item_id"].iat[12] == "HumanEval/12"
    assert (df["eval_set"] == "humaneval").all()
    with gzip.open(humaneval_data_path(), "rt") as fh:
        first = json.loads(fh.readline())
    assert df["text"].iat[0] == first["prompt"] + "\n" + first["canonical_solution"]
    prompts_only = load_eval_set(EvalSetSpec(name="he_prompts", source="humaneval", text_fields=["prompt"]))
    assert prompts_only["text"].iat[0] == first["prompt"]


def test_load_gsm8k_file(gsm8k_spec, gsm8k_test):
    df = load_eval_set(gsm8k_spec)
    assert len(df) == 1319
    assert df["item_id"].tolist()[:3] == ["0", "1", "2"]
    assert df["text"].tolist() == gsm8k_test


def test_file_formats_agree(tmp_path):
    records = [{"id": f"q{i}", "question": f"question number {i}", "context": f"ctx {i}"} for i in range(5)]
    frame = pd.DataFrame(records)
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in records))
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    loaded = [
        load_eval_set(
            EvalSetSpec(name="x", path=str(tmp_path / f"a.{ext}"), id_field="id", text_fields=["question", "context"])
        )
        for ext in ("jsonl", "jsonl.gz", "csv", "parquet")
    ]
    for df in loaded[1:]:
        pd.testing.assert_frame_equal(df, loaded[0])
    assert loaded[0]["text"].iat[1] == "question number 1\nctx 1"
    assert loaded[0]["item_id"].iat[1] == "q1"


def test_bad_files_name_file_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "ok"}\n{"question": "broken"\n')
    with pytest.raises(EvalSetError, match=re.escape(f"{p}:line 2: invalid JSON")):
        load_eval_set(EvalSetSpec(name="bad", path=str(p), text_fields=["question"]))

    p.write_text('{"question": "ok"}\n\n{"prompt": "no question"}\n')
    with pytest.raises(EvalSetError, match=re.escape(f"{p}:line 3: missing field 'question'")):
        load_eval_set(EvalSetSpec(name="bad", path=str(p), text_fields=["question"]))

    p.write_text('{"question": 42}\n')
    with pytest.raises(EvalSetError, match=r"line 1: field 'question' must be a string"):
        load_eval_set(EvalSetSpec(name="bad", path=str(p), text_fields=["question"]))

    p.write_text('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n')
    with pytest.raises(EvalSetError, match=r"line 2: field 'id': duplicate item id '1' \(first at line 1\)"):
        load_eval_set(EvalSetSpec(name="bad", path=str(p), id_field="id", text_fields=["question"]))

    c = tmp_path / "bad.csv"
    c.write_text("id,question\n1,first\n2,\n")
    with pytest.raises(EvalSetError, match=re.escape(f"{c}:line 3: fields ['question'] are all empty")):
        load_eval_set(EvalSetSpec(name="bad", path=str(c), id_field="id", text_fields=["question"]))
    with pytest.raises(EvalSetError, match=re.escape(f"{c}:line 2: missing field 'prompt'")):
        load_eval_set(EvalSetSpec(name="bad", path=str(c), text_fields=["prompt"]))

    with pytest.raises(EvalSetError, match="file not found"):
        load_eval_set(EvalSetSpec(name="bad", path=str(tmp_path / "missing.jsonl"), text_fields=["q"]))
    with pytest.raises(ValidationError, match="unsupported eval set file extension"):
        EvalSetSpec(name="bad", path="x.txt", text_fields=["q"])
    with pytest.raises(ValidationError, match="needs text_fields"):
        EvalSetSpec(name="bad", path="x.jsonl")
    with pytest.raises(ValidationError, match="must be letters"):
        EvalSetSpec(name="bad/name", source="humaneval")


# ------------------------------------------------------------------------------------------------- n-grams


def test_verbatim_items_are_all_caught(ngram_gate, humaneval_prompts, gsm8k_test, banking):
    """Every HumanEval prompt and every GSM8K test question, planted verbatim into support text: 100% caught."""
    he_texts = plant([p for _, p in humaneval_prompts], banking, seed=1)
    gs_texts = plant(gsm8k_test, banking, seed=2)
    clean = banking  # 3,080 real support queries: none may be flagged
    rows = rows_of(he_texts + gs_texts + clean)
    result = ngram_gate.evaluate(rows)
    n_he, n_gs = len(he_texts), len(gs_texts)
    assert result.keep[: n_he + n_gs].sum() == 0, "a verbatim eval item survived"
    assert result.keep[n_he + n_gs :].all(), "a clean support query was flagged"
    assert set(result.category[: n_he + n_gs]) == {"ngram_overlap"}
    # the reason names the planted item, or an item sharing as many n-grams with the row (HumanEval/56 and /61
    # are the same problem with "<>" vs "()" brackets, identical once punctuation is normalised away)
    pattern = r"13-gram overlap with \S+ \(\d+ shared 13-grams\)"
    assert all(re.fullmatch(pattern, r) for r in result.reason[: n_he + n_gs])
    planted = [f"humaneval/{t}" for t, _ in humaneval_prompts] + [f"gsm8k_test/{i}" for i in range(n_gs)]
    named = [r.split(" with ")[1].split(" ")[0] for r in result.reason[: n_he + n_gs]]
    hits = exact_ngram_hits(rows["text"].tolist()[: n_he + n_gs], ngram_gate.index)
    shared = {(r.row, f"{r.eval_set}/{r.item_id}"): r.shared for r in hits.itertuples()}
    for i, (want, got) in enumerate(zip(planted, named)):
        assert shared[(i, want)] == shared[(i, got)] == result.score[i], (i, want, got)
    assert sum(w != g for w, g in zip(planted, named)) <= 2
    assert result.metrics["embedding_check"] == "disabled"
    assert result.metrics["dropped_by_eval_set"] == {"gsm8k_test": n_gs, "humaneval": n_he}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_items_recall(edit, ngram_gate, humaneval_prompts, gsm8k_test, banking):
    """Lightly edited items (n-gram check alone): whitespace/case edits are always caught; word-level edits
    break some 13-grams, so recall is measured and held to a floor (the embedding check adds to it)."""
    rng = random.Random(7)
    floors = {  # measured recall (seed 7) in docs/measurements; floors leave ~4 points of slack
        "humaneval": {"whitespace_case": 1.0, "typos3": 0.90, "substitute3": 0.87, "mixed": 0.84},
        "gsm8k_test": {"whitespace_case": 1.0, "typos3": 0.82, "substitute3": 0.82, "mixed": 0.74},
    }
    for name, items in [("humaneval", [p for _, p in humaneval_prompts]), ("gsm8k_test", gsm8k_test)]:
        edited = [EDITS[edit](t, rng) for t in items]
        texts = plant(edited, banking, seed=3)
        item, _ = ngram_gate.index.match(texts)
        recall = float((item >= 0).mean())
        print(f"n-gram recall {name} {edit}: {recall:.4f}")
        assert recall >= floors[name][edit], (name, edit, recall)


def test_gsm8k_train_vs_test_ngram_false_positives(gsm8k_spec, gsm8k_train):
    """GSM8K train and test share a style but not problems: the 13-gram check flags almost no train question
    (measured 4 / 7,473, all templated near-copies of a test problem)."""
    gate = ContaminationGate(ContaminationGateConfig(eval_sets=[gsm8k_spec], use_embeddings=False))
    result = gate.evaluate(rows_of(gsm8k_train))
    rate = 1 - result.keep.mean()
    print(f"GSM8K train flagged by 13-gram vs test: {(~result.keep).sum()} / {len(gsm8k_train)} = {rate:.5f}")
    assert rate <= 0.002


def test_exact_ngram_hits_for_invariant_check(ngram_gate, gsm8k_test, banking):
    accepted = banking[:50] + [f"Sure! {gsm8k_test[5]} Let me explain."]
    hits = exact_ngram_hits(accepted, ngram_gate.index)
    assert list(hits.columns) == ["row", "eval_set", "item_id", "shared", "item_ngrams"]
    assert hits[["row", "eval_set", "item_id"]].values.tolist() == [[50, "gsm8k_test", "5"]]
    assert hits["shared"].iat[0] == hits["item_ngrams"].iat[0]  # the whole item is there
    assert exact_ngram_hits(banking, ngram_gate.index).empty


def test_short_items_min_overlap_and_reasons():
    items = pd.DataFrame(
        {
            "eval_set": ["toy"] * 4,
            "item_id": ["short", "tiny", "long", "exact13"],
            "text": [
                "What is the capital city of Burkina Faso today",  # 9 words < 13: indexed whole
                "Name three colours",  # 3 words < min_item_words: not indexed
                " ".join(f"w{i}" for i in range(20)),  # 8 distinct 13-grams
                " ".join(f"x{i}" for i in range(13)),  # exactly one 13-gram
            ],
        }
    )
    gate = ContaminationGate(ContaminationGateConfig(use_embeddings=False), eval_items=items)
    assert gate.index.short_lengths == (9,)
    texts = [
        "Hi. WHAT is the capital-city of Burkina Faso, today? Thanks",  # whole short item
        "Please name three colours",  # too short to be indexed
        "intro " + " ".join(f"w{i}" for i in range(13)) + " outro",  # 1 shared 13-gram of 'long'
        " ".join(f"w{i}" for i in range(15)),  # 3 shared 13-grams
        "a " + " ".join(f"x{i}" for i in range(13)),
        "what is the capital city of burkina",  # fragment: no whole match
    ]
    r1 = gate.evaluate(rows_of(texts))
    assert r1.keep.tolist() == [False, True, False, False, False, True]
    assert r1.reason[0] == "whole-item match with toy/short (9 words < 13)"
    assert r1.reason[2] == "13-gram overlap with toy/long (1 shared 13-grams)"
    assert r1.reason[3] == "13-gram overlap with toy/long (3 shared 13-grams)"
    assert r1.score[3] == 3.0
    assert r1.metrics["eval_items_not_ngram_indexed"] == 1

    gate3 = ContaminationGate(ContaminationGateConfig(use_embeddings=False, min_ngram_overlap=3), eval_items=items)
    r3 = gate3.evaluate(rows_of(texts))
    # 1 shared of 8 no longer enough; 3 of 8 is; the 13-word item has only one 13-gram (cap) and is still caught
    assert r3.keep.tolist() == [False, True, True, False, False, True]

    skip = ContaminationGate(ContaminationGateConfig(use_embeddings=False, short_item_policy="skip"), eval_items=items)
    assert skip.evaluate(rows_of(texts[:1])).keep.tolist() == [True]


def test_index_handles_empty_and_odd_inputs(ngram_gate):
    result = ngram_gate.evaluate(rows_of([]))
    assert len(result) == 0
    odd = pd.DataFrame({"row_id": ["a", "b", "c"], "text": ["", None, "ünïcödé ｆｕｌｌ ﬁne"]})
    r = ngram_gate.evaluate(odd)
    assert r.keep.all()
    empty = NgramIndex.build(pd.DataFrame({"eval_set": [], "item_id": [], "text": []}))
    assert len(empty) == 0 and empty.hits(["anything at all"]).empty


def test_ngram_throughput(ngram_gate, banking):
    """N-gram part on 50k support-like rows (4 BANKING77 queries each, ~47 words): target 50k rows/s on 2 cores;
    the assertion floor is lower because the test machine is shared."""
    rng = random.Random(0)
    texts = ["\n".join(rng.choices(banking, k=4)) for _ in range(50_000)]
    ngram_gate.index.match(texts[:1000])  # warm the power tables
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        ngram_gate.index.match(texts)
        best = min(best, time.perf_counter() - t0)
    rate = len(texts) / best
    print(f"n-gram match: {rate:,.0f} rows/s")
    assert rate >= 15_000


# ---------------------------------------------------------------------------------------------- embeddings


def test_embedding_check_logic_with_fixed_vectors():
    items = pd.DataFrame({"eval_set": ["s", "s"], "item_id": ["a", "b"], "text": ["alpha item text", "beta item text"]})
    ev = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    emb = CountingEmbedder(fn=lambda texts: ev[: len(texts)])
    gate = ContaminationGate(ContaminationGateConfig(embedding_threshold=0.9), embedder=emb, eval_items=items)
    rows = rows_of(["one", "two", "three"])

    # no candidate embeddings: n-gram only, and the model is not touched
    r0 = gate.evaluate(rows)
    assert r0.metrics["embedding_check"].startswith("skipped")
    assert emb.calls == 0 and np.isnan(r0.score).all()

    c = np.array([[0.95, 0.312, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    r1 = gate.evaluate(rows, embeddings=c)
    assert r1.keep.tolist() == [False, True, True]
    assert r1.category[0] == "embedding_match"
    assert r1.reason[0] == f"embedding cosine {c[0, 0]:.2f} ≥ 0.90 with s/a"
    assert r1.score[1] == pytest.approx(0.8, abs=1e-6)  # kept rows carry their max cosine
    assert r1.metrics["embedding_check"] == "ran"
    gate.evaluate(rows, embeddings=c)
    assert emb.calls == 1  # eval items embedded once, lazily
    with pytest.raises(ValueError, match="aligned with rows"):
        gate.evaluate(rows, embeddings=c[:2])
    disabled = ContaminationGate(ContaminationGateConfig(use_embeddings=False), embedder=emb, eval_items=items)
    assert disabled.evaluate(rows, embeddings=c).keep.all()


def test_embedding_check_real_model_small(gsm8k_spec, gsm8k_test, gsm8k_train):
    """Real MiniLM on a small subsample (default run): heavily edited GSM8K questions that break most 13-grams are
    still caught by the embedding check at the default threshold, while unrelated GSM8K train questions are not.
    The full-size calibration is the slow test below."""
    from synqa_dagster.embedding import Embedder

    rng = random.Random(11)
    idx = sorted(rng.sample(range(len(gsm8k_test)), 60))
    items = load_eval_set(gsm8k_spec).iloc[idx].reset_index(drop=True)
    embedder = CountingEmbedder(fn=Embedder().encode)
    gate = ContaminationGate(ContaminationGateConfig(eval_sets=[gsm8k_spec]), embedder=embedder, eval_items=items)
    edited = [edit_mixed(gsm8k_test[i], rng) for i in idx]
    train = rng.sample(gsm8k_train, 80)
    texts = edited + train
    vectors = Embedder().encode(texts)
    result = gate.evaluate(rows_of(texts), embeddings=vectors)
    caught = ~result.keep[: len(edited)]
    ngram_only = np.array([c == "ngram_overlap" for c in result.category[: len(edited)]])
    fp = (~result.keep[len(edited) :]).mean()
    print(f"edited (mixed): caught {caught.mean():.3f}, by n-grams alone {ngram_only.mean():.3f}; "
          f"train false positives {fp:.3f}")
    assert caught.mean() >= 0.85
    assert caught.mean() >= ngram_only.mean() + 0.05  # the embedding check adds recall
    assert fp <= 0.03
    named = [r.rsplit(" with ", 1)[1] for r, c in zip(result.reason, result.category) if c == "embedding_match"]
    assert all(n in {f"gsm8k_test/{i}" for i in idx} for n in named)
    assert embedder.calls == 1 and embedder.texts == 60


# ------------------------------------------------------------------------------------- slow measurements


@pytest.mark.slow
def test_measure_full(gsm8k_spec, eval_items, humaneval_prompts, gsm8k_test, gsm8k_train, banking):
    """Full calibration: all GSM8K train vs all GSM8K test + HumanEval (embedding FPR per threshold), verbatim
    and edited recall with n-grams + embeddings, and 500k-row n-gram throughput. Prints JSON for the docs."""
    from synqa_dagster.embedding import Embedder

    embedder = Embedder()
    gate = ContaminationGate(ContaminationGateConfig(), embedder=embedder, eval_items=eval_items)
    out: dict[str, object] = {}
    train_vec = embedder.encode(gsm8k_train)
    cos, _ = gate.max_cosine(train_vec)
    item, _ = gate.index.match(gsm8k_train)
    out["train_vs_test"] = {
        f"{t:.2f}": float(((cos >= t) | (item >= 0)).mean()) for t in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)
    }
    out["train_vs_test_embedding_only"] = {
        f"{t:.2f}": float((cos >= t).mean()) for t in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)
    }
    out["train_max_cosine_quantiles"] = {q: float(np.quantile(cos, q)) for q in (0.5, 0.9, 0.99, 0.999)}
    rng = random.Random(7)
    recall: dict[str, dict[str, object]] = {}
    gs_sample = random.Random(1).sample(gsm8k_test, 500)
    for name, items in [("humaneval", [p for _, p in humaneval_prompts]), ("gsm8k_test", gs_sample)]:
        recall[name] = {"verbatim": float((gate.index.match(plant(items, banking, seed=3))[0] >= 0).mean())}
        for edit in EDITS:
            edited = [EDITS[edit](t, rng) for t in items]
            for context, texts in (("bare", edited), ("planted", plant(edited, banking, seed=3))):
                res = gate.evaluate(rows_of(texts), embeddings=embedder.encode(texts))
                ng = float(np.mean([c == "ngram_overlap" for c in res.category]))
                recall[name][f"{edit}/{context}"] = {"ngram": ng, "ngram+embedding": float(1 - res.keep.mean())}
    out["recall"] = recall
    rng2 = random.Random(0)
    big = ["\n".join(rng2.choices(banking, k=4)) for _ in range(500_000)]
    t0 = time.perf_counter()
    gate.index.match(big)
    out["ngram_rows_per_s_500k"] = len(big) / (time.perf_counter() - t0)
    print(json.dumps(out, indent=1))
    assert out["train_vs_test"]["0.88"] <= 0.002
    assert recall["gsm8k_test"]["verbatim"] == 1.0 and recall["humaneval"]["verbatim"] == 1.0
