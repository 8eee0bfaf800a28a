"""The static embedding route: model2vec distillation from the wheel's MiniLM (cached, keyed, rebuilt when broken)
and the cascades of the contamination and toxicity gates (MiniLM re-scores only rows near a threshold).

Real models and real data: the static model is distilled once per machine into the instance cache
(``.synqa/cache/models``; the first test session pays ~30 s, later sessions load it in < 1 s); the cache-logic
tests reuse that model instead of distilling again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synqa_dagster import embedding as E
from synqa_dagster.config import GateConfig, load_gate_config
from synqa_dagster.embedding import CascadeEmbedder, Embedder, EmbeddingConfig, StaticEmbedder, embedder_for
from synqa_dagster.gates.contamination import CATEGORY_EMBEDDING, ContaminationGate, ContaminationGateConfig
from synqa_dagster.gates.toxicity import ToxicityGate, ToxicityGateConfig
from synqa_dagster.resources import EmbedderResource
from synqa_dagster.stages import stage

DATA = Path(os.environ.get("SYNQA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# A real SemEval STS pair (2012 MSRpar test, gold >= 4.5): item and its human paraphrase. Measured: static cosine
# 0.80 (below the MiniLM threshold 0.88, above the static candidate threshold 0.70), MiniLM cosine 0.94.
STS_ITEM = "One of the most well studied facets of temperament is how people respond to novelty."
STS_PARA = "One of the defining and well-studied characteristics of temperament is how people react to novelty."


@pytest.fixture(scope="session")
def static() -> StaticEmbedder:
    s = StaticEmbedder()
    s.model  # noqa: B018 - distil (first session on a machine) or load from the cache
    return s


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    return Embedder()


def _gsm8k_questions(n: int) -> list[str]:
    lines = (DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["question"] for x in lines[:n]]


# ---------------------------------------------------------------------------------------------- distillation


def test_vectors_are_deterministic_unit_length_and_semantic(static):
    texts = ["My card was declined at the shop.", "The payment with my card did not go through.",
             "Natalia sold clips to 48 of her friends in April."]
    a = static.encode(texts)
    b = StaticEmbedder().encode(texts)  # another instance, same cached model
    assert a.dtype == np.float32 and a.shape == (3, static.dim) == (3, 256)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(a[0] @ a[1]) > float(a[0] @ a[2]) + 0.2  # paraphrase closer than an unrelated sentence
    assert static.encode([]).shape == (0, 256)
    assert static.model_id.startswith("all-MiniLM-L6-v2-m2v256-") and static.key in static.model_id


def test_cache_is_reused_not_redistilled(static):
    man = static.manifest()
    assert man["key"] == static.key and man["params"]["pca_dims"] == 256 and man["distill_seconds"] > 0
    assert set(man["files"]) >= {"model.safetensors", "tokenizer.json", "config.json"}
    before = E.DISTILL_COUNT["n"]
    E._load_static.cache_clear()  # a new process: only the disk cache is left
    v = StaticEmbedder().encode(["hello"])
    assert E.DISTILL_COUNT["n"] == before, "a valid cache was distilled again"
    assert v.shape == (1, 256)
    assert not [p for p in static.cache_dir.parent.iterdir() if p.name.startswith(f".{static.model_id}.")]


def test_cache_key_depends_on_params_and_source(static, tmp_path):
    keys = {StaticEmbedder(pca_dims=d).key for d in (128, 256)}
    keys.add(StaticEmbedder(sif_coefficient=1e-3).key)
    assert len(keys) == 3 and static.key in keys
    # the source model's bytes are part of the key: a copy with one changed file gets another key
    src = tmp_path / "src"
    shutil.copytree(static.source_path, src)
    same = StaticEmbedder(source_path=str(src)).key
    (src / "config_sentence_transformers.json").write_text("{}")
    assert StaticEmbedder(source_path=str(src)).key != same


def _fake_distill(static):
    """Stands in for the ~30 s distillation in the cache tests: returns the real distilled model."""
    calls = []

    def distill(source_path, pca_dims, sif_coefficient):
        calls.append((source_path, pca_dims, sif_coefficient))
        return static.model, 0.01

    return distill, calls


@pytest.mark.parametrize("damage", ["truncated_weights", "missing_manifest", "wrong_key"])
def test_corrupt_or_partial_cache_is_rebuilt(static, tmp_path, monkeypatch, damage):
    distill, calls = _fake_distill(static)
    monkeypatch.setattr(E, "distill_static", distill)
    s = StaticEmbedder(cache_root=str(tmp_path))
    s.model  # noqa: B018 - built into the empty root
    assert len(calls) == 1
    folder = s.cache_dir
    ref = s.encode([STS_ITEM])
    if damage == "truncated_weights":
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
    elif damage == "missing_manifest":
        (folder / E.STATIC_MANIFEST).unlink()
    else:
        man = json.loads((folder / E.STATIC_MANIFEST).read_text())
        (folder / E.STATIC_MANIFEST).write_text(json.dumps({**man, "key": "0" * 16}))
    E._load_static.cache_clear()
    again = StaticEmbedder(cache_root=str(tmp_path))
    assert np.array_equal(again.encode([STS_ITEM]), ref)
    assert len(calls) == 2, "the damaged cache was not rebuilt"
    assert E._valid_cache(folder, again.key)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temp dir left behind


# ------------------------------------------------------------------------------------------------ the routes


def test_config_and_resource_select_the_route():
    gc = load_gate_config()
    assert gc.embedding.route == "static_cascade"
    emb = EmbedderResource.from_gate_config(gc).embedder()
    assert isinstance(emb, CascadeEmbedder) and emb is EmbedderResource().embedder()
    assert emb.rescorer.model_id == "all-MiniLM-L6-v2"
    mini = GateConfig.model_validate({**gc.model_dump(), "embedding": {"route": "minilm"}})
    assert mini.content_hash() != gc.content_hash()
    assert isinstance(EmbedderResource.from_gate_config(mini).embedder(), Embedder)
    with pytest.raises(Exception):
        EmbeddingConfig.model_validate({"route": "fast"})


def _items() -> pd.DataFrame:
    qs = _gsm8k_questions(30)
    rows = [("gsm8k_test", str(i), q) for i, q in enumerate(qs)] + [("sts", "msrpar/12", STS_ITEM)]
    return pd.DataFrame(rows, columns=["eval_set", "item_id", "text"])


def test_cascade_catches_a_paraphrase_static_alone_would_not(static, minilm):
    items = _items()
    cfg = ContaminationGateConfig(eval_sets=[])
    benign = "I would like to know why my card payment was declined yesterday at the supermarket."
    rows = pd.DataFrame({"row_id": ["para", "benign"], "text": [STS_PARA, benign]})

    cascade = ContaminationGate(cfg, embedder=CascadeEmbedder(static, minilm, EmbeddingConfig()), eval_items=items)
    vec = static.encode(rows["text"].tolist())
    cos_static, _ = cascade.max_cosine(vec)
    assert cfg.static_candidate_threshold <= cos_static[0] < cfg.embedding_threshold  # static alone keeps it
    res = cascade.evaluate(rows, embeddings=vec)
    assert res.keep.tolist() == [False, True]
    assert res.category[0] == CATEGORY_EMBEDDING
    assert "route static_cascade" in res.reason[0] and res.reason[0].endswith("with sts/msrpar/12")
    assert res.metrics["embedding_route"] == "static_cascade" and res.metrics["embedding_candidates"] == 1
    assert res.score[0] >= 0.88  # the MiniLM cosine decided

    # the same row through the minilm route: caught too, and the reason says so
    mini = ContaminationGate(cfg, embedder=minilm, eval_items=items)
    r2 = mini.evaluate(rows, embeddings=minilm.encode(rows["text"].tolist()))
    assert r2.keep.tolist() == [False, True] and "(route minilm)" in r2.reason[0]
    assert abs(r2.score[0] - res.score[0]) < 1e-5


def test_minilm_route_builds_through_the_registry():
    gc = load_gate_config()
    mini = GateConfig.model_validate({**gc.model_dump(), "embedding": {"route": "minilm"}})
    env = EmbedderResource.from_gate_config(mini)
    gate = stage("contamination").build(mini, env)
    text = gate.eval_items["text"].iat[0]
    rows = pd.DataFrame({"row_id": ["a"], "text": ["Sure. " + text]})
    vec = env.embedder().encode(rows["text"].tolist())
    assert vec.shape == (1, 384)
    res = gate.evaluate(rows, embeddings=vec)
    assert not res.keep[0] and res.metrics["embedding_route"] == "minilm"


# -------------------------------------------------------------------------------------------------- toxicity


def _tweets(n: int) -> tuple[list[str], np.ndarray]:
    base = DATA / "tweeteval" / "offensive"
    texts = (base / "test_text.txt").read_text(encoding="utf-8").splitlines()[:n]
    labels = np.array([int(x) for x in (base / "test_labels.txt").read_text().split()[:n]])
    return texts, labels


def test_toxicity_cascade_band_is_decided_by_minilm_head(static, minilm):
    texts, labels = _tweets(150)
    rows = pd.DataFrame({"row_id": [f"t{i}" for i in range(len(texts))], "text": texts})
    cascade_emb = CascadeEmbedder(static, minilm, EmbeddingConfig())
    gate_c = ToxicityGate(ToxicityGateConfig(), embedder=cascade_emb)
    vec_s = static.encode(texts)
    res_c = gate_c.evaluate(rows, embeddings=vec_s)
    assert res_c.metrics["embedding_route"] == "static_cascade"
    # the gate infers the route from the vectors too (no embedder passed: how the registry builds it)
    res_c2 = ToxicityGate(ToxicityGateConfig()).evaluate(rows, embeddings=vec_s)
    assert res_c2.keep.tolist() == res_c.keep.tolist()

    vec_m = minilm.encode(texts)
    res_m = ToxicityGate(ToxicityGateConfig()).evaluate(rows, embeddings=vec_m)
    assert res_m.metrics["embedding_route"] == "minilm"

    st = gate_c.static_scorer
    ps = st.score(texts, embeddings=vec_s)
    band = np.abs(ps - st.threshold) < gate_c.config.static_band
    assert 0 < band.sum() < len(texts) and res_c.metrics["cascade_minilm_rows"] == int(band.sum())
    # inside the band the MiniLM head decides: identical to the MiniLM-only route, score for score
    assert res_c.keep[band].tolist() == res_m.keep[band].tolist()
    assert np.allclose(res_c.score[band], res_m.score[band], atol=1e-5)
    # outside it the static head decides; measured agreement with MiniLM-only on real tweets
    agree = float((res_c.keep[~band] == res_m.keep[~band]).mean())
    assert agree >= 0.95, agree
    dropped = [r for r in res_c.reason if r]
    assert dropped and all("route static_cascade" in r for r in dropped)
    # the cascade still finds offensive tweets
    assert (~res_c.keep[labels == 1]).mean() > 0.3
