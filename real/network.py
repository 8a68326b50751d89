"""The network: ``deployment.network`` applied to real RTP by an impairment emulator.

The twin draws each RTP packet's fate from :mod:`twin.network` and
:mod:`twin.media`; on loopback nothing is ever late or lost, so the real backend
routes every call's media through this emulator (a media relay in the path, as an
rtpengine-fronted edge anchors media), which does to real datagrams what
the twin does to modelled ones, per direction, with seeded randomness:

- **delay and jitter**: packet delay ``max(delay_ms + jitter_ms·Z, 0)``, ``Z``
  standard normal, independent per packet (so packets may overtake each other),
  exactly the twin's model;
- **loss**: Bernoulli ``network.loss``, or a Gilbert–Elliott chain
  (``network.burst``, :class:`lab.loss.LossModel`) stepped once per RTP packet,
  started in its stationary law. RTCP (RFC 3550 section 6) is delayed like RTP but
  never dropped, so round-trip time stays measurable.

Where it sits (how a call's media is steered through it)
--------------------------------------------------------
Per call the emulator opens two RTP/RTCP port pairs on 127.0.0.1: ``agent_port``
(faces the agent) and ``caller_port`` (faces the caller). The caller puts
``agent_port`` into its own SDP offer (pjsua2 ``onCallSdpCreated``), so the agent
sends to the emulator, and names ``caller_port`` in an ``X-Siplab-Relay`` header of its
INVITE; the proxy rewrites the ``m=audio`` port (and ``a=rtcp``) of the agent's SDP
answer to it (``onreply_route[RELAY]`` in the Kamailio config), so the caller sends
to the emulator too. Each side's
real address is learnt from the first datagram it sends (symmetric RTP, RFC 4961);
datagrams that arrive before the other side is known are counted as ``unrouted``.

The emulator is one process (``python -m real.network``) with a single-threaded
selector loop and a timer heap for the delayed datagrams, driven by JSON lines
(:mod:`lab.proc.lines`); :class:`NetworkEmulator` is the coordinator's handle:
``{"op": "open", "call": k, "agent": [host, port] | null}`` →
``{"ev": "opened", "call", "agent_port", "caller_port"}``;
``{"op": "close", "call": k}`` → ``{"ev": "closed", "call", "up", "down"}`` with the
counters of each direction (``up`` = caller → agent, ``down`` = agent → caller):
``rx``, ``tx``, ``dropped``, ``bursts`` (runs of consecutive drops), ``unrouted``,
``rtcp``; ``{"op": "quit"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import selectors
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab.loss import LossModel
from lab.proc.child import ChildProcess
from lab.proc.lines import ChildChannel, Event, ParentChannel
from lab.proc.worker import Lifetime, add_run_args, ready, run_until
from lab.spec import Network

HOST = "127.0.0.1"
BATCH = 512
UP, DOWN = 0, 1  # caller -> agent, agent -> caller
Send = tuple[float, socket.socket, bytes, tuple[str, int]]  # due, out socket, data, dest


@dataclass
class Counters:
    """What one direction of one call saw."""

    rx: int = 0
    tx: int = 0
    dropped: int = 0
    bursts: int = 0
    unrouted: int = 0
    rtcp: int = 0
    delay_ms_total: float = 0.0  # sum of the delays given to forwarded RTP


class Impairment:
    """One direction's delay, jitter and (bursty) loss, with its own random stream."""

    def __init__(self, net: Network, rng: np.random.Generator) -> None:
        self.delay_s = net.delay_ms / 1000.0
        self.jitter_s = net.jitter_ms / 1000.0
        lm = LossModel.from_network(net)
        self.p_gb, self.p_bg = lm.p_gb, lm.p_bg
        self.loss_good, self.loss_bad = lm.loss_good, lm.loss_bad
        self.rng = rng
        total = self.p_gb + self.p_bg
        self.bad = bool(rng.random() < (self.p_gb / total if total > 0 else 0.0))
        self.last_dropped = False
        self._u: list[float] = []
        self._z: list[float] = []

    def _uniform(self) -> float:
        if not self._u:
            self._u = self.rng.random(BATCH).tolist()
        return self._u.pop()

    def delay(self) -> float:
        if self.jitter_s == 0.0:
            return self.delay_s
        if not self._z:
            self._z = self.rng.standard_normal(BATCH).tolist()
        return max(self.delay_s + self.jitter_s * self._z.pop(), 0.0)

    def lost(self) -> bool:
        """Step the chain by one packet and draw that packet's loss."""
        if self.loss_good == self.loss_bad:
            return self.loss_good > 0.0 and self._uniform() < self.loss_good
        if self.bad:
            self.bad = self._uniform() >= self.p_bg
        else:
            self.bad = self._uniform() < self.p_gb
        return self._uniform() < (self.loss_bad if self.bad else self.loss_good)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on consecutive ports (RTP even, RTCP = RTP + 1, RFC 3550 11)."""
    for _ in range(200):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
        probe.close()
        port -= port % 2
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((HOST, port))
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        for s in (rtp, rtcp):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return rtp, rtcp
    raise OSError("no free consecutive UDP port pair on 127.0.0.1")


class CallPath:
    """One call's media path: four sockets, learnt peers, impairments and counters."""

    def __init__(self, call_id: int, net: Network, seed: int,
                 agent: tuple[str, int] | None = None) -> None:
        self.call_id = call_id
        self.agent_rtp, self.agent_rtcp = _bind_pair()  # agent-facing
        self.caller_rtp, self.caller_rtcp = _bind_pair()  # caller-facing
        self.peer: dict[socket.socket, tuple[str, int]] = {}
        if agent is not None:  # known in advance (an agent that never speaks first)
            self.peer[self.agent_rtp] = (agent[0], int(agent[1]))
            self.peer[self.agent_rtcp] = (agent[0], int(agent[1]) + 1)
        self.counters = (Counters(), Counters())
        self.links = tuple(
            Impairment(net, np.random.default_rng(np.random.SeedSequence(
                seed, spawn_key=(call_id, d)))) for d in (UP, DOWN))
        # incoming socket -> (direction, is_rtcp, outgoing socket)
        self.route = {
            self.caller_rtp: (UP, False, self.agent_rtp),
            self.caller_rtcp: (UP, True, self.agent_rtcp),
            self.agent_rtp: (DOWN, False, self.caller_rtp),
            self.agent_rtcp: (DOWN, True, self.caller_rtcp),
        }

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self.route)

    def ports(self) -> dict[str, int]:
        return {"agent_port": self.agent_rtp.getsockname()[1],
                "caller_port": self.caller_rtp.getsockname()[1]}

    def receive(self, sock: socket.socket, now: float) -> list[Send]:
        """Read what is waiting on ``sock``; return the datagrams to send, with due times."""
        direction, is_rtcp, out = self.route[sock]
        c, link = self.counters[direction], self.links[direction]
        sends = []
        while True:
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP port unreachable from an earlier send
                continue
            self.peer[sock] = addr  # symmetric RTP: answer where it came from
            dest = self.peer.get(out)
            if is_rtcp:
                c.rtcp += 1
                if dest is not None:
                    sends.append((now + link.delay(), out, data, dest))
                continue
            c.rx += 1
            if dest is None:
                c.unrouted += 1
                continue
            if link.lost():
                c.dropped += 1
                if not link.last_dropped:
                    c.bursts += 1
                link.last_dropped = True
                continue
            link.last_dropped = False
            c.tx += 1
            delay = link.delay()
            c.delay_ms_total += delay * 1000.0
            sends.append((now + delay, out, data, dest))
        return sends

    def stats(self) -> dict[str, Any]:
        return {"ev": "closed", "call": self.call_id,
                "up": asdict(self.counters[UP]), "down": asdict(self.counters[DOWN])}

    def close(self) -> None:
        for s in self.sockets:
            s.close()



class Emulator:
    """The emulator process's state: its calls, the selector and the timer heap."""

    def __init__(self, net: Network, seed: int, channel: ParentChannel) -> None:
        self.net, self.seed, self.channel = net, seed, channel
        self.sel = selectors.DefaultSelector()
        self.sel.register(channel.in_fd, selectors.EVENT_READ, None)
        self.calls: dict[int, CallPath] = {}
        self.heap: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self.seq = 0

    def tick(self, life: Lifetime) -> None:
        """Wait for datagrams or commands (at most until the next one is due), forward."""
        heap = self.heap
        timeout = 0.05 if not heap else max(0.0, min(0.05, heap[0][0] - time.monotonic()))
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._commands(life)
                continue
            path: CallPath = key.data
            for due, out, data, dest in path.receive(key.fileobj, time.monotonic()):  # type: ignore[arg-type]
                heapq.heappush(heap, (due, self.seq, out, data, dest))
                self.seq += 1
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, out, data, dest = heapq.heappop(heap)
            with contextlib.suppress(OSError):
                out.sendto(data, dest)

    def _commands(self, life: Lifetime) -> None:
        for cmd in self.channel.commands():
            if life.over:
                return
            self.control(cmd, life)
        if self.channel.closed:
            life.stop("eof")

    def control(self, cmd: Event, life: Lifetime) -> None:
        """Act on one command: open, close or quit."""
        op = cmd.get("op")
        if op == "open":
            call_id = int(cmd["call"])
            agent = cmd.get("agent")
            path = CallPath(call_id, self.net, self.seed, tuple(agent) if agent else None)
            self.calls[call_id] = path
            for s in path.sockets:
                self.sel.register(s, selectors.EVENT_READ, path)
            self.channel.emit({"ev": "opened", "call": call_id, **path.ports()})
        elif op == "close":
            closing = self.calls.pop(int(cmd["call"]), None)
            if closing is None:
                self.channel.emit({"ev": "closed", "call": int(cmd["call"]), "up": None,
                                   "down": None})
                return
            for s in closing.sockets:
                self.sel.unregister(s)
            self.channel.emit(closing.stats())
            closing.close()
        elif op == "quit":
            life.stop("quit")


class NetworkEmulator:
    """The coordinator's handle of the impairment emulator process.

    Parameters
    ----------
    net
        ``deployment.network``: delay, jitter, loss, burst.
    seed
        Root of the per-call, per-direction random streams.
    workdir
        Its log goes here (``network.log``).
    deadline
        ``time.monotonic()`` after which it exits by itself.
    """

    def __init__(self, net: Network, seed: int, workdir: Path, deadline: float) -> None:
        argv = [sys.executable, "-m", "real.network", "--network", net.model_dump_json(),
                "--seed", str(seed), "--deadline", f"{deadline:.3f}", "--run", str(workdir)]
        self.proc = ChildProcess(argv, workdir / "network.log", pipes=True,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.channel = ChildChannel(self.proc)

    def start(self, timeout_s: float = 10.0) -> None:
        """Wait for the process's ``ready`` line."""
        self._wait(lambda e: e.get("ev") == "ready", timeout_s)

    def _wait(self, match: Any, timeout_s: float) -> Event:
        ev = self.channel.wait(match, timeout_s)
        if ev is None:
            state = "exited" if not self.proc.alive() else "did not answer"
            raise RuntimeError(f"RTP impairment emulator {state}; see {self.proc.log_path}")
        return ev

    def open(self, call_id: int, agent: tuple[str, int] | None = None,
             timeout_s: float = 2.0) -> dict[str, int]:
        """Open the call's port pairs: ``{"agent_port", "caller_port"}``.

        ``agent`` is the agent's RTP address when known in advance; otherwise it is
        learnt from the agent's first datagram.
        """
        self.channel.send({"op": "open", "call": call_id,
                           "agent": list(agent) if agent else None})
        ev = self._wait(lambda e: e.get("ev") == "opened" and e.get("call") == call_id,
                        timeout_s)
        return {"agent_port": int(ev["agent_port"]), "caller_port": int(ev["caller_port"])}

    def close(self, call_id: int, timeout_s: float = 2.0) -> Event:
        """Close the call's sockets; its counters per direction (``up``, ``down``)."""
        self.channel.send({"op": "close", "call": call_id})
        return self._wait(lambda e: e.get("ev") == "closed" and e.get("call") == call_id,
                          timeout_s)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Ask it to quit, then stop its process group."""
        with contextlib.suppress(OSError, ValueError):
            self.channel.send({"op": "quit"})
        self.proc.wait(1.0)
        self.proc.stop(grace_s=1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--network", required=True, help="deployment.network as JSON")
    ap.add_argument("--seed", type=int, default=0)
    add_run_args(ap)
    args = ap.parse_args(argv)
    channel = ParentChannel()
    emulator = Emulator(Network.model_validate_json(args.network), args.seed, channel)
    ready(channel)
    life = Lifetime(args.deadline)
    run_until(life, lambda: emulator.tick(life))
    return 0


if __name__ == "__main__":
    sys.exit(main())
