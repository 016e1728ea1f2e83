"""The switch layer: the adapters that implement the core's port (:mod:`baton.core.port`).

``sim`` (virtual phones in memory), ``sip`` (Baton's own registrar and B2BUA) and ``media`` (the
RTP engine ``sip`` drives). Adapters import the port and its vocabulary from the core; the core
never imports an adapter (docs/design.md §Layers).
"""
