"""Per-batch canaries: known positives and negatives planted for every gate, so each batch measures its own gates.

Before a batch's gates are trusted, each automatic stage of the registry gets a seeded set of rows whose right
answer is known — rows it must drop (``expected = "drop"``: leaked meta-prompts, near-duplicate pairs at a known
Jaccard, labelled toxic sentences, eval items verbatim / re-wrapped / truncated / embedded in a longer answer)
and rows it must keep (``expected = "keep"``: ordinary support exchanges, benign words that naive filters trip
on). The rows run through the very gate object the batch uses (same config, same scorer, same eval index, same
embedding model), never through the batch's own tables: nothing planted can reach an accepted split, a reject
log or a dedup index. The result per gate is its measured recall (planted positives dropped) and false-positive
rate (planted negatives dropped) for this batch; an asset check fails the batch when a gate's recall falls
below its floor in the gate config (``canaries:``).

The planters are declared per stage in :mod:`synqa_dagster.stages` (``GateStage.canaries``); this module is
Dagster-free. The planted texts are ours (written for synqa), except the eval-set canaries, which are the batch's
own eval items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from synqa_dagster.common import stable_int
from synqa_dagster.gates.base import Gate, GateResult, decision_table, edits_column

DROP, KEEP = "drop", "keep"
#: Columns of a planted set (on top of what the gate reads: ``text``, ``instruction``, ``response``...).
CANARY_COLUMNS = ("row_id", "canary_gate", "canary_kind", "expected", "detail")
#: Columns of the measured table (one row per planted row).
RESULT_COLUMNS = ("gate", "row_id", "canary_kind", "expected", "detail", "dropped", "reject_category", "reject_reason", "score")


class CanaryConfig(BaseModel):
    """The ``canaries:`` section of the gate config.

    Attributes:
        enabled: plant and measure canaries in every batch.
        per_kind: rows planted per kind (drawn, seeded, from the pools below).
        seed: mixed with the batch key: each batch plants its own (reproducible) draw.
        min_recall: gate name -> the lowest planted-positive recall that passes (the asset check fails below).
        max_false_positive_rate: gate name -> the highest planted-negative drop rate that passes.
        severity: the check's severity on failure (ERROR stops the batch before review and shipping).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    per_kind: int = Field(4, ge=1, le=100)
    seed: int = 7
    min_recall: dict[str, float] = Field(default_factory=lambda: {
        "pii": 1.0, "quality": 1.0, "dedup": 1.0, "toxicity": 0.75, "contamination": 0.9, "memorisation": 1.0})
    max_false_positive_rate: dict[str, float] = Field(default_factory=lambda: {
        "pii": 0.0, "quality": 0.0, "dedup": 0.0, "toxicity": 0.125, "contamination": 0.0, "memorisation": 0.0})
    severity: str = Field("ERROR", pattern="^(ERROR|WARN)$")


# ----------------------------------------------------------------------------------------------- text pools
# Ordinary customer-support exchanges written for synqa (benign controls, and the bases of near-duplicates).

BENIGN = (
    ("How do I change the email address on my account?",
     "Open Settings, choose Account, then Email. Enter the new address and confirm it with the code we send to it."),
    ("My parcel was due yesterday and the tracking page has not moved since Monday.",
     "Sorry about the wait. Parcels sometimes sit at the depot for a day; if it has not moved by tomorrow evening, "
     "reply here and we will open a claim with the courier."),
    ("Can I pause my subscription while I am travelling for two months?",
     "Yes. Go to Plan, choose Pause, and pick a date to resume. You will not be charged while it is paused."),
    ("Why was I charged twice for the same order?",
     "One of the two is a pending authorisation that your bank releases within five working days; only one charge "
     "will stay on your statement."),
    ("The app logs me out every time I close it. What can I do?",
     "Please update to the latest version and turn off battery optimisation for the app; that keeps the session."),
    ("I would like a refund for the jacket that arrived in the wrong size.",
     "Of course. Start a return from Orders, print the label, and the refund reaches your card once we receive it."),
    ("How long does a bank transfer top-up take to show in my balance?",
     "Most transfers arrive within two hours on working days; transfers sent after six in the evening arrive the "
     "next morning."),
    ("Where can I download last year's invoices for my tax return?",
     "Invoices are under Billing, then History. Choose the year and download them one by one or as a single file."),
)

#: Benign texts with words that keyword filters trip on (kept: a gate that drops them is a false positive).
BENIGN_TRAPS = (
    "How do I check the pressure of my car tires before a long drive?",
    "What temperature should the oven be to roast a pig for a family party?",
    "Can you give me a recipe for a Bloody Mary with less salt?",
    "I ran npm init and now I want to add a test script to package.json.",
    "Sam has 5 nuts and 3 balls of wool; how many items does he have?",
    "Please kill the background process that is using all the memory on my laptop.",
)

#: Toxic rows written for synqa: abuse, harassment and threats aimed at people (the gate must drop them).
TOXIC = (
    "You are a worthless idiot and everyone at this company hates dealing with you.",
    "Shut up, you pathetic moron, nobody asked for your stupid opinion.",
    "People like you are disgusting vermin and should be thrown out of the country.",
    "I know where you live and I will make you regret ever answering my ticket.",
    "Go to hell, you useless piece of garbage, you deserve to suffer.",
    "Your kind are subhuman trash and the world would be better without you.",
    "What a brainless loser, I hope you get fired and end up on the street.",
    "Listen here you dumb bitch, fix my account or I will hurt you.",
)

#: Rows the quality gate must drop, by kind (response text; the instruction is a benign request).
_LEAKS = ("Rewritten Prompt: How can I change the email address on my account?", "#Rewritten Prompt#: Give me a refund now.")


@dataclass(frozen=True)
class CanarySet:
    """The rows planted for one gate: what the gate reads plus :data:`CANARY_COLUMNS`."""

    gate: str
    rows: pd.DataFrame


def _rng(batch: str, gate: str, config: CanaryConfig) -> np.random.Generator:
    return np.random.default_rng(stable_int("canaries", config.seed, batch, gate, bits=63))


def _pick(pool: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    idx = rng.permutation(len(pool))
    return [pool[int(idx[i % len(pool)])] for i in range(n)]


def _frame(gate: str, records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(records):
        instruction, response = r.get("instruction", ""), r.get("response", "")
        text = r.get("text") if r.get("text") is not None else (f"{instruction}\n{response}" if instruction else response)
        rows.append({
            "row_id": f"canary-{gate}-{r['kind']}-{i:03d}", "canary_gate": gate, "canary_kind": r["kind"],
            "expected": r["expected"], "detail": r.get("detail", ""), "instruction": instruction, "response": response,
            "text": text, "intent": "canary", "locale": "en-GB", "technique": "canary", "batch": "canary", "n_turns": 1,
        })
    return pd.DataFrame(rows)


def _benign_records(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [{"kind": "benign", "expected": KEEP, "instruction": q, "response": a} for q, a in _pick(BENIGN, n, rng)]


def plant_quality(batch: str, config: CanaryConfig, gate: Gate | None = None) -> CanarySet:
    """Leaked meta-prompts, empty responses, degenerate repetition, echoed instructions, other-language rows
    (drop) and ordinary exchanges (keep)."""
    rng = _rng(batch, "quality", config)
    n = config.per_kind
    records = _benign_records(n, rng)
    for q, a in _pick(BENIGN, n, rng):
        records.append({"kind": "meta_prompt_leak", "expected": DROP, "instruction": q, "response": f"{_pick(_LEAKS, 1, rng)[0]}\n{a}"})
        records.append({"kind": "empty_response", "expected": DROP, "instruction": q, "response": "   "})
        records.append({"kind": "repetition", "expected": DROP, "instruction": q, "response": " ".join([a.split(".")[0] + "."] * 12)})
        records.append({"kind": "echo", "expected": DROP, "instruction": q, "response": q})
    return CanarySet("quality", _frame("quality", records))


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(max(0, len(words) - n + 1))}


def jaccard(a: str, b: str, n: int = 3) -> float:
    """Exact Jaccard of word ``n``-gram shingles (the dedup gate's default shingling)."""
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _near_copy(text: str, rng: np.random.Generator, edits: int) -> str:
    words = text.split()
    for i in sorted(rng.choice(len(words), size=min(edits, len(words)), replace=False)):
        words[int(i)] = words[int(i)] + "s" if not words[int(i)].endswith("s") else words[int(i)][:-1]
    return " ".join(words)


def plant_dedup(batch: str, config: CanaryConfig, gate: Gate | None = None) -> CanarySet:
    """Pairs at a known word-3-gram Jaccard: exact copies and one-word edits of long texts (drop the second of
    each pair) and unrelated texts (keep both). Each row's ``detail`` states the Jaccard to its partner."""
    rng = _rng(batch, "dedup", config)
    records: list[dict[str, Any]] = []
    long_texts = [f"{q} {a} {q2} {a2}" for (q, a), (q2, a2) in zip(BENIGN, BENIGN[1:] + BENIGN[:1])]
    for base in _pick(long_texts, min(config.per_kind, len(long_texts)), rng):
        copy = base
        near = _near_copy(base, rng, edits=1)
        records.append({"kind": "original", "expected": KEEP, "text": base, "detail": "first of its pair"})
        records.append({"kind": "exact_copy", "expected": DROP, "text": copy, "detail": f"Jaccard {jaccard(base, copy):.2f}"})
        records.append({"kind": "near_duplicate", "expected": DROP, "text": near, "detail": f"Jaccard {jaccard(base, near):.2f}"})
    # rows about the same topic but written apart stay: the gate must not merge paraphrase-level neighbours
    for q, a in _pick(BENIGN, config.per_kind, rng):
        records.append({"kind": "distinct", "expected": KEEP, "text": f"Question from a customer: {q} Reply: thanks, {a.lower()}",
                        "detail": "unrelated to every other canary"})
    # a small pool can repeat a base text across the draw: plant each base (and its copies) once
    seen: set[str] = set()
    unique = []
    for r in records:
        key = r["text"] if r["kind"] in ("original", "distinct") else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        unique.append(r)
    return CanarySet("dedup", _frame("dedup", unique))


def plant_toxicity(batch: str, config: CanaryConfig, gate: Gate | None = None) -> CanarySet:
    """Labelled toxic rows (drop), ordinary exchanges and benign keyword traps (keep)."""
    rng = _rng(batch, "toxicity", config)
    n = config.per_kind
    records = _benign_records(n, rng)
    records += [{"kind": "benign_trap", "expected": KEEP, "text": t} for t in _pick(BENIGN_TRAPS, n, rng)]
    records += [{"kind": "toxic", "expected": DROP, "text": t} for t in _pick(TOXIC, 2 * n, rng)]
    return CanarySet("toxicity", _frame("toxicity", records))


def plant_contamination(batch: str, config: CanaryConfig, gate: Gate | None = None) -> CanarySet:
    """The gate's own eval items planted verbatim, re-wrapped, truncated and embedded in a longer answer (drop;
    see :func:`synqa_dagster.gates.contamination.plant_eval_canaries`) and ordinary exchanges (keep)."""
    from synqa_dagster.gates.contamination import plant_eval_canaries

    rng = _rng(batch, "contamination", config)
    records = _benign_records(config.per_kind, rng)
    benign = _frame("contamination", records)
    items = getattr(gate, "eval_items", None)
    if items is None or not len(items):
        return CanarySet("contamination", benign)
    planted = plant_eval_canaries(items, config.per_kind, stable_int("eval-canaries", config.seed, batch, bits=31))
    planted = planted.assign(
        canary_gate="contamination", expected=DROP,
        detail=[f"{s}/{i}" for s, i in zip(planted["eval_set"], planted["item_id"])],
        instruction="", response=planted["text"], intent="canary", locale="en-GB", technique="canary", batch="canary", n_turns=1,
        row_id=[f"canary-contamination-{k}-{j:03d}" for j, k in enumerate(planted["canary_kind"])],
    )
    return CanarySet("contamination", pd.concat([benign, planted[benign.columns]], ignore_index=True))


# ------------------------------------------------------------------------------------------------ measuring


def measure(gate: Gate, planted: CanarySet, **inputs: Any) -> pd.DataFrame:
    """Run ``gate`` on the planted rows; one row per planted row with whether it was caught (:data:`RESULT_COLUMNS`).

    ``dropped`` is True where the gate dropped the row — or, for a gate that rewrites rows (PII redaction),
    rewrote it: a redacted e-mail address is caught, though the row itself is kept."""
    rows = planted.rows
    if not len(rows):
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    result = gate.evaluate(rows.reset_index(drop=True), **inputs)
    table = decision_table(rows, result)
    caught = ~table["kept"].astype(bool)
    if result.rewrites is not None:
        caught |= table[edits_column(result.gate)].notna().to_numpy()
    return pd.DataFrame({
        "gate": planted.gate,
        "row_id": table["row_id"],
        "canary_kind": table["canary_kind"],
        "expected": table["expected"],
        "detail": table["detail"].astype(str),
        "dropped": caught,
        "reject_category": table["reject_category"],
        "reject_reason": table["reject_reason"].where(table["reject_reason"].notna(), _edits_summary(table, result)),
        "score": table[f"score_{gate.name}"].astype(float),
    })


def _edits_summary(table: pd.DataFrame, result: GateResult) -> pd.Series:
    """``redacted: email, phone`` for rewritten rows (the reason a kept, rewritten canary shows), else NA."""
    if result.rewrites is None:
        return pd.Series(pd.NA, index=table.index, dtype="string")
    out = [pd.NA] * len(table)
    for i, edits in (result.edits or {}).items():
        kinds = sorted({str(e.get("kind")) for e in edits})
        out[i] = "redacted: " + ", ".join(kinds)
    return pd.Series(pd.array(out, dtype="string"), index=table.index)


# -------------------------------------------------------------------------------------------- privacy gates
# Fake personal data, made for synqa with reserved / documentation ranges where they exist (RFC 2606 domains,
# RFC 5737 addresses, Ofcom's drama numbers 07700 900xxx, NANP 555-01xx) and valid check digits.


def _luhn_complete(prefix: str, length: int, rng: np.random.Generator) -> str:
    digits = [int(c) for c in prefix] + [int(d) for d in rng.integers(0, 10, size=length - len(prefix) - 1)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits + [(10 - total % 10) % 10]))


def _iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{country}{98 - number % 97:02d}{bban}"


def _pii_values(rng: np.random.Generator) -> dict[str, list[str]]:
    first = ["Priya", "Tomasz", "Aoife", "Marcus", "Ines", "Kwame", "Sofia", "Dmitri"]
    last = ["Shah", "Nowak", "Byrne", "Okafor", "Almeida", "Mensah", "Rossi", "Volkov"]
    n1, n2 = _pick(first, 1, rng)[0], _pick(last, 1, rng)[0]
    digits = "".join(map(str, rng.integers(0, 10, size=8)))
    visa = _luhn_complete("4242", 16, rng)
    return {
        "email": [f"{n1.lower()}.{n2.lower()}{digits[:2]}@example.com", f"{n2.lower()}_{digits[:3]}@mail.example.org"],
        "phone": [f"+44 7700 900{digits[:3]}", f"(415) 555-01{digits[:2]}", f"+49 30 901820{digits[:2]}"],
        "payment_card": [" ".join(visa[i:i + 4] for i in range(0, 16, 4)), _luhn_complete("5555", 16, rng)],
        "iban": [_iban("GB", "WEST" + "".join(map(str, rng.integers(0, 10, size=14)))),
                 _iban("DE", "".join(map(str, rng.integers(0, 10, size=18))))],
        "street_address": [f"{int(digits[:2]) + 1} Acacia Avenue, Leeds LS6 2AB", f"{int(digits[2:5]) + 10} Maple Street, Springfield, IL 62704"],
        "ip_address": [f"203.0.113.{int(digits[:2]) + 1}", f"2001:db8::{digits[:4]}"],
        "account_id": [f"LK-{digits[:5]}", f"LK-{digits[3:8]}"],
        "person_name": [f"{n1} {n2}"],
    }


_PII_TEMPLATES = {
    "email": ("Please send the receipt to {v} instead of my old address.", "Of course — the receipt is on its way."),
    "phone": ("You can call me back on {v} after six.", "Thanks, we will call you this evening."),
    "payment_card": ("I was charged twice on card {v}, can you refund one?", "Sorry about that; the duplicate is being refunded."),
    "iban": ("Please refund to my bank account {v} rather than the card.", "We can only refund to the original payment method."),
    "street_address": ("My Hub was delivered to the wrong house, I live at {v}.", "Sorry! We will arrange a courier collection."),
    "ip_address": ("The app says my login from {v} was blocked, that was me.", "Thanks for confirming; we have unblocked it."),
    "account_id": ("Where is my order {v}? It was due on Monday.", "It left the depot today and should arrive tomorrow."),
    "person_name": ("Hi, my name is {v} and I cannot sign in to the app.", "Sorry to hear that — let's reset your password."),
}


def plant_pii(batch: str, config: CanaryConfig, gate: Gate | None = None) -> CanarySet:
    """Support messages carrying fake personal data of every kind the gate does not allow — e-mail, phone,
    Luhn-valid card, checksum-valid IBAN, street address, IP, order id, a name in customer context — which it must
    catch (reject or redact), and ordinary exchanges with prices, dates, versions and plan names (keep)."""
    rng = _rng(batch, "pii", config)
    actions = dict(getattr(getattr(gate, "config", None), "actions", {}) or {})
    records = _benign_records(config.per_kind, rng)
    records += [{"kind": "look_alike", "expected": KEEP, "instruction": q, "response": a} for q, a in _pick((
        ("Is the Plus plan still £9.99 a month after 12 March 2026?", "Yes, Plus stays at £9.99 until your renewal date."),
        ("My Hub is on firmware 2.4.1, should I update to 2.5.0?", "Yes — 2.5.0 fixes the Wi-Fi drop; it takes about 5 minutes."),
        ("I paid 24.50 for 3 months, why does it show 4 charges?", "Three are monthly charges and one is a refunded authorisation."),
    ), config.per_kind, rng)]
    for kind, (question, answer) in _PII_TEMPLATES.items():
        if actions.get(kind) == "allow":
            continue
        for i in range(config.per_kind):
            value = _pick(_pii_values(rng)[kind], 1, rng)[0]
            records.append({"kind": kind, "expected": DROP, "instruction": question.format(v=value), "response": answer,
                            "detail": f"planted {kind}"})
    return CanarySet("pii", _frame("pii", records))


def plant_memorisation(batch: str, config: CanaryConfig, gate: Gate | None = None, real: pd.DataFrame | None = None) -> CanarySet:
    """Copies of the batch's real rows (verbatim inside a longer answer, near-copies with light edits: drop) and
    same-topic rows that copy nothing (keep): :func:`synqa_dagster.gates.memorisation.plant_memorisation`."""
    from synqa_dagster.gates.memorisation import plant_memorisation as plant

    rng = _rng(batch, "memorisation", config)
    records = plant(real if real is not None else pd.DataFrame(columns=["source_id", "text"]), rng, config.per_kind)
    return CanarySet("memorisation", _frame("memorisation", records))


def summarize(results: pd.DataFrame, config: CanaryConfig) -> pd.DataFrame:
    """Per gate: planted positives and negatives, recall, false-positive rate, the floors and whether it passed."""
    out = []
    for gate, group in results.groupby("gate", sort=False):
        pos, neg = group[group["expected"] == DROP], group[group["expected"] == KEEP]
        recall = float(pos["dropped"].mean()) if len(pos) else None
        fpr = float(neg["dropped"].mean()) if len(neg) else None
        floor = config.min_recall.get(str(gate))
        ceiling = config.max_false_positive_rate.get(str(gate))
        missed = sorted(pos.loc[~pos["dropped"], "canary_kind"].unique().tolist())
        passed = (recall is None or floor is None or recall >= floor) and (fpr is None or ceiling is None or fpr <= ceiling)
        out.append({
            "gate": str(gate), "positives": int(len(pos)), "caught": int(pos["dropped"].sum()), "recall": recall,
            "negatives": int(len(neg)), "false_positives": int(neg["dropped"].sum()), "false_positive_rate": fpr,
            "min_recall": floor, "max_false_positive_rate": ceiling, "passed": bool(passed),
            "kinds": ", ".join(sorted(group["canary_kind"].unique())), "missed_kinds": ", ".join(missed),
        })
    return pd.DataFrame(out, columns=["gate", "positives", "caught", "recall", "negatives", "false_positives",
                                      "false_positive_rate", "min_recall", "max_false_positive_rate", "passed", "kinds",
                                      "missed_kinds"])


def by_kind(results: pd.DataFrame) -> pd.DataFrame:
    """Per gate and kind: planted rows, expected decision and the share the gate dropped."""
    if not len(results):
        return pd.DataFrame(columns=["gate", "canary_kind", "expected", "planted", "dropped", "drop_rate"])
    grouped = results.groupby(["gate", "canary_kind", "expected"], sort=False)["dropped"]
    return grouped.agg(planted="size", dropped="sum", drop_rate="mean").reset_index()


Planter = Callable[[str, CanaryConfig, Gate | None], CanarySet]
