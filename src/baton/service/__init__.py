"""The dispatcher service: HTTP and WebSocket API, web console, journal and call records.

One process, ``baton serve --config FILE``: the switch the config names, the core, the store
(journal, call records, recordings index, audit log, users and tokens) and the API with the
console. ``docs/service.md`` is the user's guide.

Layout, one folder per feature (resource = HTTP endpoints, service = use cases):

* :mod:`~baton.service.config` — the TOML config, validated with messages naming the key
* :mod:`~baton.service.runtime` — :class:`Service`, the running dispatch centre
* ``auth/`` — logins, sessions, API tokens, roles and permissions
* ``users/``, ``flows/``, ``meetings/``, ``records/``, ``events/``, ``sim/`` — the API
* ``routing/`` — the numbering plan for inbound calls
* ``store/`` — SQLAlchemy tables, Alembic migrations, the journal writer, record projection
* ``console/`` — the web console (static HTML, CSS and JS)
* :mod:`~baton.service.app` — the ASGI app; :mod:`~baton.service.cli` — ``baton serve``
"""

from baton.service.config import Config, ConfigError, load_config, parse_config
from baton.service.runtime import Service

__all__ = ["Config", "ConfigError", "Service", "create_app", "load_config", "parse_config"]


def create_app(service: Service, *, manage_lifecycle: bool = True):  # type: ignore[no-untyped-def]
    """The ASGI app for ``service`` (see :func:`baton.service.app.create_app`)."""
    from baton.service.app import create_app as _create

    return _create(service, manage_lifecycle=manage_lifecycle)
