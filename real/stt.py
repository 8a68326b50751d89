"""Speech to text on this machine: CMU PocketSphinx with a small keyword grammar.

PocketSphinx (PyPI ``pocketsphinx`` >= 5, which ships the US-English acoustic
model, dictionary and language model) decodes offline on the CPU. Its general
language model is slow (~1 s per 2 s utterance here) and poor on narrowband,
synthetic speech, so the agent restricts the search to a JSGF grammar (W3C
Speech Recognition Grammar Format's predecessor, "any sequence of these words")
over the words its reply rules listen for: ~40 ms of CPU per second of speech,
and the keywords come through. That is what a keyword-spotting IVR front end does. The lattice
best-path rescoring pass is off (``bestpath=False``): on a grammar search it cost
seconds per utterance and changed little.

Telephone audio is 8 kHz (G.711); the acoustic model is trained on 16 kHz, so the
utterance is resampled 2x (the upper band stays empty; the keywords survive).

The decoder holds the GIL while it runs, and the pjsua2 media clock thread needs
the GIL for every 20 ms frame callback, so :meth:`Recognizer.transcribe` feeds the
decoder in short chunks (:data:`CHUNK_S` of audio, a few ms of CPU each) and the
media thread gets its turn in between. A decoder is not thread-safe: each
transcription borrows one from a free list. The decoder loads only the grammar's
words from the CMU dictionary (a cached small dictionary) and no language model,
so it starts in ~30 ms instead of ~0.5 s.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lab.audio import resample

VOCABULARY = (
    "hello", "hi", "hey", "i", "would", "like", "to", "check", "my", "order", "status",
    "where", "is", "the", "bill", "billing", "payment", "pay", "account", "cancel",
    "refund", "agent", "human", "person", "help", "please", "thanks", "thank", "you",
    "yes", "no", "need", "with", "a", "an", "and", "about", "delivery", "shipping",
    "password", "reset", "address", "change", "speak", "talk", "representative",
)
CHUNK_S = 0.1
# Narrower search beams than the defaults (1e-48/1e-48/7e-29): ~2x faster on the
# keyword grammar with the same keywords recognised (measured on eSpeak speech).
BEAMS = {"beam": 1e-20, "pbeam": 1e-20, "wbeam": 1e-15}
# Initial cepstral mean (13 MFCCs): the mean of 8 kHz eSpeak caller speech upsampled
# to 16 kHz, measured. Live CMN starts from the model's generic "40,3,-1" otherwise,
# and a decoder's first seconds of telephone audio then come out empty.
CMN_INIT = ("57.26,23.44,-32.81,47.73,-39.22,15.40,-15.16,-24.12,-0.03,-8.74,21.05,"
            "-13.79,-3.28")
MODEL_RATE_HZ = 16000


def jsgf(words: tuple[str, ...] | list[str]) -> str:
    """A JSGF grammar accepting any sequence of ``words``."""
    return ("#JSGF V1.0;\ngrammar siplab;\npublic <utt> = <w>+;\n<w> = "
            + " | ".join(sorted(set(words))) + ";\n")


def _model_dir() -> Path:
    import pocketsphinx

    return Path(pocketsphinx.__file__).parent / "model" / "en-us"


def small_dictionary(words: tuple[str, ...] | list[str], cache_dir: Path) -> Path:
    """A pronunciation dictionary holding only ``words`` (cached by content).

    Loading the full CMU dictionary (~135,000 words) costs ~0.4 s per decoder; the
    grammar needs a few dozen entries, so a decoder then starts in ~30 ms.
    """
    wanted = sorted(set(words))
    key = hashlib.sha1(" ".join(wanted).encode()).hexdigest()[:12]
    path = cache_dir / f"siplab-{key}.dict"
    if path.exists():
        return path
    lines = []
    with (_model_dir() / "cmudict-en-us.dict").open() as fh:
        for line in fh:
            word = line.split(" ", 1)[0]
            if word.split("(", 1)[0] in wanted:
                lines.append(line)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)
    return path


class Recognizer:
    """Keyword-grammar PocketSphinx decoders, lent one per transcription.

    Decoders are not thread-safe and hold per-utterance state, so each
    :meth:`transcribe` borrows one from a free list (creating it, ~30 ms, when
    all are busy) and returns it afterwards.
    """

    def __init__(self, words: tuple[str, ...] | list[str] = VOCABULARY,
                 cache_dir: Path | None = None) -> None:
        self.words = tuple(words)
        self.grammar = jsgf(words)
        self.cache_dir = cache_dir or Path.home() / ".cache" / "siplab" / "stt"
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._paths: tuple[Path, Path] | None = None

    def _files(self) -> tuple[Path, Path]:
        if self._paths is None:
            dic = small_dictionary(self.words, self.cache_dir)
            gram = dic.with_suffix(".gram")
            if not gram.exists() or gram.read_text() != self.grammar:
                tmp = gram.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(self.grammar)
                os.replace(tmp, gram)
            self._paths = (dic, gram)
        return self._paths

    def _new_decoder(self) -> Any:
        from pocketsphinx import Decoder

        dic, gram = self._files()
        return Decoder(loglevel="FATAL", bestpath=False, lm=None, jsgf=str(gram),
                       dict=str(dic), cmninit=CMN_INIT, **BEAMS)

    def warm_up(self, decoders: int = 1) -> None:
        """Create ``decoders`` decoders now, not on the first caller's turn."""
        made = [self._new_decoder() for _ in range(decoders)]
        with self._lock:
            self._free.extend(made)

    def transcribe(self, pcm8k: bytes) -> str:
        """Words recognised in PCM16 8 kHz mono audio ('' when none)."""
        with self._lock:
            dec = self._free.pop() if self._free else None
        if dec is None:
            dec = self._new_decoder()
        try:
            x = np.frombuffer(pcm8k, dtype=np.int16)
            x16 = np.clip(np.rint(resample(x, 8000, MODEL_RATE_HZ)), -32768, 32767)
            data = x16.astype(np.int16).tobytes()
            step = int(CHUNK_S * MODEL_RATE_HZ) * 2
            dec.start_utt()
            for i in range(0, len(data), step):
                dec.process_raw(data[i:i + step], False, False)
                time.sleep(0)  # let the media thread take the GIL between chunks
            dec.end_utt()
            hyp = dec.hyp()
            return str(hyp.hypstr) if hyp is not None else ""
        finally:
            with self._lock:
                self._free.append(dec)
