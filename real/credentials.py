"""Secrets of a real run, and the one process each may reach.

A real run starts a dozen processes or more -- Kamailio and its workers, SIPp, the
pjsua2 callers, the RTP impairment emulator, the voice agents -- and a child gets
its parent's environment unless told otherwise. So an API key in the coordinator's
environment would be readable (``/proc/<pid>/environ``, a core dump, a crash log)
in every one of them. Least privilege: a secret goes only to the process that
uses it.

- ``SIPLAB_AGENT_LLM_KEY`` (:data:`real.reply.KEY_ENV`) -- the external LLM
  endpoint's key: the voice agents call the endpoint, so only they get it
  (:class:`real.agent.VoiceAgentPool`);
- anything else that looks like a credential (a name ending in ``_KEY``,
  ``_TOKEN``, ``_SECRET``, or holding ``PASSWORD``/``PASSWD``: a trunk's password,
  say) -- no process of a loopback run needs one, so none gets it.

:func:`withheld` takes them out of the coordinator's ``os.environ`` while the run's
processes are started (every child is started inside it, whichever module starts
it) and puts them back afterwards, so the coordinator itself keeps them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from real.reply import KEY_ENV

__all__ = ["KEY_ENV", "is_secret", "withheld"]

_SECRET = re.compile(r"(_KEY|_TOKEN|_SECRET)$|PASSWORD|PASSWD", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """True for an environment variable that holds a credential."""
    return name == KEY_ENV or bool(_SECRET.search(name))


@contextmanager
def withheld() -> Iterator[dict[str, str]]:
    """``with withheld() as secrets:`` no child started in the block inherits a secret;
    ``secrets`` maps each withheld name to its value (pass one on explicitly)."""
    taken = {name: os.environ.pop(name) for name in list(os.environ) if is_secret(name)}
    try:
        yield dict(taken)
    finally:
        for name, value in taken.items():
            os.environ.setdefault(name, value)
