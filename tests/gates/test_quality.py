"""Tests of the quality gate: every rule fires with its exact reason, clean real text passes.

Clean text is real third-party data from the shared folder (BANKING77 queries, GSM8K question+answer pairs,
self-instruct tasks); degenerate text is built from it (loops, leaks) so that the expected values are known.
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from synqa_dagster.gates.quality import (
    GOPHER_DUPLICATE_NGRAM,
    GOPHER_TOP_NGRAM,
    BatchLanguageIdentifier,
    QualityGate,
    QualityGateConfig,
    detect_language,
    token_screen,
)
from synqa_dagster.gates.text import normalize_lines, normalize_many, normalize_text, words


@pytest.fixture(scope="module")
def banking(shared_data: Path) -> list[str]:
    """500 BANKING77 train queries (fixed random sample)."""
    with open(shared_data / "banking77" / "train.csv", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    return random.Random(77).sample(texts, 500)


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> list[str]:
    """1000 GSM8K train rows as question + newline + answer (a real instruction/response pair)."""
    out = []
    with open(shared_data / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.append(row["question"] + "\n" + row["answer"])
            if len(out) == 1000:
                break
    return out


@pytest.fixture(scope="module")
def self_instruct(shared_data: Path) -> list[str]:
    out = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        with open(shared_data / "self_instruct" / name, encoding="utf-8") as f:
            for line in f:
                task = json.loads(line)
                for inst in task["instances"]:
                    out.append("\n".join(x for x in (task["instruction"], inst["input"], inst["output"]) if x))
    return out


def run(texts: list[str], **overrides) -> tuple[list[str | None], list[str | None], np.ndarray]:
    gate = QualityGate(**overrides)
    result = gate.evaluate(pd.DataFrame({"row_id": [f"r{i}" for i in range(len(texts))], "text": texts}))
    return result.reason, result.category, result.score


def one(text: str, **overrides) -> tuple[str | None, str | None]:
    reason, category, _ = run([text], **overrides)
    return reason[0], category[0]


# ------------------------------------------------------------------------------------------------ clean text


def test_clean_banking77_queries_pass(banking: list[str]) -> None:
    reason, _, score = run(banking)
    dropped = [(t, r) for t, r in zip(banking, reason) if r is not None]
    assert len(dropped) / len(banking) <= 0.01, dropped  # measured: 1 of 500 (a 2-word query, min_words=3)
    assert all(np.isnan(s) for s, r in zip(score, reason) if r is None)


def test_clean_gsm8k_and_self_instruct_rarely_flagged(gsm8k: list[str], self_instruct: list[str]) -> None:
    reason, _, _ = run(gsm8k)
    assert sum(r is not None for r in reason) / len(gsm8k) <= 0.01  # measured: 0.1% (all 7,473: 0.09%)
    reason, _, _ = run(self_instruct)
    assert sum(r is not None for r in reason) / len(self_instruct) <= 0.03  # measured: 0 of 427


def test_gopher_limits_are_too_strict_for_instruction_rows(gsm8k: list[str]) -> None:
    """Why the defaults differ from Gopher: its limits flag a large share of clean GSM8K rows."""
    reason, category, _ = run(
        gsm8k, top_ngram_max_char_fraction=GOPHER_TOP_NGRAM, duplicate_ngram_max_char_fraction=GOPHER_DUPLICATE_NGRAM
    )
    assert sum(c == "repetition" for c in category) / len(gsm8k) > 0.10


# ------------------------------------------------------------------------------------------------ each rule


def test_empty() -> None:
    reason, category, _ = run(["", "   \n\t ", None, "?!... --- !!"])  # type: ignore[list-item]
    assert reason[:3] == ["empty: text is blank"] * 3
    assert reason[3] == "empty: no words, only punctuation/symbols (12 chars)"
    assert set(category) == {"empty"}


def test_emoji_answers_are_content_not_empty() -> None:
    """An emoji answer has content: it is judged by the length rules (their own measure), never as "empty"."""
    reason, category, _ = run(["👍", "🎉🎉", "$$$ +++ ^^^", "✅ → 🚀"])
    assert reason[0] == "too short: 0 words < min 3 (emoji/symbols only)" and category[0] == "too_short"
    assert reason[1] == "too short: 0 words < min 3 (emoji/symbols only)"
    assert category[2] == "empty"  # ASCII symbols and punctuation are still no content
    assert category[3] == "too_short"
    assert one("🎉🎉", min_words=None) == ("too short: 2 chars < min 10 (emoji/symbols only)", "too_short")
    assert one("👍👍👍👍👍👍👍👍👍👍👍", min_words=None)[0] is None  # long enough by its configured measure
    # as the response of an instruction row: kept (the text has words), not "response column has no words"
    rows = pd.DataFrame({
        "row_id": ["a", "b", "c", "d"],
        "instruction": ["React to this news with an emoji only, please.", "Say nothing at all to me.", "🎉", "🎉"],
        "response": ["🎉🎉", "...", "🎉", "👍"],
        "text": ["React to this news with an emoji only, please.\n🎉🎉", "Say nothing at all to me.\n...",
                 "Celebrate with me today, friend\n🎉", "Celebrate with me today, friend\n👍"],
    })
    result = QualityGate().evaluate(rows)
    assert result.keep[0] and result.reason[0] is None
    assert result.reason[1] == 'empty: response column "response" has no words'
    assert result.category[2] == "echo" and result.keep[3]


def test_too_short_words_and_chars(banking: list[str]) -> None:
    assert one("Hi there friend", min_words=5) == ("too short: 3 words < min 5", "too_short")
    assert one("a b c d", min_words=1) == ("too short: 7 chars < min 10", "too_short")
    assert one(banking[0], min_words=1)[0] is None


def test_too_long_words_and_chars() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    assert one(text, max_words=10) == ("too long: 12 words > max 10", "too_long")
    assert one(text, max_chars=50) == (f"too long: {len(text)} chars > max 50", "too_long")


def test_meta_prompt_leaks(banking: list[str]) -> None:
    q = banking[3]
    assert one(f"Rewritten Prompt: {q}") == ('leaked meta-prompt text "Rewritten Prompt:"', "meta_prompt_leak")
    assert one(f"#GIVEN PROMPT#\n{q}")[0] == 'leaked meta-prompt text "#Given Prompt#"'  # case-insensitive
    assert one(f"<|im_start|>assistant\n{q}<|im_end|>")[0] == 'leaked meta-prompt text "<|im_start|>"'
    assert one(f"Answer this: {{{{question}}}} {q}")[0] == (
        'leaked meta-prompt text: unfilled template placeholder "{{question}}"'
    )
    assert one(f"As an AI language model, I cannot answer: {q}")[0] == 'leaked meta-prompt text "As an AI language model"'
    assert one(f"Please answer the following. {{instruction}} {q}") == (
        'leaked meta-prompt text: unfilled template placeholder "{instruction}"',
        "meta_prompt_leak",
    )
    # code with ordinary braces is not a leak
    assert one('Print a greeting.\nname = "Ann"\nprint(f"Hello {name}, how are you today?")')[0] is None
    assert one(q, meta_prompt_markers=("card",))[0] in (None, 'leaked meta-prompt text "card"')


def test_placeholders_of_our_templates_leak(banking: list[str]) -> None:
    """Unfilled fields of the recipe's templates ({seed_text}, {intent}...) and of distilabel's ({{ instruction }})."""
    from synqa_dagster.config import TEMPLATE_FIELDS
    from synqa_dagster.gates.quality import PLACEHOLDER_FIELDS

    assert set(TEMPLATE_FIELDS) <= set(PLACEHOLDER_FIELDS)  # the recipe's placeholders are always recognised
    q = banking[4]
    for field in TEMPLATE_FIELDS:
        assert one(f"{q} Example: {{{field}}}") == (
            f'leaked meta-prompt text: unfilled template placeholder "{{{field}}}"', "meta_prompt_leak"
        )
    assert one(f"{{{{ instruction }}}}\n{q}")[0] == 'leaked meta-prompt text: unfilled template placeholder "{{ instruction }}"'
    # a placeholder that is not one of the known fields is ordinary text
    assert one(f"{q} Use the {{customer_name}} field.")[0] is None


def test_prompt_headers_leak_only_at_the_start_of_a_line(banking: list[str]) -> None:
    q = banking[6]
    assert one(f"### Instruction:\n{q}\n\n### Response:\nSure.") == (
        'leaked meta-prompt text "### Instruction:" at the start of a line', "meta_prompt_leak"
    )
    assert one(f"{q}\n  ### response: Tap Cards, then Top up.")[0] == (
        'leaked meta-prompt text "### response:" at the start of a line'
    )
    # a Markdown heading without the colon, or the words mid-line, are not a leak
    assert one(f"{q}\n### Input\nThe first line holds the amount.\n### Output\nThe new balance.")[0] is None
    assert one(f"Write the section titled ### Instruction: for the manual. {q}")[0] is None


def test_braces_in_code_json_and_templates_are_answers() -> None:
    """``{{``/``}}`` are not markers: GitHub Actions, JSON and Jinja answers are kept; leaks are still caught."""
    yaml_answer = (
        "Run the tests on every OS with a matrix:\n\n```yaml\njobs:\n  test:\n    runs-on: ${{ matrix.os }}\n"
        "    strategy:\n      matrix:\n        os: [ubuntu-latest, windows-latest]\n    steps:\n"
        "      - run: echo ${{ inputs.prompt }} ${{ github.event.input }}\n```"
    )
    assert one(yaml_answer)[0] is None
    assert one("runs-on: ${{ matrix.os }} and the job echoes ${{ input }} for every operating system")[0] is None
    json_answer = 'Here is the payload: {"user": {"name": "Ann", "question": {"id": 7}}, "tags": [{"k": "v"}]}'
    assert one(json_answer)[0] is None
    jinja_block = (
        "Render the list with Jinja:\n```jinja\n<ul>{% for item in items %}<li>{{ item.name }}: {{question}}</li>"
        "{% endfor %}</ul>\n```\nThen pass items to render()."
    )
    assert one(jinja_block)[0] is None
    assert one("In the Jinja template write {{ question }} where the question text should appear.")[0] is None
    assert one("Loop with {% for q in qs %}{{ q }}{% endfor %} and print {{ instruction }} in each item.")[0] is None
    assert one("Wrap it in backticks: `{instruction}` is the placeholder the template fills in.")[0] is None
    assert one('In Python you would write print(f"Question: {question}") to show it to the user.')[0] is None
    assert one("const msg = `Hello ${input}, how are you doing today?`; console.log(msg);")[0] is None
    # ... while a leak next to such content is still a leak
    assert one('Rewritten Prompt: return {"ok": true} from the handler when the request succeeds')[0] == (
        'leaked meta-prompt text "Rewritten Prompt:"'
    )
    assert one("Sure! Here is a message like {seed_text} for the support team about cards.")[0] == (
        'leaked meta-prompt text: unfilled template placeholder "{seed_text}"'
    )
    assert one("Here is how: {intent}. Thanks!\n```python\nprint('done')\n```")[0] == (
        'leaked meta-prompt text: unfilled template placeholder "{intent}"'
    )
    assert one("I want to cancel. {question} ${{ x }}", placeholder_skip_code=True)[0] == (
        'leaked meta-prompt text: unfilled template placeholder "{question}"'
    )
    assert one("In Jinja write {{ question }} here now", placeholder_skip_code=False)[0] == (
        'leaked meta-prompt text: unfilled template placeholder "{{ question }}"'
    )


def test_echo_and_empty_response(banking: list[str]) -> None:
    q = banking[5]
    rows = pd.DataFrame(
        {
            "row_id": ["a", "b", "c"],
            "instruction": [q, q, q],
            "response": [q.upper() + " ", "", "Go to Settings > Cards and tap 'Top up' to add money to your card."],
            "text": [q + "\n" + q.upper(), q, q + "\nGo to Settings > Cards and tap 'Top up' to add money."],
        }
    )
    result = QualityGate().evaluate(rows)
    assert result.reason[0] == "echo: response identical to instruction (normalised)"
    assert result.category[0] == "echo"
    assert result.reason[1] == 'empty: response column "response" has no words'
    assert result.keep[2]


def test_duplicate_lines(gsm8k: list[str]) -> None:
    line = gsm8k[0].split("\n")[0]
    text = "\n".join([line, "Sure, here it is.", line, line])
    norm = [normalize_text(x) for x in (line, "Sure, here it is.")]
    char_frac = 2 * len(norm[0]) / (3 * len(norm[0]) + len(norm[1]))
    # 2 of 4 lines (50%) is not above the default 50%, but their characters are
    assert one(text)[0] == f"repetition: {char_frac * 100:.0f}% of characters in duplicate lines > 50%"
    reason, category = one(text, max_duplicate_line_fraction=0.30)
    assert reason == "repetition: 50% duplicate lines > 30% (2 of 4 lines)" and category == "repetition"
    # loops of a line are caught with the default limits
    assert one("\n".join([gsm8k[1].split("\n")[0]] + [line] * 4))[0] == (
        "repetition: 60% duplicate lines > 50% (3 of 5 lines)"
    )


def test_duplicate_line_characters(gsm8k: list[str]) -> None:
    long_line = gsm8k[2].split("\n")[0]
    short = ["Yes.", "No.", "Maybe later.", "OK then."]
    text = "\n".join([long_line, *short, long_line])  # 1 of 6 lines is a duplicate, but a long one
    norm = [normalize_text(x) for x in [long_line, *short, long_line]]
    frac = len(norm[0]) / sum(map(len, norm))
    assert 0.2 < frac < 0.5
    reason, _ = one(text, max_duplicate_line_char_fraction=0.20)
    assert reason == f"repetition: {frac * 100:.0f}% of characters in duplicate lines > 20%"


def test_token_run() -> None:
    text = "please please please please please help me with my card"
    assert one(text) == ('repetition: token "please" repeated 5 times in a row > max 4', "repetition")
    assert one("no no no no, that is not what I asked for at all")[0] is None  # 4 is allowed
    assert one("The grid is 0 0 0 0 0 0 0 0 and the answer is zero")[0] is None  # numbers are skipped


def test_top_ngram_fraction() -> None:
    sentence = (
        "my card is lost and my card is blocked so my card needs replacing because my card was "
        "stolen yesterday in town at night near the station"
    )
    toks = sentence.split()
    frac = 4 * len("mycard") / sum(map(len, toks))
    assert len(toks) >= 20 and 0.2 < frac
    reason, category = one(sentence, top_ngram_max_char_fraction={2: 0.20})
    assert reason == f'repetition: top 2-gram "my card" (4x) covers {frac * 100:.0f}% of characters > 20%'
    assert category == "repetition"


def test_duplicate_ngram_fraction(gsm8k: list[str]) -> None:
    phrase = "the quick brown fox jumps over the lazy dog again"  # 10 distinct-ish words
    filler = gsm8k[3].split("\n")[0]
    text = f"{filler} {phrase} {phrase} {phrase}"
    toks = words(text)
    dup_chars = 2 * sum(len(w) for w in phrase.split())
    frac = dup_chars / sum(map(len, toks))
    assert frac > 0.15
    reason, _ = one(text, top_ngram_max_char_fraction={}, duplicate_ngram_max_char_fraction={5: 0.15})
    assert reason == f"repetition: duplicate 5-grams cover {frac * 100:.0f}% of characters > 15%"


def test_planted_loops_are_caught(gsm8k: list[str]) -> None:
    rng = random.Random(1)
    questions = [g.split("\n")[0] for g in gsm8k]
    loops = []
    for _ in range(200):
        s = rng.choice(questions)
        loops.append(rng.choice(questions) + " " + " ".join([s] * rng.randint(3, 8)))  # sentence loop, one line
        words_ = rng.choice(questions).split()
        phrase = " ".join(words_[:3])
        loops.append(rng.choice(questions) + " " + " ".join([phrase] * rng.randint(10, 30)))  # phrase loop
    _, category, _ = run(loops)
    assert sum(c == "repetition" for c in category) / len(loops) >= 0.9


def test_wrong_language() -> None:
    german = "Ich habe meine Karte verloren und brauche dringend eine neue. Können Sie mir bitte helfen?"
    reason, category = one(german)
    m = re.fullmatch(r"wrong language: detected de \((\d\.\d\d)\) ≠ en", reason or "")
    assert m and float(m.group(1)) >= 0.95 and category == "wrong_language"
    assert one("Hallo, wie geht es dir?")[0] is None  # too short to judge (guard)
    english = "I lost my card yesterday and I need a replacement as soon as possible, can you help me?"
    assert one(english, expected_language="de")[0].startswith("wrong language: detected en (")
    assert one(german, expected_language=None)[0] is None


def test_batch_language_identifier_equals_py3langid(banking: list[str], gsm8k: list[str]) -> None:
    texts = banking[:200] + [g[:256] for g in gsm8k[:200]] + [
        "",
        "!!!",
        "LOUD CAPS TEXT HERE FOR TESTING",
        "東京は日本の首都です",
        "Je voudrais savoir pourquoi ma carte ne fonctionne pas.",
    ]
    batch = BatchLanguageIdentifier(chunk_docs=128).classify_many(texts)
    for text, (lang, prob) in zip(texts, batch):
        ref_lang, ref_prob = detect_language(text)
        assert lang == ref_lang and prob == pytest.approx(ref_prob, abs=1e-4), text


def test_first_failing_rule_wins_and_scores() -> None:
    reason, category, score = run(["Rewritten Prompt:", "ha ha ha ha ha ha what is so funny about my card"])
    assert category == ["meta_prompt_leak", "repetition"]
    assert score[1] == 6


# ------------------------------------------------------------------------------------------------ config and shared text


def test_config_is_strict_and_overridable() -> None:
    with pytest.raises(ValidationError):
        QualityGateConfig(min_word=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        QualityGateConfig(placeholder_pattern="(")
    gate = QualityGate(QualityGateConfig(min_words=7), max_words=9)
    assert (gate.config.min_words, gate.config.max_words) == (7, 9)


def test_normalize_many_equals_normalize_text(banking: list[str], gsm8k: list[str], self_instruct: list[str]) -> None:
    texts = banking + gsm8k + self_instruct + ["", None, "Straße ﬁne", "x\u200by", "a\u2028b", "don’t", 12]
    assert normalize_many(texts) == [normalize_text(t) for t in texts]
    for t in texts:
        if isinstance(t, str):
            assert normalize_lines(t) == [normalize_text(line) for line in t.split("\n")]
    assert normalize_text("  Don't   STOP—believing!\n(ok?)") == "dont stop believing ok"
    assert words("Ｆｕｌｌ‐width ﬁne, Straße.") == ["full", "width", "fine", "strasse"]


def test_token_screen_never_hides_a_repetition(gsm8k: list[str], self_instruct: list[str]) -> None:
    """The vectorised screen only skips texts the exact word-level rules pass (same decisions with and without)."""
    rng = random.Random(3)
    questions = [g.split("\n")[0] for g in gsm8k]
    loops = [q + " " + " ".join([rng.choice(questions)] * rng.randint(2, 5)) for q in questions[:300]]
    runs = [q.replace(" the ", " the the the the the ", 1) for q in questions[:100]]
    texts = gsm8k + self_instruct + loops + runs + ["Grüße Grüße Grüße Grüße Grüße aus München, 😀 😀"]
    norm = normalize_many(texts)
    for overrides in ({}, {"top_ngram_max_char_fraction": GOPHER_TOP_NGRAM, "max_token_run": 2}):
        gate = QualityGate(expected_language=None, **overrides)
        c = gate.config
        screen = token_screen(
            norm, c.max_token_run, c.ngram_rules_min_words, c.top_ngram_max_char_fraction,
            c.duplicate_ngram_max_char_fraction,
        )
        exact = [gate._repetition(t, n) for t, n in zip(texts, norm)]
        screened = [gate._repetition(t, n, bool(s)) for t, n, s in zip(texts, norm, screen)]
        assert exact == screened
        assert sum(r is not None for r in exact) > 200
        if not overrides:
            assert 0.0 < screen.mean() < 0.9  # some rows skip the per-word work (18% flagged on the bench table)
