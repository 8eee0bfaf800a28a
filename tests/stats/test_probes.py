"""Probe functions: lengths, VADER sentiment, formality, politeness/tone, intent, embedding density."""

import numpy as np
import pandas as pd

from synqa_dagster.stats.bias import coverage_report, identity_mentions, identity_report, politeness_skew_report
from synqa_dagster.stats.diversity import distinct_n, mean_pairwise_distance
from synqa_dagster.stats.probes import compute_probes, formality, frame_probes, nn_distances, politeness_markers, tokenize, tone


def test_lengths_sentiment_and_markers():
    probes = compute_probes(["Thank you so much, this is wonderful!", "wtf my card is STILL blocked!!", "cancel my order"], ["a", "b", "a"])
    num, cat = probes.numeric, probes.categorical
    assert num["chars"].tolist() == [37.0, 30.0, 15.0]
    assert num["tokens"].tolist()[2] == 3.0
    assert num["sentiment"][0] > 0.5 and num["sentiment"][1] < 0
    assert cat["tone"].tolist() == ["polite", "rude", "neutral"]
    assert cat["intent"].tolist() == ["a", "b", "a"]
    assert "nn_distance" not in num  # only with embeddings


def test_formality_markers():
    assert formality("Could you please confirm my refund?") == 1.0
    assert formality("i cant log in pls help") < 0.5
    assert formality("WHY IS THIS BROKEN??") < formality("Why is this broken?")
    assert politeness_markers("Hi, could you please help? Thanks!") == (4, 0)
    assert tone(*politeness_markers("this app is useless")) == "rude"
    assert tokenize("don't do that.") == ["don't", "do", "that", "."]


def test_frame_probes_prefers_configured_column_and_falls_back_to_text():
    frame = pd.DataFrame({"text": ["aaa\nresponse text"], "instruction": ["aaa"], "intent": ["x"]})
    assert frame_probes(frame, "instruction").numeric["chars"][0] == 3
    assert frame_probes(frame.drop(columns=["instruction"]), "instruction").numeric["chars"][0] == len("aaa\nresponse text")


def test_nn_distance_leave_one_out_and_density():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 8))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    d_self = nn_distances(ref, ref, k=1)
    assert np.allclose(d_self, 0, atol=1e-6)  # each row is its own nearest neighbour...
    assert (nn_distances(ref, ref, k=1, leave_one_out=True) > 0.01).all()  # ...unless left out
    far = -ref[:5]
    assert nn_distances(far, ref, k=3).mean() > nn_distances(ref[:5], ref, k=3, leave_one_out=True).mean()


def test_diversity_metrics_basics():
    assert distinct_n(["a b c", "a b c"], 2) == 0.5
    x = np.eye(3)
    assert mean_pairwise_distance(x) == 1.0 and mean_pairwise_distance(np.ones((3, 1))) == 0.0


def test_bias_screens():
    mentions = identity_mentions(["my elderly mother is blind", "my card was declined", "my 80 year old nan"])
    assert mentions.loc[0, ["age", "gender", "disability"]].all() and not mentions.loc[1].any()
    assert mentions.loc[2, "age"]
    ref = ["my card was declined"] * 200 + ["my wife cannot log in"] * 10
    report = identity_report(["my elderly mother needs help"] * 40, ref, max_rate_diff=0.05)
    assert set(report.failing) >= {"age", "gender"}
    cov = coverage_report(["a", "a", "b"], ["a", "b", "c"], min_rows=2)
    assert cov.failing == ["c", "b"]
    skew = politeness_skew_report(["polite"] * 40, ["neutral"] * 80 + ["polite"] * 20, max_skew=0.25)
    assert skew.failing == ["polite"]
