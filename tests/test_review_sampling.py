"""Human-review sampling plans: ISO 2859-1 tables against published values, zero-acceptance sizes, reproducible
stratified draws and slice verdicts.

Expected table values are read from published renderings of ISO 2859-1:1999 Tables 1 / 2-A (numerically identical
to ANSI/ASQ Z1.4-2008 and MIL-STD-105E Tables I / II-A), never from the module under test:

* Table 1: the "AQL sampling chart" (ANSI/ASQC Z1.4 / MIL-STD-105E / ISO 2859 Table I).
* Table 2-A, whole rows: MIL-STD-105E Table II-A transcription (Ac/Re sequence of each code-letter row).
* Table 2-A, cells with arrows: NIBS AC-TABLE (MIL-STD-105E level II extract, AQL 0.65-15, Re numbers and arrows).
* Table 2-A, arrow cases: plans quoted from ISO 2859-1:1999 by Jenkins, Peck & Fernando (PLOS 2023, figshare
  22583454) for lots of 35 001-500 000; the AQL Inspector's Rule note for code letter R at AQL 0.015.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats

from synqa_dagster.review.sampling import (
    AQL_VALUES,
    CODE_LETTERS,
    TABLE_2A,
    Iso2859Plan,
    ReviewSamplingConfig,
    ZeroAcceptancePlan,
    acceptance_probability,
    code_letter,
    draw_sample,
    guarantee_text,
    hypergeometric_defect_bound,
    iso2859_plan,
    limiting_quality,
    plan_for,
    slice_keys,
    slice_verdicts,
    table_2a_plan,
    zero_acceptance_plan,
    zero_acceptance_sample_size,
)

# ------------------------------------------------------------------------------------------------ Table 1


@pytest.mark.parametrize(("lot", "level", "letter"), [
    (501, "II", "J"), (1200, "II", "J"),           # brief: 501-1200 level II -> J
    (91, "S-3", "C"), (150, "S-3", "C"),           # 91-150 S-3 is C in the published table (S-4 is D)
    (150, "S-4", "D"),
    (35001, "III", "P"), (150000, "III", "P"),     # 35 001-150 000 level III -> P
    (2, "I", "A"), (8, "III", "B"), (9, "II", "B"), (15, "III", "C"),
    (16, "S-3", "B"), (50, "S-2", "B"), (51, "S-1", "B"), (280, "II", "G"), (281, "II", "H"),
    (3200, "I", "H"), (10000, "S-4", "G"), (10001, "S-4", "H"), (35000, "I", "K"),
    (500000, "II", "P"), (500001, "II", "Q"), (500001, "III", "R"), (10**7, "S-1", "D"), (10**7, "S-3", "H"),
])
def test_table_1_code_letters_match_published_table(lot, level, letter):
    assert code_letter(lot, level) == letter


def test_table_1_rejects_bad_input():
    with pytest.raises(ValueError, match="inspection_level"):
        code_letter(100, "IV")
    with pytest.raises(ValueError, match="lot_size"):
        code_letter(0, "II")


# ------------------------------------------------------------------------------------------------ Table 2-A

ROW_PLANS_PUBLISHED = {  # MIL-STD-105E Table II-A: the Ac/Re pairs of each code-letter row, left to right
    "A": "0/1 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31",
    **{letter: "0/1 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22 30/31 44/45" for letter in "BCDE"},
    **{letter: "0/1 1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22" for letter in "FGHJKLMNPQ"},
    "R": "1/2 2/3 3/4 5/6 7/8 10/11 14/15 21/22",
}


@pytest.mark.parametrize("letter", list(CODE_LETTERS))
def test_table_2a_rows_hold_the_published_plans_in_order(letter):
    plans = [f"{cell[0]}/{cell[1]}" for cell in TABLE_2A[letter] if not isinstance(cell, str)]
    assert " ".join(plans) == ROW_PLANS_PUBLISHED[letter]


NIBS_LEVEL_II = {  # code letter -> cells at AQL 0.65 1.0 1.5 2.5 4.0 6.5 10 15: Re number, v (down) or ^ (up)
    "A": "v v v v v 1 ^ v", "B": "v v v v 1 ^ v 2", "C": "v v v 1 ^ v 2 3", "D": "v v 1 ^ v 2 3 4",
    "E": "v 1 ^ v 2 3 4 6", "F": "1 ^ v 2 3 4 6 8", "G": "^ v 2 3 4 6 8 11", "H": "v 2 3 4 6 8 11 15",
    "J": "2 3 4 6 8 11 15 22", "K": "3 4 6 8 11 15 22 ^", "L": "4 6 8 11 15 22 ^ ^", "M": "6 8 11 15 22 ^ ^ ^",
    "N": "8 11 15 22 ^ ^ ^ ^", "P": "11 15 22 ^ ^ ^ ^ ^", "Q": "15 22 ^ ^ ^ ^ ^ ^",
}


@pytest.mark.parametrize("letter", list(NIBS_LEVEL_II))
def test_table_2a_cells_and_arrows_match_nibs_extract(letter):
    columns = [AQL_VALUES.index(a) for a in (0.65, 1.0, 1.5, 2.5, 4.0, 6.5, 10.0, 15.0)]
    cells = [TABLE_2A[letter][c] for c in columns]
    got = " ".join(c if isinstance(c, str) else str(c[1]) for c in cells)
    assert got == NIBS_LEVEL_II[letter]


@pytest.mark.parametrize(("lot", "level", "aql", "n", "ac", "re", "letter"), [
    (1000, "II", 1.0, 80, 2, 3, "J"),          # brief: code J, AQL 1.0
    (20000, "II", 0.4, 315, 3, 4, "M"),
    (40000, "S-4", 0.65, 80, 1, 2, "J"),       # Jenkins et al.: 0.65, S-4 -> 80, 1/2
    (400000, "S-3", 0.65, 20, 0, 1, "F"),      # 0.65, S-3 -> 20, 0/1 (G has an up arrow)
    (40000, "S-4", 0.40, 125, 1, 2, "K"),      # 0.40, S-4 -> 125, 1/2 (J has a down arrow)
    (40000, "S-3", 0.40, 32, 0, 1, "G"),       # 0.40, S-3 -> 32, 0/1
    (500000, "S-4", 0.25, 50, 0, 1, "H"),      # 0.25, S-4 -> 50, 0/1 (J has an up arrow)
    (40000, "S-4", 0.15, 80, 0, 1, "J"),       # 0.15, S-4 -> 80, 0/1
    (10**6, "III", 0.015, 800, 0, 1, "P"),     # AQL Inspector's Rule: R at 0.015 -> P, 800, 0/1
    (10**6, "III", 0.010, 1250, 0, 1, "Q"),    # R at 0.010: up arrow -> Q 0/1
    (3000, "II", 6.5, 125, 14, 15, "K"),
    (100, "II", 2.5, 20, 1, 2, "F"),           # F: 20, 1/2
    (60, "II", 2.5, 20, 1, 2, "F"),            # E at 2.5 is a down arrow -> F
])
def test_iso2859_plans_including_arrow_cases(lot, level, aql, n, ac, re, letter):
    decision = iso2859_plan(lot, level, aql)
    assert (decision.sample_size, decision.acceptance_number, decision.rejection_number) == (n, ac, re)
    assert decision.code_letter == letter
    assert decision.table_code_letter == code_letter(lot, level)
    assert not decision.full_inspection


def test_code_a_with_aql_1_follows_the_arrow_to_a_13_row_plan():
    plan_letter, ac, re = table_2a_plan("A", 1.0)
    assert (plan_letter, ac, re) == ("E", 0, 1)
    decision = iso2859_plan(20, "S-1", 1.0)  # S-1 for 16-25 -> A; the arrow leads to n=13, Ac 0 (< lot of 20)
    assert (decision.table_code_letter, decision.code_letter, decision.sample_size) == ("A", "E", 13)
    assert "arrow" in decision.description


def test_every_arrow_leads_to_the_nearest_plan_in_its_direction():
    for row, letter in enumerate(CODE_LETTERS):
        for column, aql in enumerate(AQL_VALUES):
            cell = TABLE_2A[letter][column]
            plan_letter, ac, re = table_2a_plan(letter, aql)
            assert re == ac + 1
            target = CODE_LETTERS.index(plan_letter)
            if not isinstance(cell, str):
                assert target == row
                continue
            step = 1 if cell == "v" else -1
            if 0 <= row + step < len(CODE_LETTERS) and (target - row) * step > 0:
                between = [TABLE_2A[CODE_LETTERS[i]][column] for i in range(row + step, target, step)]
                assert all(isinstance(c, str) for c in between), (letter, aql)
            else:  # only the two cells whose printed arrow points off the table
                assert (letter, aql) in {("A", 10.0), ("R", 0.015)}


def test_full_inspection_when_sample_reaches_lot_size():
    for lot in (1, 2, 5, 8, 13):
        decision = iso2859_plan(lot, "II", 1.0)
        assert decision.sample_size == lot and decision.full_inspection
        assert (decision.acceptance_number, decision.table_sample_size) == (0, 13)
        assert "100% inspection" in decision.description
    decision = iso2859_plan(5, "II", 10)  # A at AQL 10 -> C: n=5, Ac 1 = the lot, Ac kept
    assert (decision.sample_size, decision.acceptance_number, decision.full_inspection) == (5, 1, True)
    with pytest.raises(ValueError, match="lot_size"):
        iso2859_plan(0, "II", 1.0)


def test_aql_must_be_a_standard_value():
    with pytest.raises(ValidationError, match="0.010, 0.015"):
        Iso2859Plan(aql=1.2)
    assert Iso2859Plan(aql="0.4").aql == 0.4
    assert Iso2859Plan(aql=1).aql == 1.0
    with pytest.raises(ValueError, match="allowed values"):
        iso2859_plan(100, "II", 3.0)


# ------------------------------------------------------------------------------------------- zero acceptance


@pytest.mark.parametrize(("confidence", "rate", "n"), [(0.95, 0.05, 59), (0.90, 0.10, 22), (0.99, 0.01, 459),
                                                       (0.75, 0.5, 2), (0.95, 0.10, 29)])
def test_zero_acceptance_sample_sizes(confidence, rate, n):
    assert zero_acceptance_sample_size(confidence, rate) == n


def test_zero_acceptance_size_is_the_smallest_that_gives_the_guarantee():
    for confidence in (0.5, 0.8, 0.9, 0.95, 0.975, 0.99):
        for rate in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3):
            n = zero_acceptance_sample_size(confidence, rate)
            assert (1 - rate) ** n <= 1 - confidence + 1e-12
            assert (1 - rate) ** (n - 1) > 1 - confidence


def test_zero_acceptance_plan_caps_at_lot_and_states_guarantee():
    small = zero_acceptance_plan(10, 0.90, 0.10)
    assert (small.sample_size, small.acceptance_number, small.full_inspection) == (10, 0, True)
    big = zero_acceptance_plan(1000, 0.90, 0.10)
    assert (big.sample_size, big.acceptance_number, big.rejection_number) == (22, 0, 1)
    assert "with confidence 90% the slice's defect rate is <= 10.0%" in big.description
    with pytest.raises(ValidationError):
        ZeroAcceptancePlan(confidence=1.0)


@pytest.mark.parametrize(("lot", "n", "confidence"), [(40, 22, 0.90), (100, 22, 0.90), (1000, 59, 0.95),
                                                      (60, 59, 0.95), (500, 10, 0.5)])
def test_hypergeometric_bound_against_scipy(lot, n, confidence):
    bound = hypergeometric_defect_bound(lot, n, confidence)
    assert stats.hypergeom.pmf(0, lot, bound, n) > 1 - confidence
    assert stats.hypergeom.pmf(0, lot, bound + 1, n) <= 1 - confidence + 1e-12


def test_operating_characteristic_against_scipy():
    for n, c, p in [(80, 2, 0.01), (13, 0, 0.05), (315, 14, 0.04), (2000, 21, 0.0065)]:
        assert acceptance_probability(n, c, p) == pytest.approx(stats.binom.cdf(c, n, p), rel=1e-9)
        lq = limiting_quality(n, c, 0.10)
        assert stats.binom.cdf(c, n, lq) == pytest.approx(0.10, abs=1e-6)


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_match_documented_yaml():
    yaml_dict = {"risk_tier": "medium", "strata": ["intent", "locale"], "seed": 0, "tiers": {
        "low": {"kind": "zero_acceptance", "confidence": 0.90, "max_defect_rate": 0.10},
        "medium": {"kind": "iso2859", "inspection_level": "II", "aql": 1.0},
        "high": {"kind": "iso2859", "inspection_level": "III", "aql": 0.4}}}
    assert ReviewSamplingConfig.model_validate(yaml_dict) == ReviewSamplingConfig()
    assert isinstance(ReviewSamplingConfig(risk_tier="low").plan, ZeroAcceptancePlan)


@pytest.mark.parametrize(("data", "message"), [
    ({"risk_tier": "extreme"}, "risk_tier 'extreme'"),
    ({"tiers": {"medium": {"kind": "iso2859", "aql": 2.0}}}, "allowed values"),
    ({"tiers": {"medium": {"kind": "sequential"}}}, "kind"),
    ({"tiers": {"medium": {"kind": "iso2859", "inspection_level": "IV"}}}, "inspection_level"),
    ({"strata": ["intent", "intent"]}, "more than once"),
    ({"bogus": 1}, "bogus"),
])
def test_config_errors_name_the_field(data, message):
    with pytest.raises(ValidationError, match=message):
        ReviewSamplingConfig.model_validate(data)


def test_plan_for_uses_the_configured_tier():
    assert plan_for(ReviewSamplingConfig(risk_tier="high"), 1000).sample_size == 125  # III -> K; 0.4: 125, 1/2
    assert plan_for(ReviewSamplingConfig(risk_tier="low"), 1000).sample_size == 22
    assert "does NOT bound" in guarantee_text(Iso2859Plan())
    assert "90% confidence" in guarantee_text(ZeroAcceptancePlan())


# ------------------------------------------------------------------------------------------------ sampling


def _rows(sizes: dict[tuple[str, str], int], prefix: str = "r") -> pd.DataFrame:
    records = []
    for (intent, locale), size in sizes.items():
        for i in range(size):
            records.append({"row_id": f"{prefix}-{intent}-{locale}-{i}", "intent": intent, "locale": locale,
                            "technique": "magpie", "instruction": f"q {i}", "response": f"a {i}"})
    return pd.DataFrame.from_records(records)


SIZES = {("refund", "en-GB"): 1, ("refund", "de-DE"): 7, ("balance", "en-GB"): 30, ("balance", "de-DE"): 200,
         ("card", "en-GB"): 1300}
# level II, AQL 1.0 from the published tables: 1 -> 100%; 7 (A -> E, 13) -> 100%; 30 (D -> E) 13;
# 200 (G, down arrow -> H) 50; 1300 (K) 125
EXPECTED_N = {"refund/en-GB": 1, "refund/de-DE": 7, "balance/en-GB": 13, "balance/de-DE": 50, "card/en-GB": 125}


def test_stratified_sample_sizes_per_slice():
    draw = draw_sample(_rows(SIZES), ReviewSamplingConfig(), "2026-11-01")
    counts = draw.rows.groupby("slice_key").size().to_dict()
    assert counts == EXPECTED_N
    assert dict(zip(draw.slices["slice_key"], draw.slices["sample_size"])) == EXPECTED_N
    assert dict(zip(draw.slices["slice_key"], draw.slices["lot_size"])) == {
        f"{i}/{loc}": size for (i, loc), size in SIZES.items()}
    assert sorted(draw.rows["sample_position"]) == list(range(sum(EXPECTED_N.values())))
    assert draw.plan["sample_total"] == sum(EXPECTED_N.values()) and draw.plan["slices"] == 5
    assert {"row_id", "intent", "locale", "technique", "instruction", "response"} <= set(draw.rows.columns)


def test_sample_is_reproducible_in_any_input_order():
    rows = _rows(SIZES)
    config = ReviewSamplingConfig(seed=7)
    first = draw_sample(rows, config, "2026-11-01").rows
    shuffled = rows.sample(frac=1.0, random_state=3).reset_index(drop=True)
    second = draw_sample(shuffled, config, "2026-11-01").rows
    pd.testing.assert_frame_equal(first, second)


def test_sample_takes_smallest_sha256_ranks_and_orders_by_them():
    rows = _rows(SIZES)
    draw = draw_sample(rows, ReviewSamplingConfig(seed=11), "2026-11-05")

    def rank(row_id):
        return hashlib.sha256(f"11:2026-11-05:{row_id}".encode()).hexdigest()

    for key, n in EXPECTED_N.items():
        intent, locale = key.split("/")
        lot = rows[(rows.intent == intent) & (rows.locale == locale)]["row_id"]
        assert set(draw.rows[draw.rows.slice_key == key]["row_id"]) == set(sorted(lot, key=rank)[:n])
    ordered = draw.rows.sort_values("sample_position")["row_id"].tolist()
    assert ordered == sorted(ordered, key=rank)


def test_different_batch_or_seed_gives_a_different_sample():
    rows = _rows(SIZES)
    base = set(draw_sample(rows, ReviewSamplingConfig(), "2026-11-01").rows["row_id"])
    other_batch = set(draw_sample(rows, ReviewSamplingConfig(), "2026-11-02").rows["row_id"])
    other_seed = set(draw_sample(rows, ReviewSamplingConfig(seed=1), "2026-11-01").rows["row_id"])
    assert base != other_batch and base != other_seed
    assert len(base) == len(other_batch) == len(other_seed)


def test_slices_are_sampled_independently():
    rows = _rows(SIZES)
    full = draw_sample(rows, ReviewSamplingConfig(), "b1").rows
    without = draw_sample(rows[rows["intent"] != "card"], ReviewSamplingConfig(), "b1").rows
    grown = pd.concat([rows, _rows({("card", "en-GB"): 500}, prefix="extra")], ignore_index=True)
    with_more = draw_sample(grown, ReviewSamplingConfig(), "b1").rows
    for other in (without, with_more):
        for key in ("balance/de-DE", "balance/en-GB"):
            assert set(full[full.slice_key == key].row_id) == set(other[other.slice_key == key].row_id)


def test_selection_is_uniform_within_a_slice():
    rows = _rows({("x", "y"): 100})  # level II: F, up arrow -> E: 13 of 100
    hits = dict.fromkeys(rows["row_id"], 0)
    batches = 300
    for b in range(batches):
        for row_id in draw_sample(rows, ReviewSamplingConfig(), f"batch-{b}").rows["row_id"]:
            hits[row_id] += 1
    observed = list(hits.values())
    assert sum(observed) == 13 * batches
    assert stats.chisquare(observed).pvalue > 0.001


def test_missing_values_and_strata_errors():
    rows = _rows({("a", "en"): 3})
    rows.loc[1, "intent"] = None
    rows.loc[2, "locale"] = float("nan")
    assert set(slice_keys(rows, ["intent", "locale"])) == {"a/en", "(none)/en", "a/(none)"}
    with pytest.raises(ValueError, match="'tone'"):
        draw_sample(rows, ReviewSamplingConfig(strata=["intent", "tone"]), "b")
    dupes = pd.concat([rows, rows.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="not unique"):
        draw_sample(dupes, ReviewSamplingConfig(), "b")
    whole = draw_sample(rows, ReviewSamplingConfig(strata=[]), "b")
    assert whole.slices["slice_key"].tolist() == ["(all)"]
    clash = pd.DataFrame({"row_id": ["1", "2"], "intent": ["a/b", "a"], "locale": ["c", "b/c"]})
    with pytest.raises(ValueError, match="both give slice key"):
        slice_keys(clash, ["intent", "locale"])


def test_hostile_text_is_carried_as_data():
    rows = _rows({("a", "en"): 2})
    hostile = "<script>alert(1)</script>'; DROP TABLE rows; --"
    rows.loc[0, "response"] = hostile
    rows.loc[0, "intent"] = hostile.replace("/", "|")
    draw = draw_sample(rows, ReviewSamplingConfig(), "b")
    assert hostile in draw.rows["response"].tolist()


def test_empty_batch_gives_empty_sample():
    draw = draw_sample(_rows({}).reindex(columns=["row_id", "intent", "locale"]), ReviewSamplingConfig(), "b")
    assert len(draw.rows) == 0 and len(draw.slices) == 0


# ------------------------------------------------------------------------------------------------ verdicts


def _decisions(draw, key: str, verdicts: list[str]) -> pd.DataFrame:
    ids = draw.rows[draw.rows.slice_key == key].sort_values("sample_position")["row_id"].tolist()
    return pd.DataFrame({"row_id": ids[:len(verdicts)], "slice_key": key, "verdict": verdicts})


def test_aql_slice_rejected_as_soon_as_defects_exceed_c():
    draw = draw_sample(_rows({("refund_request", "en-GB"): 300, ("balance", "de-DE"): 300}), ReviewSamplingConfig(),
                       "b")  # 281-500 level II -> H: n=50; AQL 1.0 -> Ac 1, Re 2
    decisions = _decisions(draw, "refund_request/en-GB", ["reject"] * 4 + ["accept"] * 6)
    verdicts = slice_verdicts(draw.slices, decisions).set_index("slice_key")
    refund = verdicts.loc["refund_request/en-GB"]
    assert (refund.reviewed, refund.defects, refund.complete, refund.rejected) == (10, 4, False, True)
    assert refund.reason == "human review: slice refund_request/en-GB defect rate 4/50 > AQL plan 1/50"
    pending = verdicts.loc["balance/de-DE"]
    assert (pending.reviewed, pending.rejected, pending.accepted, pending.complete) == (0, False, False, False)


def test_aql_slice_accepted_when_complete_within_c():
    draw = draw_sample(_rows({("a", "en"): 300}), ReviewSamplingConfig(), "b")
    verdicts = slice_verdicts(draw.slices, _decisions(draw, "a/en", ["reject"] + ["accept"] * 49))
    row = verdicts.iloc[0]
    assert (row.complete, row.rejected, row.accepted) == (True, False, True)
    again = slice_verdicts(draw.slices, _decisions(draw, "a/en", ["reject", "reject"] + ["accept"] * 48)).iloc[0]
    assert (again.complete, again.rejected, again.accepted) == (True, True, False)


def test_zero_acceptance_reason_and_plan_kind_from_text():
    draw = draw_sample(_rows({("a", "en"): 100}), ReviewSamplingConfig(risk_tier="low"), "b")
    decisions = _decisions(draw, "a/en", ["accept", "reject"])
    reason = slice_verdicts(draw.slices, decisions).iloc[0].reason
    assert reason == "human review: slice a/en defect rate 1/22 > zero-acceptance plan 0/22"
    stored = draw.slices.drop(columns=["plan_kind"])  # the store may drop extras; the plan text still says it
    assert slice_verdicts(stored, decisions).iloc[0].reason == reason


def test_verdict_input_errors():
    draw = draw_sample(_rows({("a", "en"): 20}), ReviewSamplingConfig(risk_tier="low"), "b")  # n = 20 (100%)
    good = _decisions(draw, "a/en", ["accept"] * 3)
    with pytest.raises(ValueError, match="verdict"):
        slice_verdicts(draw.slices, good.assign(verdict="maybe"))
    with pytest.raises(ValueError, match="not a slice"):
        slice_verdicts(draw.slices, good.assign(slice_key="zz/en"))
    with pytest.raises(ValueError, match="more than once"):
        slice_verdicts(draw.slices, pd.concat([good, good.iloc[:1]]))
    too_many = pd.DataFrame({"row_id": [f"x{i}" for i in range(21)], "slice_key": "a/en", "verdict": "accept"})
    with pytest.raises(ValueError, match="sample size is 20"):
        slice_verdicts(draw.slices, too_many)
    assert slice_verdicts(draw.slices, pd.DataFrame()).iloc[0].reviewed == 0


@pytest.mark.slow
def test_large_batch_draw_is_fast_enough():
    import time

    rows = _rows({(f"intent{i}", loc): 2000 for i in range(25) for loc in ("en-GB", "de-DE")})  # 100k rows
    start = time.perf_counter()
    draw = draw_sample(rows, ReviewSamplingConfig(), "big")
    assert time.perf_counter() - start < 30
    assert len(draw.slices) == 50 and (draw.slices["sample_size"] == 125).all()  # 2000 -> K, AQL 1.0: 125, 3/4
