"""Real RTP on loopback: per-call MOS from pjsua2's RTCP/stream statistics.

Every answered call carries PCMU both ways through the RTP impairment emulator (the SIPp agent
echoes the caller's RTP), and its record carries the E-model MOS computed from what
the caller's stream measured (:mod:`real.media`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.plan import make_plan
from lab.spec import Experiment
from real.backend import run_calls

pytestmark = pytest.mark.real
Leftovers = Callable[[Path], list[tuple[int, str]]]


def run(tmp_path: Path, network: dict[str, Any], hold_s: float, n: int = 2
        ) -> list[dict[str, Any]]:
    exp = Experiment.model_validate({
        "name": "media", "seed": 5, "duration_s": n * 0.25,
        "load": {"arrivals": {"kind": "constant", "rate_cps": 4.0}},
        "scenarios": {"talk": {"hold_s": hold_s}},
        "deployment": {"network": network}, "real": {"sip_port": 5080},
    })
    records: list[dict[str, Any]] = []
    run_calls(exp, make_plan(exp), tmp_path, records.append)
    assert len(records) == n and all(r["outcome"] == "answered" for r in records)
    return records


def test_clean_call_has_a_measured_mos(real_stack: None, tmp_path: Path,
                                       leftovers: Leftovers) -> None:
    for r in run(tmp_path, {}, 3.0):
        assert r["mos"] == pytest.approx(4.4, abs=0.06)
        assert r["rtp_loss"] == 0.0 and r["relay_loss_up"] == 0.0
        assert 20.0 <= r["mouth_to_ear_ms"] < 120.0
        assert not math.isnan(r["rtp_jitter_ms"])
    assert (tmp_path / "recordings" / "call0.wav").stat().st_size > 40000
    assert leftovers(tmp_path) == []


def test_lossy_network_lowers_mos(real_stack: None, tmp_path: Path,
                                  leftovers: Leftovers) -> None:
    for r in run(tmp_path, {"loss": 0.05}, 8.0):
        up, down = r["relay_loss_up"], r["relay_loss_down"]
        assert up == pytest.approx(0.05, abs=0.03) and down == pytest.approx(0.05, abs=0.03)
        # the echo crossed the emulator twice; the caller's RTCP receive loss says so
        assert r["rtp_loss"] == pytest.approx(1 - (1 - up) * (1 - down), abs=0.03)
        assert r["mos"] < 4.0
    assert leftovers(tmp_path) == []
