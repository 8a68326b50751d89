"""siplab: simulation and load-test lab for SIP voice-AI telephony."""

__version__ = "0.1.0"
