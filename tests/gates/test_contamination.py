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
    normalize_for_matching,
    plant_eval_canaries,
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


def test_nested_fields_and_json_files(tmp_path):
    """Per-set nested field paths (dotted, [i], .i, [*]) over JSON arrays, JSON objects holding the list, JSONL,
    Parquet with nested columns; the same items whatever the container."""
    records = [
        {
            "meta": {"uid": f"u{i}"},
            "question": {"stem": f"What is item {i}?", "context": None},
            "choices": [{"text": f"alpha {i}"}, {"text": f"beta {i}"}],
            "rephrased": f"Tell me item {i}.",
        }
        for i in range(4)
    ]
    (tmp_path / "list.json").write_text(json.dumps(records))
    (tmp_path / "obj.json").write_text(json.dumps({"version": 2, "items": records}))
    (tmp_path / "deep.json").write_text(json.dumps({"data": {"split": "test", "rows": records}, "other": []}))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in records))  # JSONL named .json
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    with gzip.open(tmp_path / "list.json.gz", "wt") as fh:
        json.dump(records, fh)
    pd.DataFrame(records).to_parquet(tmp_path / "a.parquet")
    fields = dict(id_field="meta.uid", text_fields=["question.stem", "choices[*].text"])
    loaded = {
        name: load_eval_set(EvalSetSpec(name="nested", path=str(tmp_path / name), **fields, **extra))
        for name, extra in [
            ("list.json", {}), ("obj.json", {}), ("deep.json", {"records_path": "data.rows"}), ("lines.json", {}),
            ("a.jsonl", {}), ("list.json.gz", {}), ("a.parquet", {}),
        ]
    }
    first = loaded["list.json"]
    assert first["item_id"].tolist() == ["u0", "u1", "u2", "u3"]
    assert first["text"].iat[2] == "What is item 2?\nalpha 2\nbeta 2"
    for df in loaded.values():
        pd.testing.assert_frame_equal(df, first)
    one = load_eval_set(EvalSetSpec(name="x", path=str(tmp_path / "list.json"), text_fields=["choices.1.text"],
                                    paraphrase_fields=["rephrased"]))
    assert one["text"].tolist()[:2] == ["beta 0", "beta 1"] and one["item_id"].iat[3] == "3"
    assert one["paraphrase"].iat[1] == "Tell me item 1."
    # a flat CSV column whose name contains a dot wins over the nested reading
    pd.DataFrame({"q.stem": ["flat one", "flat two"]}).to_csv(tmp_path / "flat.csv", index=False)
    assert load_eval_set(EvalSetSpec(name="f", path=str(tmp_path / "flat.csv"), text_fields=["q.stem"]))["text"].tolist() == [
        "flat one", "flat two"]
    # the spec round-trips through JSON (the CLI and config hashing dump and re-validate it)
    spec = EvalSetSpec(name="nested", path=str(tmp_path / "deep.json"), records_path="data.rows", **fields)
    assert EvalSetSpec.model_validate(spec.model_dump(mode="json")) == spec
    gate = ContaminationGate(ContaminationGateConfig(eval_sets=[spec], use_embeddings=False))
    assert gate.evaluate(rows_of(["what is item 3 alpha 3 beta 3"])).keep.tolist() == [False]


def test_bad_nested_paths_name_file_record_and_field(tmp_path):
    records = [{"q": {"stem": "ok"}, "choices": [{"text": "a"}, {"text": "b"}]},
               {"q": {"stem": "ok"}, "choices": [{"text": "a"}]}]
    p = tmp_path / "evals.json"
    p.write_text(json.dumps(records))

    def load(**kw):
        return load_eval_set(EvalSetSpec(name="bad", path=str(p), **kw))

    with pytest.raises(EvalSetError, match=re.escape(
            f"{p}:record 1: field 'choices[1].text': index 1 out of range ('choices' has 1 elements)")):
        load(text_fields=["choices[1].text"])
    with pytest.raises(EvalSetError, match=re.escape(f"{p}:record 0: field 'q.stm': missing key 'stm' in 'q'")):
        load(text_fields=["q.stm"])
    with pytest.raises(EvalSetError, match=re.escape(f"{p}:record 0: field 'choices.text': 'choices' is a list, not an object")):
        load(text_fields=["choices.text"])
    with pytest.raises(EvalSetError, match=re.escape(f"{p}:record 0: field 'q' must be a string, got dict")):
        load(text_fields=["q"])
    with pytest.raises(EvalSetError, match=re.escape(f"{p}:record 0: id field 'q.id': missing key 'id' in 'q'")):
        load(text_fields=["q.stem"], id_field="q.id")
    j = tmp_path / "jl.jsonl"
    j.write_text(json.dumps(records[0]) + "\n" + json.dumps({"q": "flat"}) + "\n")
    with pytest.raises(EvalSetError, match=re.escape(f"{j}:line 2: field 'q.stem': 'q' is a str, not an object")):
        load_eval_set(EvalSetSpec(name="bad", path=str(j), text_fields=["q.stem"]))
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"a": [], "b": []}))
    with pytest.raises(EvalSetError, match=re.escape(f"{two}: a JSON object must hold exactly one list of records")):
        load_eval_set(EvalSetSpec(name="bad", path=str(two), text_fields=["q"]))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"q": "a"},\n {"q": ]')
    with pytest.raises(EvalSetError, match=re.escape(f"{broken}: invalid JSON (Expecting value at line 2 column 8)")):
        load_eval_set(EvalSetSpec(name="bad", path=str(broken), text_fields=["q"]))
    with pytest.raises(ValidationError, match="malformed segment"):
        EvalSetSpec(name="bad", path=str(p), text_fields=["choices[x].text"])
    with pytest.raises(ValidationError, match="records_path applies to json files only"):
        EvalSetSpec(name="bad", path="x.csv", text_fields=["q"], records_path="data")


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
                "What is the capital city of Burkina Faso today",  # 9 words < 13: whole-item span
                "Name three colours",  # 3 words < min_span_words: exact row/line only
                " ".join(f"w{i}" for i in range(20)),  # 8 distinct 13-grams
                " ".join(f"x{i}" for i in range(13)),  # exactly one 13-gram
            ],
        }
    )
    gate = ContaminationGate(ContaminationGateConfig(use_embeddings=False), eval_items=items)
    assert gate.index.short_lengths == (9,)
    assert gate.index.items["method"].tolist() == ["span", "exact", "ngram", "ngram"]
    texts = [
        "Hi. WHAT is the capital-city of Burkina Faso, today? Thanks",  # whole short item inside the row
        "Please name three colours",  # a generic 3-word item inside a sentence: not a match (guard)
        "intro " + " ".join(f"w{i}" for i in range(13)) + " outro",  # 1 shared 13-gram of 'long'
        " ".join(f"w{i}" for i in range(15)),  # 3 shared 13-grams
        "a " + " ".join(f"x{i}" for i in range(13)),
        "what is the capital city of burkina",  # fragment: no whole match
        "Name three colours!",  # the whole row is the tiny item
    ]
    r1 = gate.evaluate(rows_of(texts))
    assert r1.keep.tolist() == [False, True, False, False, False, True, False]
    assert r1.reason[0] == "whole-item span match with toy/short (9 words < 13)"
    assert r1.reason[2] == "13-gram overlap with toy/long (1 shared 13-grams)"
    assert r1.reason[3] == "13-gram overlap with toy/long (3 shared 13-grams)"
    assert r1.reason[6] == "exact match of the whole row with toy/tiny (3 words < 8)"
    assert r1.score[3] == 3.0 and r1.score[6] == 1.0
    assert r1.metrics["eval_items_not_ngram_indexed"] == 1  # 'tiny' is exact-only
    assert r1.metrics["eval_items_unindexed"] == 0
    assert r1.metrics["dropped_by_method"] == {"ngram": 3, "span": 1, "exact": 1}

    gate3 = ContaminationGate(ContaminationGateConfig(use_embeddings=False, min_ngram_overlap=3), eval_items=items)
    r3 = gate3.evaluate(rows_of(texts))
    # 1 shared of 8 no longer enough; 3 of 8 is; the 13-word item has only one 13-gram (cap) and is still caught
    assert r3.keep.tolist() == [False, True, True, False, False, True, False]

    skip = ContaminationGate(ContaminationGateConfig(use_embeddings=False, short_item_policy="skip"), eval_items=items)
    assert skip.evaluate(rows_of([texts[0], texts[6]])).keep.tolist() == [True, True]
    unindexed = skip.unindexed_items()
    assert unindexed["item_id"].tolist() == ["short", "tiny"]
    assert unindexed["reason"].iat[1] == "3 words < ngram_size 13 and short_item_policy='skip'; embedding check off"


def test_short_item_caught_verbatim_and_as_a_line_of_a_longer_row():
    """3-6-word items: caught when a row or one of its lines (a turn) is the item, through case, punctuation,
    spacing and list/label markers; an 8+-word item is caught anywhere inside a longer row."""
    items = pd.DataFrame(
        {
            "eval_set": ["qa"] * 4,
            "item_id": ["q3", "q5", "q6", "q9"],
            "text": [
                "Who wrote Hamlet?",
                "How do I locate my card?",
                "Define the boiling point of ethanol.",
                "Which river flows through Budapest, the capital of Hungary?",
            ],
        }
    )
    gate = ContaminationGate(ContaminationGateConfig(use_embeddings=False), eval_items=items)
    assert gate.index.items["method"].tolist() == ["exact", "exact", "exact", "span"]
    texts = [
        "who wrote hamlet",  # verbatim, case/punctuation changed
        "  HOW do I locate\n   my card ?? ",  # re-wrapped
        "Thanks for asking!\nDefine the boiling-point of ethanol!\nIt is 78 degrees C.",  # a turn of a longer row
        "Here is one:\n2. Who wrote Hamlet?\n3. Something else",  # numbered list line
        "Q: How do I locate my card",  # label marker
        "I need help: which river flows through Budapest — the capital of Hungary? Asking for a quiz.",  # span
    ]
    r = gate.evaluate(rows_of(texts))
    assert not r.keep.any(), r.reason
    assert r.reason[2] == "exact match of line 2 with qa/q6 (6 words < 8)"
    assert r.reason[3] == "exact match of line 2 with qa/q3 (3 words < 8)"
    assert r.reason[4] == "exact match of line 1 with qa/q5 (6 words < 8)"
    assert r.reason[5] == "whole-item span match with qa/q9 (9 words < 13)"
    hits = gate.index.exact_hits(texts)
    assert hits[["row", "item_id", "line"]].values.tolist()[:2] == [[0, "q3", 0], [1, "q5", 0]]


def test_generic_short_items_do_not_flag_benign_text():
    """'What is 2 + 2?' as an eval item must not match every maths question: a short item inside a longer turn
    is no match, only a row or turn that *is* the item."""
    items = pd.DataFrame({"eval_set": ["toy"] * 2, "item_id": ["a", "b"], "text": ["What is 2 + 2?", "Is it raining?"]})
    gate = ContaminationGate(ContaminationGateConfig(use_embeddings=False), eval_items=items)
    benign = [
        "What is 2 + 2 times 3? Show your steps.",
        "Tell me what is 2 + 2 in binary",
        "I wonder: is it raining in Paris today?",
        "Is it raining? Then take an umbrella.\nOk",
    ]
    assert gate.evaluate(rows_of(benign)).keep.all()
    assert gate.evaluate(rows_of(["what is 2+2", "Hello\nIs it raining"])).keep.tolist() == [False, False]


def test_short_items_on_real_data(banking, gsm8k_train, shared_data):
    """BANKING77 test as an eval set: 29.5% of its items are under 8 words (never indexed before). Every item is
    now indexed and caught verbatim; GSM8K train questions (benign, other domain) flag none, and BANKING77 train
    queries (same domain: the worst case, including real cross-split near-duplicates) few."""
    spec = EvalSetSpec(name="banking77_test", path=str(shared_data / "banking77" / "test.csv"), text_fields=["text"])
    gate = ContaminationGate(ContaminationGateConfig(eval_sets=[spec], use_embeddings=False))
    counts = gate.method_counts()
    assert counts["unindexed"] == 0 and counts["exact"] == 910 and counts["items"] == 3080
    short = (gate.index.items["n_words"] < 8).to_numpy()
    assert 0.28 <= short.mean() <= 0.30
    item, _ = gate.index.match(banking)
    assert (item >= 0).all()
    before = ContaminationGate(
        ContaminationGateConfig(eval_sets=[spec], use_embeddings=False, exact_item_match=False), eval_items=gate.eval_items
    )
    assert (before.index.match(banking)[0] >= 0).mean() == pytest.approx(1 - short.mean())
    assert (gate.index.match(gsm8k_train)[0] >= 0).sum() == 0
    train = pd.read_csv(shared_data / "banking77" / "train.csv")["text"].tolist()
    res = gate.evaluate(rows_of(train))
    rate = 1 - res.keep.mean()
    print(f"BANKING77 train flagged vs BANKING77 test: {(~res.keep).sum()} = {rate:.4f}; {res.metrics['dropped_by_method']}")
    assert rate <= 0.01


def test_rewrapped_and_reformatted_items_caught(ngram_gate, gsm8k_test, humaneval_prompts):
    """Re-wrapping (other line width, indentation, CRLF, blank lines) and punctuation/case/number-format edits
    never break a match: all GSM8K test questions and HumanEval prompts are still caught."""
    rng = random.Random(3)
    texts = []
    for t in gsm8k_test + [p for _, p in humaneval_prompts]:
        words_ = t.split()
        width = rng.randint(15, 60)
        lines, cur = [], ""
        for w in words_:
            if cur and len(cur) + 1 + len(w) > width:
                lines.append(cur)
                cur = w
            else:
                cur = f"{cur} {w}" if cur else w
        lines.append(cur)
        texts.append(rng.choice(["\n", "\r\n", "\n\n"]).join(rng.choice(["", "  ", "\t"]) + x for x in lines))
    item, _ = ngram_gate.index.match(texts)
    assert (item >= 0).all()
    # punctuation / case / digit-group changes
    edited = [
        re.sub(r"(\d)(\d{3})\b", r"\1,\2", t).upper().replace("?", " ?!").replace("'", "’").replace("-", " ")
        for t in gsm8k_test
    ]
    assert (ngram_gate.index.match(edited)[0] >= 0).all()


def test_unindexed_items_empty_for_default_config(shared_data):
    gate = ContaminationGate(ContaminationGateConfig())  # the default: bundled HumanEval
    assert gate.unindexed_items().empty and gate.unindexed_items(include_embedding=False).empty
    assert gate.method_counts() == {"ngram": 164, "short_ngram": 0, "span": 0, "exact": 0, "embedding": 164,
                                    "unindexed": 0, "items": 164}
    specs = [EvalSetSpec(name="humaneval", source="humaneval"),
             EvalSetSpec(name="gsm8k_test", path=str(shared_data / "gsm8k" / "test.jsonl"), text_fields=["question"]),
             EvalSetSpec(name="banking77_test", path=str(shared_data / "banking77" / "test.csv"), text_fields=["text"])]
    big = ContaminationGate(ContaminationGateConfig(eval_sets=specs))
    assert big.unindexed_items(include_embedding=False).empty
    cov = big.coverage().set_index("eval_set")
    assert cov.loc["banking77_test", ["items", "ngram", "span", "exact", "unindexed"]].tolist() == [3080, 733, 1437, 910, 0]
    assert cov.loc["gsm8k_test", "ngram"] == 1319
    # an item with no words after normalisation is reported, with the reason
    odd = pd.DataFrame({"eval_set": ["s", "s"], "item_id": ["sym", "ok"], "text": ["?!", "fine item"]})
    g = ContaminationGate(ContaminationGateConfig(use_embeddings=False), eval_items=odd)
    assert g.unindexed_items().to_dict("records") == [{
        "eval_set": "s", "item_id": "sym", "n_words": 0,
        "reason": "no words after normalisation (only punctuation, symbols or whitespace); embedding check off"}]
    with_emb = ContaminationGate(ContaminationGateConfig(), eval_items=odd)
    assert with_emb.unindexed_items().empty and len(with_emb.unindexed_items(include_embedding=False)) == 1


def test_plant_eval_canaries_deterministic_and_caught(eval_items, ngram_gate):
    c1 = plant_eval_canaries(eval_items, 25, seed=5)
    c2 = plant_eval_canaries(eval_items, 25, seed=5)
    pd.testing.assert_frame_equal(c1, c2)
    assert list(c1.columns) == ["row_id", "text", "canary_kind", "eval_set", "item_id"]
    assert c1["row_id"].is_unique
    assert c1.groupby(["eval_set", "canary_kind"]).size().to_dict() == {
        (s, k): 25 for s in ("gsm8k_test", "humaneval") for k in ("embedded", "rewrapped", "truncated", "verbatim")}
    other = plant_eval_canaries(eval_items, 25, seed=6)
    assert set(other["item_id"]) != set(c1["item_id"])
    # one random stream per eval set: planting one set alone gives the same rows
    alone = plant_eval_canaries(eval_items[eval_items["eval_set"] == "gsm8k_test"], 25, seed=5)
    pd.testing.assert_frame_equal(alone, c1[c1["eval_set"] == "gsm8k_test"].reset_index(drop=True))
    row = c1[(c1["canary_kind"] == "truncated") & (c1["eval_set"] == "gsm8k_test")].iloc[0]
    original = eval_items.set_index(["eval_set", "item_id"]).loc[("gsm8k_test", row["item_id"]), "text"]
    assert original.startswith(row["text"]) and len(row["text"].split()) == -(-len(original.split()) * 6 // 10)
    rewrapped = c1[c1["canary_kind"] == "rewrapped"]["text"]
    assert all("\n" in t for t in rewrapped)
    table = ngram_gate.measured_recall(c1)
    assert set(table.columns) == {"eval_set", "canary_kind", "n", "recall_text", "recall", "named_planted", "embeddings"}
    assert (table["recall"] == 1.0).all(), table
    assert (table["named_planted"] >= 0.95).all()
    assert (table.loc[table["eval_set"] == "all", "n"] == 50).all()
    # paraphrased canaries only where a real paraphrase exists
    with_para = eval_items.assign(paraphrase=None)
    with_para.loc[with_para.index[:3], "paraphrase"] = ["p one", "p two", "  "]
    cp = plant_eval_canaries(with_para, 5, seed=1)
    para = cp[cp["canary_kind"] == "paraphrased"]
    assert para["text"].tolist() == ["p one", "p two"]
    with pytest.raises(ValueError, match="unknown canary kinds"):
        plant_eval_canaries(eval_items, 1, 0, kinds=["typo"])


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
    assert r1.reason[0] == f"embedding cosine {c[0, 0]:.2f} ≥ 0.90 (route minilm) with s/a"
    assert r1.score[1] == pytest.approx(0.8, abs=1e-6)  # kept rows carry their max cosine
    assert r1.metrics["embedding_check"] == "ran"
    gate.evaluate(rows, embeddings=c)
    assert emb.calls == 1  # eval items embedded once, lazily
    with pytest.raises(ValueError, match="aligned with rows"):
        gate.evaluate(rows, embeddings=c[:2])
    disabled = ContaminationGate(ContaminationGateConfig(use_embeddings=False), embedder=emb, eval_items=items)
    assert disabled.evaluate(rows, embeddings=c).keep.all()


def test_per_set_embedding_threshold_and_off():
    """Per eval set: embedding off (short same-domain queries) or its own threshold; the reason names the
    threshold that applied, and the text methods still cover the sets whose embedding is off."""
    items = pd.DataFrame({"eval_set": ["s", "off", "strict"], "item_id": ["a", "b", "c"],
                          "text": ["alpha item text", "beta item text", "gamma item text"]})
    ev = dict(zip(items["text"], np.eye(3, dtype=np.float32)))
    emb = CountingEmbedder(fn=lambda texts: np.stack([ev[t] for t in texts]))
    specs = [EvalSetSpec(name="s", path="x.jsonl", text_fields=["q"]),
             EvalSetSpec(name="off", path="x.jsonl", text_fields=["q"], embedding=False),
             EvalSetSpec(name="strict", path="x.jsonl", text_fields=["q"], embedding_threshold=0.97)]
    gate = ContaminationGate(ContaminationGateConfig(eval_sets=specs, embedding_threshold=0.9), embedder=emb,
                             eval_items=items)
    c = np.array([[0.95, 0.0, 0.3122], [0.0, 0.99, 0.141], [0.0, 0.243, 0.97], [0.2, 0.0, 0.9798]], dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    r = gate.evaluate(rows_of(["one", "two", "three", "four"]), embeddings=c)
    assert r.keep.tolist() == [False, True, False, False]
    assert r.reason[0] == f"embedding cosine {c[0, 0]:.2f} ≥ 0.90 (route minilm) with s/a"
    assert r.reason[2] == f"embedding cosine {c[2, 2]:.2f} ≥ 0.97 (route minilm) with strict/c"
    assert r.metrics["embedding_threshold_by_set"] == {"off": "off", "strict": 0.97}
    assert emb.texts == 2  # the 'off' set's items are never embedded
    assert gate.method_counts()["embedding"] == 2 and gate.unindexed_items().empty  # text methods cover 'off'
    no_text = ContaminationGate(ContaminationGateConfig(eval_sets=specs, short_item_policy="skip"), eval_items=items)
    assert no_text.unindexed_items()[["item_id", "reason"]].values.tolist() == [
        ["b", "3 words < ngram_size 13 and short_item_policy='skip'; embedding off for eval set 'off'"]]


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


def load_sts_paraphrases(shared_data: Path, min_score: float = 4.5) -> pd.DataFrame:
    """SemEval STS 2012-2016 pairs with gold similarity >= ``min_score`` whose normalised texts differ: sentence 1
    is the eval item, sentence 2 its real (human-judged) paraphrase."""
    rows = []
    for f in sorted((shared_data / "semeval_sts").glob("*/*.tsv")):
        for i, line in enumerate(f.read_text(encoding="utf-8").split("\n")):
            parts = line.split("\t")
            if len(parts) < 3 or not parts[0].strip() or float(parts[0]) < min_score:
                continue
            a, b = parts[1].strip(), parts[2].strip()
            if normalize_for_matching(a) != normalize_for_matching(b):
                rows.append((f"{f.parent.name}/{f.stem}/{i}", a, b))
    return pd.DataFrame(rows, columns=["item_id", "text", "paraphrase"]).assign(eval_set="sts")[
        ["eval_set", "item_id", "text", "paraphrase"]]


def test_canaries_with_real_paraphrases_and_embeddings(shared_data):
    """Real MiniLM on a small STS sample (default run): every planting kind, including real human paraphrases
    (SemEval STS gold >= 4.5), measured with and without the embedding check."""
    from synqa_dagster.embedding import Embedder

    sts = load_sts_paraphrases(shared_data)
    assert len(sts) > 2000
    items = sts.sample(15, random_state=0).reset_index(drop=True)
    canaries = plant_eval_canaries(items, 15, seed=0)
    assert canaries.groupby("canary_kind").size().to_dict() == {k: 15 for k in
                                                                ("embedded", "paraphrased", "rewrapped", "truncated", "verbatim")}
    embedder = Embedder()
    gate = ContaminationGate(ContaminationGateConfig(use_embeddings=True), embedder=embedder, eval_items=items)
    table = gate.measured_recall(canaries, embeddings=embedder.encode(canaries["text"].tolist())).set_index("canary_kind")
    print(table)
    assert table.loc["verbatim", "recall"] == table.loc["rewrapped", "recall"] == 1.0
    assert table.loc["paraphrased", "recall"] >= 0.4  # measured 0.53 (15 items); n-grams alone 0.07
    assert table.loc["paraphrased", "recall"] >= table.loc["paraphrased", "recall_text"] + 0.3
    assert table["embeddings"].all()


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


@pytest.mark.slow
def test_measure_contamination_script_text_methods(capsys):
    """scripts/measure_contamination.py --no-embeddings (~20 s): the tables of the docs, text methods only."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "measure_contamination.py"
    spec = importlib.util.spec_from_file_location("measure_contamination", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--no-embeddings", "--canaries", "50"]) == 0
    out = capsys.readouterr().out
    assert "| **all** | 4963 | 21.3% | 2322 | 1583 | 1058 | 4963 | 0 |" in out
    assert "| **all** | 4963 | 1058 | 78.7% → 100% | 0 → 100% | 78.7% → 100% | 0 → 100% |" in out
