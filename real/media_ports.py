"""Media inside the agent: pjsua2 audio ports that move 20 ms PCM frames to and from Python.

The pjsua2 half of :mod:`real.media` (kept apart so that the coordinator, which
only rates calls, never loads pjsua2): the voice agent (:mod:`real.voice_agent`)
and its test probe (:mod:`real.agent_probe`) hear and speak through these ports.

pjmedia's conference bridge is clocked by a media thread: every ptime (20 ms) it
asks each source port for a frame (``onFrameRequested``) and hands each sink port
the mix of its sources (``onFrameReceived``). A Python subclass of
``AudioMediaPort`` created with PCM16 mono 8 kHz 20 ms frames (320 bytes) joins
the bridge like a sound card would; connecting ``call_audio → RxPort`` hears the
caller and ``TxPort → call_audio`` speaks to them.

These callbacks run on the media clock thread and need the GIL, so they do
nothing but copy a frame into or out of a Python buffer; every decision (VAD,
turn taking) happens on the agent's main thread and every CPU stage on worker
threads, which only touch :class:`Playout` and the ``inbox`` deque, never pjsua2.

Frame bytes cross SWIG as a ``ByteVector`` (``std::vector<unsigned char>``).
Converting one element by element costs ~0.5-1 ms per frame; :func:`vector_bytes`
reads the vector's storage directly (libstdc++ lays a vector out as begin/end/
capacity pointers) in ~5 µs, after checking once against the slow path.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from typing import Any

import pjsua2 as pj

RATE_HZ = 8000
FRAME_MS = 20
FRAME_BYTES = 320
SILENCE = bytes(FRAME_BYTES)


def _vector_bytes_fast(vec: Any) -> bytes:
    addr = int(vec.this)
    begin = ctypes.c_void_p.from_address(addr).value or 0
    end = ctypes.c_void_p.from_address(addr + ctypes.sizeof(ctypes.c_void_p)).value or 0
    return ctypes.string_at(begin, end - begin) if end > begin else b""


def _vector_bytes_slow(vec: Any) -> bytes:
    return bytes(tuple(vec))


def _pick_reader() -> Any:
    probe = bytes(range(256)) + bytes(range(64))
    try:
        if _vector_bytes_fast(pj.ByteVector(probe)) == probe:
            return _vector_bytes_fast
    except (ValueError, OSError, AttributeError):
        pass
    return _vector_bytes_slow


vector_bytes = _pick_reader()


def audio_format() -> Any:
    """PCM16 mono 8 kHz, 20 ms frames."""
    fmt = pj.MediaFormatAudio()
    fmt.init(pj.PJMEDIA_FORMAT_PCM, RATE_HZ, 1, FRAME_MS * 1000, 16)
    return fmt


class Playout:
    """Clips waiting to be played, consumed one frame per media tick.

    Worker threads :meth:`play` clips; the media thread takes :meth:`next_frame`.
    The first frame of each clip records its start time (``started[clip_id]``) on
    ``time.monotonic()``. ``paused`` (call on hold) keeps the position.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clips: deque[tuple[Any, bytes]] = deque()
        self._cur: bytes = b""
        self._pos = 0
        self._cur_id: Any = None
        self.started: dict[Any, float] = {}
        self.finished: dict[Any, float] = {}
        self.paused = False

    def play(self, clip_id: Any, pcm: bytes, interrupt: bool = False) -> None:
        """Queue ``pcm`` (PCM16 8 kHz); ``interrupt`` drops what is playing or queued."""
        pad = -len(pcm) % FRAME_BYTES
        data = pcm + bytes(pad)
        with self._lock:
            if interrupt:
                self._clips.clear()
                if self._cur_id is not None and self._cur_id not in self.finished:
                    self.finished[self._cur_id] = time.monotonic()
                self._cur, self._pos, self._cur_id = b"", 0, None
            self._clips.append((clip_id, data))

    @property
    def busy(self) -> bool:
        """True while a clip is playing or queued."""
        with self._lock:
            return bool(self._clips) or self._pos < len(self._cur)

    def next_frame(self) -> bytes | None:
        """The next 320-byte frame, or None when idle or paused."""
        if self.paused:
            return None
        with self._lock:
            if self._pos >= len(self._cur):
                if self._cur_id is not None:
                    self.finished[self._cur_id] = time.monotonic()
                    self._cur_id = None
                if not self._clips:
                    return None
                self._cur_id, self._cur = self._clips.popleft()
                self._pos = 0
                self.started[self._cur_id] = time.monotonic()
            frame = self._cur[self._pos:self._pos + FRAME_BYTES]
            self._pos += FRAME_BYTES
            return frame


class RxPort(pj.AudioMediaPort):
    """A sink: each received frame goes to ``inbox`` as ``(time.monotonic(), bytes)``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.inbox: deque[tuple[float, bytes]] = deque()
        self.createPort(name, audio_format())

    def onFrameReceived(self, frame: Any) -> None:
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
            self.inbox.append((time.monotonic(), vector_bytes(frame.buf)))


class TxPort(pj.AudioMediaPort):
    """A source: plays the clips of a :class:`Playout` (nothing when it is idle)."""

    def __init__(self, name: str, playout: Playout) -> None:
        super().__init__()
        self.playout = playout
        self.createPort(name, audio_format())

    def onFrameRequested(self, frame: Any) -> None:
        data = self.playout.next_frame()
        if data is None:
            frame.type = pj.PJMEDIA_FRAME_TYPE_NONE
            frame.size = 0
            return
        frame.buf = pj.ByteVector(data)
        frame.size = len(data)
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
