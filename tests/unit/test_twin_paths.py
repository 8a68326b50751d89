"""The twin's fast paths give exactly what its plain paths give.

- AI turns: the vectorised lanes (:mod:`twin.lanes`) and one generator per turn
  (the path rate limits need) give identical turn and call tables;
- the plan: a columnar :class:`lab.plan.Plan` and the same calls as a plain list of
  :class:`lab.plan.CallPlan` give identical tables;
- constants kept to avoid importing scipy equal what scipy computes.
"""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

import twin.ai
import twin.lanes
from lab.dists import Z95
from lab.plan import Plan, make_plan
from tests.golden.cases import experiments
from twin.backend import run_replication

CASES = experiments()


def _tables(name: str, plan: object | None = None) -> tuple[pd.DataFrame, pd.DataFrame,
                                                            pd.DataFrame]:
    exp, base = CASES[name]
    exp = exp.model_copy(update={"replications": 1})
    plan = make_plan(exp, 0, base) if plan is None else plan
    rep = run_replication(exp, 0, plan)  # type: ignore[arg-type]
    return rep.calls, rep.turns, rep.steps


@pytest.mark.parametrize("name", ["ai-busy", "voice-agent", "features", "voice-loopback"])
def test_lanes_equal_one_generator_per_turn(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    class Spy(twin.lanes.Lanes):
        def __init__(self, *args: object) -> None:
            built.append(self)
            super().__init__(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(twin.lanes, "Lanes", Spy)
    fast = _tables(name)
    assert built, "the lanes were not used"
    monkeypatch.setattr(twin.ai, "MIN_LOOKAHEAD_S", float("inf"))  # force the generators
    slow = _tables(name)
    assert len(built) == 1
    assert len(fast[1]) > 0
    for a, b in zip(fast, slow, strict=True):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                      check_exact=True)


def test_a_long_conversation_on_uncapped_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,500 turns in one call with no provider cap: the lanes follow turn after turn
    without recursing (a recursion overflowed the stack near 250 turns), and give what
    one generator per turn gives."""
    from lab.spec import validate

    exp = validate({"name": "long-talk", "seed": 5, "duration_s": 20,
                    "load": {"arrivals": {"kind": "constant", "rate_cps": 0.1}},
                    "scenarios": {"talk": {"turns": 1500, "caller_speech_s": 0.5,
                                           "agent_speech_s": 0.5}}})
    plan = make_plan(exp, 0, None)
    fast = run_replication(exp, 0, plan)
    assert len(fast.calls) == 2 and len(fast.turns) == 3000
    assert (fast.turns.groupby("call_id").turn.max() == 1499).all()  # turns count from 0
    monkeypatch.setattr(twin.ai, "MIN_LOOKAHEAD_S", float("inf"))
    slow = run_replication(exp, 0, plan)
    pd.testing.assert_frame_equal(fast.turns.reset_index(drop=True),
                                  slow.turns.reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize("name", ["voice-agent", "features", "contact-centre"])
def test_columnar_plan_equals_a_list_of_calls(name: str) -> None:
    exp, base = CASES[name]
    exp = exp.model_copy(update={"replications": 1})
    plan = make_plan(exp, 0, base)
    assert isinstance(plan, Plan)
    listed = list(plan)  # the same calls, one CallPlan each
    assert [c.call_id for c in listed] == list(range(len(plan)))
    for a, b in zip(_tables(name, plan), _tables(name, listed), strict=True):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                      check_exact=True)


@pytest.mark.parametrize("name", ["voice-agent", "features", "contact-centre"])
def test_iterated_calls_are_the_records_their_constructors_make(name: str) -> None:
    """Plan.__iter__ fills the frozen records through their slots (for speed): each must
    equal, hash like and stay as frozen as the one CallPlan(...) / Talk(...) build."""
    import dataclasses

    import numpy as np

    from lab.plan import CallPlan, Talk, Turns

    exp, base = CASES[name]
    plan = make_plan(exp.model_copy(update={"replications": 1}), 0, base)
    iterated = list(plan)
    assert len(iterated) == len(plan) > 0
    for cls in (CallPlan, Talk, Turns):  # nothing but the fields in their __init__s
        assert not hasattr(cls, "__post_init__")
    kinds = set()
    for c in iterated:
        built = CallPlan(c.call_id, c.start_s, c.scenario, c.source_ip, tuple(
            Talk(s.hold_s) if type(s) is Talk else s for s in c.script))
        assert c == built and c == plan[c.call_id]
        for s in c.script:
            if type(s) is Turns:  # compared by identity (eq=False): by what it holds
                assert len(s) == s.stop - s.start > 0
                again = Turns(s.table, s.start, s.stop).columns()
                np.testing.assert_array_equal(np.array(s.columns()), np.array(again))
        if not any(type(s) is Turns for s in c.script):  # a Turns block is not hashable
            assert hash(c) == hash(built)
        assert type(c) is CallPlan and all(type(s) in (Talk, Turns) or dataclasses.is_dataclass(s)
                                           for s in c.script)
        kinds.update(type(s) for s in c.script)
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.start_s = 0.0  # type: ignore[misc]
    assert kinds  # the experiment's calls carry scripts
    talks = [s for c in iterated for s in c.script if type(s) is Talk]
    for s in talks[:50]:
        assert s == Talk(s.hold_s) and hash(s) == hash(Talk(s.hold_s))
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.hold_s = 1.0  # type: ignore[misc]


def test_z95_is_scipys_normal_quantile() -> None:
    assert stats.norm.ppf(0.95) == Z95


@pytest.mark.parametrize("name", ["contact-centre", "voice-agent", "features", "ai-limits"])
def test_a_run_leaves_no_reference_cycles(name: str) -> None:
    """What lets the twin run the collector seldom (lab.memory.sparse_gc): a run makes
    no cyclic garbage, so nothing waits longer for the collector than it would have."""
    import gc

    from twin.model import Twin

    exp, base = CASES[name]
    exp = exp.model_copy(update={"replications": 1})
    twin = Twin(exp, 0, make_plan(exp, 0, base))
    gc.collect()
    gc.disable()
    try:
        twin.run()
        assert len(twin.log) > 0
        assert gc.collect() == 0
    finally:
        gc.enable()


class _Interrupting(list):  # type: ignore[type-arg]
    """A column whose ``after``-th append raises KeyboardInterrupt (a Ctrl-C mid-row)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def append(self, value: object) -> None:
        if len(self) == self.after:
            raise KeyboardInterrupt
        super().append(value)

    def extend(self, values: object) -> None:  # the call log fills columns a chunk at a time
        if len(self) == self.after and not getattr(self, "fired", False):
            self.fired = True  # once: the finishing flush then goes through
            raise KeyboardInterrupt
        super().extend(values)  # type: ignore[arg-type]


@pytest.mark.parametrize("table", ["calls", "steps"])
def test_ctrl_c_between_two_appends_of_a_row_keeps_the_tables_aligned(
        table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C can land inside a record's row: the half-written row is dropped and
    every record finished before it is kept, every column the same length."""
    import twin.model

    exp, base = CASES["features"]
    exp = exp.model_copy(update={"replications": 1})
    whole = run_replication(exp, 0, make_plan(exp, 0, base))
    k = 25
    if table == "calls":  # rows go into the columns 5 at a time: the 6th flush breaks
        monkeypatch.setattr(twin.model.CallLog, "CHUNK", 5)
    real_init = twin.model.Twin.__init__

    def init(self: twin.model.Twin, *args: object) -> None:
        real_init(self, *args)  # type: ignore[arg-type]
        cols = self.log.cols if table == "calls" else list(self.features.cols.values())
        i = len(cols) // 2  # a column in the middle of the row: half of it is written
        cut = _Interrupting(k)
        cols[i] = cut
        if table == "steps":
            self.features.cols[list(self.features.cols)[i]] = cut

    monkeypatch.setattr(twin.model.Twin, "__init__", init)
    rep = run_replication(exp, 0, make_plan(exp, 0, base))
    assert rep.interrupted
    got = rep.calls if table == "calls" else rep.steps
    # calls: the interrupted flush's 5 finished rows are flushed again when the log closes
    kept = k + 5 if table == "calls" else k
    assert len(got) == kept
    want = whole.calls if table == "calls" else whole.steps
    key = ["call_id"] if table == "calls" else ["call_id", "step"]
    # the kept rows are exactly those rows of the uninterrupted run
    merged = got.merge(want, on=key, suffixes=("", "_whole"))
    assert len(merged) == kept
    for col in ("start_s", "outcome") if table == "calls" else ("start_s", "kind"):
        assert (merged[col] == merged[f"{col}_whole"]).all()
