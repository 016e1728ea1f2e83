"""The database: an async SQLAlchemy engine on SQLite (default) or PostgreSQL, migrated at open.

Contract
--------
* :meth:`Store.open` creates the SQLite file's folder if needed, brings the schema to the newest
  Alembic revision, and returns only when the store is usable. SQLite runs in WAL mode with
  ``synchronous=FULL``: a committed transaction survives a power cut, which is what "nothing
  acknowledged is lost" needs.
* Writes go through one writer (:class:`~baton.service.store.journal.Journal`), so SQLite never
  sees two writers; readers use :meth:`Store.read` freely (WAL lets them run beside the writer).
* :meth:`Store.close` disposes of the engine; it is idempotent.
* An unreachable database is :class:`StoreUnavailable` (the API answers 503), and it is found out
  within :attr:`Store.timeout` seconds: PostgreSQL connections and statements are bounded by it
  (a server that accepts and never answers does not hold a request for a minute).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["MIGRATIONS", "TRANSIENT", "Store", "StoreUnavailable", "alembic_config"]

#: The Alembic script folder, shipped inside the package.
MIGRATIONS = Path(__file__).with_name("migrations")


#: Errors that mean "the database is not there right now": retry writes, answer reads with 503.
TRANSIENT: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    OSError,
    TimeoutError,
)


class StoreUnavailable(Exception):
    """The store is unreachable, or did not commit in time: the change may not be durable. The
    API answers 503 ``store-unavailable``; the caller may retry."""

    code = "store-unavailable"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """An Alembic config for the packaged migrations, bound to ``connection`` if given."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


#: Alembic's migration context is global to the process: two stores of one process (a shard
#: serving several tenants, docs/cluster.md) must not migrate at the same time.
_MIGRATING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migrating() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATING.get(loop)
    if lock is None:
        lock = _MIGRATING[loop] = asyncio.Lock()
    return lock


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


class Store:
    """The service's database handle."""

    def __init__(self, url: str, *, echo: bool = False, timeout: float = 5.0) -> None:
        self.url = url
        self.echo = echo
        #: Seconds a connection attempt or a statement may take on PostgreSQL.
        self.timeout = timeout
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the store is not open: await Store.open() first")
        return self._engine

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    async def open(self) -> None:
        """Connect and migrate. Raises the driver's error if the database is unreachable."""
        if self._engine is not None:
            return
        engine = await self._create_engine()
        self._engine = engine
        try:
            async with _migrating(), engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except BaseException:
            self._engine = None
            await engine.dispose()
            raise

    async def _create_engine(self) -> AsyncEngine:
        connect_args: dict[str, Any] = {}
        options: dict[str, Any] = {}
        if self.is_sqlite:
            path = sa.make_url(self.url).database
            if path and path != ":memory:":
                await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
            # Wait for a lock rather than fail at once (a reader checkpointing the WAL).
            connect_args["timeout"] = 30
        else:
            # asyncpg: bound the connection attempt and every statement; check a pooled
            # connection before use, so a restarted server is noticed without an error.
            connect_args["timeout"] = self.timeout
            connect_args["command_timeout"] = self.timeout
            options = {"pool_pre_ping": True, "pool_timeout": self.timeout}
        engine = create_async_engine(self.url, echo=self.echo, connect_args=connect_args, **options)
        if self.is_sqlite:
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine

    async def revision(self) -> str | None:
        """The schema revision the database is at."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current)

    @staticmethod
    def head() -> str | None:
        """The newest revision the package ships."""
        return ScriptDirectory.from_config(alembic_config()).get_current_head()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading (no transaction is committed). Raises
        :class:`StoreUnavailable` if the database cannot be reached."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except TRANSIENT as exc:
            raise StoreUnavailable(
                f"the store is unreachable: {exc or type(exc).__name__}"
            ) from exc

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()
