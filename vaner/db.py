"""One SQLAlchemy engine per URL, shared by the snapshot store and the model registry.

SQLite gets WAL and a busy timeout so a CLI ingest and a running service can share the file, and
a database file vaner creates is 0600 (SQLite gives its -wal and -shm files the same mode); an
unreachable server becomes :class:`Unavailable` with the URL (password masked) in the message.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel, create_engine

from vaner.errors import Unavailable
from vaner.permissions import create_private_file

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def get_engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                database = make_url(url).database
                if database and database != ":memory:" and not database.startswith("file:"):
                    create_private_file(Path(database))
                engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def init_tables(engine: Engine, tables: list) -> None:
    """Create the given SQLModel tables if missing; a connection failure names the server."""
    try:
        SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in tables])
    except OperationalError as exc:
        safe = make_url(str(engine.url)).render_as_string(hide_password=True)
        raise Unavailable(f"cannot reach the SQL database at {safe}: {exc.orig}") from exc


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
