"""The RTP impairment emulator (real/network.py) on loopback: loss, bursts, delay, seeding.

Datagrams are blasted through a real emulator process from two plain UDP sockets
standing in for caller and agent; the emulator's own counters are compared with the
loss model's theory (independent loss p; Gilbert model mean burst 1/p_bg).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.spec import Network
from real.network import NetworkEmulator

pytestmark = pytest.mark.real
Leftovers = Callable[[Path], list[tuple[int, str]]]


def blast(net: Network, workdir: Path, n: int, seed: int = 7, gap_s: float = 0.0
          ) -> tuple[dict[str, Any], list[float]]:
    """Send ``n`` datagrams caller → agent through the emulator; its counters and delays (s).

    With ``gap_s`` the datagrams are paced and received at once (delays are exact to
    about a millisecond); without, they are sent in bursts of 100.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    emulator = NetworkEmulator(net, seed, workdir, deadline=time.monotonic() + 30.0)
    agent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        emulator.start()
        agent.bind(("127.0.0.1", 0))
        agent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        caller.bind(("127.0.0.1", 0))
        ports = emulator.open(1, agent.getsockname())
        agent.setblocking(False)
        delays: list[float] = []
        sent: dict[int, float] = {}
        for i in range(n):
            sent[i] = time.monotonic()
            caller.sendto(i.to_bytes(4, "big"), ("127.0.0.1", ports["caller_port"]))
            if gap_s:
                end = time.monotonic() + gap_s
                while time.monotonic() < end:
                    select.select([agent], [], [], max(0.0, end - time.monotonic()))
                    delays += _drain(agent, sent)
            elif i % 100 == 99:
                time.sleep(0.002)
                delays += _drain(agent, sent)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            select.select([agent], [], [], 0.01)
            delays += _drain(agent, sent)
        return emulator.close(1), delays
    finally:
        caller.close()
        agent.close()
        emulator.stop()


def _drain(sock: socket.socket, sent: dict[int, float]) -> list[float]:
    out = []
    while True:
        try:
            data = sock.recv(64)
        except BlockingIOError:
            return out
        out.append(time.monotonic() - sent[int.from_bytes(data, "big")])


def test_random_loss_matches_the_setting(tmp_path: Path, leftovers: Leftovers) -> None:
    stats, delays = blast(Network(loss=0.05), tmp_path, 6000)
    up = stats["up"]
    assert up["rx"] == 6000 and up["unrouted"] == 0
    assert up["dropped"] / up["rx"] == pytest.approx(0.05, abs=0.01)
    assert len(delays) == up["tx"]  # every forwarded datagram arrived
    assert leftovers(tmp_path) == []


def test_gilbert_burst_length_matches_theory(tmp_path: Path) -> None:
    net = Network(loss=0.1, burst={"mean_burst_packets": 4})
    up = blast(net, tmp_path, 20000)[0]["up"]
    assert up["dropped"] / up["rx"] == pytest.approx(0.1, abs=0.02)
    assert up["dropped"] / up["bursts"] == pytest.approx(4.0, rel=0.15)  # 1/p_bg


def test_delay_and_jitter(tmp_path: Path) -> None:
    stats, delays = blast(Network(delay_ms=30, jitter_ms=5), tmp_path, 500, gap_s=0.004)
    mean = sum(delays) / len(delays)
    assert stats["up"]["dropped"] == 0
    assert mean == pytest.approx(0.030, abs=0.004)
    assert stats["up"]["delay_ms_total"] / stats["up"]["tx"] == pytest.approx(30.0, abs=1.0)
    spread = (sum((d - mean) ** 2 for d in delays) / len(delays)) ** 0.5
    assert 0.003 < spread < 0.008


def test_same_seed_same_drops(tmp_path: Path) -> None:
    a = blast(Network(loss=0.1), tmp_path / "a", 2000, seed=11)[0]["up"]
    b = blast(Network(loss=0.1), tmp_path / "b", 2000, seed=11)[0]["up"]
    c = blast(Network(loss=0.1), tmp_path / "c", 2000, seed=12)[0]["up"]
    assert a["dropped"] == b["dropped"] and a["bursts"] == b["bursts"]
    assert (a["dropped"], a["bursts"]) != (c["dropped"], c["bursts"])
