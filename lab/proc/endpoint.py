"""A pjsua2 Endpoint bound to loopback, as every siplab SIP process needs it.

REAL-NOTES: bind the SIP transport *and* the media to 127.0.0.1 (boundAddress and
publicAddress) or the SDP advertises the host's address; use the null audio
device; raise PCMU's priority or speex is negotiated. The caller, the voice agent
and the test probe differ only in their EpConfig (threads, logging, call limit),
which they fill in before calling :func:`start_loopback`.
"""

from __future__ import annotations

from typing import Any

import pjsua2 as pj

LOOPBACK = "127.0.0.1"


def new_config(max_calls: int, user_agent: str | None = None) -> Any:
    """An EpConfig for a single-threaded process: every callback on the main thread."""
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = max_calls
    if user_agent is not None:
        cfg.uaConfig.userAgent = user_agent
    return cfg


def start_loopback(ep: Any, cfg: Any, port: int = 0) -> tuple[int, int]:
    """libInit, a UDP transport on 127.0.0.1:``port`` (0: any), libStart, null audio, PCMU.

    Returns the transport id and the port it bound.
    """
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = port
    tcfg.boundAddress = tcfg.publicAddress = LOOPBACK
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    bound = int(str(ep.transportGetInfo(tid).localName).rsplit(":", 1)[1])
    ep.libStart()
    ep.audDevManager().setNullDev()
    ep.codecSetPriority("PCMU/8000/1", 255)
    return tid, bound


def account_config(user: str, port: int, transport_id: int) -> Any:
    """An AccountConfig for ``sip:user@127.0.0.1:port`` with media on loopback."""
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{user}@{LOOPBACK}:{port}"
    acfg.sipConfig.transportId = transport_id
    acfg.mediaConfig.transportConfig.boundAddress = LOOPBACK
    acfg.mediaConfig.transportConfig.publicAddress = LOOPBACK
    return acfg
