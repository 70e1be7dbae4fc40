"""One SQLAlchemy engine per URL, shared by the snapshot store and the model registry.

SQLite gets WAL and a busy timeout so a CLI ingest and a running service can share the file, and
a database file vaner creates is 0600 (SQLite gives its -wal and -shm files the same mode); an
unreachable server becomes :class:`Unavailable` with the URL (password masked) in the message.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

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


def upsert_row(session: Session, table: type[SQLModel], key: dict[str, Any], values: dict[str, Any]) -> None:
    """Insert the row whose primary key is ``key``, or update ``values`` on it, in ONE statement
    where the dialect has one (SQLite, PostgreSQL). Why: pointer rows such as ``latest`` are
    written by concurrent processes, and get-then-insert lets two first-time writers race into a
    unique violation. Pending changes are flushed first, so a row the pointer references exists."""
    session.flush()
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table).values(**key, **values)
        session.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=values))
        return
    row = session.get(table, tuple(key.values()) if len(key) > 1 else next(iter(key.values())))
    if row is None:
        row = table(**key, **values)
    else:
        for name, value in values.items():
            setattr(row, name, value)
    session.add(row)


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
