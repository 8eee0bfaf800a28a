"""Tests of the toxicity gate: real TweetEval precision/recall/AUC, a real (tiny, random) Detoxify checkpoint
loaded offline, the no-download guard, the cascade routing and the per-slice escalation table."""

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
    DEFAULT_PROFANITY_THRESHOLD,
    DetoxifyScorer,
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
    gate = ToxicityGate(ToxicityGateConfig(), profanity_scorer=profanity)
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


def test_empty_batch(profanity):
    gate = ToxicityGate(profanity_scorer=profanity)
    result = gate.evaluate(pd.DataFrame({"row_id": [], "text": []}))
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
    cfg = ToxicityGateConfig(slice_max_rate=0.1, slice_min_rows=10)
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
    cfg = ToxicityGateConfig(slice_min_rows=1)
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
