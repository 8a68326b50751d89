"""Media speed: G.711 and resampling per 20 ms frame, call quality per call.

Prints figures only (absolute speed drifts with machine load).
The twin's budget: ~190,000 calls in well under a minute, so the per-call quality
fast path should cost tens of µs; the packet-level path is the reference.

Run: ``python bench/bench_media.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

from lab.audio import alaw_decode, alaw_encode, resample, ulaw_decode, ulaw_encode
from lab.spec import Media, Network
from twin.media import MediaPath


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches and tables
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best * 1e6


def _call(path: MediaPath, talk_s: float, method: Literal["fast", "packets"]
          ) -> Callable[[], object]:
    rng = np.random.default_rng(2)
    return lambda: path.quality(talk_s, rng, method)


def _bench_ports(k: int) -> None:
    """The pjsua2 media-port adapters' own work per frame (real/media_ports.py)."""
    import pjsua2 as pj

    from real.media_ports import FRAME_BYTES, Playout, _vector_bytes_slow, vector_bytes

    pcm = bytes(range(256)) * 2 * 50  # 1 s of PCM16
    vec = pj.ByteVector(pcm[:FRAME_BYTES])
    playout = Playout()

    def next_frame() -> None:
        if not playout.busy:
            playout.play("clip", pcm)
        playout.next_frame()

    print("pjsua2 media-port adapters, per 20 ms frame")
    for name, fn in [("rx: ByteVector -> bytes", lambda: vector_bytes(vec)),
                     ("rx: the same, element-wise", lambda: _vector_bytes_slow(vec)),
                     ("tx: bytes -> ByteVector", lambda: pj.ByteVector(pcm[:FRAME_BYTES])),
                     ("tx: playout next_frame", next_frame)]:
        print(f"  {name:28s} {per_call_us(fn, 20000 // k):8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    k = 10 if args.quick else 1

    rng = np.random.default_rng(1)
    frame = np.round(rng.uniform(-0.5, 0.5, 160) * 32767).astype(np.int16)  # 20 ms at 8 kHz
    ucodes, acodes = ulaw_encode(frame), alaw_encode(frame)
    print("per 20 ms frame (160 samples at 8 kHz)")
    for name, fn in [("mu-law encode", lambda: ulaw_encode(frame)),
                     ("mu-law decode", lambda: ulaw_decode(ucodes)),
                     ("A-law encode", lambda: alaw_encode(frame)),
                     ("A-law decode", lambda: alaw_decode(acodes)),
                     ("resample 8 -> 16 kHz", lambda: resample(frame, 8000, 16000)),
                     ("resample 8 -> 24 kHz", lambda: resample(frame, 8000, 24000)),
                     ("resample 8 -> 48 kHz", lambda: resample(frame, 8000, 48000)),
                     ("resample 24 -> 8 kHz", lambda: resample(np.zeros(480), 24000, 8000))]:
        print(f"  {name:24s} {per_call_us(fn, 20000 // k):8.1f} us")
    _bench_ports(k)

    cases = {
        "fixed, 20 ms jitter-free": (Media(), Network(delay_ms=20)),
        "fixed, jitter, loss 1%": (Media(), Network(delay_ms=20, jitter_ms=5, loss=0.01)),
        "adaptive, jitter, Gilbert": (
            Media(jitter_buffer="adaptive"),
            Network(delay_ms=20, jitter_ms=5, loss=0.02,
                    burst={"mean_burst_packets": 3})),  # type: ignore[arg-type]
    }
    talk_s = 180.0
    print(f"per call of {talk_s:g} s talk (G.711, 20 ms: {int(talk_s * 50)} packets)")
    for name, (media, net) in cases.items():
        path = MediaPath(media, net)
        fast = per_call_us(_call(path, talk_s, "fast"), 5000 // k)
        slow = per_call_us(_call(path, talk_s, "packets"), 300 // k)
        print(f"  {name:28s} fast {fast:8.1f} us   packets {slow:8.1f} us"
              f"   190k calls: {fast * 190_000 / 1e6:5.1f} s vs {slow * 190_000 / 1e6:6.1f} s")


if __name__ == "__main__":
    main()
