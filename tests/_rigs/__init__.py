"""Rigs shared by the suites that run Baton against real SIP phones (``tests/sip_switch``,
``tests/e2e_audio``, ``tests/e2e_ptt``).

* :mod:`_rigs.sip` — configured users, the rig (the core driving a ``SipSwitch`` on loopback),
  SIPp and baresip processes on free ports, and waits with a timeout;
* :mod:`_rigs.audio` — what real phones heard: baresip phones that each send their own tone and
  record what they decode, moments of a scenario mapped to samples, and FFT checks.

The suite-wide ``conftest.py`` puts ``tests/`` on ``sys.path``, so a suite imports
``from _rigs.sip import rig``.
"""
