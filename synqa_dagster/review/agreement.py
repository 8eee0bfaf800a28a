"""Reviewer agreement: which sampled rows get a second, independent reviewer, how the two (or three) decisions on
such a row resolve into one, and how much reviewers agree (Cohen's kappa).

Double review
    A share of each batch's sample (:class:`AgreementConfig`: ``second_review_fraction``, at least
    ``min_double_reviewed`` rows, never more than the sample) is flagged ``double_review`` when the sample is pushed
    to the review store (:meth:`~synqa_dagster.review.store.ReviewStore.push_sample`). Which rows: those with the
    smallest :func:`double_review_hash` (sha256 of ``"double-review:{seed}:{batch}:{row_id}"``) -- the same rows for
    the same (seed, batch, row ids) whatever their order, and unrelated to the sampling ranking
    (:func:`synqa_dagster.review.sampling.sampling_hash`), which puts a different prefix before the same fields.

    The store enforces independence: a flagged row is handed to (and may be decided by) a reviewer only while it
    needs another decision and that reviewer has not decided it yet; the web app never shows another reviewer's
    verdict. So the two decisions come from two different reviewers who did not see each other's.

Disagreement policy (``disagreement_policy``, recorded with the sample in the store)
    ``third_reviewer``: when the first two verdicts differ the row is opened for a third reviewer, who is neither of
    the first two; the third verdict decides. ``defect``: a disagreement counts as a defect (the row resolves to
    "reject") and the row is complete after two decisions.

When a row is complete (:func:`rounds_needed`)
    single-reviewed: one decision. Double-reviewed: two decisions that agree on the verdict; on disagreement two
    (``defect``) or three (``third_reviewer``). Only the accept / reject verdict counts as agreement; two rejects
    with different reason categories agree (the category disagreement is reported by :func:`agreement_stats`).

Resolution (:func:`resolve_decisions`): one final decision per complete row, in the columns of
``ReviewStore.decisions()`` (:data:`DECISION_COLUMNS`), so :func:`synqa_dagster.review.sampling.slice_verdicts` and
the human review gate read it unchanged.

Agreement (:func:`review_pairs`, :func:`agreement_stats`, :func:`agreement_report`): Cohen's kappa (Cohen 1960,
"A coefficient of agreement for nominal scales") and raw agreement on the first two decisions of every
double-reviewed row, per batch and per reviewer pair.

This module imports nothing from the rest of the review package (the store imports it).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    from synqa_dagster.review.store import ReviewStore

DISAGREEMENT_POLICIES = ("third_reviewer", "defect")
"""What a disagreement between the first two reviewers of a row leads to (see the module docstring)."""
DEFAULT_POLICY = "third_reviewer"
DisagreementPolicy = Literal["third_reviewer", "defect"]

DECISION_COLUMNS = ("row_id", "slice_key", "verdict", "reason_category", "reason_text", "reviewer_hmac", "decided_at")
"""One resolved decision per row (what ``ReviewStore.decisions()`` returns)."""
ALL_DECISION_COLUMNS = ("row_id", "slice_key", "double_review", "review_round", "verdict", "reason_category",
                        "reason_text", "reviewer_hmac", "decided_at")
"""Every reviewer's decision (what ``ReviewStore.all_decisions()`` returns): ``review_round`` is 1, 2 or 3."""
PAIR_COLUMNS = ("row_id", "slice_key", "reviewer_1", "verdict_1", "reason_category_1", "reviewer_2", "verdict_2",
                "reason_category_2", "agree")
"""The first two decisions of a double-reviewed row (what :func:`review_pairs` returns)."""
MAX_ROUNDS = 3
ROW_STATES = ("undecided", "awaiting_second", "awaiting_third", "complete")
DEFAULT_MIN_PAIR_ITEMS = 10
REVIEWER_PREFIX_CHARS = 12
DISAGREEMENT_TEXT = "reviewers disagreed (accept vs reject); counted as a defect"


class AgreementConfig(BaseModel):
    """Double review and reviewer agreement: the ``review.agreement`` section of the gate config.

    Attributes:
        second_review_fraction: share of each batch's sample (0-1) that gets a second, independent reviewer;
            the count is ``ceil(fraction * sample size)``. 0 together with ``min_double_reviewed: 0`` turns double
            review off.
        min_double_reviewed: floor on the number of double-reviewed rows per batch (capped at the sample size), so
            a small batch still yields enough pairs for a kappa.
        seed: mixed into :func:`double_review_hash`; change it to pick other (still reproducible) rows.
        disagreement_policy: ``third_reviewer`` (a disagreement opens the row for a third reviewer, neither of the
            first two, whose verdict decides) or ``defect`` (a disagreement counts as a reject; complete after two).
        min_pair_items: a reviewer pair with fewer double-reviewed rows than this gets its kappa reported but
            marked ``enough_items: false`` (kappa from a handful of rows is mostly noise).

    Double review needs at least two reviewers (three for ``third_reviewer`` disagreements): with fewer, flagged
    rows never complete and a batch waits for its deadline.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    second_review_fraction: float = Field(0.2, ge=0.0, le=1.0)
    min_double_reviewed: int = Field(10, ge=0)
    seed: int = 0
    disagreement_policy: DisagreementPolicy = DEFAULT_POLICY
    min_pair_items: int = Field(DEFAULT_MIN_PAIR_ITEMS, ge=1)

    @property
    def enabled(self) -> bool:
        """Whether any row can be double-reviewed."""
        return self.second_review_fraction > 0 or self.min_double_reviewed > 0


# ----------------------------------------------------------------------------------------------- selection
def double_review_hash(seed: int, batch: str, row_id: str) -> str:
    """The double-review ranking key of a row: sha256 (hex) of ``f"double-review:{seed}:{batch}:{row_id}"``."""
    return hashlib.sha256(f"double-review:{seed}:{batch}:{row_id}".encode("utf-8")).hexdigest()


def double_review_count(sample_size: int, config: AgreementConfig) -> int:
    """How many of ``sample_size`` sampled rows are double-reviewed:
    ``min(sample_size, max(min_double_reviewed, ceil(second_review_fraction * sample_size)))``."""
    if sample_size <= 0 or not config.enabled:
        return 0
    # round first: 0.2 * 15 is 3.0000000000000004 in binary floating point, which must not become 4
    share = math.ceil(round(config.second_review_fraction * sample_size, 9))
    return min(sample_size, max(config.min_double_reviewed, share))


def select_double_review(row_ids: Iterable[Any], batch: str, config: AgreementConfig) -> list[str]:
    """The sampled rows that get a second reviewer: the :func:`double_review_count` ids with the smallest
    :func:`double_review_hash`, in that (hash) order. Deterministic in (seed, batch, set of ids).

    Raises:
        ValueError: an empty or duplicated row id, or an empty batch.
    """
    if not isinstance(batch, str) or not batch:
        raise ValueError("batch must be a non-empty string")
    ids = [str(r) for r in row_ids]
    if any(not r.strip() for r in ids):
        raise ValueError("row ids must be non-empty")
    if len(set(ids)) != len(ids):
        raise ValueError(f"row ids are not unique: {sorted({r for r in ids if ids.count(r) > 1})[:5]}")
    ranked = sorted(ids, key=lambda r: (double_review_hash(config.seed, batch, r), r))
    return ranked[:double_review_count(len(ids), config)]


# ------------------------------------------------------------------------------------------------ resolution
def check_policy(policy: Any) -> str:
    """``policy`` if it is one of :data:`DISAGREEMENT_POLICIES`, else ValueError."""
    if policy not in DISAGREEMENT_POLICIES:
        raise ValueError(f"disagreement_policy must be one of {', '.join(DISAGREEMENT_POLICIES)}; got {policy!r}")
    return str(policy)


def rounds_needed(double_review: bool, verdicts: Sequence[str], policy: str) -> int:
    """How many decisions a row needs in all, given the verdicts it has so far (in round order).

    1 for a single-reviewed row; 2 for a double-reviewed row, or 3 when its first two verdicts differ under
    ``third_reviewer``.
    """
    if not double_review:
        return 1
    if len(verdicts) >= 2 and verdicts[0] != verdicts[1] and policy == "third_reviewer":
        return 3
    return 2


def row_state(double_review: bool, verdicts: Sequence[str], policy: str) -> str:
    """One of :data:`ROW_STATES`: "undecided" (no decision), "awaiting_second" (a double-reviewed row with one),
    "awaiting_third" (two that disagree, under ``third_reviewer``) or "complete"."""
    if not verdicts:
        return "undecided"
    if len(verdicts) >= rounds_needed(double_review, verdicts, policy):
        return "complete"
    return "awaiting_second" if len(verdicts) == 1 else "awaiting_third"


def resolve_decisions(all_decisions: pd.DataFrame, policy: str) -> pd.DataFrame:
    """One final decision per complete row, in the columns of today's ``ReviewStore.decisions()``.

    Args:
        all_decisions: every reviewer's decision (``ReviewStore.all_decisions()``): row_id, verdict,
            double_review, review_round, and (filled with None when absent) slice_key, reason_category,
            reason_text, reviewer_hmac, decided_at.
        policy: the disagreement policy (:data:`DISAGREEMENT_POLICIES`).

    Returns:
        :data:`DECISION_COLUMNS`, one row per complete row, in the order rows first appear in ``all_decisions``;
        rows still waiting for a decision are left out. Per row (decisions taken in ``review_round`` order):

        * single-reviewed: the first decision as it is (later ones, e.g. from before the row's flag was removed,
          are ignored).
        * double-reviewed, the first two verdicts agree: that verdict; reason category, reason text and reviewer
          of the FIRST decision (a reject pair with different categories keeps the first reviewer's; the
          agreement report counts the category disagreement); ``decided_at`` of the second (when the row was
          settled).
        * disagreement, ``third_reviewer``: the third decision as it is (its verdict decides; its reviewer, category
          and text); waiting while there is none.
        * disagreement, ``defect``: "reject", with the rejecting reviewer's category and reviewer, the reason text
          :data:`DISAGREEMENT_TEXT` (followed by ": " and the rejecting reviewer's text, if any), and
          ``decided_at`` of the later decision.

    Raises:
        ValueError: a missing required column, an unknown policy, a verdict other than accept / reject, or a
            row with the same round twice.
    """
    policy = check_policy(policy)
    if not isinstance(all_decisions, pd.DataFrame):
        raise ValueError(f"all_decisions must be a pandas DataFrame; got {type(all_decisions).__name__}")
    missing = [c for c in ("row_id", "verdict", "double_review", "review_round") if c not in all_decisions.columns]
    if missing:
        raise ValueError(f"all_decisions lacks column(s) {missing}")
    groups: dict[str, list[dict]] = {}
    for record in all_decisions.to_dict(orient="records"):
        verdict = record["verdict"]
        if verdict not in ("accept", "reject"):
            raise ValueError(f"all_decisions row_id {record['row_id']!r}: verdict must be accept or reject; "
                             f"got {verdict!r}")
        groups.setdefault(str(record["row_id"]), []).append(record)
    out = []
    for row_id, records in groups.items():
        records.sort(key=lambda r: int(r["review_round"]))
        rounds = [int(r["review_round"]) for r in records]
        if len(set(rounds)) != len(rounds):
            raise ValueError(f"all_decisions row_id {row_id!r}: review round repeated ({rounds})")
        resolved = _resolve_row(records, policy)
        if resolved is not None:
            out.append(tuple(_none_if_missing(resolved.get(c)) for c in DECISION_COLUMNS))
    return pd.DataFrame(out, columns=list(DECISION_COLUMNS), dtype=object)


def _resolve_row(records: list[dict], policy: str) -> dict | None:
    first = records[0]
    if not _truthy(first["double_review"]):
        return {**first, "row_id": str(first["row_id"])}
    if len(records) < 2:
        return None
    second = records[1]
    if first["verdict"] == second["verdict"]:
        return {**first, "row_id": str(first["row_id"]), "decided_at": _later(first, second)}
    if policy == "third_reviewer":
        return {**records[2], "row_id": str(first["row_id"])} if len(records) >= 3 else None
    rejecting = first if first["verdict"] == "reject" else second
    text = rejecting.get("reason_text") or ""
    return {**rejecting, "row_id": str(first["row_id"]), "verdict": "reject",
            "reason_text": DISAGREEMENT_TEXT + (f": {text}" if text else ""), "decided_at": _later(first, second)}


def _none_if_missing(value: Any) -> Any:
    """None for NaN / NA / NaT (a frame read back from Parquet or built by pandas), else the value."""
    try:
        return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value
    except (TypeError, ValueError):
        return value


def _later(a: dict, b: dict) -> Any:
    times = [t for t in (a.get("decided_at"), b.get("decided_at")) if _none_if_missing(t) is not None]
    return max(times) if times else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return bool(value) and not pd.isna(value)
    except (TypeError, ValueError):
        return bool(value)


# ------------------------------------------------------------------------------------------------- agreement
def short_reviewer(reviewer_hmac: Any, chars: int = REVIEWER_PREFIX_CHARS) -> str:
    """A short, display-only prefix of a reviewer HMAC id (``hmac-sha256:<hex>`` -> the first ``chars`` hex)."""
    text = str(reviewer_hmac)
    return text.split(":", 1)[1][:chars] if text.startswith("hmac-sha256:") else text[:chars]


def review_pairs(all_decisions: pd.DataFrame) -> pd.DataFrame:
    """The first two decisions of every double-reviewed row that has two: :data:`PAIR_COLUMNS` (reviewer_1 /
    verdict_1 / reason_category_1 from round 1, ..._2 from round 2; ``agree`` on the verdict), in row order."""
    records = all_decisions.to_dict(orient="records") if len(all_decisions) else []
    rows: dict[str, dict[int, dict]] = {}
    for record in records:
        if _truthy(record.get("double_review")):
            rows.setdefault(str(record["row_id"]), {})[int(record["review_round"])] = record
    out = []
    for row_id, by_round in rows.items():
        if 1 in by_round and 2 in by_round:
            a, b = by_round[1], by_round[2]
            out.append((row_id, a.get("slice_key"), a.get("reviewer_hmac"), a["verdict"], a.get("reason_category"),
                        b.get("reviewer_hmac"), b["verdict"], b.get("reason_category"), a["verdict"] == b["verdict"]))
    return pd.DataFrame(out, columns=list(PAIR_COLUMNS), dtype=object)


def cohen_kappa(first: Sequence[Any], second: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the observed agreement and ``p_e = sum_k p1(k) * p2(k)`` the agreement expected by chance from each
    rater's own label frequencies (computed in integers, so no rounding decides the degenerate case). Returns None
    when kappa is undefined: no items, or ``p_e == 1`` (both raters gave every item one and the same label).
    Matches ``sklearn.metrics.cohen_kappa_score`` (unweighted) wherever that is defined.
    """
    if len(first) != len(second):
        raise ValueError(f"the raters labelled different numbers of items ({len(first)} and {len(second)})")
    n = len(first)
    if n == 0:
        return None
    agree = sum(1 for a, b in zip(first, second) if a == b)
    c1, c2 = Counter(first), Counter(second)
    chance = sum(c1[k] * c2[k] for k in c1)  # n^2 * p_e
    denominator = n * n - chance
    if denominator == 0:
        return None
    return (n * agree - chance) / denominator


def _agreement_block(first: Sequence[Any], second: Sequence[Any], what: str) -> dict:
    n = len(first)
    agree = sum(1 for a, b in zip(first, second) if a == b)
    kappa = cohen_kappa(first, second)
    note = None
    if n == 0:
        note = "no pairs yet: kappa undefined"
    elif kappa is None:
        label = next(iter(first))
        note = (f"kappa undefined: both reviewers gave every {what} the same label ({label!r}); "
                f"raw agreement reported instead")
    return {"n": n, "agreement": agree / n if n else None, "kappa": kappa, "kappa_note": note,
            "disagreements": n - agree}


def agreement_stats(pairs: pd.DataFrame, min_pair_items: int = DEFAULT_MIN_PAIR_ITEMS) -> dict:
    """Agreement over :func:`review_pairs` output, JSON-able.

    Returns:
        ``{"verdict": block, "reason_category": block, "by_pair": [...], "min_pair_items": int}`` where a block is
        ``{"n", "agreement" (0-1 or None), "kappa" (or None), "kappa_note" (why kappa is None, else None),
        "disagreements"}``:

        * ``verdict``: accept / reject of all pairs; rater 1 = each row's first decision, rater 2 = its second
          (reviewers rotate, so this is kappa between "first look" and "second look").
        * ``reason_category``: the category, over the pairs both reviewers rejected.
        * ``by_pair``: per unordered reviewer pair (sorted by HMAC id; rater A = the smaller id, so each pair's
          kappa is a proper two-fixed-rater kappa), most pairs first: ``{"reviewers": [prefix_a, prefix_b],
          **verdict block, "enough_items": n >= min_pair_items, "note": "too few items (n < min)" or None}``.
    """
    pairs = pairs if len(pairs) else pd.DataFrame(columns=list(PAIR_COLUMNS))
    v1, v2 = list(pairs["verdict_1"]), list(pairs["verdict_2"])
    both_rejected = pairs[(pairs["verdict_1"] == "reject") & (pairs["verdict_2"] == "reject")]
    result = {
        "verdict": _agreement_block(v1, v2, "row"),
        "reason_category": _agreement_block([str(c) for c in both_rejected["reason_category_1"]],
                                            [str(c) for c in both_rejected["reason_category_2"]],
                                            "row both rejected"),
        "min_pair_items": int(min_pair_items),
    }
    by_pair: dict[tuple[str, str], tuple[list, list]] = {}
    for r1, a, r2, b in zip(pairs["reviewer_1"], v1, pairs["reviewer_2"], v2):
        key = tuple(sorted((str(r1), str(r2))))
        labels = by_pair.setdefault(key, ([], []))
        first, second = (a, b) if str(r1) == key[0] else (b, a)
        labels[0].append(first)
        labels[1].append(second)
    per_pair = []
    for (ra, rb), (a, b) in sorted(by_pair.items(), key=lambda kv: (-len(kv[1][0]), kv[0])):
        block = _agreement_block(a, b, "row")
        enough = block["n"] >= min_pair_items
        per_pair.append({"reviewers": [short_reviewer(ra), short_reviewer(rb)], **block, "enough_items": enough,
                         "note": None if enough else f"too few items ({block['n']} < {min_pair_items})"})
    result["by_pair"] = per_pair
    return result


def agreement_report(store: ReviewStore, batch: str, sample_version: str | None = None, *,
                     min_pair_items: int = DEFAULT_MIN_PAIR_ITEMS) -> dict:
    """Reviewer agreement on one batch's sample, JSON-able (for ``synqa review progress`` and the handover card).

    Args:
        store: the review store.
        batch: the batch. sample_version: default the current one.
        min_pair_items: see :attr:`AgreementConfig.min_pair_items`.

    Returns:
        ``{"batch", "sample_version", "disagreement_policy", "sampled", "double_reviewed" (rows flagged),
        "pairs" (flagged rows with two decisions), "awaiting_second", "awaiting_third", "agreement" (raw verdict
        agreement 0-1 or None), "kappa" (or None), "kappa_note" (why kappa is None), "disagreements",
        "verdict": block, "reason_category": block, "by_pair": [...], "min_pair_items",
        "third_reviewer": {"decided", "awaiting", "accepted", "rejected", "sided_with_first", "sided_with_second"},
        "defects_from_disagreement" (rows the ``defect`` policy turned into rejects), "method"}`` -- blocks and
        ``by_pair`` as in :func:`agreement_stats`; reviewers appear only as short HMAC prefixes.

    Raises:
        UnknownBatchError: the batch was never pushed.
    """
    version = sample_version or store.progress(batch).sample_version
    policy = store.disagreement_policy(batch, version)
    status = store.row_status(batch, version)
    decisions = store.all_decisions(batch, version)
    pairs = review_pairs(decisions)
    stats = agreement_stats(pairs, min_pair_items)
    states = Counter(status.loc[status["double_review"].astype(bool), "state"]) if len(status) else Counter()
    disagreed = set(pairs.loc[~pairs["agree"].astype(bool), "row_id"]) if len(pairs) else set()
    third = {"decided": 0, "awaiting": 0, "accepted": 0, "rejected": 0, "sided_with_first": 0, "sided_with_second": 0}
    by_row: dict[str, dict[int, str]] = {}
    for row_id, rnd, verdict in zip(decisions["row_id"], decisions["review_round"], decisions["verdict"]):
        by_row.setdefault(str(row_id), {})[int(rnd)] = verdict
    defects = 0
    for row_id in disagreed:
        rounds = by_row.get(row_id, {})
        if policy == "defect":
            defects += 1
        elif 3 in rounds:
            third["decided"] += 1
            third["accepted" if rounds[3] == "accept" else "rejected"] += 1
            third["sided_with_first" if rounds[3] == rounds[1] else "sided_with_second"] += 1
        else:
            third["awaiting"] += 1
    verdict = stats["verdict"]
    return {
        "batch": batch,
        "sample_version": version,
        "disagreement_policy": policy,
        "sampled": int(len(status)),
        "double_reviewed": int(status["double_review"].astype(bool).sum()) if len(status) else 0,
        "pairs": verdict["n"],
        "awaiting_second": int(states.get("awaiting_second", 0)),
        "awaiting_third": int(states.get("awaiting_third", 0)),
        "agreement": verdict["agreement"],
        "kappa": verdict["kappa"],
        "kappa_note": verdict["kappa_note"],
        "disagreements": verdict["disagreements"],
        **stats,
        "third_reviewer": third,
        "defects_from_disagreement": defects,
        "method": ("Cohen's kappa and raw agreement on accept/reject over the first two decisions of each "
                   "double-reviewed row (rater 1 = first decision, rater 2 = second); per reviewer pair with the "
                   "pair's reviewers as fixed raters; reason_category over the pairs both reviewers rejected"),
    }


def format_rate(value: float | None) -> str:
    """A 0-1 share as a percentage ("85%"), or "n/a"."""
    return "n/a" if value is None else f"{100 * value:.0f}%"


def agreement_lines(report: dict) -> list[str]:
    """Human-readable lines of an :func:`agreement_report` (used by ``synqa review progress``)."""
    if not report["double_reviewed"]:
        return ["  double review: none in this sample"]
    lines = [f"  double review: {report['double_reviewed']} of {report['sampled']} rows "
             f"(policy {report['disagreement_policy']}); awaiting second review {report['awaiting_second']}, "
             f"awaiting third review {report['awaiting_third']}"]
    if report["kappa"] is not None:
        lines.append(f"  agreement: kappa {report['kappa']:.2f}, raw {format_rate(report['agreement'])} over "
                     f"{report['pairs']} pairs, {report['disagreements']} disagreements")
    else:
        lines.append(f"  agreement: raw {format_rate(report['agreement'])} over {report['pairs']} pairs "
                     f"({report['kappa_note']})")
    for pair in report["by_pair"]:
        kappa = "kappa n/a" if pair["kappa"] is None else f"kappa {pair['kappa']:.2f}"
        note = f" [{pair['note']}]" if pair["note"] else ""
        lines.append(f"    {pair['reviewers'][0]} / {pair['reviewers'][1]}: {kappa}, raw "
                     f"{format_rate(pair['agreement'])} over {pair['n']} pairs{note}")
    t = report["third_reviewer"]
    if report["disagreement_policy"] == "third_reviewer" and (t["decided"] or t["awaiting"]):
        lines.append(f"  third reviewer: {t['decided']} decided ({t['accepted']} accepted, {t['rejected']} "
                     f"rejected), {t['awaiting']} awaiting")
    if report["defects_from_disagreement"]:
        lines.append(f"  {report['defects_from_disagreement']} disagreements counted as defects")
    return lines
