"""Reviewer agreement: double review in the store (SQLite and PostgreSQL), resolution policies, Cohen's kappa against
scikit-learn, progress and the CLI, CSV export / import, and two (three) real signed-in reviewers in the web app."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import cohen_kappa_score
from starlette.testclient import TestClient

from synqa_dagster.lineage.keys import hmac_id
from synqa_dagster.review.agreement import (
    DECISION_COLUMNS, DISAGREEMENT_TEXT, AgreementConfig, agreement_report, cohen_kappa, double_review_count,
    resolve_decisions, rounds_needed, select_double_review, short_reviewer,
)
from synqa_dagster.review.csv_io import export_csv, export_decisions_csv, import_csv
from synqa_dagster.review.sampling import sampling_hash, slice_verdicts
from synqa_dagster.review.store import SCHEMA_VERSION, ReviewStore
from synqa_dagster.review.webapp import create_app
from tests.test_review_store import BATCH, _read_csv, _write_csv, make_sample
from tests.test_review_webapp import form_of, reviewer_hash, sign_in

ALICE, BOB, CAROL, DAVE = (hmac_id(b"agreement-test-secret-0123456789", n) for n in ("alice", "bob", "carol", "dave"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file in tmp_path, or a new schema in the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    return request.getfixturevalue("postgres_schema_url")


def pushed(url: str, double: list[int], policy: str = "third_reviewer", slices: dict | None = None):
    """A store at ``url`` with make_sample() pushed as v1, the rows at positions ``double`` double-reviewed."""
    store = ReviewStore.from_url(url)
    items, plan = make_sample(slices)
    ids = list(items["row_id"])
    assert store.push_sample(BATCH, "v1", items, plan, double_review=[ids[i] for i in double],
                             disagreement_policy=policy) is True
    return store, ids


def decide(store: ReviewStore, row_id: str, reviewer: str, verdict: str, category: str | None = None,
           text: str = "") -> str:
    if verdict == "reject" and category is None:
        category = "unsafe"
    return store.record_decision(BATCH, row_id, sample_version="v1", reviewer_hmac=reviewer, verdict=verdict,
                                 reason_category=category, reason_text=text)


def sk_kappa(a, b) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b))


# ------------------------------------------------------------------------------------------------------ config
def test_agreement_config_defaults_and_validation():
    config = AgreementConfig()
    assert (config.second_review_fraction, config.min_double_reviewed, config.seed, config.disagreement_policy,
            config.min_pair_items) == (0.2, 10, 0, "third_reviewer", 10)
    assert config.enabled
    assert not AgreementConfig(second_review_fraction=0, min_double_reviewed=0).enabled
    assert AgreementConfig(disagreement_policy="defect").disagreement_policy == "defect"
    for bad in ({"second_review_fraction": 1.5}, {"second_review_fraction": -0.1}, {"min_double_reviewed": -1},
                {"disagreement_policy": "majority"}, {"min_pair_items": 0}, {"second_reviewer_fraction": 0.2}):
        with pytest.raises(ValidationError):
            AgreementConfig(**bad)


def test_double_review_selection_is_seeded_sized_and_order_free():
    ids = [f"row-{i}" for i in range(50)]
    config = AgreementConfig(second_review_fraction=0.2, min_double_reviewed=3, seed=7)
    chosen = select_double_review(ids, BATCH, config)
    expected = sorted(ids, key=lambda r: hashlib.sha256(f"double-review:7:{BATCH}:{r}".encode()).hexdigest())[:10]
    assert chosen == expected
    assert select_double_review(list(reversed(ids)), BATCH, config) == chosen  # input order does not matter
    assert set(select_double_review(ids, BATCH, config.model_copy(update={"seed": 8}))) != set(chosen)
    assert set(select_double_review(ids, "2026-11-21", config)) != set(chosen)
    by_sampling = sorted(ids, key=lambda r: sampling_hash(7, BATCH, r))[:10]
    assert set(chosen) != set(by_sampling)  # not the review order's ranking (sample_position follows that one)
    assert double_review_count(8, config) == 3  # floor: ceil(1.6) = 2 < 3
    assert double_review_count(15, config) == 3  # 0.2 * 15 = 3 exactly (not 4 from floating point)
    assert double_review_count(16, config) == 4  # ceil(3.2)
    assert double_review_count(2, config) == 2  # capped at the sample
    assert double_review_count(0, config) == 0
    assert select_double_review(ids, BATCH, AgreementConfig(second_review_fraction=0, min_double_reviewed=0)) == []
    with pytest.raises(ValueError, match="not unique"):
        select_double_review(["a", "a"], BATCH, config)


# ------------------------------------------------------------------------------------------------------- kappa
def test_cohen_kappa_matches_sklearn():
    rng = random.Random(20261120)
    compared = 0
    for _ in range(300):
        n = rng.randint(1, 60)
        labels = ["accept", "reject"] if rng.random() < 0.6 else ["factual_error", "wrong_label", "unsafe", "other"]
        bias = rng.random()
        first = [labels[0] if rng.random() < bias else rng.choice(labels) for _ in range(n)]
        second = [a if rng.random() < 0.7 else rng.choice(labels) for a in first]
        ours, theirs = cohen_kappa(first, second), sk_kappa(first, second)
        if ours is None:
            assert theirs != theirs, (first, second, theirs)  # sklearn gives NaN exactly where kappa is undefined
        else:
            assert ours == pytest.approx(theirs, abs=1e-12), (first, second)
            compared += 1
    assert compared > 200
    # a textbook 2x2 table: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4) == sk_kappa(a, b)
    assert cohen_kappa(["accept"] * 6, ["accept"] * 6) is None  # everyone agrees on one class: undefined
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["accept"] * 4, ["reject"] * 4) == 0.0 == sk_kappa(["accept"] * 4, ["reject"] * 4)
    assert cohen_kappa(["accept", "reject"], ["reject", "accept"]) == -1.0
    with pytest.raises(ValueError):
        cohen_kappa(["accept"], [])


# -------------------------------------------------------------------------------------------------- resolution
def _all(rows: list[tuple]) -> pd.DataFrame:
    """all_decisions rows: (row_id, double, round, verdict, category, reviewer, decided_at)."""
    return pd.DataFrame([{"row_id": r, "slice_key": "s", "double_review": d, "review_round": n, "verdict": v,
                          "reason_category": c, "reason_text": f"text {r} {n}" if v == "reject" else "",
                          "reviewer_hmac": who, "decided_at": at} for r, d, n, v, c, who, at in rows])


RESOLUTION_INPUT = _all([
    ("single", False, 1, "accept", None, "A", "t1"),
    ("unflagged", False, 1, "reject", "unsafe", "A", "t1"),       # flag removed after a second review
    ("unflagged", False, 2, "accept", None, "B", "t2"),
    ("agree_accept", True, 1, "accept", None, "A", "t1"),
    ("agree_accept", True, 2, "accept", None, "B", "t3"),
    ("agree_reject", True, 1, "reject", "factual_error", "B", "t1"),
    ("agree_reject", True, 2, "reject", "wrong_label", "A", "t4"),
    ("one_so_far", True, 1, "reject", "unsafe", "A", "t1"),
    ("disagree", True, 1, "accept", None, "A", "t1"),
    ("disagree", True, 2, "reject", "unsafe", "B", "t5"),
    ("third", True, 2, "accept", None, "B", "t2"),                # rounds given out of order
    ("third", True, 1, "reject", "other", "A", "t1"),
    ("third", True, 3, "accept", None, "C", "t6"),
])


def test_resolve_decisions_third_reviewer_policy():
    resolved = resolve_decisions(RESOLUTION_INPUT, "third_reviewer")
    assert tuple(resolved.columns) == DECISION_COLUMNS
    by = resolved.set_index("row_id")
    assert list(resolved["row_id"]) == ["single", "unflagged", "agree_accept", "agree_reject", "third"]
    assert by.loc["unflagged", "verdict"] == "reject" and by.loc["unflagged", "reviewer_hmac"] == "A"
    assert (by.loc["agree_accept", "reviewer_hmac"], by.loc["agree_accept", "decided_at"]) == ("A", "t3")
    # agreeing rejects keep the first reviewer's category, text and id; settled at the second decision
    assert tuple(by.loc["agree_reject", ["verdict", "reason_category", "reason_text", "reviewer_hmac",
                                         "decided_at"]]) == ("reject", "factual_error", "text agree_reject 1", "B",
                                                             "t4")
    assert tuple(by.loc["third", ["verdict", "reason_category", "reviewer_hmac", "decided_at"]]) == \
        ("accept", None, "C", "t6")  # the third reviewer's verdict decides
    assert "disagree" not in by.index and "one_so_far" not in by.index  # still waiting


def test_resolve_decisions_defect_policy():
    by = resolve_decisions(RESOLUTION_INPUT, "defect").set_index("row_id")
    assert sorted(by.index) == sorted(["single", "unflagged", "agree_accept", "agree_reject", "disagree", "third"])
    assert tuple(by.loc["disagree", ["verdict", "reason_category", "reviewer_hmac", "decided_at"]]) == \
        ("reject", "unsafe", "B", "t5")  # the rejecting reviewer's category and id
    assert by.loc["disagree", "reason_text"] == f"{DISAGREEMENT_TEXT}: text disagree 2"
    assert tuple(by.loc["third", ["verdict", "reason_category", "reviewer_hmac"]]) == ("reject", "other", "A")
    with pytest.raises(ValueError, match="disagreement_policy"):
        resolve_decisions(RESOLUTION_INPUT, "majority")
    with pytest.raises(ValueError, match="round repeated"):
        resolve_decisions(_all([("x", True, 1, "accept", None, "A", "t"), ("x", True, 1, "accept", None, "B", "t")]),
                          "defect")
    assert rounds_needed(True, ["accept", "reject"], "third_reviewer") == 3
    assert rounds_needed(True, ["accept", "reject"], "defect") == 2
    assert rounds_needed(False, [], "third_reviewer") == 1


# ------------------------------------------------------------------------------------------------------- store
def test_double_review_in_the_store_third_reviewer(store_url: str):
    store, ids = pushed(store_url, double=[0, 1, 2])
    start = store.progress(BATCH)
    assert (start.total, start.double_review, start.undecided, start.decided, start.disagreement_policy) == \
        (5, 3, 5, 0, "third_reviewer")
    assert set(store.row_status(BATCH).query("double_review")["row_id"]) == set(ids[:3])
    assert "double_review" not in store.items(BATCH).columns and "double_review" not in store.next_item(BATCH, DAVE)
    store.next_item(BATCH, DAVE, lease_seconds=0)  # dave's lease lapses at once

    digests = {start.decisions_digest}
    alice = ["accept", "accept", "reject", "accept", "reject"]
    seen = []
    while (item := store.next_item(BATCH, ALICE)) is not None:
        seen.append(item["row_id"])
        verdict = alice[ids.index(item["row_id"])]
        assert decide(store, item["row_id"], ALICE, verdict) == "recorded"
        digests.add(store.progress(BATCH).decisions_digest)
    assert seen == ids  # each row once: a row alice decided is never handed to her again
    middle = store.progress(BATCH)
    assert (middle.decided, middle.awaiting_second, middle.awaiting_third, middle.complete) == (2, 3, 0, False)
    assert decide(store, ids[0], ALICE, "reject") == "reviewer_already_decided"  # nobody decides a row twice
    assert decide(store, ids[3], ALICE, "reject") == "reviewer_already_decided"
    assert len(store.all_decisions(BATCH)) == 5

    bob = {ids[0]: "accept", ids[1]: ("reject", "factual_error"), ids[2]: ("reject", "wrong_label")}
    seen = []
    while (item := store.next_item(BATCH, BOB)) is not None:
        seen.append(item["row_id"])
        verdict, category = (bob[item["row_id"]], None) if isinstance(bob[item["row_id"]], str) else bob[item["row_id"]]
        assert decide(store, item["row_id"], BOB, verdict, category) == "recorded"
        digests.add(store.progress(BATCH).decisions_digest)
    assert seen == ids[:3]  # only the rows waiting for a second review
    after = store.progress(BATCH)
    assert (after.decided, after.awaiting_second, after.awaiting_third, after.complete) == (4, 0, 1, False)
    assert store.next_item(BATCH, ALICE) is None and store.next_item(BATCH, BOB) is None  # neither of the two
    assert ids[1] not in set(store.decisions(BATCH)["row_id"])  # unresolved rows are not decisions yet

    assert store.next_item(BATCH, CAROL)["row_id"] == ids[1]
    assert decide(store, ids[1], BOB, "accept") == "reviewer_already_decided"
    assert decide(store, ids[1], CAROL, "accept") == "recorded"
    assert decide(store, ids[1], DAVE, "reject") == "already_decided"  # complete: no fourth review
    assert store.next_item(BATCH, DAVE) is None
    digests.add(store.progress(BATCH).decisions_digest)
    assert len(digests) == 5 + 3 + 1 + 1  # every decision changed the digest

    end = store.progress(BATCH)
    assert (end.decided, end.accepted, end.rejected, end.reviews, end.complete) == (5, 3, 2, 9, True)
    every = store.all_decisions(BATCH)
    row1 = every[every["row_id"] == ids[1]]
    assert list(row1["review_round"]) == [1, 2, 3] and list(row1["reviewer_hmac"]) == [ALICE, BOB, CAROL]
    for _, group in every.groupby("row_id"):
        assert group["reviewer_hmac"].is_unique
    resolved = store.decisions(BATCH).set_index("row_id")
    assert tuple(resolved.columns) == DECISION_COLUMNS[1:]
    assert tuple(resolved.loc[ids[1], ["verdict", "reviewer_hmac"]]) == ("accept", CAROL)
    assert tuple(resolved.loc[ids[2], ["verdict", "reason_category", "reviewer_hmac"]]) == ("reject", "unsafe", ALICE)
    assert list(store.decisions(BATCH)["row_id"]) == ids  # review order

    report = agreement_report(store, BATCH, min_pair_items=3)
    json.dumps(report)  # JSON-able as it is
    first, second = ["accept", "accept", "reject"], ["accept", "reject", "reject"]
    assert (report["pairs"], report["double_reviewed"], report["sampled"], report["disagreements"]) == (3, 3, 5, 1)
    assert report["agreement"] == pytest.approx(2 / 3)
    assert report["kappa"] == pytest.approx(sk_kappa(first, second))
    assert report["reason_category"]["n"] == 1 and report["reason_category"]["agreement"] == 0.0
    assert report["third_reviewer"] == {"decided": 1, "awaiting": 0, "accepted": 1, "rejected": 0,
                                        "sided_with_first": 1, "sided_with_second": 0}
    (pair,) = report["by_pair"]
    assert pair["reviewers"] == sorted([short_reviewer(ALICE), short_reviewer(BOB)]) and pair["n"] == 3
    assert pair["enough_items"] is True and pair["note"] is None
    assert ALICE not in json.dumps(report) and BOB not in json.dumps(report)  # only short prefixes
    few = agreement_report(store, BATCH)["by_pair"][0]  # default min_pair_items 10
    assert few["enough_items"] is False and few["note"] == "too few items (3 < 10)"


def test_defect_policy_completes_after_two_and_counts_the_disagreement(store_url: str):
    store, ids = pushed(store_url, double=[0, 1], policy="defect")
    assert store.disagreement_policy(BATCH) == "defect"
    for row_id in ids:
        assert decide(store, row_id, ALICE, "accept") == "recorded"
    assert decide(store, ids[0], BOB, "accept") == "recorded"
    assert decide(store, ids[1], BOB, "reject", "factual_error", "made-up policy") == "recorded"
    progress = store.progress(BATCH)
    assert (progress.complete, progress.awaiting_third, progress.decided, progress.rejected) == (True, 0, 5, 1)
    assert store.next_item(BATCH, CAROL) is None
    assert decide(store, ids[1], CAROL, "accept") == "already_decided"
    row = store.decisions(BATCH).set_index("row_id").loc[ids[1]]
    assert (row["verdict"], row["reason_category"], row["reviewer_hmac"]) == ("reject", "factual_error", BOB)
    assert row["reason_text"] == f"{DISAGREEMENT_TEXT}: made-up policy"
    verdicts = slice_verdicts(store.slices(BATCH), store.decisions(BATCH)).set_index("slice_key")
    assert verdicts["defects"].sum() == 1 and verdicts["reviewed"].sum() == 5
    report = agreement_report(store, BATCH)
    assert (report["defects_from_disagreement"], report["disagreement_policy"], report["pairs"]) == (1, "defect", 2)
    assert report["third_reviewer"]["decided"] == report["third_reviewer"]["awaiting"] == 0


def test_all_agree_on_one_class_reports_raw_agreement_and_why_kappa_is_missing(store_url: str):
    store, ids = pushed(store_url, double=[0, 1, 2])
    for reviewer in (ALICE, BOB):
        for row_id in ids[:3]:
            decide(store, row_id, reviewer, "accept")
    report = agreement_report(store, BATCH)
    assert report["kappa"] is None and report["agreement"] == 1.0 and report["pairs"] == 3
    assert "kappa undefined" in report["kappa_note"] and "'accept'" in report["kappa_note"]
    assert report["by_pair"][0]["kappa"] is None
    empty = agreement_report(pushed(store_url.replace("review.db", "other.db"), double=[])[0], BATCH) \
        if store_url.startswith("sqlite") else None
    if empty is not None:
        assert (empty["pairs"], empty["kappa"], empty["agreement"], empty["by_pair"]) == (0, None, None, [])


def test_push_sample_flags_and_policy(store_url: str):
    store = ReviewStore.from_url(store_url)
    items, slices = make_sample()
    ids = list(items["row_id"])
    with pytest.raises(ValueError, match="not in items.row_id"):
        store.push_sample(BATCH, "v1", items, slices, double_review=["nope"])
    with pytest.raises(ValueError, match="disagreement_policy"):
        store.push_sample(BATCH, "v1", items, slices, disagreement_policy="majority")
    with pytest.raises(ValueError, match="double_review"):
        store.push_sample(BATCH, "v1", items.assign(double_review=True), slices)
    assert store.batches() == []
    assert store.push_sample(BATCH, "v1", items, slices, double_review=ids[:2]) is True
    assert store.push_sample(BATCH, "v1", items, slices, double_review=ids[:2]) is False  # nothing changes
    assert store.push_sample(BATCH, "v1", items, slices, double_review=ids[1:3], disagreement_policy="defect") is True
    assert set(store.row_status(BATCH).query("double_review")["row_id"]) == set(ids[1:3])
    assert store.progress(BATCH).disagreement_policy == "defect"
    assert store.push_sample(BATCH, "v1", items, slices) is True  # flags off again
    assert store.progress(BATCH).double_review == 0


@pytest.mark.parametrize("policy", ["third_reviewer", "defect"])
def test_concurrent_reviewers_never_decide_a_row_twice(store_url: str, policy: str):
    store, ids = pushed(store_url, double=list(range(16)), policy=policy, slices={"a/en": 8, "b/en": 8})
    reviewers = [f"reviewer-{n}" for n in range(4)]
    outcomes: list[tuple[str, str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(reviewers))

    def work(name: str) -> None:
        own = ReviewStore.from_url(store_url)  # own store object, own connections
        try:
            barrier.wait()
            deadline = time.time() + 60
            while time.time() < deadline and not own.progress(BATCH).complete:
                item = own.next_item(BATCH, name)
                if item is None:
                    time.sleep(0.01)  # rows held by others, or waiting for someone other than me
                    continue
                draw = int(hashlib.sha256(f"{name}{item['row_id']}".encode()).hexdigest(), 16)
                verdict = "accept" if draw % 3 else "reject"  # reviewers disagree on some rows
                outcomes.append((item["row_id"], name, decide(own, item["row_id"], name, verdict)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert {o for _, _, o in outcomes} == {"recorded"}  # leases: nobody was handed a row to lose a race on
    assert len({(row, who) for row, who, _ in outcomes}) == len(outcomes)
    progress = store.progress(BATCH)
    assert progress.complete and progress.decided == 16
    every = store.all_decisions(BATCH)
    for row_id, group in every.groupby("row_id"):
        assert group["reviewer_hmac"].is_unique, row_id
        verdicts = list(group.sort_values("review_round")["verdict"])
        assert len(verdicts) == rounds_needed(True, verdicts, policy), (row_id, verdicts)
    assert len(every) == progress.reviews == len(outcomes)


# --------------------------------------------------------------------------------------------------- migration
V1_SCHEMA = (  # the schema this module's version 1 created (before double review), verbatim
    "CREATE TABLE IF NOT EXISTS review_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS review_batches (batch TEXT PRIMARY KEY, current_version TEXT NOT NULL,"
    " updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS review_samples (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " pushed_at TEXT NOT NULL, deadline TEXT, PRIMARY KEY (batch, sample_version))",
    "CREATE TABLE IF NOT EXISTS review_slices (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " slice_key TEXT NOT NULL, lot_size INTEGER NOT NULL, sample_size INTEGER NOT NULL,"
    " acceptance_number INTEGER NOT NULL, rejection_number INTEGER NOT NULL, plan TEXT NOT NULL,"
    " details TEXT NOT NULL, PRIMARY KEY (batch, sample_version, slice_key))",
    "CREATE TABLE IF NOT EXISTS review_items (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " row_id TEXT NOT NULL, slice_key TEXT NOT NULL, sample_position INTEGER NOT NULL, payload TEXT NOT NULL,"
    " lease_holder TEXT, lease_until DOUBLE PRECISION, PRIMARY KEY (batch, sample_version, row_id))",
    "CREATE INDEX IF NOT EXISTS review_items_order ON review_items (batch, sample_version, sample_position)",
    "CREATE TABLE IF NOT EXISTS review_decisions (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " row_id TEXT NOT NULL, verdict TEXT NOT NULL, reason_category TEXT, reason_text TEXT NOT NULL,"
    " reviewer_hmac TEXT NOT NULL, decided_at TEXT NOT NULL, PRIMARY KEY (batch, sample_version, row_id))",
    "CREATE TABLE IF NOT EXISTS reviewers (reviewer_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL,"
    " created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS review_sessions (session_sha256 TEXT PRIMARY KEY, reviewer_id TEXT NOT NULL,"
    " token_sha256 TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
    " revoked_at DOUBLE PRECISION)",
    "CREATE INDEX IF NOT EXISTS review_sessions_reviewer ON review_sessions (reviewer_id)",
    "INSERT INTO review_meta VALUES ('schema_version', '1')",
    "INSERT INTO review_batches VALUES ('2026-11-20', 'v1', '2026-11-20T00:00:00+00:00')",
    "INSERT INTO review_samples VALUES ('2026-11-20', 'v1', '2026-11-20T00:00:00+00:00', NULL)",
    "INSERT INTO review_slices VALUES ('2026-11-20', 'v1', 'a/en', 30, 3, 0, 1, 'n=3, c=0', '{}')",
    "INSERT INTO review_items VALUES ('2026-11-20', 'v1', 'a/en#0', 'a/en', 0, '{\"instruction\": \"x\"}', NULL, NULL)",
    "INSERT INTO review_items VALUES ('2026-11-20', 'v1', 'a/en#1', 'a/en', 1, '{\"instruction\": \"y\"}', NULL, NULL)",
    "INSERT INTO review_items VALUES ('2026-11-20', 'v1', 'a/en#2', 'a/en', 2, '{\"instruction\": \"z\"}', NULL, NULL)",
    "INSERT INTO review_decisions VALUES ('2026-11-20', 'v1', 'a/en#0', 'reject', 'unsafe', 'old', 'old-reviewer',"
    " '2026-11-20T01:00:00+00:00')",
    "INSERT INTO review_decisions VALUES ('2026-11-20', 'v1', 'a/en#1', 'accept', NULL, '', 'old-reviewer',"
    " '2026-11-20T02:00:00+00:00')",
)


def test_a_version_1_database_is_migrated_and_keeps_its_decisions(store_url: str):
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite://")) as conn:
            for statement in V1_SCHEMA:
                conn.execute(statement)
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            for statement in V1_SCHEMA:
                conn.execute(statement)
    store = ReviewStore.from_url(store_url)  # migrates
    with store._transaction(write=False) as tx:
        assert tx.execute("SELECT value FROM review_meta WHERE key = 'schema_version'").fetchone()[0] == \
            SCHEMA_VERSION == "2"
    progress = store.progress(BATCH)
    assert (progress.total, progress.decided, progress.accepted, progress.rejected, progress.double_review) == \
        (3, 2, 1, 1, 0)
    decisions = store.decisions(BATCH)
    assert list(decisions["row_id"]) == ["a/en#0", "a/en#1"]
    assert tuple(decisions.iloc[0][["verdict", "reason_category", "reason_text", "reviewer_hmac", "decided_at"]]) == \
        ("reject", "unsafe", "old", "old-reviewer", "2026-11-20T01:00:00+00:00")
    assert list(store.all_decisions(BATCH)["review_round"]) == [1, 1]
    assert store.next_item(BATCH, ALICE)["row_id"] == "a/en#2"
    assert decide(store, "a/en#2", ALICE, "accept") == "recorded" and store.progress(BATCH).complete
    assert decide(store, "a/en#0", ALICE, "accept") == "already_decided"
    ReviewStore.from_url(store_url)  # opening again migrates nothing twice
    # the migrated store takes double review on a new sample
    items, slices = make_sample({"b/en": 2})
    store.push_sample(BATCH, "v2", items, slices, double_review=list(items["row_id"]))
    for row_id in items["row_id"]:
        assert decide_v(store, row_id, ALICE, "v2") == "recorded"
        assert decide_v(store, row_id, ALICE, "v2") == "reviewer_already_decided"
    assert store.progress(BATCH).awaiting_second == 2


def decide_v(store: ReviewStore, row_id: str, reviewer: str, version: str) -> str:
    return store.record_decision(BATCH, row_id, sample_version=version, reviewer_hmac=reviewer, verdict="accept",
                                 reason_category=None)


# ---------------------------------------------------------------------------------------------------- web app
SECRET_REASON = "alice-only-reason-7f3a9c"
SECRET_FORMULA = '=HYPERLINK("http://evil.example/alice-only","x")'  # alice's reason text in the CSV test


def article(page: str) -> str:
    return page[page.index('<article id="row"'):page.index("</article>")]


def test_two_reviewers_in_the_web_app_review_independently(tmp_path: Path):
    store, ids = pushed(f"sqlite:///{tmp_path / 'review.db'}", double=[0, 1, 2, 3, 4])
    app = create_app(store, reviewer_hash, b"session-secret-for-tests-0123456789")
    alice, bob, carol = TestClient(app), TestClient(app), TestClient(app)
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        sign_in(client, store, name)

    seen_by_alice, articles, alice_forms = [], {}, []
    page = alice.get(f"/batch/{BATCH}").text
    while 'id="decision-form"' in page:
        fields = form_of(page)
        seen_by_alice.append(fields["row_id"])
        articles[fields["row_id"]] = article(page)
        alice_forms.append(fields)
        rejecting = fields["row_id"] == ids[0]
        response = alice.post(f"/batch/{BATCH}/decide", data={
            **fields, "verdict": "reject" if rejecting else "accept",
            "reason_category": "other" if rejecting else "", "reason_text": SECRET_REASON if rejecting else ""})
        assert response.status_code == 200 and "Decision recorded" in response.text
        page = response.text
    assert seen_by_alice == ids  # every row once, never again after she decided it
    assert 'id="waiting"' in page and "reviewer other than you" in page  # the rest waits for someone else

    # alice submits her first form again (back button): refused, clearly, and nothing changes
    response = alice.post(f"/batch/{BATCH}/decide", data={**alice_forms[0], "verdict": "accept"})
    assert response.status_code == 409
    assert "you have already decided row" in response.text and 'id="error"' in response.text
    assert len(store.all_decisions(BATCH)) == 5
    assert store.decisions(BATCH).empty  # every row waits for its second review

    home = bob.get("/").text
    assert "5 awaiting a second review" in home
    seen_by_bob = []
    page = bob.get(f"/batch/{BATCH}").text
    while 'id="decision-form"' in page:
        fields = form_of(page)
        seen_by_bob.append(fields["row_id"])
        # independence: bob sees exactly the row alice saw, and nothing of her decision
        assert article(page) == articles[fields["row_id"]]
        assert SECRET_REASON not in page and "alice" not in page and reviewer_hash("alice") not in page
        assert " checked" not in page and " selected" not in page  # no verdict or category pre-filled
        response = bob.post(f"/batch/{BATCH}/decide", data={**fields, "verdict": "accept"})  # disagrees on row 0
        assert response.status_code == 200
        page = response.text
    assert seen_by_bob == ids
    progress = store.progress(BATCH)
    assert (progress.decided, progress.awaiting_third, progress.complete) == (4, 1, False)
    assert "1 awaiting a third review" in bob.get("/").text
    for client in (alice, bob):  # neither of the two gets the disputed row
        assert 'id="waiting"' in client.get(f"/batch/{BATCH}").text

    page = carol.get(f"/batch/{BATCH}").text
    fields = form_of(page)
    assert fields["row_id"] == ids[0] and SECRET_REASON not in page and article(page) == articles[ids[0]]
    response = carol.post(f"/batch/{BATCH}/decide", data={**fields, "verdict": "reject", "reason_category": "unsafe"})
    assert response.status_code == 200 and 'id="complete"' in response.text
    final = store.decisions(BATCH).set_index("row_id")
    assert tuple(final.loc[ids[0], ["verdict", "reason_category", "reviewer_hmac"]]) == \
        ("reject", "unsafe", reviewer_hash("carol"))
    report = agreement_report(store, BATCH)
    assert (report["pairs"], report["disagreements"], report["third_reviewer"]["sided_with_first"]) == (5, 1, 1)


# -------------------------------------------------------------------------------------------------------- CSV
def test_csv_export_import_with_double_review(tmp_path: Path):
    store, ids = pushed(f"sqlite:///{tmp_path / 'review.db'}", double=[0, 1, 2])
    for name in ("alice", "bob"):
        store.add_reviewer(name)
    hasher = reviewer_hash
    path = tmp_path / "alice.csv"
    assert export_csv(store, BATCH, path, reviewer_hmac=hasher("alice")) == 5
    header, rows = _read_csv(path)
    assert "double_review" not in header and header[-4:] == ["verdict", "reason_category", "reason_text",
                                                             "reviewer_id"]
    fills = {r[1]: ["reject", "other", SECRET_FORMULA, "alice"] if r[1] == ids[0] else ["accept", "", "", "alice"]
             for r in rows}
    _write_csv(path, header, [r[:-4] + fills[r[1]] for r in rows])
    result = import_csv(store, path, hasher)
    assert result.errors == () and result.recorded == 5
    again = import_csv(store, path, hasher)  # the same file twice: nothing new, no error
    assert (again.errors, again.recorded, again.already_decided) == ((), 0, 5)

    # the work file for another reviewer: the rows still waiting for a second review, without alice's verdicts
    assert export_csv(store, BATCH, tmp_path / "open.csv") == 3
    assert export_csv(store, BATCH, tmp_path / "mine.csv", reviewer_hmac=hasher("alice")) == 0
    assert export_csv(store, BATCH, tmp_path / "bob.csv", reviewer_hmac=hasher("bob")) == 3
    bob_header, bob_rows = _read_csv(tmp_path / "bob.csv")
    assert [r[1] for r in bob_rows] == ids[:3]
    assert all(r[-4:] == ["", "", "", ""] for r in bob_rows)
    assert not any("alice" in c for r in bob_rows for c in r)  # neither her verdict, text nor id

    # alice filling in the second review herself is refused, naming file, line, field and row; nothing applied
    changed = tmp_path / "alice-again.csv"
    starts = _write_csv(changed, bob_header, [r[:-4] + ["reject", "unsafe", "", "alice"] if r[1] == ids[1]
                                              else r[:-4] + ["accept", "", "", "bob"] for r in bob_rows])
    result = import_csv(store, changed, hasher)
    assert result.recorded == 0 and len(result.errors) == 1
    assert result.errors[0].startswith(f"{changed}, line {starts[1]}, field reviewer_id:")
    assert repr(ids[1]) in result.errors[0] and "already decided" in result.errors[0]
    assert store.progress(BATCH).awaiting_second == 3

    _write_csv(tmp_path / "bob.csv", bob_header, [r[:-4] + ["accept", "", "", "bob"] for r in bob_rows])
    result = import_csv(store, tmp_path / "bob.csv", hasher)
    assert result.errors == () and result.recorded == 3
    assert store.progress(BATCH).awaiting_third == 1  # alice rejected row 0, bob accepted it

    out = tmp_path / "decisions.csv"
    assert export_decisions_csv(store, BATCH, out) == 5
    assert out.stat().st_mode & 0o777 == 0o600
    header, rows = _read_csv(out)
    by_id = {r[1]: dict(zip(header, r)) for r in rows}
    first = by_id[ids[0]]
    assert (first["double_review"], first["state"], first["final_verdict"]) == ("yes", "awaiting_third", "")
    assert (first["review_1_reviewer_hmac"], first["review_1_verdict"], first["review_1_reason_text"]) == \
        (hasher("alice"), "reject", "'" + SECRET_FORMULA)  # escaped against formula injection
    assert (first["review_2_reviewer_hmac"], first["review_2_verdict"], first["review_3_verdict"]) == \
        (hasher("bob"), "accept", "")
    assert (by_id[ids[4]]["double_review"], by_id[ids[4]]["state"], by_id[ids[4]]["final_verdict"],
            by_id[ids[4]]["review_2_verdict"]) == ("no", "complete", "accept", "")


# -------------------------------------------------------------------------------------------------------- CLI
def test_cli_progress_shows_double_review_and_agreement(tmp_path: Path, monkeypatch, capsys):
    from synqa_dagster.review.cli import main

    url = f"sqlite:///{tmp_path / 'review.db'}"
    store, ids = pushed(url, double=[0, 1, 2, 3])
    for row_id in ids:
        decide(store, row_id, ALICE, "accept" if row_id != ids[2] else "reject")
    for row_id, verdict in zip(ids[:3], ("accept", "reject", "reject")):
        decide(store, row_id, BOB, verdict)
    assert main(["review", "progress", "--store", url]) == 0
    out = capsys.readouterr().out
    assert f"{BATCH}: 3/5 decided" in out
    assert "sampled 5, decided 3, awaiting second review 1, awaiting third review 1, undecided 0" in out
    kappa = sk_kappa(["accept", "accept", "reject"], ["accept", "reject", "reject"])
    assert f"kappa {kappa:.2f}, raw 67% over 3 pairs, 1 disagreements" in out
    assert f"{short_reviewer(ALICE)} / {short_reviewer(BOB)}" in out or \
        f"{short_reviewer(BOB)} / {short_reviewer(ALICE)}" in out
    assert "too few items (3 < 10)" in out and ALICE not in out
    assert main(["review", "progress", BATCH, "--json", "--min-pair-items", "2", "--store", url]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["awaiting_second"], report["awaiting_third"], report["pairs"]) == (1, 1, 3)
    assert report["kappa"] == pytest.approx(kappa) and report["by_pair"][0]["enough_items"] is True
    assert main(["review", "export-decisions", BATCH, str(tmp_path / "d.csv"), "--store", url]) == 0
    assert "not for reviewers" in capsys.readouterr().out
