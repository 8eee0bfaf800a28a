"""A batch whose seeds carry personal data, and whose teacher copied it — and copied a real customer message — ships
neither: the funnel on a real Dagster instance, the signed handover folder and its card.

The demo seed corpus carries planted (fake) personal data (data/demo/README.md). What a model copies depends on the
model and the CPU, so the copies are planted into the stored candidates table the way a teacher would write them:
a response that repeats a seed's e-mail address, phone number, order number or card number, and rows that repeat a
real seed or reference customer message verbatim. Everything else in the table is held-out real customer traffic
(not in the reference sample the test configures), so nothing here depends on what a model writes.
"""

from __future__ import annotations

import json
import re

import dagster as dg
import pandas as pd
import pytest
import yaml

from synqa_dagster.definitions import build_definitions
from synqa_dagster.storage import TableStore
from tests.conftest import REPO_ROOT, write_recipe

BATCH = "2026-11-02"
DEMO = REPO_ROOT / "data" / "demo"


def _seeds() -> list[dict]:
    return [json.loads(line) for line in (DEMO / "seeds.jsonl").read_text().splitlines()]


def _reference() -> list[dict]:
    return [json.loads(line) for line in (DEMO / "reference_customers.jsonl").read_text().splitlines()]


def _row(i: int, instruction: str, response: str, seed_id: str = "seed-0001", intent: str = "account.password_reset",
         locale: str = "en-GB") -> dict:
    return {
        "row_id": f"row{i:03d}", "batch": BATCH, "seed_id": seed_id, "intent": intent, "taxonomy_version": "v1",
        "locale": locale, "technique": "self_instruct", "instruction": instruction, "response": response,
        "conversation": json.dumps([{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]),
        "text": instruction + "\n" + response, "n_turns": 1, "generator_id": "test", "generator_version": "0",
        "prompt_template_id": "p", "response_template_id": "r", "sampling": "{}", "recipe_hash": "h",
        "created_at": BATCH + "T00:00:00+00:00",
    }


PATTERNS = {"email": r"[\w.]+@example\.com", "phone": r"07700 900\d{3}|\(415\) 555-01\d\d", "order": r"LK-\d{5}",
            "card": r"4242(?: \d{4}){3}"}


def _all_planted(seeds: list[dict]) -> dict[str, list[str]]:
    """Every piece of personal data the demo seeds carry, by kind (e-mail, phone, order number, card number)."""
    found = {kind: sorted({m.group(0) for s in seeds for m in re.finditer(pattern, s["text"])}) for kind, pattern in PATTERNS.items()}
    assert all(found.values()), f"the demo seeds no longer carry every planted kind: {found}"
    return found


def _planted_values(seeds: list[dict]) -> dict[str, str]:
    """One of each kind (the first seed's) — what the planted copies repeat."""
    return {kind: values[0] for kind, values in _all_planted(seeds).items()}


@pytest.fixture(scope="module")
def privacy_batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("privacy")
    seeds, reference = _seeds(), _reference()
    # the reference sample the batch compares with: the first 300 messages; rows 300-360 are held-out traffic
    (tmp / "reference.jsonl").write_text("".join(json.dumps(m) + "\n" for m in reference[:300]))
    gates = yaml.safe_load((REPO_ROOT / "gates" / "default.yaml").read_text())
    gates["drift"]["reference_path"] = str(tmp / "reference.jsonl")
    # half the review sample goes to a second, independent reviewer; a disagreement to a third
    gates["review"]["agreement"].update(second_review_fraction=0.5, min_double_reviewed=4, disagreement_policy="third_reviewer")
    (tmp / "gates.yaml").write_text(yaml.safe_dump(gates, sort_keys=False))
    values = _planted_values(seeds)
    rows = []
    for i, m in enumerate(reference[300:360]):
        answer = f"Thanks for getting in touch. I have looked into request {i} and will update you within two working days."
        rows.append(_row(i, m["text"], answer, intent=m["label"], locale=m["locale"]))
    n = len(rows)
    planted = {
        "email": _row(n, "Can you confirm which address you have for me?", f"We have {values['email']} on file; the reset link went there."),
        "phone": _row(n + 1, "Could someone call me back about my delivery?", f"Of course — we will ring you on {values['phone']} this afternoon."),
        "order": _row(n + 2, "Where has my parcel got to?", f"Order {values['order']} left our depot this morning and arrives tomorrow."),
        "card": _row(n + 3, "Which card will the refund go to?", f"The refund goes back to card {values['card']} within five working days."),
        "copied_reference": _row(n + 4, reference[10]["text"] + " " + reference[11]["text"], "Sorry to hear that, we are on it.",
                                 intent=reference[10]["label"]),
        "copied_seed": _row(n + 5, "Here is what a customer might write.", seeds[5]["text"], seed_id=seeds[5]["seed_id"], intent=seeds[5]["label"]),
    }
    candidates = pd.DataFrame(rows + list(planted.values()))
    for key, value in {"DAGSTER_HOME": tmp / "home", "SYNQA_HOME": tmp / "synqa_home", "SYNQA_STORAGE": tmp / "storage"}.items():
        value.mkdir(exist_ok=True) if key == "DAGSTER_HOME" else None
    (tmp / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mp = pytest.MonkeyPatch()
    for key, value in {"DAGSTER_HOME": tmp / "home", "SYNQA_HOME": tmp / "synqa_home", "SYNQA_STORAGE": tmp / "storage",
                       "SYNQA_REVIEW_STORE": f"sqlite:///{tmp / 'review.db'}"}.items():
        mp.setenv(key, str(value))
    defs = build_definitions(str(write_recipe(tmp / "r.yaml")), gates_path=str(tmp / "gates.yaml"),
                             storage_base=str(tmp / "storage"), handover_base=str(tmp / "handover"))
    store = TableStore(str(tmp / "storage"))
    store.write("generated_candidates", BATCH, candidates)
    with dg.instance_for_test() as instance:
        selection = dg.AssetSelection.all() - dg.AssetSelection.assets("generated_candidates")
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, partition_key=BATCH,
                                resources=defs.resources, instance=instance, raise_on_error=False)
        yield {"tmp": tmp, "result": result, "planted": {k: r["row_id"] for k, r in planted.items()}, "values": values,
               "store": store, "folder": tmp / "handover" / f"batch={BATCH}", "seeds": seeds, "reference": reference,
               "defs": defs, "instance": instance, "review_url": f"sqlite:///{tmp / 'review.db'}"}
    mp.undo()


def test_the_batch_runs_through_the_privacy_gates(privacy_batch):
    result = privacy_batch["result"]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    failures = [e.message for e in result.all_events if e.is_failure]
    assert {"pii_gate", "memorisation_gate", "accepted_dataset", "handover_pack"} <= materialized, failures


def test_no_planted_personal_data_or_copied_message_ships(privacy_batch):
    folder = privacy_batch["folder"]
    shipped = {p.name: p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix in {".jsonl", ".json", ".md"}}
    assert "accepted.jsonl" in shipped and "rejected.jsonl" in shipped
    for kind, values in _all_planted(privacy_batch["seeds"]).items():  # none of the seeds' personal data, anywhere
        for value in values:
            leaks = [name for name, text in shipped.items() if value in text]
            assert not leaks, f"planted {kind} {value!r} ships in {leaks}"
    accepted = [json.loads(line) for line in shipped["accepted.jsonl"].splitlines()]
    copied = {privacy_batch["planted"]["copied_reference"], privacy_batch["planted"]["copied_seed"]}
    assert not copied & {r["row_id"] for r in accepted}
    # the redacted rows ship redacted, with a typed placeholder
    by_id = {r["row_id"]: r for r in accepted}
    for kind, placeholder in (("email", "[EMAIL]"), ("phone", "[PHONE]"), ("order", "[ACCOUNT_ID]")):
        row = by_id.get(privacy_batch["planted"][kind])
        assert row is not None and placeholder in row["response"] and placeholder in row["text"], (kind, row)
        assert placeholder in row["messages"][-1]["content"]


def test_each_planted_row_has_its_reason_and_lineage(privacy_batch):
    store: TableStore = privacy_batch["store"]
    log = store.read("reject_log", BATCH).set_index("row_id")
    planted = privacy_batch["planted"]
    card_row = log.loc[planted["card"]]
    assert card_row["gate"] == "pii" and "payment_card" in card_row["reject_reason"]
    assert privacy_batch["values"]["card"] not in card_row["reject_reason"]
    ref = privacy_batch["reference"]
    copied = {"copied_reference": {f"reference:{ref[10]['message_id']}", f"reference:{ref[11]['message_id']}"},
              "copied_seed": {f"seed:{privacy_batch['seeds'][5]['seed_id']}"}}
    for kind, sources in copied.items():
        row = log.loc[planted[kind]]
        assert row["gate"] == "memorisation", (kind, row["gate"], row["reject_reason"])
        assert any(s in row["reject_reason"] for s in sources), row["reject_reason"]
    lineage = [json.loads(line) for line in (privacy_batch["folder"] / "lineage.jsonl").read_text().splitlines()]
    email = next(r for r in lineage if r["row_id"] == planted["email"])
    assert [e["kind"] for e in email["gates"]["pii"]["edits"]] == ["email"] * len(email["gates"]["pii"]["edits"])


def test_the_card_reports_real_data_leakage_apart_from_contamination(privacy_batch):
    card = (privacy_batch["folder"] / "README.md").read_text()
    assert "Real-data leakage" in card and "pii" in card.lower()
    section = card.split("Real-data leakage", 1)[1].split("\n## ", 1)[0]
    assert "2" in section  # the two copied rows


def test_two_reviewers_agreement_and_the_oc_curves_reach_the_card(privacy_batch):
    """Three reviewers work through the sample (a share of it twice, independently; a third person settles the
    disagreements); the review tail re-runs; the card states Cohen's kappa (as sklearn computes it on the same
    pairs), the review programme and the OC curves, and the signed folder still verifies."""
    from sklearn.metrics import cohen_kappa_score

    from synqa_dagster.lineage.verify import verify_pack
    from synqa_dagster.review.store import ReviewStore

    store = ReviewStore.from_url(privacy_batch["review_url"])
    progress = store.progress(BATCH)
    assert progress.double_review >= 4 and not progress.complete
    verdict = {}
    for reviewer, flip in (("hmac-alice", False), ("hmac-bob", True), ("hmac-carol", False)):
        while (item := store.next_item(BATCH, reviewer)) is not None:
            rid = item["row_id"]
            # alice accepts all; bob rejects every second row he gets; carol settles what is left
            bob_rejects = flip and len([k for k in verdict if k[1] == reviewer]) % 2 == 1
            v = "reject" if bob_rejects else "accept"
            verdict[(rid, reviewer)] = v
            outcome = store.record_decision(BATCH, rid, sample_version=progress.sample_version, reviewer_hmac=reviewer,
                                            verdict=v, reason_category="factual_error" if v == "reject" else None,
                                            reason_text="wrong plan name" if v == "reject" else "")
            assert outcome == "recorded", outcome
    assert store.progress(BATCH).complete
    pairs = store.all_decisions(BATCH)
    firsts = pairs[pairs["review_round"] == 1].set_index("row_id")["verdict"]
    seconds = pairs[pairs["review_round"] == 2].set_index("row_id")["verdict"]
    both = firsts.index.intersection(seconds.index)
    expected_kappa = cohen_kappa_score(firsts[both], seconds[both]) if len(set(firsts[both]) | set(seconds[both])) > 1 else None

    defs, instance = privacy_batch["defs"], privacy_batch["instance"]
    result = defs.resolve_job_def("synqa_review_job").execute_in_process(partition_key=BATCH, instance=instance, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    folder = privacy_batch["folder"]
    card = (folder / "README.md").read_text()
    section = card.split("### Reviewer agreement", 1)[1].split("\n## ", 1)[0]
    assert f"{len(both)} judged by both" in section
    if expected_kappa is not None:
        assert f"Cohen's kappa (accept / reject):** {expected_kappa:.2f}" in section, section
    assert "## Review programme" in card and "### Operating characteristic" in card
    assert (folder / "oc_curves.png").read_bytes().startswith(b"\x89PNG")
    review_json = json.loads((folder / "review.json").read_text())
    assert review_json["agreement"]["pairs"] == len(both)
    report = verify_pack(folder)
    assert report.ok, report
