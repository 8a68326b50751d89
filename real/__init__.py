"""The real backend: calls placed through a real SIP stack on 127.0.0.1.

Kamailio as the SIP edge (:mod:`real.kamailio`), SIPp as the answering agent
(:mod:`real.agent`), pjsua2 caller processes (:mod:`real.uac`,
:mod:`real.uac_worker`), coordinated by :func:`real.backend.run_calls`; the
process model and its reasons are in :mod:`real.backend`.
"""
