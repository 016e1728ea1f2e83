"""The dispatch flow library: every feature of a dispatch console, as flows on the core.

:data:`LIBRARY` maps each flow's name to its :class:`~baton.core.FlowSpec`; the API, the
console and ``baton demo`` list flows from it.
"""

from typing import Any

from baton.core import FlowSpec
from baton.flows.call import call, inbound_call

LIBRARY: dict[str, FlowSpec[Any]] = {spec.name: spec for spec in (call, inbound_call)}

__all__ = ["LIBRARY", "call", "inbound_call"]
