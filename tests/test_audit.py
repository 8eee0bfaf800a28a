"""``synqa audit`` on real model outputs: the folder it writes, its card's numbers, bad inputs, hostile text.

Data (read by path, never copied): self-instruct's 252 text-davinci-003 responses to the user-oriented
instructions (real LLM output) audited against the instructions themselves as the reference; GSM8K test as an
extra eval set; BANKING77 queries as filler. The tests use the shipped gate config with the embedding check
switched off (n-gram contamination, text-only drift probes) so that each stays well under a minute on two busy
cores; the slow test audits 100k rows (``benchmarks/bench_audit.py`` also measures the full config).
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

from synqa_dagster.audit import AuditInputError, ColumnMap, main, run_audit
from synqa_dagster.config import load_gate_config
from synqa_dagster.handover.card import md_escape

GATES = ("quality", "dedup", "toxicity", "contamination")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fast_gates(repo_root, tmp_path_factory) -> Path:
    """The shipped gate config with the embedding check off (everything else as shipped)."""
    data = yaml.safe_load((repo_root / "gates" / "default.yaml").read_text())
    data["contamination"]["use_embeddings"] = False
    path = tmp_path_factory.mktemp("gates") / "no_embeddings.yaml"
    path.write_text("# test config: shipped defaults, embedding check off\n" + yaml.safe_dump(data, sort_keys=False))
    return path


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
    # rows whose real response has no word at all (davinci answered two emoji tasks with emojis only) are
    # rejected as empty by the quality gate
    blank = {s["prompt"].strip() for s in src if not re.search(r"\w", s["response"])}
    assert len(blank) == 2
    empty = {r["instruction"].strip() for r in rejected if r["reject_category"] == "empty"}
    assert blank <= empty

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
    assert "generated →" in printed and "no reference sample was given" in printed
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
