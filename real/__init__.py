"""The real backend: calls placed through a real SIP stack on 127.0.0.1.

Modules carry the names of the twin's layers, so :mod:`twin.proxy` has its
counterpart in :mod:`real.proxy`: :mod:`real.proxy` (Kamailio), :mod:`real.trunk`,
:mod:`real.sip`, :mod:`real.agent`, :mod:`real.ai`, :mod:`real.features`,
:mod:`real.network`, :mod:`real.media`; :mod:`real.backend` coordinates a run
(:func:`real.backend.run_calls`) and explains the process model. The callers that
place the calls are :mod:`loadgen.callers`; process plumbing is :mod:`lab.proc`.
"""
