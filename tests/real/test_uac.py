"""The pjsua2 caller process counts INVITE transmissions from the wire (RFC 3261 Timer A)."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest

from loadgen.callers.pool import UacPool

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"), pytest.mark.timeout(60)]


def test_invite_retransmissions_are_counted(tmp_path: Path) -> None:
    """A silent far end sees the INVITE at 0, 0.5, 1.5, 3.5 s (T1 = 500 ms, doubling)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        pool = UacPool(1, tmp_path, deadline=time.monotonic() + 6.0)
        try:
            pool.start()
            worker = pool.free_worker()
            assert worker is not None
            pool.dial(worker, 7, f"sip:agent@127.0.0.1:{port}", 1.0)
            seen, events = 0, []
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                if select.select([silent], [], [], 0.05)[0]:
                    seen += silent.recv(65535).startswith(b"INVITE ")
            events = [e for _, e in pool.quit() if e.get("ev") == "done"]
        finally:
            pool.stop()
    assert seen == 4
    assert len(events) == 1
    assert events[0]["id"] == 7 and events[0]["invite_tx"] == seen
    assert events[0]["final_t"] is None  # no response ever came
    assert events[0]["final_code"] == 487  # abandoned: pjsip ends the call locally
