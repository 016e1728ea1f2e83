"""The SIP layer's exceptions, split by who broke the protocol (as in h11).

* :class:`RemoteProtocolError` — the peer sent something we cannot accept. Its subclass
  :class:`SipParseError` carries the status code (and reason phrase) to answer with, when the
  offending message is a request that can still be answered at all.
* :class:`LocalProtocolError` — our own code (the transaction user) asked for something the
  protocol forbids: a second final response, a request from a terminated dialog, a header value
  with a line break in it. It is a bug on our side; fix the caller.

Both derive from :class:`SipError`, so a transport can log anything the layer raises with one
``except`` — but it must never need to: the parser turns *every* malformed input into a
:class:`SipParseError` and nothing else.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RemoteProtocolError", "SipError", "SipParseError"]


class SipError(Exception):
    """Base class of every error raised by :mod:`baton.switch.sip`."""


class LocalProtocolError(SipError):
    """We broke the protocol: the caller asked the layer for something SIP forbids.

    Raised synchronously from the offending call, before anything is sent. Treat it as a bug.
    """


class RemoteProtocolError(SipError):
    """The peer broke the protocol. Answer it (if it is a request) or drop it; never crash."""


class SipParseError(RemoteProtocolError):
    """Bytes that are not an acceptable SIP message (or header, URI, SDP body).

    ``status`` and ``reason`` are what a UAS answers to a malformed *request*: 400 with a reason
    phrase that names the problem, 413/513 when something is too large, 505 for an unknown SIP
    version. ``partial`` is whatever the parser recovered before it gave up (see
    :func:`baton.switch.sip.message.error_response`), or ``None``.
    """

    def __init__(self, reason: str, status: int = 400, *, partial: object | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.partial = partial
