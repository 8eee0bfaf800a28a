"""Human review as a programme across batches: ISO 2859-1 Tables 2-B / 2-C, the clause 9 switching rules, the
switching ledger (SQLite and a real PostgreSQL), ``review_queue`` / ``human_review`` in a real Dagster run, the OC
table and chart, and the card's review-programme section.

Expected table values come from outside the module under test:

* Table 2-B / 2-C resolved plans (n:Ac/Re after following the arrows) for AQL 0.65-10: MIL-STD-105E Tables II-B
  and II-C as transcribed in the AQLSchemes R package (CRAN, J. Lawson: ``AAZ14Single``), whose Table II-A
  agrees with this module's Table 2-A in every cell. Table 2-C is the MIL-STD-105E / ISO 2859-1:1989 reduced
  table (see the sampling module docstring for why).
* Known cells: code J (n = 80), AQL 1.0: normal Ac 2 Re 3, tightened Ac 1 Re 2; code K (n = 125), AQL 1.0:
  normal 3/4, tightened 2/3; tightened acceptance numbers 1, 2, 3, 5, 8, 12, 18 (27, 41) against normal 1, 2,
  3, 5, 7, 10, 14, 21 (30, 44); reduced sample sizes 2, 2, 2, 3, 5, 8, 13, 20, 32, 50, 80, 125, 200, 315, 500, 800.
* OC values: scipy's binomial distribution.
"""

from __future__ import annotations

import json
import random
import re
import warnings

import dagster as dg
import pandas as pd
import pytest
from scipy import stats

from synqa_dagster.review.ledger import SwitchingLedger
from synqa_dagster.review.sampling import (
    AQL_VALUES,
    CODE_LETTERS,
    OC_DEFECT_RATES,
    SAMPLE_SIZES,
    SAMPLE_SIZES_2B,
    SAMPLE_SIZES_2C,
    TABLE_2B,
    TABLE_2C,
    ReviewSamplingConfig,
    ZeroAcceptancePlan,
    draw_sample,
    guarantee_text,
    iso2859_plan,
    lot_acceptance_probability,
    operating_characteristic,
    plan_for,
    slice_verdicts,
    table_plan,
    tighter_acceptance_number,
    zero_acceptance_sample_size,
)
from synqa_dagster.review.store import ReviewStore
from synqa_dagster.review.switching import Lot, SliceState, mark_production, replay, state_before

warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# ------------------------------------------------------------------------------------------ Tables 2-B, 2-C

TIGHTENED_ROWS = {  # the Ac/Re pairs of each Table 2-B row, left to right
    "A": "1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28",
    **{letter: "0/1 1/2 2/3 3/4 5/6 8/9 12/13 18/19 27/28 41/42" for letter in "BCDE"},
    **{letter: "0/1 1/2 2/3 3/4 5/6 8/9 12/13 18/19" for letter in "FGHJKLMNPQR"},
    "S": "1/2",
}


@pytest.mark.parametrize("letter", list(TIGHTENED_ROWS))
def test_table_2b_rows_hold_the_tightened_plans_in_order(letter):
    plans = [f"{c[0]}/{c[1]}" for c in TABLE_2B[letter] if not isinstance(c, str)]
    assert " ".join(plans) == TIGHTENED_ROWS[letter]


RESOLVED_COLUMNS = (0.65, 1.0, 1.5, 2.5, 4.0, 6.5, 10.0)
TIGHTENED_RESOLVED = {  # MIL-STD-105E Table II-B via AQLSchemes: n:Ac/Re at AQL 0.65 1.0 1.5 2.5 4.0 6.5 10
    "A": "32:0/1 20:0/1 13:0/1 8:0/1 5:0/1 3:0/1 8:1/2",
    "B": "32:0/1 20:0/1 13:0/1 8:0/1 5:0/1 3:0/1 8:1/2",
    "C": "32:0/1 20:0/1 13:0/1 8:0/1 5:0/1 13:1/2 8:1/2",
    "D": "32:0/1 20:0/1 13:0/1 8:0/1 20:1/2 13:1/2 8:1/2",
    "E": "32:0/1 20:0/1 13:0/1 32:1/2 20:1/2 13:1/2 13:2/3",
    "F": "32:0/1 20:0/1 50:1/2 32:1/2 20:1/2 20:2/3 20:3/4",
    "G": "32:0/1 80:1/2 50:1/2 32:1/2 32:2/3 32:3/4 32:5/6",
    "H": "125:1/2 80:1/2 50:1/2 50:2/3 50:3/4 50:5/6 50:8/9",
    "J": "125:1/2 80:1/2 80:2/3 80:3/4 80:5/6 80:8/9 80:12/13",
    "K": "125:1/2 125:2/3 125:3/4 125:5/6 125:8/9 125:12/13 125:18/19",
    "L": "200:2/3 200:3/4 200:5/6 200:8/9 200:12/13 200:18/19 125:18/19",
    "M": "315:3/4 315:5/6 315:8/9 315:12/13 315:18/19 200:18/19 125:18/19",
    "N": "500:5/6 500:8/9 500:12/13 500:18/19 315:18/19 200:18/19 125:18/19",
    "P": "800:8/9 800:12/13 800:18/19 500:18/19 315:18/19 200:18/19 125:18/19",
    "Q": "1250:12/13 1250:18/19 800:18/19 500:18/19 315:18/19 200:18/19 125:18/19",
    "R": "2000:18/19 1250:18/19 800:18/19 500:18/19 315:18/19 200:18/19 125:18/19",
}
REDUCED_RESOLVED = {  # MIL-STD-105E Table II-C via AQLSchemes (Re may exceed Ac + 1)
    "A": "8:0/1 5:0/1 3:0/1 2:0/1 2:0/1 2:0/1 2:0/2",
    "B": "8:0/1 5:0/1 3:0/1 2:0/1 2:0/1 2:0/1 2:0/2",
    "C": "8:0/1 5:0/1 3:0/1 2:0/1 2:0/1 3:0/2 2:0/2",
    "D": "8:0/1 5:0/1 3:0/1 2:0/1 5:0/2 3:0/2 3:1/3",
    "E": "8:0/1 5:0/1 3:0/1 8:0/2 5:0/2 5:1/3 5:1/4",
    "F": "8:0/1 5:0/1 13:0/2 8:0/2 8:1/3 8:1/4 8:2/5",
    "G": "8:0/1 20:0/2 13:0/2 13:1/3 13:1/4 13:2/5 13:3/6",
    "H": "32:0/2 20:0/2 20:1/3 20:1/4 20:2/5 20:3/6 20:5/8",
    "J": "32:0/2 32:1/3 32:1/4 32:2/5 32:3/6 32:5/8 32:7/10",
    "K": "50:1/3 50:1/4 50:2/5 50:3/6 50:5/8 50:7/10 50:10/13",
    "L": "80:1/4 80:2/5 80:3/6 80:5/8 80:7/10 80:10/13 50:10/13",
    "M": "125:2/5 125:3/6 125:5/8 125:7/10 125:10/13 80:10/13 50:10/13",
    "N": "200:3/6 200:5/8 200:7/10 200:10/13 125:10/13 80:10/13 50:10/13",
    "P": "315:5/8 315:7/10 315:10/13 200:10/13 125:10/13 80:10/13 50:10/13",
    "Q": "500:7/10 500:10/13 315:10/13 200:10/13 125:10/13 80:10/13 50:10/13",
    "R": "800:10/13 500:10/13 315:10/13 200:10/13 125:10/13 80:10/13 50:10/13",
}


@pytest.mark.parametrize(("severity", "expected", "sizes"), [("tightened", TIGHTENED_RESOLVED, SAMPLE_SIZES_2B),
                                                             ("reduced", REDUCED_RESOLVED, SAMPLE_SIZES_2C)])
def test_tightened_and_reduced_plans_match_the_published_tables(severity, expected, sizes):
    for letter, cells in expected.items():
        got = []
        for aql in RESOLVED_COLUMNS:
            plan_letter, ac, re_ = table_plan(letter, aql, severity)
            got.append(f"{sizes[plan_letter]}:{ac}/{re_}")
        assert " ".join(got) == cells, (severity, letter)


def test_known_cells_of_tables_2a_2b_2c():
    normal, tightened, reduced = (iso2859_plan(1000, "II", 1.0, s) for s in ("normal", "tightened", "reduced"))
    assert (normal.code_letter, normal.sample_size, normal.acceptance_number, normal.rejection_number) == ("J", 80, 2, 3)
    assert (tightened.code_letter, tightened.sample_size, tightened.acceptance_number, tightened.rejection_number) == ("J", 80, 1, 2)
    assert (reduced.code_letter, reduced.sample_size, reduced.acceptance_number, reduced.rejection_number) == ("J", 32, 1, 3)
    assert "Table 2-B" in tightened.description and "reinstate normal inspection" in reduced.description
    assert table_plan("K", 1.0, "normal")[1:] == (3, 4) and table_plan("K", 1.0, "tightened")[1:] == (2, 3)
    # code letter S exists only in Table 2-B; R at 0.015 points down past it (no plan) -> Q's 0/1, n = 1250
    assert table_plan("R", 0.025, "tightened") == ("S", 1, 2) and SAMPLE_SIZES_2B["S"] == 3150
    assert table_plan("R", 0.015, "tightened") == ("Q", 0, 1)
    assert [SAMPLE_SIZES_2C[x] for x in CODE_LETTERS] == [2, 2, 2, 3, 5, 8, 13, 20, 32, 50, 80, 125, 200, 315, 500, 800]
    big = iso2859_plan(10**6, "III", 0.015, "tightened")  # R at 0.015 on tightened inspection
    assert (big.sample_size, big.acceptance_number) == (1250, 0) and "points off the table" in big.description


def test_tightened_is_never_looser_than_normal_and_reduced_never_samples_more():
    for letter in CODE_LETTERS:
        for aql in (a for a in AQL_VALUES if a <= 10):
            n_letter, n_ac, n_re = table_plan(letter, aql, "normal")
            t_letter, t_ac, t_re = table_plan(letter, aql, "tightened")
            r_letter, _, _ = table_plan(letter, aql, "reduced")
            assert SAMPLE_SIZES_2C[r_letter] <= SAMPLE_SIZES[n_letter], (letter, aql)
            for rate in (aql / 100, 2 * aql / 100, 5 * aql / 100):
                normal = lot_acceptance_probability(SAMPLE_SIZES[n_letter], n_ac, n_re, rate)
                tight = lot_acceptance_probability(SAMPLE_SIZES_2B[t_letter], t_ac, t_re, rate)
                assert tight <= normal + 1e-12, (letter, aql, rate)


def test_the_switching_scores_tighter_acceptance_number():
    assert tighter_acceptance_number("J", 1.0) == 1  # J: 1/2 at 0.65 left of 2/3 at 1.0
    assert tighter_acceptance_number("K", 1.0) == 2  # K: 2/3 at 0.65 left of 3/4
    assert tighter_acceptance_number("H", 1.0) is None  # H at 1.0 is 1/2 (Ac 1): the +2 rule applies, no lookup
    sequence = [0, 1, 2, 3, 5, 7, 10, 14, 21, 30, 44]
    for letter in CODE_LETTERS:
        for aql in AQL_VALUES:
            plan_letter, ac, _ = table_plan(letter, aql)
            if ac >= 2:
                assert tighter_acceptance_number(plan_letter, aql) == sequence[sequence.index(ac) - 1]
    assert iso2859_plan(1000, "II", 1.0).tighter_acceptance_number == 1
    assert iso2859_plan(1000, "II", 1.0, "tightened").tighter_acceptance_number is None


def test_zero_acceptance_analogues_and_config():
    config = ReviewSamplingConfig(risk_tier="low")  # C = 0.90, p = 0.10: n = 22
    normal, tightened, reduced = (plan_for(config, 1000, s) for s in ("normal", "tightened", "reduced"))
    assert normal.sample_size == 22
    assert tightened.sample_size == zero_acceptance_sample_size(0.90, 0.05) == 45  # half the rate: about twice the rows
    assert reduced.sample_size == zero_acceptance_sample_size(1 - 0.1 ** 0.4, 0.10) == 9  # 2/5 of 22, rounded up
    assert "tightened-inspection analogue" in tightened.description and tightened.severity == "tightened"
    custom = ZeroAcceptancePlan(tightened_max_defect_rate=0.02, reduced_confidence=0.5)
    assert custom.parameters("tightened") == (0.90, 0.02) and custom.parameters("reduced") == (0.5, 0.10)
    with pytest.raises(ValueError, match="tightened_max_defect_rate"):
        ZeroAcceptancePlan(tightened_max_defect_rate=0.2)
    with pytest.raises(ValueError, match="reduced_confidence"):
        ZeroAcceptancePlan(reduced_confidence=0.95)
    defaults = ReviewSamplingConfig()
    assert defaults.switching is True and defaults.allow_reduced is False
    assert "switching rules (clause 9)" in guarantee_text(defaults.plan, True)
    assert "not applied" in guarantee_text(defaults.plan, False)
    with pytest.raises(ValueError, match="severity"):
        plan_for(defaults, 100, "strict")


def test_a_reduced_plan_between_ac_and_re_accepts_the_lot_and_says_normal_is_reinstated():
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(1000)], "intent": "a", "locale": "en"})
    draw = draw_sample(rows, ReviewSamplingConfig(), "b", {"a/en": "reduced"})
    assert draw.slices.iloc[0][["sample_size", "acceptance_number", "rejection_number", "severity"]].tolist() == [32, 1, 3, "reduced"]
    ids = draw.rows["row_id"].tolist()

    def verdict(defects):
        decisions = pd.DataFrame({"row_id": ids, "slice_key": "a/en",
                                  "verdict": ["reject"] * defects + ["accept"] * (len(ids) - defects)})
        return slice_verdicts(draw.slices, decisions).iloc[0]

    two, three = verdict(2), verdict(3)
    assert (two.accepted, two.rejected, two.limit_zone) == (True, False, True)
    assert "normal inspection reinstated" in two.reason and "reduced AQL plan" in two.reason
    assert (three.accepted, three.rejected) == (False, True)


# ------------------------------------------------------------------------------------------ state machine

def lot(batch: str, defects: int, severity: str = "normal", lot_size: int = 1000, reviewed: int | None = None,
        steady: bool = True) -> Lot:
    """A lot of a slice under the level II, AQL 1.0 plan (code J: normal 80 2/3, tightened 80 1/2, reduced 32 1/3)."""
    p = iso2859_plan(lot_size, "II", 1.0, severity)
    return Lot(batch, p.sample_size, p.acceptance_number, p.rejection_number,
               p.sample_size if reviewed is None else reviewed, defects, severity, p.tighter_acceptance_number,
               production_steady=steady)


def day(i: int) -> str:
    return f"2026-11-{i:02d}"


def run(defects_by_day: list[int], allow_reduced: bool = False, start: SliceState | None = None):
    """Feed lots one batch at a time, each sampled under the state the earlier lots give (as review_queue does)."""
    lots = []
    for i, d in enumerate(defects_by_day, start=1):
        state = state_before(lots, day(i), allow_reduced) if start is None else (
            replay(lots, allow_reduced, start=start)[-1].leaving if lots else start)
        lots.append(lot(day(i), d, state.severity))
    return replay(lots, allow_reduced, start=start), lots


def test_rising_defect_rates_tighten_and_five_accepted_lots_restore_normal():
    # normal J: Ac 2. Lot 3 (3 defects) and lot 5 (4 defects) are not accepted: 2 of the last 5 -> tightened
    steps, lots = run([0, 1, 3, 2, 4, 0, 0, 0, 0, 0, 0])
    states = [(s.entering.state, s.leaving.state) for s in steps]
    assert states[:5] == [("normal", "normal")] * 4 + [("normal", "tightened")]
    assert "2 of the last 5 consecutive lots not accepted" in steps[4].reason and "9.3.1" in steps[4].reason
    assert [x.severity for x in lots[5:10]] == ["tightened"] * 5 and lots[5].acceptance_number == 1
    assert [s.leaving.state for s in steps[5:10]] == ["tightened"] * 4 + ["normal"]
    assert "5 consecutive lots accepted on tightened inspection" in steps[9].reason and "9.3.2" in steps[9].reason
    assert steps[10].entering.state == "normal" and steps[10].entering.counters.score == 0
    assert not any(s.stale for s in steps)


def test_two_rejections_more_than_five_lots_apart_do_not_tighten():
    steps, _ = run([3, 0, 0, 0, 0, 3, 0])  # lots 1 and 6: never 2 within 5 consecutive lots
    assert all(s.leaving.state == "normal" for s in steps)
    steps, _ = run([3, 0, 0, 0, 3])  # lots 1 and 5: within 5 -> tightened
    assert steps[-1].leaving.state == "tightened"


def test_switching_score_follows_9_3_3_2():
    steps, _ = run([0, 1, 2, 0])  # Ac 2 (tighter Ac 1): +3, +3, 2 defects > 1 -> reset (though accepted), +3
    assert [s.leaving.counters.score for s in steps] == [3, 6, 0, 3]
    assert steps[2].lot.accepted and "reset to 0 (2 defects > Ac 1 one AQL step tighter" in steps[2].reason
    small = [Lot(day(i), 50, 1, 2, 50, d, "normal") for i, d in enumerate([0, 1, 0, 0, 2], start=1)]  # Ac 1: +2 rule
    assert [s.leaving.counters.score for s in replay(small)] == [2, 4, 6, 8, 0]
    with pytest.raises(ValueError, match="Ac < Re"):
        Lot(day(1), 50, 2, 2)


def test_reduced_only_with_allow_reduced_a_score_of_30_and_steady_production():
    steps, _ = run([0] * 11)  # +3 per lot: 30 after lot 10
    assert all(s.leaving.state == "normal" for s in steps)
    assert steps[9].leaving.counters.score == 30 and "allow_reduced is false" in steps[9].reason
    steps, lots = run([0] * 11, allow_reduced=True)
    assert [s.leaving.state for s in steps[:10]] == ["normal"] * 9 + ["reduced"]
    assert "switching score 30 >= 30" in steps[9].reason and "9.3.3" in steps[9].reason
    assert lots[10].severity == "reduced" and lots[10].sample_size == 32
    # production interrupted before lot 10 (the slice had no lot in one batch): the score alone does not reduce
    gapped = [lot(day(i if i < 10 else i + 1), 0) for i in range(1, 11)]
    marked = mark_production(gapped, [day(i) for i in range(1, 12)])
    assert [x.production_steady for x in marked] == [True] * 9 + [False]
    final = replay(marked, allow_reduced=True)[-1]
    assert final.leaving.state == "normal" and "production is not steady" in final.reason


def test_reduced_back_to_normal_on_a_rejection_the_limit_zone_or_irregular_production():
    reduced = SliceState("reduced", since=day(1), reason="test")
    ok = replay([lot(day(2), 0, "reduced"), lot(day(3), 1, "reduced")], start=reduced)
    assert [s.leaving.state for s in ok] == ["reduced", "reduced"]
    rejected = replay([lot(day(2), 3, "reduced")], start=reduced)[0]  # Re 3
    assert rejected.leaving.state == "normal" and "9.3.4 a" in rejected.reason
    limit = replay([lot(day(2), 2, "reduced")], start=reduced)[0]  # Ac 1 < 2 < Re 3
    assert limit.lot.result == "accepted_limit" and limit.leaving.state == "normal" and "10.1.4" in limit.reason
    irregular = replay([lot(day(3), 0, "normal", steady=False)], start=reduced)[0]
    assert (irregular.entering.state, irregular.leaving.state, irregular.switched) == ("normal", "normal", True)
    assert "production irregular" in irregular.reason and not irregular.stale
    assert state_before([], day(3), production_steady=False).state == "normal"


def test_discontinued_after_five_lots_not_accepted_on_tightened_and_resumed_on_corrective_action():
    tightened = SliceState("tightened", since=day(1), reason="test")
    defects = [2, 0, 2, 0, 0, 0, 2, 2, 2]  # tightened Re 2: 5 lots not accepted in all, never 5 accepted in a row
    lots = [lot(day(i), d, "tightened") for i, d in enumerate(defects, start=2)]
    steps = replay(lots, start=tightened)
    assert [s.leaving.state for s in steps] == ["tightened"] * 8 + ["discontinued"]
    assert "DISCONTINUED (ISO 2859-1:1999 9.4)" in steps[-1].reason
    assert steps[-1].leaving.severity == "tightened"  # still sampled with the tightened plan
    later = lots + [lot(day(11), 0, "tightened"), lot(day(12), 0, "tightened")]
    assert replay(later, start=tightened)[-1].leaving.state == "discontinued"  # accepted lots do not resume it
    resumed = replay(later, start=tightened, resumptions={day(12): "prompt template fixed"})
    assert resumed[-1].entering.state == "tightened" and "resumed at batch 2026-11-12" in resumed[-1].reason
    assert resumed[-1].leaving.counters.tightened_accepted == 1
    assert replay(later, start=tightened, resumptions={day(5): "too early"})[-1].leaving.state == "discontinued"


def test_undecided_lots_change_nothing():
    steps = replay([lot(day(1), 3), lot(day(2), 0, reviewed=10), lot(day(3), 3)])
    assert steps[1].lot.result == "pending" and steps[1].leaving == steps[1].entering
    assert steps[2].leaving.state == "tightened"  # lots 1 and 3 are consecutive decided lots
    early = Lot(day(4), 80, 2, 3, reviewed=5, defects=3)
    assert early.result == "rejected"  # rejected as soon as the defects reach Re
    assert Lot(day(4), 80, 2, 3, reviewed=5, defects=0, outcome="incomplete").result == "incomplete"


def test_replay_is_in_batch_order_and_a_state_depends_only_on_earlier_batches():
    lots = [lot(day(i), d) for i, d in enumerate([0, 3, 0, 3, 0, 0], start=1)]
    shuffled = lots[:]
    random.Random(7).shuffle(shuffled)
    assert replay(shuffled) == replay(lots)
    assert state_before(lots, day(4)) == state_before(lots[:3], day(4))  # lots of day 4 and later never matter
    assert state_before(lots, day(5)).state == "tightened" and state_before(lots, day(4)).state == "normal"
    with pytest.raises(ValueError, match="two lots"):
        replay(lots + [lot(day(1), 0)])


# ------------------------------------------------------------------------------------------ the ledger

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_urls(request, tmp_path):
    """Two fresh, empty review stores of one kind: SQLite files, or two new schemas on the session's PostgreSQL."""
    if request.param == "sqlite":
        return [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"]
    from tests.postgres_support import drop_schema, fresh_schema_url

    urls = [fresh_schema_url(request.getfixturevalue("postgres_url")) for _ in range(2)]
    request.addfinalizer(lambda: [drop_schema(u) for u in urls])
    return urls


ROWS = pd.DataFrame({"row_id": [f"{k}-{i}" for k in ("a", "b") for i in range(1000)],
                     "intent": ["a"] * 1000 + ["b"] * 1000, "locale": "en"})
DEFECTS = {"a/en": [0, 3, 0, 3, 0, 0, 0, 0, 0, 0], "b/en": [0, 0, 1, 0, 0, 2, 0, 2, 0, 0]}  # fixed per batch


def run_batch(ledger: SwitchingLedger, i: int) -> None:
    """One batch as review_queue + human_review do it: states -> plans -> sample -> ledger -> results."""
    batch = day(i)
    states = ledger.states_for(batch, DEFECTS)
    draw = draw_sample(ROWS, ReviewSamplingConfig(), batch, {k: s.severity for k, s in states.items()})
    ledger.record_plan(batch, f"v-{batch}-{'-'.join(draw.slices['severity'])}", draw.slices)
    decisions = []
    for key, group in draw.rows.groupby("slice_key"):
        d = DEFECTS[key][i - 1]
        decisions += [{"row_id": r, "slice_key": key, "verdict": "reject" if j < d else "accept"}
                      for j, r in enumerate(group["row_id"])]
    verdicts = slice_verdicts(draw.slices, pd.DataFrame(decisions))
    version = f"v-{batch}-{'-'.join(draw.slices['severity'])}"
    ledger.record_results(batch, version, verdicts)


def settle(ledger: SwitchingLedger, days: list[int]) -> pd.DataFrame:
    """Re-run every stale batch (what re-materializing its review_queue does) until none is stale."""
    for _ in range(len(days)):
        history = ledger.history()
        stale = sorted({int(b[-2:]) for b in history.loc[history["stale"], "batch"]})
        if not stale:
            break
        run_batch(ledger, stale[0])
    return ledger.history()


def test_the_ledger_gives_the_same_states_whatever_order_the_batches_ran_in(store_urls):
    in_order = SwitchingLedger(ReviewStore.from_url(store_urls[0]))
    backfilled = SwitchingLedger(ReviewStore.from_url(store_urls[1]))
    days = list(range(1, 11))
    for i in days:
        run_batch(in_order, i)
    for i in [6, 7, 8, 9, 10, 1, 3, 2, 5, 4]:  # newest batches first, then a backfill of the older ones
        run_batch(backfilled, i)
    expected = in_order.history()
    assert not expected["stale"].any()
    a = expected.set_index(["slice_key", "batch"])
    assert a.loc[("a/en", day(4)), "state_leaving"] == "tightened" and a.loc[("a/en", day(5)), "severity"] == "tightened"
    assert a.loc[("a/en", day(9)), "state_leaving"] == "normal"  # 5 accepted on tightened (days 5-9)
    got = settle(backfilled, days)
    columns = ["slice_key", "batch", "severity", "sample_size", "acceptance_number", "outcome", "state_entering",
               "state_leaving", "switched", "reason", "stale"]
    pd.testing.assert_frame_equal(got[columns], expected[columns])
    # a second ledger on the same store (CREATE TABLE IF NOT EXISTS) reads the same programme
    again = SwitchingLedger(ReviewStore.from_url(store_urls[0]))
    pd.testing.assert_frame_equal(again.programme(day(5))[columns], expected.loc[expected["batch"] == day(5), columns].reset_index(drop=True))


def test_the_ledger_keeps_results_per_sample_version_and_drops_vanished_slices(store_urls):
    ledger = SwitchingLedger(ReviewStore.from_url(store_urls[0]))
    draw = draw_sample(ROWS, ReviewSamplingConfig(), day(1))
    ledger.record_plan(day(1), "v1", draw.slices)
    verdicts = pd.DataFrame({"slice_key": ["a/en", "b/en"], "reviewed": [80, 80], "defects": [3, 0]})
    assert ledger.record_results(day(1), "other", verdicts)["outcome"].tolist() == ["pending", "pending"]
    programme = ledger.record_results(day(1), "v1", verdicts)
    assert programme["outcome"].tolist() == ["rejected", "accepted"]
    assert ledger.record_plan(day(1), "v1", draw.slices)["outcome"].tolist() == ["rejected", "accepted"]  # same sample
    only_a = draw.slices[draw.slices["slice_key"] == "a/en"]
    programme = ledger.record_plan(day(1), "v2", only_a)  # a new sample: results start over; b/en is gone
    assert programme["slice_key"].tolist() == ["a/en"] and programme["outcome"].tolist() == ["pending"]
    late = ledger.record_results(day(1), "v2", verdicts.iloc[:1].assign(reviewed=10), incomplete=True)
    assert late["outcome"].tolist() == ["rejected"]  # 3 defects reach Re 3 although incomplete
    late = ledger.record_results(day(1), "v2", verdicts.iloc[:1].assign(reviewed=10, defects=0), incomplete=True)
    assert late["outcome"].tolist() == ["incomplete"]


def test_a_discontinued_slice_is_resumed_through_the_ledger(store_urls):
    ledger = SwitchingLedger(ReviewStore.from_url(store_urls[0]))
    config = ReviewSamplingConfig(strata=["intent"])
    rows = ROWS[ROWS["intent"] == "a"]
    for i in range(1, 8):  # every lot not accepted: tightened after lot 2, discontinued after lot 7
        state = ledger.states_for(day(i), ["a"])["a"]
        draw = draw_sample(rows, config, day(i), {"a": state.severity})
        ledger.record_plan(day(i), "v", draw.slices)
        ledger.record_results(day(i), "v", pd.DataFrame({"slice_key": ["a"], "reviewed": [80], "defects": [5]}))
    assert ledger.programme(day(7))["state_leaving"].tolist() == ["discontinued"]
    state = ledger.states_for(day(8), ["a"])["a"]
    assert (state.state, state.severity) == ("discontinued", "tightened")
    ledger.record_resumption("a", day(8), "generator prompt fixed")
    state = ledger.states_for(day(8), ["a"])["a"]
    assert state.state == "tightened" and "generator prompt fixed" in state.reason


# ------------------------------------------------------------------------------------------ Dagster

def _review_assets(tmp_path, aql: float = 1.0):
    import yaml

    from synqa_dagster.assets.review import build_review_assets
    from synqa_dagster.config import load_gate_config, load_recipe
    from synqa_dagster.partitions import batch_partitions
    from synqa_dagster.stages import STAGES, last_automatic
    from tests.conftest import REPO_ROOT

    gates = yaml.safe_load((REPO_ROOT / "gates" / "default.yaml").read_text())
    gates["review"]["sampling"]["tiers"]["demo"] = {"kind": "iso2859", "inspection_level": "II", "aql": aql}
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(gates))
    recipe, config = load_recipe(None), load_gate_config(path)
    partitions = batch_partitions(recipe.batches)
    review_queue, human_review = build_review_assets(recipe, config, partitions, STAGES)
    sources = [dg.SourceAsset(key=k, partitions_def=partitions, io_manager_key="parquet_io_manager")
               for k in (last_automatic(STAGES).asset, "seed_corpus", "review_queue")]
    return review_queue, human_review, sources, config, last_automatic(STAGES).asset


def test_review_queue_sizes_a_tightened_slice_with_the_tightened_plan_and_human_review_records_the_lot(tmp_path):
    from synqa_dagster.assets.review import read_slice_verdicts
    from synqa_dagster.resources import HandoverResource, ReviewStoreResource, StoreResource
    from synqa_dagster.resources.storage import ParquetIOManager
    from synqa_dagster.storage import TableStore

    review_queue, human_review, sources, config, source = _review_assets(tmp_path)
    assert config.review.sampling.switching and config.review.sampling.strata == ["technique"]
    batch, storage, url = "2026-11-20", tmp_path / "storage", f"sqlite:///{tmp_path / 'review.db'}"
    rows = pd.DataFrame([{"row_id": f"{t[:4]}-{i:04d}", "technique": t, "intent": "billing.refund", "locale": "en-GB",
                          "seed_id": "s1", "text": f"row {i}", "instruction": f"q{i}", "response": f"a{i}"}
                         for t in ("self_instruct", "magpie_single_turn") for i in range(300)])
    tables = TableStore(str(storage))
    tables.write(source, batch, rows.assign(kept=True, gate="memorisation", gate_score=float("nan"),
                                            reject_category=pd.Series([None] * len(rows), dtype="string"),
                                            reject_reason=pd.Series([None] * len(rows), dtype="string")))
    tables.write("seed_corpus", batch, pd.DataFrame({"seed_id": ["s1"], "text": ["a seed"]}))
    # two earlier batches: self_instruct not accepted twice on normal inspection -> tightened entering this batch
    ledger = SwitchingLedger(ReviewStore.from_url(url))
    for earlier in ("2026-11-18", "2026-11-19"):
        draw = draw_sample(rows, config.review.sampling, earlier)
        ledger.record_plan(earlier, "v", draw.slices)
        ledger.record_results(earlier, "v", pd.DataFrame({"slice_key": ["self_instruct", "magpie_single_turn"],
                                                          "reviewed": [50, 50], "defects": [2, 0]}))
    resources = {"parquet_io_manager": ParquetIOManager(base_path=str(storage)),
                 "store": StoreResource(base_path=str(storage)), "review_store": ReviewStoreResource(url=url),
                 "handover": HandoverResource(base_path=str(tmp_path / "handover"))}
    with dg.instance_for_test() as instance:
        result = dg.materialize([review_queue, *sources[:2]], selection=[review_queue], partition_key=batch,
                                resources=resources, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        observed = instance.fetch_observations(dg.AssetKey("review_queue"), limit=1).records
    # lot of 300, level II: code H. Normal (Table 2-A) at AQL 1.0: n = 50, Ac 1; tightened (Table 2-B): the arrow
    # at H leads to J: n = 80, Ac 1, Re 2
    slices = ReviewStore.from_url(url).slices(batch).set_index("slice_key")
    assert slices.loc["self_instruct", ["sample_size", "acceptance_number", "rejection_number"]].tolist() == [80, 1, 2]
    assert slices.loc["self_instruct", "severity"] == "tightened" and "Table 2-B" in slices.loc["self_instruct", "plan"]
    assert slices.loc["magpie_single_turn", ["sample_size", "acceptance_number", "severity"]].tolist() == [50, 1, "normal"]
    assert metadata["slices_tightened"].value == 1 and metadata["slices_normal"].value == 1
    text = metadata["review_programme"].value
    assert re.search(r"self\\_instruct\s*\|\s*tightened\s*\|\s*n=80, Ac=1, Re=2", text) and "9.3.1" in text
    assert observed and observed[0].asset_observation.metadata["slices_tightened"].value == 1
    sample = tables.read("review_queue", batch)
    assert (sample.groupby("slice_key").size().to_dict()) == {"self_instruct": 80, "magpie_single_turn": 50}

    # the reviewers decide: 1 defect in the tightened slice (Ac 1: accepted), then human_review records the lot
    store = ReviewStore.from_url(url)
    items = store.items(batch)
    first = items.loc[items["slice_key"] == "self_instruct", "row_id"].iloc[0]
    for row_id, version in zip(items["row_id"], items["sample_version"]):
        bad = row_id == first
        store.record_decision(batch, row_id, sample_version=version, reviewer_hmac="hmac-sha256:r",
                              verdict="reject" if bad else "accept", reason_category="unsafe" if bad else None)
    with dg.instance_for_test() as instance:
        result = dg.materialize([human_review, *sources], selection=[human_review], partition_key=batch,
                                resources=resources, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
    verdicts = read_slice_verdicts(StoreResource(base_path=str(storage)), "human_review", batch).set_index("slice_key")
    tight = verdicts.loc["self_instruct"]
    assert (tight["state_entering"], tight["outcome"], tight["state_after"]) == ("tightened", "accepted", "tightened")
    assert "1 of 5 consecutive" in tight["switch_reason"] and "9.3.1" in tight["entering_reason"]
    assert ledger.programme(batch).set_index("slice_key").loc["self_instruct", "defects"] == 1
    # the card's facts come from exactly this stored file (what the handover reads)
    from synqa_dagster.handover.card import review_programme_facts

    facts = review_programme_facts(verdicts.reset_index(), config.review.sampling)
    row = {x.slice_key: x for x in facts.slices}["self_instruct"]
    assert (row.state_entering, row.sample_size, row.acceptance_number, row.result, row.defects, row.state_after) == \
        ("tightened", 80, 1, "accepted", 1, "tightened")
    assert sorted((c.sample_size, c.acceptance_number) for c in facts.oc_curves) == [(50, 1), (80, 1)]


# ------------------------------------------------------------------------------------------ OC table and chart

def test_operating_characteristic_against_scipy():
    for n, ac, re_ in [(80, 2, 3), (80, 1, 2), (32, 1, 3), (22, 0, 1), (125, 3, 4), (2000, 21, 22)]:
        oc = operating_characteristic(n, ac, re_)
        assert list(oc) == list(OC_DEFECT_RATES) == [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20]
        for rate, p in oc.items():
            assert p == pytest.approx(stats.binom.cdf(re_ - 1, n, rate), rel=1e-9, abs=1e-15), (n, ac, re_, rate)
    assert operating_characteristic(80, 2)[0.01] == pytest.approx(stats.binom.cdf(2, 80, 0.01), rel=1e-12)


def _verdicts_with_programme(hostile: str = "refund/en-GB") -> pd.DataFrame:
    """Stored-verdict rows of three slices (as human_review writes them): ``hostile`` normal and accepted,
    card/en-GB tightened, not accepted and now DISCONTINUED, tiny/en-GB tightened and stale."""
    intent = hostile.split("/")[0]
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(2600)],
                         "intent": [intent] * 1000 + ["card"] * 1000 + ["tiny"] * 600, "locale": "en-GB"})
    keys = {"first": f"{intent}/en-GB", "bad": "card/en-GB", "stale": "tiny/en-GB"}
    severities = {keys["first"]: "normal", keys["bad"]: "tightened", keys["stale"]: "tightened"}
    draw = draw_sample(rows, ReviewSamplingConfig(), "2026-11-20", severities)
    verdicts = slice_verdicts(draw.slices, pd.DataFrame(columns=["row_id", "slice_key", "verdict"]))
    per = {keys["first"]: dict(defects=0, outcome="accepted", state_entering="normal", entering_reason="",
                               state_after="normal", switched=False, switch_reason="lot accepted", stale=False),
           keys["bad"]: dict(defects=2, outcome="rejected", state_entering="tightened",
                             entering_reason="2 of the last 5 ... (9.3.1)", state_after="discontinued", switched=True,
                             switch_reason="5 lots not accepted on tightened inspection: DISCONTINUED (9.4)", stale=False),
           keys["stale"]: dict(defects=0, outcome="accepted", state_entering="tightened", entering_reason="x",
                               state_after="tightened", switched=False, switch_reason="ok", stale=True)}
    extra = pd.DataFrame([{"slice_key": k, **v} for k, v in per.items()])
    verdicts = verdicts.drop(columns=["defects"]).merge(extra, on="slice_key")
    letters = dict(zip(draw.slices["slice_key"], draw.slices["code_letter"]))
    return verdicts.assign(reviewed=verdicts["sample_size"], complete=True, accepted=verdicts["outcome"] == "accepted",
                           rejected=verdicts["outcome"] == "rejected", code_letter=verdicts["slice_key"].map(letters),
                           status="", production_steady=True)


def test_card_states_the_review_programme_and_the_oc_curves():
    from synqa_dagster.handover.card import CardFacts, CompositionFacts, md_escape, render_card, review_programme_facts

    hostile = "<script>alert(1)</script>|x/en-GB"
    verdicts = _verdicts_with_programme(hostile)
    programme = review_programme_facts(verdicts, ReviewSamplingConfig())
    by_plan = {(c.sample_size, c.acceptance_number, c.rejection_number): c for c in programme.oc_curves}
    # slices sort hostile, card, tiny. hostile (1000 rows, J, normal): 80 2/3; card (1000, J, tightened): 80 1/2;
    # tiny (600, J, tightened): 80 1/2
    assert set(by_plan) == {(80, 2, 3), (80, 1, 2)} and len(by_plan[(80, 1, 2)].slices) == 2
    for (n, _, re_), curve in by_plan.items():
        assert curve.p_accept == pytest.approx([stats.binom.cdf(re_ - 1, n, r) for r in OC_DEFECT_RATES], rel=1e-9)
    assert programme.discontinued == ["card/en-GB"] and programme.aql == 1.0
    facts = CardFacts(pretty_name="t", gate_config_hash="g", candidates=10, accepted=5, rejected=5,
                      composition=CompositionFacts(rows=5), review_programme=programme)
    text = render_card(facts)
    section = text.split("## Review programme", 1)[1].split("\n## ", 1)[0]
    assert "**DISCONTINUED (ISO 2859-1 9.4):** `card/en-GB`" in section
    assert "| `card/en-GB` | tightened | n=80, Ac=1, Re=2 (code J) | not accepted, 2 defect(s) in 80 | **DISCONTINUED** |" in section
    assert "| state entering this batch | plan used | lot result | state after | why |" in section
    assert "| 0.5% | 1% | 2% | 3% | 5% | 7.5% | 10% | 15% | 20% | LQ10 |" in section
    p = stats.binom.cdf(1, 80, 0.02)
    assert f"| {md_escape('n=80, Ac=1, Re=2 (tightened, code J)')} |" in section and f"{p:.3f}" in section
    assert "(oc_curves.png)" in section and "**Stale:**" in section
    assert "<script>" not in text and "&lt;script&gt;" in section
    assert render_card(facts) == text
    off = review_programme_facts(verdicts.drop(columns=["state_entering"]), ReviewSamplingConfig(switching=False))
    assert "switching rules off" in off.slices[0].reason and not off.switching
    assert "Switching rules across batches **off**" in render_card(facts.model_copy(update={"review_programme": off}))
    assert CardFacts.model_validate_json(facts.model_dump_json()) == facts  # card_facts.json round trip


def test_oc_chart_is_deterministic_with_one_curve_per_plan():
    from synqa_dagster.handover.card import review_programme_facts
    from synqa_dagster.handover.oc_chart import oc_figure, programme_oc_png

    programme = review_programme_facts(_verdicts_with_programme(), ReviewSamplingConfig())
    png = programme_oc_png(programme, "batch 2026-11-20")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == programme_oc_png(programme, "batch 2026-11-20")
    assert b"Software" not in png
    fig = oc_figure(programme.oc_curves, "t", aql=0.01)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(programme.oc_curves) == 2
    assert labels[0].startswith("n=80, Ac=1, Re=2") and "LQ10 4.8%" in labels[0]
    assert ax.get_xlabel().startswith("defect rate") and ax.get_ylabel() == "P(slice accepted)"
    assert any("AQL 1%" in t.get_text() for t in ax.texts)
    curve = next(line for line in ax.get_lines() if line.get_label() == labels[0])
    x, y = curve.get_data()
    i = list(x).index(10.0)  # 10% defective on the tightened J plan
    assert y[i] == pytest.approx(stats.binom.cdf(1, 80, 0.10), rel=1e-9)
    assert json.loads(programme.model_dump_json())["oc_image"] == "oc_curves.png"
