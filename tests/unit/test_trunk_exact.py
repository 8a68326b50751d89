"""The trunk's channel count (Erlang loss system) and its carrier CPS window, exactly.

A channel is taken per admitted call and freed per release; an attempt finding every
channel held is blocked. The CPS window counts admissions in the half-open last second
(now − 1, now]: an admission exactly one second ago has left it.
"""

from __future__ import annotations

from twin.trunk import Trunk


def test_layer_names() -> None:
    assert Trunk.BLOCKED == "trunk.channels"
    assert Trunk.CPS == "trunk.cps_limit"


def test_exactly_channels_calls_fit() -> None:
    trunk = Trunk(channels=3, cps_limit=None)
    assert [trunk.admit(0.0) for _ in range(4)] == [None, None, None, "trunk.channels"]
    assert trunk.active == 3
    trunk.release()
    trunk.release()
    assert trunk.active == 1
    assert [trunk.admit(1.0) for _ in range(3)] == [None, None, "trunk.channels"]


def test_zero_channels_block_everything() -> None:
    trunk = Trunk(channels=0, cps_limit=None)
    assert trunk.admit(0.0) == "trunk.channels" and trunk.active == 0


def test_cps_admission_one_second_ago_has_left_the_window() -> None:
    trunk = Trunk(channels=10, cps_limit=1)
    assert trunk.admit(0.0) is None
    assert trunk.admit(0.999) == "trunk.cps_limit"
    assert trunk.admit(1.0) is None  # 0.0 <= 1.0 - 1.0: out of the window
    assert trunk.admit(1.5) == "trunk.cps_limit"
    assert trunk.active == 2


def test_cps_limit_counts_admissions_not_attempts() -> None:
    trunk = Trunk(channels=10, cps_limit=2)
    got = [trunk.admit(t) for t in (0.0, 0.1, 0.2, 0.3, 1.05, 1.25, 1.3)]
    # refused attempts at 0.2 and 0.3 are not counted: at 1.05 the window holds only
    # 0.1, at 1.25 only 1.05; at 1.3 it holds 1.05 and 1.25
    assert got == [None, None, "trunk.cps_limit", "trunk.cps_limit", None, None,
                   "trunk.cps_limit"]


def test_cps_refusal_comes_before_channel_blocking_and_both_hold_nothing() -> None:
    trunk = Trunk(channels=1, cps_limit=1)
    assert trunk.admit(0.0) is None
    assert trunk.admit(0.5) == "trunk.cps_limit"  # CPS is checked first
    assert trunk.admit(2.0) == "trunk.channels"  # in the window, so counted ...
    trunk.release()
    assert trunk.admit(2.5) == "trunk.cps_limit"  # ... a blocked attempt counts towards CPS
    assert trunk.admit(3.0) is None
    assert trunk.active == 1
