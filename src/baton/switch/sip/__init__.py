"""Baton's SIP signalling layer: sans-IO messages, transactions, dialogs, SDP, digest and a
registrar, plus a thin asyncio transport.

Layers, bottom up (each module's docstring states its rules and theory of operation):

* :mod:`~baton.switch.sip.message` and :mod:`~baton.switch.sip.uri` — bytes ↔ messages
  (RFC 3261 §7, §19, §20, §25), strict limits, error responses, TCP framing;
* :mod:`~baton.switch.sip.sdp` — SDP and offer/answer for G.711 audio (RFC 4566, RFC 3264);
* :mod:`~baton.switch.sip.digest` — Digest authentication (RFC 7616, RFC 2617, RFC 8760);
* :mod:`~baton.switch.sip.transaction` — transactions as state tables and the
  :class:`TransactionLayer` (RFC 3261 §17, RFC 6026), time as an input;
* :mod:`~baton.switch.sip.dialog` — dialogs, in-dialog requests, CANCEL and its race (§12–§15);
* :mod:`~baton.switch.sip.registrar` — REGISTER with bindings stored as sent (§10);
* :mod:`~baton.switch.sip.uas` — the UAS's first checks on a new request (§8.2);
* :mod:`~baton.switch.sip.session_timer` — session timers, to notice dead phones (RFC 4028);
* :mod:`~baton.switch.sip.transport` — UDP/TCP sockets and the one timer, on asyncio.

Everything but the last is sans-IO: it never touches a socket or a clock. On top,
:class:`SipSwitch` (:mod:`~baton.switch.sip.switch`) is the B2BUA behind the switch port, a
façade over its parts: :mod:`~baton.switch.sip.inbound` (calls from phones),
:mod:`~baton.switch.sip.outbound` (calls to phones, forking), :mod:`~baton.switch.sip.in_dialog`
(inside a call, session timers), :mod:`~baton.switch.sip.stale` (stale-line probes),
:mod:`~baton.switch.sip.rooms` (bridges and meetings), sharing :mod:`~baton.switch.sip.legs`
and :mod:`~baton.switch.sip.book`. Import from here; the modules may move.
"""

from . import session_timer as session_timer  # negotiate_uas(), negotiate_uac(), …
from .config import SipConfig as SipConfig
from .config import SipConfigError as SipConfigError
from .config import parse_sip_config as parse_sip_config
from .dialog import Answered as Answered
from .dialog import AnsweredAfterCancel as AnsweredAfterCancel
from .dialog import Dialog as Dialog
from .dialog import DialogId as DialogId
from .dialog import DialogSet as DialogSet
from .dialog import DialogState as DialogState
from .dialog import EarlyDialog as EarlyDialog
from .dialog import InviteOutcome as InviteOutcome
from .dialog import OutgoingInvite as OutgoingInvite
from .dialog import Rejected as Rejected
from .dialog import SendAck as SendAck
from .dialog import SendRequest as SendRequest
from .dialog import cancel_responses as cancel_responses
from .dialog import make_cancel as make_cancel
from .dialog import reason_value as reason_value
from .digest import HA1 as HA1
from .digest import AuthOutcome as AuthOutcome
from .digest import AuthResult as AuthResult
from .digest import Challenge as Challenge
from .digest import DigestAuthenticator as DigestAuthenticator
from .digest import DigestClient as DigestClient
from .digest import Password as Password
from .digest import Secret as Secret
from .digest import compute_ha1 as compute_ha1
from .errors import LocalProtocolError as LocalProtocolError
from .errors import RemoteProtocolError as RemoteProtocolError
from .errors import SipError as SipError
from .errors import SipParseError as SipParseError
from .message import REASON_PHRASES as REASON_PHRASES
from .message import CSeq as CSeq
from .message import Headers as Headers
from .message import ParserLimits as ParserLimits
from .message import Request as Request
from .message import Response as Response
from .message import StreamFramer as StreamFramer
from .message import error_response as error_response
from .message import make_response as make_response
from .message import new_tag as new_tag
from .message import parse_message as parse_message
from .registrar import AuthThrottle as AuthThrottle
from .registrar import Binding as Binding
from .registrar import Registrar as Registrar
from .sdp import PCMA as PCMA
from .sdp import PCMU as PCMU
from .sdp import TELEPHONE_EVENT as TELEPHONE_EVENT
from .sdp import Accepted as Accepted
from .sdp import Codec as Codec
from .sdp import Direction as Direction
from .sdp import LocalMedia as LocalMedia
from .sdp import NegotiatedAudio as NegotiatedAudio
from .sdp import NotAcceptable as NotAcceptable
from .sdp import SdpParseError as SdpParseError
from .sdp import SdpSession as SdpSession
from .sdp import SessionDescription as SessionDescription
from .sdp import parse_sdp as parse_sdp
from .session_timer import SessionTimer as SessionTimer
from .switch import SipSwitch as SipSwitch
from .switch import create_switch as create_switch
from .transaction import AckReceived as AckReceived
from .transaction import MessageDropped as MessageDropped
from .transaction import Peer as Peer
from .transaction import RequestReceived as RequestReceived
from .transaction import ResponseReceived as ResponseReceived
from .transaction import StrayResponse as StrayResponse
from .transaction import Timer as Timer
from .transaction import TimerConfig as TimerConfig
from .transaction import TransactionFailed as TransactionFailed
from .transaction import TransactionKey as TransactionKey
from .transaction import TransactionLayer as TransactionLayer
from .transaction import TransactionTerminated as TransactionTerminated
from .transaction import TransactionTimedOut as TransactionTimedOut
from .transaction import new_branch as new_branch
from .transport import ListenAddress as ListenAddress
from .transport import ParseFailed as ParseFailed
from .transport import SipTransport as SipTransport
from .transport import TransportEvent as TransportEvent
from .uas import UasPolicy as UasPolicy
from .uas import check_request as check_request
from .uri import AbsoluteUri as AbsoluteUri
from .uri import NameAddress as NameAddress
from .uri import SipUri as SipUri
from .uri import Uri as Uri
from .uri import Via as Via
from .uri import parse_name_addr as parse_name_addr
from .uri import parse_uri as parse_uri
from .uri import parse_via as parse_via
