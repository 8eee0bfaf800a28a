"""Tests of the toxicity gate: the shipped learned scorer (loads offline, threshold from its metadata, known false
positives, precomputed vs self-computed embeddings, bad model files), real TweetEval precision/recall/AUC, a real
(tiny, random) Detoxify checkpoint loaded offline, the no-download guard, the cascade routing and the per-slice
escalation table."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from synqa_dagster.gates.toxicity import (
    DEFAULT_LEARNED_MODEL,
    DEFAULT_PROFANITY_THRESHOLD,
    LEARNED_MODEL_DIR,
    DetoxifyScorer,
    LearnedToxicityScorer,
    ProfanityCheckScorer,
    ToxicityConfigError,
    ToxicityGate,
    ToxicityGateConfig,
    slice_toxicity_rates,
)

DETOXIFY_ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


# --------------------------------------------------------------------------------------------------- helpers


def load_tweeteval(shared_data: Path, split: str) -> pd.DataFrame:
    """TweetEval offensive split: one tweet per line, aligned by line index with the labels (blank lines kept)."""
    folder = shared_data / "tweeteval" / "offensive"
    texts = (folder / f"{split}_text.txt").read_text(encoding="utf-8").split("\n")
    labels = (folder / f"{split}_labels.txt").read_text(encoding="utf-8").split("\n")
    if texts and texts[-1] == "" and labels and labels[-1] == "":
        texts, labels = texts[:-1], labels[:-1]
    assert len(texts) == len(labels), (len(texts), len(labels))
    return pd.DataFrame({"text": texts, "label": [int(x) for x in labels]})


def precision_recall_auc(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    pred = scores >= threshold
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auc": float(roc_auc_score(labels, scores)),
        "threshold": threshold,
        "n": int(len(labels)),
        "positives": int(labels.sum()),
    }


class FakeScorer:
    """A scorer returning preset scores per text, counting calls and texts seen."""

    def __init__(self, scores: dict[str, float], label: str = "fake", default: float = 0.0):
        self.scores = scores
        self.default = default
        self.label = label
        self.scorer_id = f"fake:{label}"
        self.calls: list[list[str]] = []

    def score(self, texts):
        self.calls.append(list(texts))
        return np.array([self.scores.get(t, self.default) for t in texts], dtype=float)


@pytest.fixture(scope="module")
def profanity() -> ProfanityCheckScorer:
    return ProfanityCheckScorer()


class CountingEmbedder:
    """Wraps the real :class:`~synqa_dagster.embedding.Embedder`, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        from synqa_dagster.embedding import Embedder

        self.inner = Embedder()
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts.extend(texts)
        return self.inner.encode(list(texts))


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture(scope="module")
def learned(embedder) -> LearnedToxicityScorer:
    return LearnedToxicityScorer(embedder=embedder)


@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory) -> dict[str, Path]:
    """A Detoxify checkpoint wrapping a tiny random BertForSequenceClassification, built offline."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    root = tmp_path_factory.mktemp("tiny_detoxify")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted(set("you are a the idiot nice day hello world thanks for help stupid card bank money".split()))
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    model_dir = root / "tiny-bert"
    tokenizer = BertTokenizer(vocab_file=str(vocab_file), model_max_length=64)
    tokenizer.save_pretrained(str(model_dir))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(DETOXIFY_ORIGINAL_CLASSES),
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(str(model_dir))
    checkpoint = root / "tiny-original.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        "model_type": str(model_dir),
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(DETOXIFY_ORIGINAL_CLASSES),
                    }
                },
                "dataset": {"args": {"classes": DETOXIFY_ORIGINAL_CLASSES}},
            },
            "state_dict": model.state_dict(),
        },
        str(checkpoint),
    )
    return {"checkpoint": checkpoint, "model_dir": model_dir, "root": root}


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every outgoing socket connection."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network disabled in tests (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    return attempts


# ------------------------------------------------------------------------------------------ profanity-check


def test_profanity_check_on_tweeteval_offensive_test(shared_data, profanity):
    """Real labelled data: AUC and precision/recall of the default threshold on the TweetEval offensive test split."""
    df = load_tweeteval(shared_data, "test")
    assert len(df) == 860
    scores = profanity.score(df["text"].tolist())
    assert scores.shape == (860,) and np.all((scores >= 0) & (scores <= 1))
    m = precision_recall_auc(df["label"].to_numpy(), scores, DEFAULT_PROFANITY_THRESHOLD)
    print("profanity-check TweetEval offensive test:", json.dumps(m))
    assert m["auc"] >= 0.80  # measured 0.8335
    assert m["precision"] >= 0.72  # measured 0.790 at 0.30
    assert m["recall"] >= 0.45  # measured 0.533 at 0.30


def test_default_profanity_threshold_choice(shared_data, profanity):
    """Why 0.30: near the F1 optimum on TweetEval offensive *validation* (chosen there, not on test), while
    dropping few benign real support queries (BANKING77), with no intent disproportionately hit.

    The F1-optimal 0.15 would drop 3.3% of BANKING77 and 40% of its ``pending_cash_withdrawal`` queries
    ("cash" drives the linear model), i.e. a slice-level bias the escalation check would flag.
    """
    df = load_tweeteval(shared_data, "val")
    labels = df["label"].to_numpy()
    scores = profanity.score(df["text"].tolist())
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    f1 = {float(t): precision_recall_auc(labels, scores, float(t))["f1"] for t in grid}
    best = max(f1, key=f1.get)
    assert f1[DEFAULT_PROFANITY_THRESHOLD] >= f1[best] - 0.05, (best, f1[best], f1[DEFAULT_PROFANITY_THRESHOLD])
    val = precision_recall_auc(labels, scores, DEFAULT_PROFANITY_THRESHOLD)
    assert val["precision"] >= 0.70

    bank = pd.read_csv(shared_data / "banking77" / "test.csv")
    bank["drop"] = profanity.score(bank["text"].tolist()) >= DEFAULT_PROFANITY_THRESHOLD
    per_intent = bank.groupby("category")["drop"].mean()
    print("banking77 test benign drop rate:", bank["drop"].mean(), "worst intents:", per_intent.nlargest(3).to_dict())
    assert bank["drop"].mean() <= 0.01
    assert per_intent.max() <= 0.10
    # ... while at the F1-optimal threshold one benign intent would lose a large share of its rows
    bank_scores = profanity.score(bank["text"].tolist())
    assert bank.assign(d=bank_scores >= best).groupby("category")["d"].mean().max() >= 0.2


def test_profanity_gate_drops_with_exact_reason(profanity):
    rows = pd.DataFrame(
        {
            "row_id": ["a", "b", "c"],
            "text": [
                "How do I reset my card PIN?",
                "you are a fucking idiot, shut the fuck up",
                "Thanks, that solved my problem.",
            ],
            "intent": ["pin", "pin", "thanks"],
            "locale": ["en", "en", "en"],
        }
    )
    gate = ToxicityGate(ToxicityGateConfig(backend="profanity_check"), profanity_scorer=profanity)
    kept, rejected, result = gate(rows)
    assert list(kept["row_id"]) == ["a", "c"]
    assert list(rejected["row_id"]) == ["b"]
    assert rejected["reject_category"].iat[0] == "toxic"
    reason = rejected["reject_reason"].iat[0]
    assert re.fullmatch(r"toxicity (0\.\d\d|1\.00) ≥ 0\.30 \(profanity-check\)", reason), reason
    assert f"{rejected['gate_score'].iat[0]:.2f}" in reason
    assert not np.isnan(result.score).any()
    assert result.metrics["scorer_ids"][0].startswith("profanity-check:alt-profanity-check==")
    assert result.metrics["threshold"] == DEFAULT_PROFANITY_THRESHOLD
    assert result.counters()["dropped_by_category"] == {"toxic": 1}


def test_empty_batch(profanity, learned):
    empty = pd.DataFrame({"row_id": [], "text": []})
    gate = ToxicityGate(ToxicityGateConfig(backend="profanity_check"), profanity_scorer=profanity)
    result = gate.evaluate(empty)
    assert len(result) == 0 and result.metrics["dropped_toxic"] == 0
    result = ToxicityGate(model_scorer=learned).evaluate(empty, embeddings=np.zeros((0, 384), np.float32))
    assert len(result) == 0 and result.metrics["dropped_toxic"] == 0


# ----------------------------------------------------------------------------------------- offline guards


def test_detoxify_without_checkpoint_refuses_before_any_network(no_network):
    with pytest.raises(ValidationError, match="allow_download"):
        ToxicityGateConfig(backend="detoxify")
    with pytest.raises(ValidationError, match="allow_download"):
        ToxicityGateConfig(backend="cascade")
    with pytest.raises(ToxicityConfigError, match="allow_download"):
        DetoxifyScorer()
    assert no_network == []
    # explicitly opting in is accepted by the config (the download itself is not exercised here)
    assert ToxicityGateConfig(backend="detoxify", allow_download=True).allow_download


def test_detoxify_checkpoint_naming_a_hub_model_is_refused_offline(tmp_path, no_network):
    """A checkpoint whose model_type is a hub id would make Detoxify call the hub: refused before loading."""
    import torch

    ckpt = tmp_path / "hub.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        "model_type": "bert-base-uncased",
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": 6,
                    }
                },
                "dataset": {"args": {"classes": DETOXIFY_ORIGINAL_CLASSES}},
            },
            "state_dict": {},
        },
        str(ckpt),
    )
    with pytest.raises(ToxicityConfigError, match="bert-base-uncased"):
        DetoxifyScorer(checkpoint_path=ckpt)
    with pytest.raises(ToxicityConfigError, match="not found"):
        DetoxifyScorer(checkpoint_path=tmp_path / "missing.ckpt")
    assert no_network == []


def test_import_is_cheap():
    """Importing the gate modules must not import torch, transformers, detoxify, sklearn or sentence-transformers."""
    code = (
        "import sys; import synqa_dagster.gates.toxicity, synqa_dagster.gates.contamination, "
        "synqa_dagster.gates.eval_sets; "
        "heavy = [m for m in ('torch', 'transformers', 'detoxify', 'sklearn', 'sentence_transformers', "
        "'profanity_check', 'dagster') if m in sys.modules]; print(heavy); assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------- real Detoxify (tiny model)


def test_detoxify_scorer_loads_tiny_checkpoint_offline(tiny_detoxify, no_network):
    texts = ["hello world", "you are a stupid idiot", "thanks for the help with my card", "", "nice day!" * 40]
    scorer = DetoxifyScorer(
        checkpoint_path=tiny_detoxify["checkpoint"],
        huggingface_config_path=tiny_detoxify["model_dir"],
        model_type="original",
        batch_size=2,
    )
    assert scorer.scorer_id == "detoxify:original:tiny-original.ckpt"
    assert scorer.label == "detoxify original"
    assert scorer.class_names[0] == "toxicity"  # detoxify renames "toxic"
    s1 = scorer.score(texts)
    s2 = scorer.score(texts)
    assert s1.shape == (len(texts),) and s1.dtype == np.float64
    assert np.all((s1 >= 0) & (s1 <= 1))
    np.testing.assert_array_equal(s1, s2)
    assert len(set(np.round(s1[:3], 6))) > 1  # a real forward pass, not a constant
    # a second, independently loaded instance (tokenizer read from the checkpoint's model_type folder, no
    # huggingface_config_path) gives the same scores; batch size does not change them
    again = DetoxifyScorer(checkpoint_path=tiny_detoxify["checkpoint"], batch_size=32)
    np.testing.assert_allclose(again.score(texts), s1, atol=1e-5)
    assert no_network == []


def test_detoxify_gate_reason(tiny_detoxify):
    cfg = ToxicityGateConfig(
        backend="detoxify",
        checkpoint_path=str(tiny_detoxify["checkpoint"]),
        huggingface_config_path=str(tiny_detoxify["model_dir"]),
        detoxify_threshold=0.05,
    )
    rows = pd.DataFrame({"row_id": ["x", "y"], "text": ["hello world", "you are a stupid idiot"]})
    result = ToxicityGate(cfg).evaluate(rows)
    scores = result.score
    assert np.all((scores >= 0) & (scores <= 1))
    # a random-weight head gives sigmoid scores near 0.5: both rows are at or above 0.05
    for i in range(2):
        assert not result.keep[i]
        assert result.reason[i] == f"toxicity {scores[i]:.2f} ≥ 0.05 (detoxify original)"
    assert result.metrics["scorer_ids"] == ["detoxify:original:tiny-original.ckpt"]


# ------------------------------------------------------------------------------------------------- cascade


def _cascade_rows(n_clean: int = 1000) -> pd.DataFrame:
    clean = [f"clean support message number {i}" for i in range(n_clean)]
    profane = [f"profane message {i}" for i in range(20)]
    return pd.DataFrame(
        {
            "row_id": [f"r{i}" for i in range(n_clean + 20)],
            "text": clean + profane,
            "intent": ["billing"] * (n_clean + 20),
            "locale": ["en"] * (n_clean + 20),
        }
    )


def test_cascade_sends_only_screened_and_calibration_rows_to_model():
    rows = _cascade_rows()
    profane = {t: 0.9 for t in rows["text"] if t.startswith("profane")}
    profane["clean support message number 7"] = 0.15  # above the 0.10 screen, below the 0.30 profanity bar
    screen = FakeScorer(profane, label="profanity-check")
    # the model disagrees with the screen: half of the profane rows are fine, and one unscreened row is toxic
    model_scores = {f"profane message {i}": (0.9 if i % 2 else 0.01) for i in range(20)}
    model_scores["clean support message number 7"] = 0.5
    model = FakeScorer(model_scores, label="detoxify original", default=0.0)
    cfg = ToxicityGateConfig(
        backend="cascade", checkpoint_path="/unused.ckpt", screen_threshold=0.10, calibration_fraction=0.05
    )
    gate = ToxicityGate(cfg, profanity_scorer=screen, model_scorer=model)
    result = gate.evaluate(rows)

    assert len(screen.calls) == 1 and len(screen.calls[0]) == len(rows)
    sent = [t for call in model.calls for t in call]
    assert len(sent) == len(set(sent))
    screened = {t for t, s in profane.items() if s > 0.10}
    calibration = set(sent) - screened
    assert screened <= set(sent)
    assert all(t.startswith("clean") for t in calibration)
    # seeded calibration sample: ~5% of the 999 unscreened rows, and the same rows on a second run
    assert 25 <= len(calibration) <= 80, len(calibration)
    m = result.metrics
    assert m["cascade_screened"] == 21
    assert m["cascade_calibration"] == len(calibration)
    assert m["cascade_model_rows"] == len(sent) == 21 + len(calibration)
    model.calls.clear()
    gate.evaluate(rows.sample(frac=1.0, random_state=1))
    assert {t for call in model.calls for t in call} == set(sent)  # stable per row id, independent of order

    # the model's score decides for the rows it scored
    by_text = dict(zip(rows["text"], zip(result.keep, result.reason, result.score)))
    assert not by_text["profane message 1"][0]
    assert by_text["profane message 1"][1] == "toxicity 0.90 ≥ 0.05 (detoxify original)"
    assert by_text["profane message 2"][0]  # profanity 0.9 but model 0.01: kept
    assert by_text["profane message 2"][2] == pytest.approx(0.01)
    assert by_text["clean support message number 7"][1] == "toxicity 0.50 ≥ 0.05 (detoxify original)"
    assert m["dropped_toxic"] == 11
    assert m["scorer_ids"] == ["fake:profanity-check", "fake:detoxify original"]


def test_cascade_calibration_estimates_screen_misses():
    rows = _cascade_rows(2000)
    screen = FakeScorer({}, label="profanity-check")  # screens nothing
    model = FakeScorer({}, label="detoxify original", default=1.0)  # everything it sees is toxic
    cfg = ToxicityGateConfig(
        backend="cascade", checkpoint_path="/unused.ckpt", calibration_fraction=0.1, calibration_seed=3
    )
    result = ToxicityGate(cfg, profanity_scorer=screen, model_scorer=model).evaluate(rows)
    m = result.metrics
    assert m["cascade_screened"] == 0
    assert 150 <= m["cascade_calibration"] <= 260
    assert m["cascade_screen_miss_rate_est"] == 1.0
    assert m["dropped_toxic"] == m["cascade_model_rows"] == m["cascade_calibration"]


# -------------------------------------------------------------------------------------------------- slices


def test_slice_rates_and_escalation_table():
    intents = ["billing"] * 40 + ["cards"] * 40 + ["tiny"] * 4
    locales = ["en"] * 20 + ["fr"] * 20 + ["en"] * 40 + [None] * 4
    texts = [f"t{i}" for i in range(84)]
    toxic = {f"t{i}": 0.99 for i in range(20, 25)}  # 5 of the 20 billing/fr rows
    toxic.update({f"t{i}": 0.99 for i in range(80, 84)})  # every row of the 4-row slice
    rows = pd.DataFrame({"row_id": texts, "text": texts, "intent": intents, "locale": locales})
    cfg = ToxicityGateConfig(backend="profanity_check", slice_max_rate=0.1, slice_min_rows=10)
    gate = ToxicityGate(cfg, profanity_scorer=FakeScorer(toxic, label="profanity-check"))
    result = gate.evaluate(rows)
    table = slice_toxicity_rates(rows, result, cfg)
    assert list(table.columns) == ["intent", "locale", "n", "dropped", "rate", "bar", "over_bar"]
    t = table.set_index(["intent", "locale"])
    assert t.loc[("billing", "fr"), "n"] == 20 and t.loc[("billing", "fr"), "dropped"] == 5
    assert t.loc[("billing", "fr"), "rate"] == pytest.approx(0.25)
    assert bool(t.loc[("billing", "fr"), "over_bar"])
    assert t.loc[("billing", "en"), "dropped"] == 0 and not t.loc[("billing", "en"), "over_bar"]
    assert t.loc[("cards", "en"), "n"] == 40
    # the 4-row slice is at 100% but below slice_min_rows: reported, not over bar
    assert t.loc[("tiny", "<missing>"), "rate"] == 1.0 and not t.loc[("tiny", "<missing>"), "over_bar"]
    assert table["bar"].eq(0.1).all()
    assert table["rate"].is_monotonic_decreasing
    assert result.metrics["slices_over_bar"] == 1
    assert result.metrics["slices"] == table.to_dict(orient="records")


def test_slice_rates_without_slice_columns():
    rows = pd.DataFrame({"row_id": ["a", "b"], "text": ["x", "y"]})
    cfg = ToxicityGateConfig(backend="profanity_check", slice_min_rows=1)
    result = ToxicityGate(cfg, profanity_scorer=FakeScorer({"x": 0.9})).evaluate(rows)
    table = slice_toxicity_rates(rows, result, cfg)
    assert table[["n", "dropped"]].values.tolist() == [[2, 1]]
    assert bool(table["over_bar"].iat[0])


def test_config_forbids_unknown_fields():
    with pytest.raises(ValidationError):
        ToxicityGateConfig(threshold=0.5)
    assert ToxicityGateConfig().escalation_severity == "WARN"
    assert ToxicityGateConfig().detoxify_threshold == 0.05
    assert ToxicityGateConfig().slice_columns == ["intent", "locale"]


# ---------------------------------------------------------------------------------------- measurements


@pytest.mark.slow
def test_measure_profanity_check_tweeteval_all_splits(shared_data, profanity):
    """Full measurement for docs/measurements: P/R/F1/AUC per split and threshold, plus throughput."""
    import time

    out = {}
    for split in ("val", "test"):
        df = load_tweeteval(shared_data, split)
        labels = df["label"].to_numpy()
        scores = profanity.score(df["text"].tolist())
        out[split] = {str(t): precision_recall_auc(labels, scores, t) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)}
    big = load_tweeteval(shared_data, "train")["text"].tolist()
    t0 = time.perf_counter()
    profanity.score(big)
    out["rows_per_s"] = len(big) / (time.perf_counter() - t0)
    print(json.dumps(out, indent=1))
    assert out["test"]["0.3"]["auc"] >= 0.75


# -------------------------------------------------------------------------------------------- learned scorer

#: Benign rows the lexical profanity-check model drops or nearly drops (issue 11), and obviously toxic rows.
KNOWN_FALSE_POSITIVES = [
    "How do I check my tires' pressure?",
    "What's the best way to roast a pig for a family party?",
    "Can you give me a Bloody Mary recipe?",
    "Run npm init to create a package.json for the project.",
    "She has 5 nuts and 3 balls. How many things does she have in total?",
]
OTHER_BENIGN = [
    "How do I reset my card PIN?",
    "Thanks, that solved my problem.",
    "This movie was a dull, boring waste of two hours.",
]
OBVIOUSLY_TOXIC = [
    "you are a fucking idiot, shut the fuck up",
    "You are a worthless piece of shit and everyone hates you.",
    "Immigrants are vermin and should all be sent back where they came from.",
]


def _shipped() -> tuple[Path, Path]:
    return LEARNED_MODEL_DIR / f"{DEFAULT_LEARNED_MODEL}.npz", LEARNED_MODEL_DIR / f"{DEFAULT_LEARNED_MODEL}.json"


def test_learned_model_is_shipped_small_and_pickle_free(learned, no_network):
    npz, meta_path = _shipped()
    assert npz.is_file() and meta_path.is_file()
    assert npz.stat().st_size < 5_000_000
    meta = json.loads(meta_path.read_text())
    with np.load(npz, allow_pickle=False) as z:  # plain float arrays only
        assert set(z.files) == {"w_embedding", "w_char", "bias", "threshold"}
        assert all(z[k].dtype.kind == "f" for k in z.files)
        assert float(z["threshold"][0]) == meta["threshold"]
    # the threshold comes from the metadata, the id names the model and its hash, the label is the reason's
    assert learned.threshold == meta["threshold"] and 0.0 < learned.threshold < 1.0
    assert learned.scorer_id.startswith(f"learned:{DEFAULT_LEARNED_MODEL}:")
    assert learned.label == meta["label"] == "learned: minilm+char, v1"
    assert learned.feature_spec["embedding"] == {"model": "all-MiniLM-L6-v2", "dim": 384, "scale": 1.0}
    assert set(meta["data_sha256"]) >= {"tweeteval/hate/train_text.txt", "hatexplain/hatexplain.jsonl",
                                        "banking77/train.csv", "gsm8k/train.jsonl", "sst2/train.tsv"}
    # never trained or calibrated on a set it is measured on
    assert not any("test" in name or "user-oriented" in name for name in meta["trained_on"])
    assert not any("test" in name or "user-oriented" in name for name in meta["validated_on"])
    assert no_network == []


def test_learned_measured_figures_in_metadata(learned):
    m = learned.measured()
    assert m["threshold"] == learned.threshold
    by_name = {r["data"]: r for r in m["heldout"]}
    assert set(by_name) >= {"tweeteval hate test", "tweeteval offensive test", "hatexplain test"}
    for r in by_name.values():
        assert set(r) >= {"data", "precision", "recall", "f1", "auc", "n_pos", "n_neg"}
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0.5 < r["auc"] <= 1
    benign = {r["data"]: r for r in m["benign_false_drop"]}
    assert set(benign) >= {"all benign test sets", "BANKING77 test", "GSM8K test", "SST-2 test"}
    for r in benign.values():
        assert set(r) >= {"data", "rate", "worst_slice", "worst_rate"}
    bank = benign["BANKING77 test"]  # per intent: worst intent (None when no intent lost a row)
    assert bank["slices"] == 77 and bank["slices_over_2pct"] == 0 and bank["worst_rate"] <= 0.02
    assert benign["all benign test sets"]["rate"] <= 0.003


def test_learned_scores_known_false_positives_and_toxic_text(learned, profanity):
    texts = KNOWN_FALSE_POSITIVES + OTHER_BENIGN + OBVIOUSLY_TOXIC
    s = learned.score(texts)
    assert s.shape == (len(texts),) and s.dtype == np.float64 and np.all((s >= 0) & (s <= 1))
    n_benign = len(KNOWN_FALSE_POSITIVES) + len(OTHER_BENIGN)
    thr = learned.threshold
    print({t: round(float(v), 3) for t, v in zip(texts, s)})
    assert np.all(s[:n_benign] < thr), [(t, v) for t, v in zip(texts, s) if v >= thr]
    assert np.all(s[n_benign:] >= thr), list(zip(OBVIOUSLY_TOXIC, s[n_benign:]))
    assert s[:n_benign].max() < s[n_benign:].min()


def test_learned_gate_reason_and_threshold_from_metadata(learned):
    rows = pd.DataFrame({"row_id": ["a", "b", "c"], "text": [OTHER_BENIGN[0], OBVIOUSLY_TOXIC[0], OTHER_BENIGN[1]],
                         "intent": ["pin", "pin", "thanks"], "locale": ["en"] * 3})
    gate = ToxicityGate(ToxicityGateConfig(), model_scorer=learned)
    assert gate.threshold == learned.threshold
    kept, rejected, result = gate(rows)
    assert list(kept["row_id"]) == ["a", "c"] and list(rejected["row_id"]) == ["b"]
    score = rejected["gate_score"].iat[0]
    assert rejected["reject_reason"].iat[0] == f"toxicity {score:.2f} ≥ {learned.threshold:.2f} (learned: minilm+char, v1)"
    assert result.metrics["backend"] == "learned"
    assert result.metrics["scorer_ids"] == [learned.scorer_id]
    assert result.metrics["threshold"] == learned.threshold
    # an explicit learned_threshold overrides the metadata's
    high = ToxicityGate(ToxicityGateConfig(learned_threshold=1.0), model_scorer=learned).evaluate(rows)
    assert high.keep.all() and high.metrics["threshold"] == 1.0


def test_precomputed_embeddings_give_the_same_scores(learned, embedder):
    texts = KNOWN_FALSE_POSITIVES + OBVIOUSLY_TOXIC + ["", "a" * 3000]
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(len(texts))], "text": texts})
    gate = ToxicityGate(model_scorer=learned)
    before = len(embedder.texts)
    self_embedded = gate.evaluate(rows)
    assert len(embedder.texts) == before + len(texts)  # the gate embedded the rows itself
    assert self_embedded.metrics["embeddings"] == "embedded by the gate"
    from synqa_dagster.embedding import Embedder

    vectors = Embedder().encode(texts)  # as the shared candidate_embeddings asset computes them
    before = len(embedder.texts)
    given = gate.evaluate(rows, embeddings=vectors)
    assert len(embedder.texts) == before  # no embedding when vectors are given
    assert given.metrics["embeddings"] == "precomputed"
    np.testing.assert_allclose(given.score, self_embedded.score, atol=1e-6)
    assert given.reason == self_embedded.reason and list(given.keep) == list(self_embedded.keep)
    with pytest.raises(ValueError, match="aligned with the rows"):
        gate.evaluate(rows, embeddings=vectors[:-1])
    with pytest.raises(ValueError, match="expected"):
        learned.score(texts, embeddings=vectors[:, :100])


def test_gate_embeds_lazily_with_its_own_embedder():
    """embedder=None: the gate makes a default Embedder only when a batch arrives without embeddings."""
    gate = ToxicityGate(ToxicityGateConfig())
    assert gate.model_scorer._embedder is None
    rows = pd.DataFrame({"row_id": ["a"], "text": ["How do I check my tires' pressure?"]})
    gate.evaluate(rows, embeddings=np.zeros((1, 384), np.float32))
    assert gate.model_scorer._embedder is None
    assert gate.evaluate(rows).keep.all()
    assert gate.model_scorer._embedder is not None


def test_learned_bad_or_missing_model_files_name_the_file(tmp_path, no_network):
    npz, meta_path = _shipped()
    missing = tmp_path / "nope.npz"
    with pytest.raises(ToxicityConfigError, match=re.escape(str(missing))):
        LearnedToxicityScorer(missing)
    with pytest.raises(ValidationError):  # the config validates eagerly too: the gate fails at construction
        ToxicityGateConfig(learned_threshold=1.5)
    with pytest.raises(ToxicityConfigError, match="nope.npz"):
        ToxicityGate(ToxicityGateConfig(learned_model_path=str(missing)))

    def copy(name: str) -> tuple[Path, Path]:
        d = tmp_path / name
        d.mkdir()
        a, b = d / npz.name, d / meta_path.name
        a.write_bytes(npz.read_bytes())
        b.write_text(meta_path.read_text())
        return a, b

    # metadata missing next to the npz
    a, b = copy("nometa")
    b.unlink()
    with pytest.raises(ToxicityConfigError, match=re.escape(str(b))):
        LearnedToxicityScorer(a)
    # corrupt npz: hash mismatch with the metadata
    a, b = copy("corrupt")
    a.write_bytes(b"not a zip file")
    with pytest.raises(ToxicityConfigError, match=re.escape(str(a))):
        LearnedToxicityScorer(a)
    # corrupt npz whose hash the metadata matches: still a clear error naming the file
    meta = json.loads(b.read_text())
    meta["npz_sha256"] = __import__("hashlib").sha256(b"not a zip file").hexdigest()
    b.write_text(json.dumps(meta))
    with pytest.raises(ToxicityConfigError, match=re.escape(str(a))):
        LearnedToxicityScorer(a)
    # an object (pickled) array is refused, not unpickled
    a, b = copy("pickled")
    with a.open("wb") as fh:
        np.savez(fh, w_embedding=np.array([{"x": 1}], dtype=object), w_char=np.zeros(1), bias=np.zeros(1),
                 threshold=np.array([0.5]))
    meta = json.loads(b.read_text())
    meta["npz_sha256"] = __import__("hashlib").sha256(a.read_bytes()).hexdigest()
    b.write_text(json.dumps(meta))
    with pytest.raises(ToxicityConfigError, match=re.escape(str(a))):
        LearnedToxicityScorer(a)
    # bad metadata JSON
    a, b = copy("badjson")
    b.write_text("{")
    with pytest.raises(ToxicityConfigError, match=re.escape(str(b))):
        LearnedToxicityScorer(a)
    assert no_network == []


def test_learned_is_the_default_backend():
    from synqa_dagster.config import load_gate_config

    assert ToxicityGateConfig().backend == "learned"
    assert ToxicityGateConfig().learned_model_path is None and ToxicityGateConfig().learned_threshold is None
    cfg = load_gate_config().toxicity
    assert cfg.backend == "learned" and cfg.learned_threshold is None
    gate = ToxicityGate(cfg)
    _, meta_path = _shipped()
    assert gate.threshold == json.loads(meta_path.read_text())["threshold"]
    assert "backend='learned'" in repr(gate)


def test_learned_on_real_banking77_sample(shared_data, learned):
    """Real benign support queries (2 per intent, BANKING77 test) all pass; real offensive tweets mostly don't."""
    bank = pd.read_csv(shared_data / "banking77" / "test.csv").groupby("category").head(2)
    assert len(bank) == 154
    s = learned.score(bank["text"].tolist())
    assert (s >= learned.threshold).sum() <= 1, bank["text"][s >= learned.threshold].tolist()
    off = load_tweeteval(shared_data, "test")
    off = off[off["label"] == 1].head(60)
    assert (learned.score(off["text"].tolist()) >= learned.threshold).mean() >= 0.5


@pytest.mark.slow
def test_learned_heldout_figures_reproduce(shared_data, learned):
    """Re-measure the stored held-out figures (TweetEval offensive test, BANKING77 test) from scratch."""
    m = {r["data"]: r for r in learned.measured()["heldout"]}
    off = load_tweeteval(shared_data, "test")
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from train_toxicity import clean_dataset_text

    texts = [clean_dataset_text(t) for t in off["text"]]
    got = precision_recall_auc(off["label"].to_numpy(), learned.score(texts), learned.threshold)
    print("learned TweetEval offensive test:", got)
    assert got["auc"] == pytest.approx(m["tweeteval offensive test"]["auc"], abs=0.002)
    assert got["recall"] == pytest.approx(m["tweeteval offensive test"]["recall"], abs=0.01)
    bank = pd.read_csv(shared_data / "banking77" / "test.csv")
    drop = learned.score(bank["text"].tolist()) >= learned.threshold
    benign = {r["data"]: r for r in learned.measured()["benign_false_drop"]}
    assert drop.mean() == pytest.approx(benign["BANKING77 test"]["rate"], abs=0.001)
    assert bank.assign(d=drop).groupby("category")["d"].mean().max() <= 0.02
