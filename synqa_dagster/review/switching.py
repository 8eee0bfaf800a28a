"""Human review as a programme across batches: the ISO 2859-1:1999 switching rules, per slice (Dagster-free).

Each slice (one combination of the strata values) is a stream of lots, one lot per batch. Which plan a slice's
lot is sampled under (normal: Table 2-A, tightened: Table 2-B, reduced: Table 2-C, or the zero-acceptance
analogues, see :mod:`.sampling`) follows from the results of its earlier lots. This module is the state machine;
:mod:`.ledger` stores lots and states in the review store, and ``review_queue`` / ``human_review`` use both.

The rules, as implemented (clause numbers of ISO 2859-1:1999, *Sampling procedures for inspection by attributes --
Part 1*, clause 9 "Normal, tightened and reduced inspection"; MIL-STD-105E 8.3 has the same rules with the
limit numbers of its Table VIII where ISO 1999 has the switching score):

* **Start** (9.1): normal inspection.
* **Normal -> tightened** (9.3.1): when 2 out of 5 or fewer consecutive lots have not been accepted on original
  inspection. Implemented as: among the last 5 decided lots of the current normal period (this one included), 2
  are not accepted.
* **Tightened -> normal** (9.3.2): when 5 consecutive lots have been accepted on tightened inspection.
* **Discontinuation** (9.4): if the cumulative number of lots not accepted in a sequence of consecutive lots on
  tightened inspection reaches 5, acceptance inspection is discontinued; it is not resumed until the supplier
  has acted to improve quality, and then tightened inspection is used as if 9.3.1 had been invoked. Here: state
  ``discontinued`` (the slice is still sampled with the tightened plan so reviewers keep seeing it, and every
  report says DISCONTINUED) until a resumption is recorded for a batch (``resumptions``), from which the slice is
  on tightened inspection with fresh counters.
* **Switching score** (9.3.3.2, single sampling): set to 0 at the start of normal inspection and updated after
  each lot on normal inspection: a) 1) when the acceptance number is 2 or more, add 3 if the lot would have been
  accepted had the AQL been one step tighter (the Ac of the same code letter's Table 2-A plan one AQL column
  to the left, :func:`~synqa_dagster.review.sampling.tighter_acceptance_number`), otherwise reset to 0; a) 2) when
  the acceptance number is 0 or 1, add 2 if the lot is accepted, otherwise reset to 0. Zero-acceptance plans
  have Ac 0, so they follow a) 2).
* **Normal -> reduced** (9.3.3.1): when the switching score is at least 30, production is at a steady rate, and
  reduced inspection is considered desirable by the responsible authority -- here ``allow_reduced`` in the
  config. A score at 30 without the other two conditions is reported, and inspection stays normal.
* **Reduced -> normal** (9.3.4): a) a lot is not accepted; b) production becomes irregular or delayed (here: the
  slice has no lot in the batch just before this one; the switch happens before the lot is sampled); c) other
  conditions (not modelled). Also, with the MIL-STD-105E / ISO 2859-1:1989 reduced plans encoded in Table 2-C,
  a defect count d with Ac < d < Re accepts the lot and reinstates normal inspection (MIL-STD-105E 10.1.4).

A lot counts once its outcome is decided: **rejected** as soon as its defects reach the rejection number, else
**accepted** when its sample is fully reviewed (or ``accepted_limit`` for the reduced limit zone). A lot whose
review is pending, or whose deadline passed before its sample was complete, is **undecided**: it changes no
counter, and the state after it equals the state before it (the standard counts only inspected lots).

Order and determinism: :func:`replay` sorts lots by batch key (ISO dates sort chronologically) whatever order
they were recorded in, so the state entering batch k is a function of the decided lots of batches < k (plus the
resumptions recorded at or before k) only. Re-running (backfilling) an earlier batch changes that batch's lot and
replays every later state; a later batch whose sample was drawn under a state the replay no longer gives is
flagged ``stale`` (its review_queue should be re-materialized).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

STATES: tuple[str, ...] = ("normal", "tightened", "reduced", "discontinued")
"""Switching states of a slice. ``discontinued`` (9.4) is sampled with the tightened plan."""

OUTCOMES: tuple[str, ...] = ("accepted", "accepted_limit", "rejected", "pending", "incomplete")
"""Lot outcomes: decided (accepted, accepted_limit = reduced Ac < d < Re, rejected) or undecided (pending, incomplete)."""

#: Lots / score thresholds of the rules.
TIGHTENED_WINDOW, TIGHTENED_REJECTIONS = 5, 2     # 9.3.1: 2 of 5 or fewer consecutive lots not accepted
NORMAL_AFTER_ACCEPTED = 5                          # 9.3.2: 5 consecutive lots accepted on tightened inspection
DISCONTINUE_AFTER = 5                              # 9.4: 5 lots not accepted on tightened inspection
REDUCED_SCORE = 30                                 # 9.3.3.1 a): switching score at least 30
SCORE_STEP_HIGH, SCORE_STEP_LOW = 3, 2             # 9.3.3.2 a) 1) Ac >= 2 / a) 2) Ac 0 or 1


def plan_severity(state: str) -> str:
    """The inspection a slice in ``state`` is sampled under: the state itself, tightened when discontinued."""
    if state not in STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
    return "tightened" if state == "discontinued" else state


@dataclass(frozen=True)
class Lot:
    """One slice's lot in one batch: the plan it was sampled under and what review found.

    Attributes:
        batch: the batch (partition) key; lots are ordered by it.
        sample_size / acceptance_number / rejection_number: the plan used (n, Ac, Re).
        reviewed / defects: sampled rows decided so far and how many were rejected.
        severity: the inspection the lot was sampled under (normal / tightened / reduced).
        tighter_acceptance_number: for a normal plan with Ac >= 2, the Ac one AQL step tighter (9.3.3.2 a) 1)).
        outcome: None = derived from the counts (rejected when defects >= Re, accepted / accepted_limit when fully
            reviewed, else pending); or "incomplete" for a lot whose review deadline passed before its sample
            was complete (undecided unless the defects already reject it).
        production_steady: False when the slice's production was irregular before this lot (9.3.3.1 b, 9.3.4 b);
            :func:`mark_production` sets it from the batch sequence.
    """

    batch: str
    sample_size: int
    acceptance_number: int
    rejection_number: int
    reviewed: int = 0
    defects: int = 0
    severity: str = "normal"
    tighter_acceptance_number: int | None = None
    outcome: str | None = None
    production_steady: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.batch, str) or not self.batch:
            raise ValueError("a lot needs a non-empty batch key")
        if self.rejection_number <= self.acceptance_number or self.acceptance_number < 0:
            raise ValueError(f"lot {self.batch}: need 0 <= Ac < Re; got Ac {self.acceptance_number}, "
                             f"Re {self.rejection_number}")
        if not 0 <= self.defects <= self.reviewed <= self.sample_size:
            raise ValueError(f"lot {self.batch}: need 0 <= defects <= reviewed <= sample size; got "
                             f"{self.defects}, {self.reviewed}, {self.sample_size}")
        if self.severity not in ("normal", "tightened", "reduced"):
            raise ValueError(f"lot {self.batch}: severity {self.severity!r} is not normal, tightened or reduced")
        if self.outcome not in (None, "incomplete"):
            raise ValueError(f"lot {self.batch}: outcome may only be forced to 'incomplete'; got {self.outcome!r}")

    @property
    def result(self) -> str:
        """accepted / accepted_limit / rejected (decided) or pending / incomplete (undecided)."""
        if self.defects >= self.rejection_number:
            return "rejected"
        if self.reviewed == self.sample_size and self.outcome is None:
            return "accepted_limit" if self.defects > self.acceptance_number else "accepted"
        return self.outcome or "pending"

    @property
    def decided(self) -> bool:
        """The lot counts for the switching rules."""
        return self.result in ("accepted", "accepted_limit", "rejected")

    @property
    def accepted(self) -> bool:
        """The lot was accepted (accepted_limit included)."""
        return self.result in ("accepted", "accepted_limit")


@dataclass(frozen=True)
class Counters:
    """The standard's counters for one slice.

    Attributes:
        score: the switching score (9.3.3.2), kept on normal inspection only.
        normal_window: accepted? of the last <= 5 decided lots of the current normal period, oldest first, with
            their batches (for 9.3.1).
        tightened_accepted: consecutive lots accepted on tightened inspection (9.3.2).
        tightened_rejected: batches of the lots not accepted since tightened inspection began (9.4).
    """

    score: int = 0
    normal_window: tuple[tuple[str, bool], ...] = ()
    tightened_accepted: int = 0
    tightened_rejected: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """JSON-able form (the ledger stores it)."""
        return {"score": self.score, "normal_window": [list(x) for x in self.normal_window],
                "tightened_accepted": self.tightened_accepted, "tightened_rejected": list(self.tightened_rejected)}


@dataclass(frozen=True)
class SliceState:
    """Where a slice stands: its state, the counters, since when and why.

    Attributes:
        state: normal / tightened / reduced / discontinued.
        counters: :class:`Counters`.
        since: the batch whose lot caused the last switch (None: the initial normal state).
        reason: why the slice is in this state (the last switch's reason, with its clause).
    """

    state: str = "normal"
    counters: Counters = field(default_factory=Counters)
    since: str | None = None
    reason: str = "normal inspection at the start (ISO 2859-1:1999 9.1)"

    @property
    def severity(self) -> str:
        """The inspection the next lot is sampled under (:func:`plan_severity`)."""
        return plan_severity(self.state)

    def status(self) -> str:
        """One line: the state and how far its counters are from the next switch."""
        c = self.counters
        if self.state == "normal":
            rejected = [b for b, ok in c.normal_window if not ok]
            text = f"normal: switching score {c.score} (reduced possible at {REDUCED_SCORE})"
            if rejected:
                text += f"; not accepted in the last {len(c.normal_window)} lots: {', '.join(rejected)}"
            return text
        if self.state == "tightened":
            return (f"tightened: {c.tightened_accepted} of {NORMAL_AFTER_ACCEPTED} consecutive accepted lots needed "
                    f"for normal; {len(c.tightened_rejected)} of {DISCONTINUE_AFTER} lots not accepted before "
                    f"discontinuation")
        if self.state == "reduced":
            return "reduced: normal again on a lot not accepted or irregular production"
        return f"DISCONTINUED since {self.since}: record corrective action to resume (tightened)"


@dataclass(frozen=True)
class Step:
    """One lot through the state machine.

    Attributes:
        lot: the lot.
        entering / leaving: the state the lot was inspected under (after any switch that happens before a lot:
            a resumption, irregular production) and the state after it.
        switched: the state after the lot differs from the state after the previous lot (so a pre-lot switch
            counts).
        reason: what the lot did, with the clause (e.g. "2 of the last 5 lots not accepted ... (9.3.1)").
        stale: the lot was sampled under another inspection than ``entering`` gives (an earlier batch was
            re-run or decided after this lot was sampled).
    """

    lot: Lot
    entering: SliceState
    leaving: SliceState
    switched: bool
    reason: str
    stale: bool = False


def _normal(batch: str | None, reason: str) -> SliceState:
    return SliceState("normal", Counters(), batch, reason)


def _tightened(batch: str | None, reason: str) -> SliceState:
    return SliceState("tightened", Counters(), batch, reason)


def before_lot(state: SliceState, batch: str, production_steady: bool) -> tuple[SliceState, str | None]:
    """The switches that happen before a lot is sampled: reduced -> normal on irregular production (9.3.4 b).

    Returns ``(state, reason or None)``.
    """
    if state.state == "reduced" and not production_steady:
        reason = (f"production irregular before batch {batch} (no lot of this slice in the batch before): normal "
                  f"inspection reinstated (ISO 2859-1:1999 9.3.4 b)")
        return _normal(batch, reason), reason
    return state, None


def step(state: SliceState, lot: Lot, allow_reduced: bool = False) -> Step:
    """Apply one lot to a slice's state (see the module docstring for the rules)."""
    entering, pre_reason = before_lot(state, lot.batch, lot.production_steady)
    stale = lot.severity != entering.severity
    result = lot.result
    prefix = (pre_reason + "; ") if pre_reason else ""
    if not lot.decided:
        what = ("review pending" if result == "pending" else "deadline passed before the sample was complete")
        reason = f"{prefix}lot {lot.batch} undecided ({what}): not counted; {entering.status()}"
        return Step(lot, entering, entering, entering.state != state.state, reason, stale)
    c = entering.counters
    batch = lot.batch
    if entering.state == "normal":
        window = (c.normal_window + ((batch, lot.accepted),))[-TIGHTENED_WINDOW:]
        score, score_note = _score(c.score, lot)
        rejected = [b for b, ok in window if not ok]
        if len(rejected) >= TIGHTENED_REJECTIONS:
            reason = (f"{len(rejected)} of the last {len(window)} consecutive lots not accepted on normal inspection "
                      f"({', '.join(rejected)}): tightened inspection (ISO 2859-1:1999 9.3.1)")
            leaving = _tightened(batch, reason)
        elif score >= REDUCED_SCORE and lot.production_steady and allow_reduced:
            reason = (f"switching score {score} >= {REDUCED_SCORE} ({score_note}), production steady and reduced "
                      f"inspection allowed by the config (allow_reduced, the responsible authority): reduced "
                      f"inspection (ISO 2859-1:1999 9.3.3)")
            leaving = SliceState("reduced", Counters(), batch, reason)
        else:
            leaving = SliceState("normal", Counters(score, window), entering.since, entering.reason)
            reason = f"lot {batch} {_verb(lot)}; {score_note}"
            if score >= REDUCED_SCORE:
                missing = [x for x, ok in (("production is not steady", lot.production_steady),
                                            ("allow_reduced is false", allow_reduced)) if not ok]
                reason += f"; score >= {REDUCED_SCORE} but normal inspection stays: {' and '.join(missing)} (9.3.3.1)"
    elif entering.state == "tightened":
        if lot.accepted:
            run = c.tightened_accepted + 1
            if run >= NORMAL_AFTER_ACCEPTED:
                reason = (f"{run} consecutive lots accepted on tightened inspection (up to {batch}): normal "
                          f"inspection (ISO 2859-1:1999 9.3.2); switching score starts at 0 (9.3.3.2)")
                leaving = _normal(batch, reason)
            else:
                leaving = replace(entering, counters=replace(c, tightened_accepted=run))
                reason = f"lot {batch} accepted on tightened inspection: {run} of {NORMAL_AFTER_ACCEPTED} consecutive"
        else:
            rejected = c.tightened_rejected + (batch,)
            if len(rejected) >= DISCONTINUE_AFTER:
                reason = (f"{len(rejected)} lots not accepted on tightened inspection ({', '.join(rejected)}): "
                          f"inspection DISCONTINUED (ISO 2859-1:1999 9.4) until corrective action is recorded")
                leaving = SliceState("discontinued", Counters(tightened_rejected=rejected), batch, reason)
            else:
                leaving = replace(entering, counters=replace(c, tightened_accepted=0, tightened_rejected=rejected))
                reason = (f"lot {batch} not accepted on tightened inspection: {len(rejected)} of "
                          f"{DISCONTINUE_AFTER} before discontinuation (9.4); the accepted run restarts")
    elif entering.state == "reduced":
        if result == "rejected":
            reason = f"lot {batch} not accepted on reduced inspection: normal inspection (ISO 2859-1:1999 9.3.4 a)"
            leaving = _normal(batch, reason)
        elif result == "accepted_limit":
            reason = (f"lot {batch}: {lot.defects} defects, between Ac {lot.acceptance_number} and Re "
                      f"{lot.rejection_number} of the reduced plan: lot accepted, normal inspection reinstated "
                      f"(MIL-STD-105E 10.1.4 / ISO 2859-1:1989 reduced plans)")
            leaving = _normal(batch, reason)
        else:
            leaving = entering
            reason = f"lot {batch} accepted on reduced inspection: reduced inspection continues"
    else:  # discontinued
        leaving = entering
        reason = (f"lot {batch} {_verb(lot)} while inspection is discontinued (since {entering.since}, 9.4): "
                  f"not counted until corrective action is recorded")
    return Step(lot, entering, leaving, leaving.state != state.state, prefix + reason, stale)


def _verb(lot: Lot) -> str:
    return {"accepted": "accepted", "accepted_limit": "accepted (limit zone)", "rejected": "not accepted"}[lot.result]


def _score(score: int, lot: Lot) -> tuple[int, str]:
    """The switching score after a decided lot on normal inspection (ISO 2859-1:1999 9.3.3.2 a))."""
    ac, d = lot.acceptance_number, lot.defects
    if ac >= 2:
        tighter = lot.tighter_acceptance_number
        if tighter is None:  # only a lot sampled under another plan than normal (a stale lot) gets here
            if lot.accepted:
                return score + SCORE_STEP_LOW, (f"switching score {score} -> {score + SCORE_STEP_LOW} (Ac {ac} but no "
                                                f"tighter acceptance number recorded: +{SCORE_STEP_LOW} as for Ac 0/1)")
            return 0, "switching score reset to 0 (lot not accepted, 9.3.3.2)"
        if lot.accepted and d <= tighter:
            return score + SCORE_STEP_HIGH, (f"switching score {score} -> {score + SCORE_STEP_HIGH} ({d} defects <= "
                                             f"Ac {tighter} one AQL step tighter, 9.3.3.2 a) 1))")
        return 0, (f"switching score reset to 0 ({d} defects > Ac {tighter} one AQL step tighter, 9.3.3.2 a) 1))")
    if lot.accepted:
        return score + SCORE_STEP_LOW, f"switching score {score} -> {score + SCORE_STEP_LOW} (Ac {ac}, lot accepted, 9.3.3.2 a) 2))"
    return 0, f"switching score reset to 0 (Ac {ac}, lot not accepted, 9.3.3.2 a) 2))"


def _ordered(lots: Iterable[Lot]) -> list[Lot]:
    ordered = sorted(lots, key=lambda lot: lot.batch)
    for a, b in zip(ordered, ordered[1:]):
        if a.batch == b.batch:
            raise ValueError(f"two lots for batch {a.batch!r}: a slice has one lot per batch")
    return ordered


def _resume(state: SliceState, upto: str, resumptions: Mapping[str, str]) -> tuple[SliceState, str | None]:
    """A discontinued state resumed by the earliest resumption recorded after its discontinuation and at or
    before ``upto`` (9.4): tightened inspection, fresh counters. Returns ``(state, reason or None)``."""
    if state.state != "discontinued":
        return state, None
    after = [at for at in resumptions if (state.since or "") < at <= upto]
    if not after:
        return state, None
    at = min(after)
    note = resumptions[at]
    reason = (f"inspection resumed at batch {at} after corrective action" + (f" ({note})" if note else "")
              + ": tightened inspection as if 9.3.1 had been invoked (ISO 2859-1:1999 9.4)")
    return _tightened(at, reason), reason


def replay(lots: Iterable[Lot], allow_reduced: bool = False, resumptions: Mapping[str, str] | None = None,
           start: SliceState | None = None) -> list[Step]:
    """Run a slice's lots through the state machine in batch order (whatever order they are given in).

    Args:
        lots: the slice's lots (one per batch).
        allow_reduced: the config's ``allow_reduced`` (9.3.3.1 c).
        resumptions: batch -> note: corrective action recorded for a discontinued slice; lots of that batch and
            later are on tightened inspection (9.4). A resumption only applies to a discontinuation at an earlier
            batch.
        start: the state before the first lot (default: normal, 9.1).

    Returns:
        One :class:`Step` per lot, in batch order. ``Step.entering`` is the state the lot was inspected under
        (after a resumption or an irregular-production switch that happens before it).

    Raises:
        ValueError: two lots with the same batch.
    """
    state = start or SliceState()
    resumptions = dict(resumptions or {})
    steps = []
    for lot in _ordered(lots):
        before = state
        state, resumed = _resume(state, lot.batch, resumptions)
        result = step(state, lot, allow_reduced)
        if resumed:
            result = replace(result, reason=f"{resumed}; {result.reason}",
                             switched=result.leaving.state != before.state)
        steps.append(result)
        state = result.leaving
    return steps


def state_before(lots: Iterable[Lot], batch: str, allow_reduced: bool = False,
                 resumptions: Mapping[str, str] | None = None, production_steady: bool = True) -> SliceState:
    """The state a slice enters ``batch`` in: :func:`replay` of its lots of batches < ``batch`` only, then a
    resumption recorded at or before ``batch`` (9.4) and the pre-lot switch for irregular production (9.3.4 b).

    Lots of ``batch`` itself or later never matter, so the answer does not depend on the order in which batches
    were run or backfilled.
    """
    earlier = [lot for lot in lots if lot.batch < batch]
    steps = replay(earlier, allow_reduced, resumptions)
    state = steps[-1].leaving if steps else SliceState()
    state, _ = _resume(state, batch, dict(resumptions or {}))
    state, _ = before_lot(state, batch, production_steady)
    return state


def mark_production(lots: Sequence[Lot], batches: Sequence[str]) -> list[Lot]:
    """Set each lot's ``production_steady`` from the batch sequence: False when the slice has an earlier lot but
    none in the batch immediately before this one among ``batches`` (every batch of the programme, any slice).

    A slice missing from a batch means its production was interrupted (9.3.3.1 b, 9.3.4 b); a slice's first lot
    is steady. Returned in batch order.
    """
    order = sorted(set(batches) | {lot.batch for lot in lots})
    position = {b: i for i, b in enumerate(order)}
    out, previous = [], None
    for lot in _ordered(lots):
        steady = previous is None or position[lot.batch] - position[previous] == 1
        out.append(replace(lot, production_steady=steady))
        previous = lot.batch
    return out


def production_steady_for(lots: Sequence[Lot], batch: str, batches: Sequence[str]) -> bool:
    """Whether a slice's production is steady entering ``batch``: it has no earlier lot, or one in the batch
    immediately before ``batch`` among ``batches`` (see :func:`mark_production`)."""
    earlier = sorted(lot.batch for lot in lots if lot.batch < batch)
    if not earlier:
        return True
    before = sorted({b for b in batches if b < batch} | set(earlier))
    return before[-1] == earlier[-1]


__all__ = ["Counters", "Lot", "OUTCOMES", "STATES", "SliceState", "Step", "before_lot", "mark_production",
           "plan_severity", "production_steady_for", "replay", "state_before", "step"]
