"""``synqa audit`` on real model outputs: the folder it writes, its card's numbers, bad inputs, hostile text.

Data (read by path, never copied): self-instruct's 252 text-davinci-003 responses to the user-oriented
instructions (real LLM output) audited against the instructions themselves as the reference; GSM8K test and train
items as extra eval sets (JSONL, a JSON array with nested fields); BANKING77 queries as filler; offensive TweetEval
tweets as a toxic slice. Most tests use the shipped gate config with the embedding check switched off (n-gram
contamination, text-only drift probes) so that each stays well under a minute on two busy cores; one audits with
the shipped default (embeddings on) against a small eval set; the slow test audits 100k rows
(``benchmarks/bench_audit.py`` also measures the full config).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from huggingface_hub import DatasetCard

from synqa_dagster.audit import (
    AuditInputError, ColumnMap, audit_severities, main, parse_severities, run_audit,
)
from synqa_dagster.config import load_gate_config
from synqa_dagster.handover.card import md_escape
from synqa_dagster.stages import STAGES

GATES = tuple(s.name for s in STAGES if s.in_audit)  # pii, quality, dedup, toxicity, contamination, memorisation


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped_gate_data(repo_root: Path) -> dict:
    """``gates/default.yaml`` as data. Its toxicity backend (``learned``) needs its trained model file; while that
    file is not in the checkout the tests run the profanity-check backend instead (everything else as shipped)."""
    from synqa_dagster.gates.toxicity import DEFAULT_LEARNED_MODEL, LEARNED_MODEL_DIR

    data = yaml.safe_load((repo_root / "gates" / "default.yaml").read_text())
    tox = data["toxicity"]
    shipped = LEARNED_MODEL_DIR / f"{DEFAULT_LEARNED_MODEL}.npz"
    if tox.get("backend", "learned") == "learned" and not tox.get("learned_model_path") and not shipped.is_file():
        tox["backend"] = "profanity_check"
    return data


@pytest.fixture(scope="module")
def fast_gates(repo_root, tmp_path_factory) -> Path:
    """The shipped gate config with the embedding check off (everything else as shipped)."""
    data = shipped_gate_data(repo_root)
    data["contamination"]["use_embeddings"] = False
    path = tmp_path_factory.mktemp("gates") / "no_embeddings.yaml"
    path.write_text("# test config: shipped defaults, embedding check off\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def _audit_json(out: Path) -> dict:
    return json.loads((out / "audit.json").read_text(encoding="utf-8"))


def _verdicts(body: str) -> dict[str, tuple[str, str]]:
    """check -> (result, severity) from the card's "Verdict per check" table."""
    section = body.split("## Verdict per check\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \| ([^|]+?) \|", section, flags=re.M)
    return {name.replace("\\_", "_"): (result, sev) for name, result, sev in rows if name not in ("check", "---")}


@pytest.fixture(scope="module")
def audited(shared_data, fast_gates, tmp_path_factory):
    si = shared_data / "self_instruct"
    out = tmp_path_factory.mktemp("audit") / "out"
    result = run_audit(
        si / "text-davinci-003_predictions.jsonl", si / "user_oriented_instructions.jsonl", out,
        columns=ColumnMap(instruction_column="prompt", response_column="response", reference_text_column="instruction"),
        gate_config=load_gate_config(fast_gates), show_progress=False,
    )
    return result, out, si / "text-davinci-003_predictions.jsonl", fast_gates


def test_audit_folder_matches_what_it_read_back(audited):
    result, out, source, gates_path = audited
    src = _jsonl(source)
    accepted, rejected = _jsonl(out / "accepted.jsonl"), _jsonl(out / "rejected.jsonl")
    assert len(accepted) + len(rejected) == len(src) == result.candidates
    ids = [r["row_id"] for r in accepted] + [r["row_id"] for r in rejected]
    assert len(set(ids)) == len(src)
    assert all(r["gate"] in GATES and r["reject_reason"] and r["reject_category"] for r in rejected)
    # davinci answered two emoji tasks with emojis only: the quality gate counts emoji as content, so those
    # rows are not rejected as empty (their instruction + answer is long enough for the length rules)
    blank = {s["prompt"].strip() for s in src if not re.search(r"\w", s["response"])}
    assert len(blank) == 2
    empty = {r["instruction"].strip() for r in rejected if r["reject_category"] == "empty"}
    assert not blank & empty

    card = DatasetCard((out / "README.md").read_text(encoding="utf-8"))
    synqa = card.data.to_dict()["synqa"]
    assert synqa["kind"] == "audit" and "synqa-audit" in card.data.tags
    assert (synqa["candidates"], synqa["accepted"], synqa["rejected"]) == (len(src), len(accepted), len(rejected))
    assert card.data.size_categories == ["n<1K"] and card.data.language == ["en"]
    body = card.text
    assert "AUDIT of externally made data" in body and "no lineage signature" in body
    assert f"{len(accepted)} accepted of {len(src)} candidates" in body
    counts = pd.DataFrame(rejected).groupby(["gate", "reject_category"]).size()
    for (gate, category), n in counts.items():
        section = body.split(f"### {gate}\n", 1)[1].split("\n### ", 1)[0]
        assert f"| {md_escape(category)} | {n} |" in section, (gate, category)
    for gate in GATES:
        seen = result.gates[gate]["seen"]
        assert f"{seen} rows in, {result.gates[gate]['kept']} kept" in body
    # the files table lists the real hashes of the files shipped
    for name in ("accepted.jsonl", "rejected.jsonl", "funnel.png", "funnel.md", "audit.json", "gates.yaml"):
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert re.search(rf"\| {re.escape(md_escape(name))} \|[^\n]*\| {digest} \|", body), name
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "gates.yaml").read_bytes() == gates_path.read_bytes()
    assert result.funnel_markdown in (out / "funnel.md").read_text(encoding="utf-8")


def test_audit_json_holds_the_drift_findings(audited):
    result, out, _, _ = audited
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert summary["accepted"] == result.accepted and summary["rejected"] == result.rejected
    drift = summary["drift"]
    assert drift == result.drift and drift["rows_batch"] == result.accepted and drift["text_column"] == "instruction"
    probes = {p["name"]: p for p in drift["checks"]["distribution_drift"]["probes"]}
    assert {"chars", "tokens", "sentiment", "formality", "politeness", "tone"} <= set(probes)
    for p in probes.values():
        assert 0 <= p["p_adj"] <= 1 and p["passed"] == (not (p["effect"] > p["threshold"] and p["p_adj"] < drift["alpha"]))
    body = (out / "README.md").read_text(encoding="utf-8")
    for name in probes:
        assert f"| {md_escape(name)} | {probes[name]['test']} |" in body


def test_eval_set_file_and_cli(shared_data, fast_gates, tmp_path, capsys):
    """Planted GSM8K test questions are rejected as contamination of the --eval-set named on the command line."""
    bank = pd.read_csv(shared_data / "banking77" / "test.csv").head(40)
    gsm = _jsonl(shared_data / "gsm8k" / "test.jsonl")[:5]
    rows = [{"id": f"b{i}", "q": t, "a": "You can do that in the app under Cards."} for i, t in enumerate(bank["text"])]
    rows += [{"id": f"g{i}", "q": "Help me with this: " + g["question"], "a": g["answer"]} for i, g in enumerate(gsm)]
    data = tmp_path / "external.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main([str(data), "--out", str(out), "--gates", str(fast_gates), "--id-column", "id", "--instruction-column", "q",
                 "--response-column", "a", "--eval-set", f"gsm8k_test={shared_data / 'gsm8k' / 'test.jsonl'}",
                 "--eval-text-field", "question", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "audited →" in printed and "no reference sample was given" in printed
    assert not re.search(r"\bgenerated\b", printed)  # audited rows are not called generated
    rejected = _jsonl(out / "rejected.jsonl")
    contaminated = {r["row_id"] for r in rejected if r["reject_category"] == "ngram_overlap"}
    assert contaminated == {f"g{i}" for i in range(5)}
    assert all("gsm8k_test/" in r["reject_reason"] for r in rejected if r["row_id"] in contaminated)
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "| gsm8k\\_test | 1319 |" in body and "| humaneval | 164 |" in body
    assert "Drift, diversity and bias were not measured" in body


def test_bad_inputs_name_file_line_and_field(shared_data, fast_gates, tmp_path, capsys):
    si = shared_data / "self_instruct" / "text-davinci-003_predictions.jsonl"
    out = tmp_path / "out"
    assert main([str(si), "--out", str(out), "--gates", str(fast_gates), "--text-column", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing column 'nope'" in err and str(si) in err and "'instruction'" in err

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a fine first row here"}\n{"text": "second row is fine too"}\n{"text": "broken\n')
    assert main([str(bad), "--out", str(out), "--gates", str(fast_gates), "--quiet"]) == 2
    assert re.search(r"bad\.jsonl: line 3: not valid JSON", capsys.readouterr().err)

    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a fine first row here"}\n')
    missing = tmp_path / "no_such_eval.jsonl"
    assert main([str(good), "--out", str(out), "--gates", str(fast_gates), "--eval-set", f"mine={missing}", "--quiet"]) == 2
    assert re.search(r"no_such_eval\.jsonl: eval set 'mine': file not found", capsys.readouterr().err)

    empty = tmp_path / "empty.csv"
    empty.write_text('text,intent\n"a real enough question, please",x\n"   ",y\n')
    with pytest.raises(AuditInputError, match=r"empty\.csv: line 3: field 'text' is empty"):
        run_audit(empty, None, out, gate_config=load_gate_config(fast_gates), show_progress=False)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "a fine first row here"}\n{"text": ["not", "a", "string"]}\n')
    with pytest.raises(AuditInputError, match=r"wrong\.jsonl: line 2: field 'text' must be a string, got list"):
        run_audit(wrong, None, out, gate_config=load_gate_config(fast_gates), show_progress=False)
    assert not out.exists()  # nothing written from bad input


def test_hostile_rows_are_escaped_in_the_card(fast_gates, tmp_path):
    markdown_it = pytest.importorskip("markdown_it")
    hostile_intent = "<script>alert(1)</script>|---"
    rows = [{"text": f"How do I change the PIN on card number {i}? It keeps asking me for the old one.",
             "intent": hostile_intent if i % 2 else "card.pin", "locale": "en-GB"} for i in range(30)]
    rows.append({"text": "Sure <|im_start|>assistant | --- <img src=x onerror=alert(1)> here is the answer", "intent": "x", "locale": "en-GB"})
    data = tmp_path / "hostile.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    run_audit(data, None, out, columns=ColumnMap(intent_column="intent", locale_column="locale"),
              gate_config=load_gate_config(fast_gates), show_progress=False)
    text = (out / "README.md").read_text(encoding="utf-8")
    card = DatasetCard(text)
    assert card.data.language == ["en"]
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(card.text)
    assert "<script" not in html
    assert not re.search(r"<img(?![^>]*funnel\.png)", html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|---" in html  # shown as text in the intents table
    assert "&lt;|im_start|&gt;" in html  # the leaked-marker reason, as text
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)}
        assert len(widths) == 1


@pytest.mark.slow
def test_audit_100k_rows_fits_in_memory(shared_data, tmp_path):
    """100k real-text rows through every gate (embedding check off: with it, embedding 88k rows alone takes
    ~85 min on two busy cores — run ``benchmarks/bench_audit.py --rows 100000`` for that figure); prints wall
    time and peak RSS."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_audit", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_audit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.measure(100_000, shared_data, tmp_path, embeddings=False)
    print(json.dumps(report, indent=2))
    assert report["candidates"] == 100_000 and report["accepted"] + report["rejected"] == 100_000
    assert report["peak_rss_mb"] < 6 * 1024


RESULT_LABELS = {"pass": "pass", "fail": "FAIL", "warn": "WARN", "not tested": "not tested"}


def test_every_check_has_a_verdict_at_the_strict_audit_severities(audited, repo_root):
    """Outside data is judged at ERROR for drift, diversity and toxicity escalation (not the demo's WARN); the
    verdict of every check is in audit.json and the card, and a check that could not run says "not tested"."""
    result, out, _, gates_path = audited
    summary = _audit_json(out)
    config = load_gate_config(gates_path)
    assert config.drift.severities.drift == "WARN" and config.toxicity.escalation_severity == "WARN"  # the demo's
    sev = summary["profile"]["severities"]
    assert summary["profile"]["name"] == "strict"
    assert sev["distribution_drift"] == {"severity": "ERROR", "source": "profile strict"}
    assert sev["toxicity_slice_escalation"] == {"severity": "ERROR", "source": "profile strict"}
    assert sev["diversity_collapse"]["severity"] == "ERROR"
    checks = {c["name"]: c for c in summary["checks"]}
    assert set(checks) == {"distribution_drift", "diversity_collapse", "identity_term_rates", "intent_coverage",
                           "politeness_skew", "toxicity_slice_escalation", "gate_canary_recall"}
    for name in ("distribution_drift", "diversity_collapse", "toxicity_slice_escalation"):
        assert checks[name]["severity"] == "ERROR", name
    # the drift findings themselves ran at the audit's severities
    assert summary["drift"]["checks"]["distribution_drift"]["severity"] == "ERROR"
    # the rows carry no intents: coverage could not be tested, and says so (never "pass")
    coverage = summary["drift"]["checks"]["intent_coverage"]
    assert coverage["tested"] is False and coverage["passed"] is True and coverage["result"] == "not tested"
    assert checks["intent_coverage"]["result"] == "not tested" and "intent_coverage" in summary["verdict"]["not_tested"]
    for c in checks.values():
        expected = ("not tested" if not c["tested"] else "pass" if c["passed"] else "fail" if c["severity"] == "ERROR" else "warn")
        assert c["result"] == expected, c
    assert summary["verdict"]["failed_at_error"] == [n for n, c in checks.items() if c["result"] == "fail"]
    assert result.verdict == summary["verdict"]
    body = (out / "README.md").read_text(encoding="utf-8")
    assert _verdicts(body) == {n: (RESULT_LABELS[c["result"]], c["severity"]) for n, c in checks.items()}
    drift_table = body.split("## Drift, diversity and bias", 1)[1]
    assert "| intent\\_coverage | not tested | WARN |" in drift_table
    assert "returned to synthesis:" not in body  # an audit returns nothing to synthesis
    # embeddings were off in this gate config, and the card and audit.json say so
    assert summary["embeddings"]["enabled"] is False and "use_embeddings: false" in summary["embeddings"]["source"]
    assert "**Embeddings:** **off**" in body and "**Embeddings were off:**" in body


def test_severity_profiles_and_overrides(fast_gates):
    config = load_gate_config(fast_gates)
    demo = audit_severities(config, "demo")
    assert demo["distribution_drift"] == {"severity": config.drift.severities.drift, "source": "gate config"}
    assert demo["toxicity_slice_escalation"]["severity"] == config.toxicity.escalation_severity
    strict = audit_severities(config, "strict", parse_severities(["diversity=WARN", "identity_term_rates=error"]))
    assert strict["distribution_drift"]["severity"] == "ERROR" and strict["toxicity_slice_escalation"]["severity"] == "ERROR"
    assert strict["diversity_collapse"] == {"severity": "WARN", "source": "--severity"}
    assert strict["identity_term_rates"] == {"severity": "ERROR", "source": "--severity"}
    with pytest.raises(AuditInputError, match="unknown check 'drfit'"):
        parse_severities(["drfit=WARN"])
    with pytest.raises(AuditInputError, match="ERROR or WARN"):
        parse_severities(["drift=INFO"])
    with pytest.raises(AuditInputError, match="--profile 'lax'"):
        audit_severities(config, "lax")


def test_two_eval_sets_with_their_own_nested_fields_and_the_census(shared_data, fast_gates, tmp_path, capsys):
    """Three eval sets audited together, each read with its own fields: a JSON array with a nested text field and
    its own id, a JSONL with other field names, and one left to the global --eval-text-field. A leak whose response
    is empty is dropped by the quality gate first; the contamination census still counts it, and its reject reason
    names the user's column, not synqa's internal one."""
    test = _jsonl(shared_data / "gsm8k" / "test.jsonl")
    train = _jsonl(shared_data / "gsm8k" / "train.jsonl")
    nested = tmp_path / "gsm_nested.json"
    nested.write_text(json.dumps([{"qid": f"q{i}", "question": {"stem": g["question"], "topic": "maths"}, "answer": g["answer"]}
                                  for i, g in enumerate(test[:5])], indent=1))
    flat = tmp_path / "gsm_train.jsonl"
    flat.write_text("".join(json.dumps({"id": f"train-{i}", "problem": g["question"]}) + "\n" for i, g in enumerate(train[:5])))
    plain = tmp_path / "gsm_plain.jsonl"
    plain.write_text("".join(json.dumps({"question": g["question"]}) + "\n" for g in train[10:15]))
    bank = pd.read_csv(shared_data / "banking77" / "test.csv").head(30)
    rows = [{"id": f"b{i}", "q": t, "a": "You can do that in the app under Cards, then Settings."} for i, t in enumerate(bank["text"])]
    rows += [{"id": f"n{i}", "q": "Help me with this: " + test[i]["question"], "a": "Let me think about it."} for i in range(3)]
    rows += [{"id": f"t{i}", "q": train[i]["question"], "a": "Here is how to solve it step by step."} for i in range(2)]
    rows += [{"id": "p0", "q": "Quick one: " + train[12]["question"], "a": "Sure, let us work it out together."}]
    rows += [{"id": "leak_empty", "q": "Solve: " + test[3]["question"], "a": "..."}]  # empty answer: quality drops it first
    data = tmp_path / "external.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main([str(data), "--out", str(out), "--gates", str(fast_gates), "--id-column", "id", "--instruction-column", "q",
                 "--response-column", "a", "--no-embeddings", "--quiet",
                 "--eval-set", f"gsm_nested={nested}", "--eval-set-field", "gsm_nested=question.stem", "--eval-set-id", "gsm_nested=qid",
                 "--eval-set", f"gsm_train={flat}", "--eval-set-field", "gsm_train=problem", "--eval-set-id", "gsm_train=id",
                 "--eval-set", f"gsm_plain={plain}", "--eval-text-field", "question"])
    assert code == 0, capsys.readouterr().err
    rejected = {r["row_id"]: r for r in _jsonl(out / "rejected.jsonl")}
    leaks = {k: r["reject_reason"] for k, r in rejected.items() if r["gate"] == "contamination"}
    assert set(leaks) == {"n0", "n1", "n2", "t0", "t1", "p0"}
    for i in range(3):
        assert f"gsm_nested/q{i}" in leaks[f"n{i}"]
    assert "gsm_train/train-0" in leaks["t0"] and "gsm_train/train-1" in leaks["t1"]
    assert "gsm_plain/2" in leaks["p0"]  # no id field: the record number

    # the leak with an empty answer: the quality gate dropped it, naming the user's column
    empty = rejected["leak_empty"]
    assert empty["gate"] == "quality" and empty["reject_category"] == "empty"
    assert empty["reject_reason"] == 'empty: response column "a" has no words'
    summary = _audit_json(out)
    quality = next(g for g in summary["gates"] if g["name"] == "quality")
    assert [r["example_reason"] for r in quality["reasons"] if r["category"] == "empty"] == ['empty: response column "a" has no words']
    body = (out / "README.md").read_text(encoding="utf-8")
    assert md_escape('empty: response column "a" has no words') in body
    assert 'column "response"' not in (out / "rejected.jsonl").read_text() + json.dumps(summary) + body

    # ... and the census still counts it as a leak of gsm_nested/q3
    census = summary["census"]["contamination"]
    assert census["earlier_drops_checked"] == sum(1 for r in rejected.values() if r["gate"] != "contamination")
    assert census["earlier_drop_hits"] == 1 and census["earlier_hits_by_gate"] == {"quality": 1}
    assert [(h["row_id"], h["dropped_by"]) for h in census["hits"]] == [("leak_empty", "quality")]
    assert "gsm_nested/q3" in census["hits"][0]["reason"]
    cont = summary["contamination"]
    assert (cont["gate_hits"], cont["earlier_drop_hits"]) == (6, 1)
    assert "first dropped by: quality 1" in body and "Eval-set matches among all candidates: **7**" in body

    # each eval set with its own fields, in audit.json and on the card
    specs = {s["name"]: s for s in summary["gate_config"]["extra_eval_sets"]}
    assert (specs["gsm_nested"]["text_fields"], specs["gsm_nested"]["id_field"]) == (["question.stem"], "qid")
    assert (specs["gsm_train"]["text_fields"], specs["gsm_train"]["id_field"]) == (["problem"], "id")
    assert (specs["gsm_plain"]["text_fields"], specs["gsm_plain"]["id_field"]) == (["question"], None)
    assert "| gsm\\_nested | 5 |" in body and md_escape("(text: question.stem; id: qid)") in body
    # no reference: every drift check is "not tested", never "pass"
    for name in ("distribution_drift", "diversity_collapse", "identity_term_rates", "intent_coverage", "politeness_skew"):
        check = next(c for c in summary["checks"] if c["name"] == name)
        assert check["result"] == "not tested" and not check["tested"]
        assert _verdicts(body)[name][0] == "not tested"
    assert summary["embeddings"] == {"enabled": False, "source": "--no-embeddings",
                                     "contamination_rule": "off (switched off with --no-embeddings)", "model": None}

    # per-set options must name a --eval-set
    assert main([str(data), "--out", str(out), "--gates", str(fast_gates), "--eval-set", f"gsm_nested={nested}",
                 "--eval-set-field", "nope=question", "--quiet"]) == 2
    assert "no --eval-set named 'nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def default_audit(shared_data, repo_root, tmp_path_factory):
    """The shipped default (embeddings on, strict profile) on BANKING77 rows plus a slice of offensive tweets,
    against a BANKING77 reference; the contamination eval set is 5 GSM8K items (so the test embeds few items)."""
    tmp = tmp_path_factory.mktemp("default_audit")
    gsm = _jsonl(shared_data / "gsm8k" / "test.jsonl")[:5]
    evals = tmp / "gsm5.jsonl"
    evals.write_text("".join(json.dumps({"id": f"g{i}", "question": g["question"]}) + "\n" for i, g in enumerate(gsm)))
    data = shipped_gate_data(repo_root)
    assert data["contamination"]["use_embeddings"] is True  # the shipped default: embeddings on
    data["contamination"]["eval_sets"] = [{"name": "gsm5", "source": "file", "path": str(evals), "id_field": "id",
                                           "text_fields": ["question"]}]
    gates = tmp / "gates.yaml"
    gates.write_text(yaml.safe_dump(data, sort_keys=False))
    bank = pd.read_csv(shared_data / "banking77" / "test.csv").sample(45, random_state=3)
    rows = [{"id": f"b{i}", "text": t, "intent": "complaint" if i < 15 else c} for i, (t, c) in enumerate(zip(bank["text"], bank["category"]))]
    tweets = (shared_data / "tweeteval" / "offensive" / "test_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (shared_data / "tweeteval" / "offensive" / "test_labels.txt").read_text().split()
    rude = [t.strip() for t, y in zip(tweets, labels) if y == "1" and "fuck" in t.lower() and len(t.split()) >= 8][:15]
    assert len(rude) == 15
    rows += [{"id": f"o{i}", "text": t, "intent": "complaint"} for i, t in enumerate(rude)]
    dataset = tmp / "external.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = tmp / "reference.csv"
    pd.read_csv(shared_data / "banking77" / "train.csv").sample(120, random_state=4).to_csv(reference, index=False)
    out = tmp / "out"
    code = main([str(dataset), "--reference", str(reference), "--out", str(out), "--gates", str(gates), "--id-column", "id",
                 "--intent-column", "intent", "--quiet"])
    assert code == 0
    return out, rows


def test_embeddings_are_on_by_default(default_audit):
    out, _ = default_audit
    summary = _audit_json(out)
    assert summary["embeddings"]["enabled"] is True and summary["embeddings"]["contamination_rule"] == "ran"
    assert summary["embeddings"]["model"] and summary["contamination"]["embedding_check"] == "ran"
    probes = {p["name"] for p in summary["drift"]["checks"]["distribution_drift"]["probes"]}
    assert "nn_distance" in probes  # the embedding drift probe ran
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "**Embeddings:** on" in body and "Embeddings were off" not in body


def test_a_toxic_slice_is_visible_and_escalates_at_error(default_audit):
    """15 of the 30 rows of intent "complaint" are offensive tweets: the slice's toxic drop rate is far over the 5%
    bar, the escalation fails at ERROR, and the per-slice table is in audit.json and on the card."""
    out, rows = default_audit
    summary = _audit_json(out)
    rejected = _jsonl(out / "rejected.jsonl")
    complaint = {r["id"] for r in rows if r["intent"] == "complaint"}
    before_toxicity = {r["row_id"] for r in rejected if r["gate"] in ("quality", "dedup")}
    seen = complaint - before_toxicity
    toxic = {r["row_id"] for r in rejected if r["gate"] == "toxicity" and r["row_id"] in complaint}
    assert len(toxic) >= 5
    table = next(t for t in summary["slices"] if t["name"] == "toxicity")
    assert table["columns"] == ["intent"] and table["severity"] == "ERROR" and table["bar"] == 0.05
    slice_ = next(r for r in table["rows"] if r["labels"] == {"intent": "complaint"})
    assert (slice_["rows"], slice_["dropped"]) == (len(seen), len(toxic)) and slice_["over_bar"]
    assert table["rows"][0] == slice_  # highest rate first
    check = next(c for c in summary["checks"] if c["name"] == "toxicity_slice_escalation")
    assert (check["result"], check["severity"]) == ("fail", "ERROR") and check["failing"] == ["intent=complaint"]
    assert "toxicity_slice_escalation" in summary["verdict"]["failed_at_error"]
    lost = next(t for t in summary["slices"] if t["name"] == "all_gates")
    everything = next(r for r in lost["rows"] if r["labels"] == {"intent": "complaint"})
    assert everything["rows"] == 30 and everything["dropped"] == len(complaint & {r["row_id"] for r in rejected})
    body = (out / "README.md").read_text(encoding="utf-8")
    rate = f"{len(toxic) / len(seen):.1%}"
    assert f"| complaint | {len(seen)} | {len(toxic)} | {rate} | 5.0% | **yes** |" in body
    assert _verdicts(body)["toxicity_slice_escalation"] == ("FAIL", "ERROR")


def test_canaries_are_measured_in_the_audit(default_audit):
    out, _ = default_audit
    summary = _audit_json(out)
    per_gate = {r["gate"]: r for r in summary["canaries"]["summary"]}
    assert set(per_gate) == set(GATES)
    planted = pd.DataFrame(summary["canaries"]["rows"])
    for gate, r in per_gate.items():
        mine = planted[planted["gate"] == gate]
        assert r["positives"] == int((mine["expected"] == "drop").sum()) > 0
        assert r["caught"] == int((mine["dropped"] & (mine["expected"] == "drop")).sum())
    # the contamination canaries are the gate's own eval items (gsm5), planted the ways a leak looks
    cont = planted[(planted["gate"] == "contamination") & (planted["expected"] == "drop")]
    assert cont["detail"].str.startswith("gsm5/").all()
    check = next(c for c in summary["checks"] if c["name"] == "gate_canary_recall")
    assert check["tested"] and check["result"] == ("pass" if all(r["passed"] for r in per_gate.values()) else "fail")
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "**Canaries in this audit.**" in body
    for gate, r in per_gate.items():
        assert re.search(rf"^\| {gate} \| [^\n]*\| {r['caught']}/{r['positives']} \|", body, flags=re.M), gate
    assert not re.search(r"\bgenerated\b", body)  # audited rows are not called generated


def test_measured_gate_quality_reaches_audit_json_and_card(shared_data, fast_gates, tmp_path):
    """A gate that reports figures measured on named labelled data (``measured()``) has them in the audit: here
    the quality gate's false-drop rate on 200 real BANKING77 queries, measured in this test."""
    from dataclasses import replace

    from synqa_dagster.gates.quality import QualityGate
    from synqa_dagster.stages import STAGES

    bank = pd.read_csv(shared_data / "banking77" / "train.csv").head(200)
    labelled = pd.DataFrame({"row_id": [f"r{i}" for i in range(len(bank))], "text": bank["text"]})

    class MeasuredQuality(QualityGate):
        def measured(self):
            dropped = ~self.evaluate(labelled).keep
            return [{"data": "BANKING77 train (200 benign queries)", "false_drop_rate": float(dropped.mean()),
                     "note": "measured by the test"}]

    stages = tuple(replace(s, make_gate=lambda c, env: MeasuredQuality(c)) if s.name == "quality" else s for s in STAGES)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in pd.read_csv(shared_data / "banking77" / "test.csv")["text"].head(25)))
    out = tmp_path / "out"
    run_audit(data, None, out, gate_config=load_gate_config(fast_gates), show_progress=False, stages=stages)
    expected = MeasuredQuality(load_gate_config(fast_gates).quality).measured()[0]
    summary = _audit_json(out)
    assert [m for m in summary["measured"] if m["gate"] == "quality"] == [{"gate": "quality", **expected}]
    assert any(m["gate"] == "contamination" for m in summary["measured"])  # the shipped contamination figures
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "**On named labelled data**" in body
    assert f"| quality | {md_escape(expected['data'])} |" in body and f"{expected['false_drop_rate']:.1%}" in body
