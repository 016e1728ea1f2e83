"""The store: the journal of every core event, call records, the recordings index, the audit
log, users and tokens — in SQLite or PostgreSQL through SQLAlchemy's async engine, with Alembic
migrations run at start."""

from baton.service.store.db import Store
from baton.service.store.journal import Journal, StoreUnavailable
from baton.service.store.projection import Projector

__all__ = ["Journal", "Projector", "Store", "StoreUnavailable"]
