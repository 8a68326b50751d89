"""Process plumbing shared by every real process of a run.

A real run is a handful of cooperating processes on one machine (the proxy, the
agents, the RTP impairment emulator, the caller pool), each started by a
coordinator and spoken to over pipes. What they all need lives here, once:

- :mod:`lab.proc.child` -- a child process in its own process group that dies with
  its parent (``PR_SET_PDEATHSIG``) and is stopped by group;
- :mod:`lab.proc.lines` -- the JSON-lines protocol over a child's stdin/stdout: a
  non-blocking line reader, the parent's end (:class:`~lab.proc.lines.ChildChannel`)
  and the child's end (:class:`~lab.proc.lines.ParentChannel`);
- :mod:`lab.proc.worker` -- a worker process's ``main``: deadline, signals, ready
  line and the hard exit pjsua2 needs;
- :mod:`lab.proc.ports` -- free UDP ports on the loopback;
- :mod:`lab.proc.endpoint` -- the pjsua2 Endpoint bound to 127.0.0.1 (imports
  pjsua2: load it only in a process that makes calls).

Nothing here imports ``twin``, ``real`` or ``loadgen``; the submodules are not
imported by this package, so importing :mod:`lab.proc` costs nothing.
"""
