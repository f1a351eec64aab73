"""Where the store lives: an SQLite file (a path) or a PostgreSQL database (a URL), as one
SQLAlchemy engine with each back end's settings, and the database's clock.

SQLite: one file in WAL mode, every write transaction BEGIN IMMEDIATE (one writer at a time,
which is also what makes a claim of a scan atomic there); --store-max-mb bounds its pages.
PostgreSQL: psycopg 3, connections checked before use (a database that restarted is found
again), writes serialised per scan row (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Double, Engine, cast, create_engine, event, func, literal
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import ColumnElement

_POSTGRES = re.compile(r"^postgres(ql)?(\+psycopg)?://", re.IGNORECASE)
# seconds to wait for a connection to PostgreSQL before the store counts as unreachable
CONNECT_SECONDS = 5


def is_url(location: str | Path) -> bool:
    """True for a database URL (anything with a scheme), False for a path."""
    return isinstance(location, str) and "://" in location


def check_location(location: str | Path) -> None:
    """ValueError naming what is wrong with a --store value that is neither a path nor a
    PostgreSQL URL."""
    if not is_url(location):
        return
    assert isinstance(location, str)
    if not _POSTGRES.match(location):
        scheme = location.split("://", 1)[0]
        raise ValueError(
            f"--store {scheme}://... is not supported: give a path (SQLite) or "
            "postgresql://USER[:PASS]@HOST:PORT/DB"
        )
    url = make_url(location)
    if not url.database or not url.host:
        raise ValueError(
            f"--store {shown(location)} names no host or database: use "
            "postgresql://USER[:PASS]@HOST:PORT/DB"
        )


def postgres_url(location: str, password: str | None) -> URL:
    """The URL with psycopg 3 as its driver and `password` unless the URL has one."""
    url = make_url(location).set(drivername="postgresql+psycopg")
    if password is not None and url.password is None:
        url = url.set(password=password)
    return url


def shown(location: str | Path) -> str:
    """The location as messages and logs may show it: a URL without its password."""
    if not is_url(location):
        return str(location)
    return make_url(str(location)).render_as_string(hide_password=True)


def sqlite_engine(path: Path, max_bytes: int | None) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=8,
        max_overflow=24,
    )

    @event.listens_for(engine, "connect")
    def _configure(connection: Any, _record: Any) -> None:
        connection.isolation_level = None  # transactions are ours (BEGIN below), not pysqlite's
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        if max_bytes is not None:  # a full store behaves like a full disk
            (page_size,) = connection.execute("PRAGMA page_size").fetchone()
            pages = max(1, max_bytes // page_size)
            connection.execute(f"PRAGMA max_page_count = {pages}")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def postgres_engine(url: URL) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=24,
        connect_args={"connect_timeout": CONNECT_SECONDS},
    )


def database_now(dialect: str) -> ColumnElement[float]:
    """The database's clock in seconds since the epoch: leases compare with it, so replicas
    whose clocks disagree still agree on when a lease ran out."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Double)
    return (func.julianday("now") - literal(2440587.5)) * literal(86400.0)
