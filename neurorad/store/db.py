"""Engine, sessions and schema migrations.

SQLite is the default (one file under the data dir); PostgreSQL (``postgresql+psycopg://...``)
is the choice for a site. The schema is owned by the Alembic migrations shipped in
``neurorad/store/migrations``; :func:`migrate` brings any database to head.

Concurrency on SQLite (https://sqlite.org/wal.html, https://sqlite.org/lang_transaction.html):

* WAL journal: readers never block the writer and the writer never blocks readers.
* :meth:`Database.read_session` runs a *deferred* transaction (a snapshot read; it takes no
  lock) and refuses to write; request handlers of GET pages use it, so any number of readers
  run side by side with the receiver, the scheduler and the worker.
* :meth:`Database.session` is a write transaction: ``BEGIN IMMEDIATE`` (the write lock at the
  start, so two writers never deadlock on a lock upgrade), serialised inside the process by a
  lock taken just before it, so threads of one process queue in order instead of spinning in
  SQLite's busy handler; ``busy_timeout`` (30 s) covers writers of other processes (``neurorad
  worker``, job processes).
* The connection pool is larger than the request thread pool, so no request waits for a
  connection (the pool's 30 s wait was the "server freezes" of issue 16).

PostgreSQL needs none of this (MVCC, row locks); its pool is sized the same way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: execution option that marks a connection as read-only (deferred BEGIN, no write lock)
READ_ONLY_OPTION = "neurorad_read_only"
#: seconds a writer waits for the database before it gives up ("database is locked")
WRITE_TIMEOUT_S = 30.0
# connections per process: above the request thread pool (anyio's 40) + receiver, scheduler, worker
SQLITE_POOL = {"pool_size": 20, "max_overflow": 100, "pool_timeout": 30}
POSTGRES_POOL = {"pool_size": 10, "max_overflow": 40, "pool_timeout": 30}


def sqlite_url(path: str | Path) -> str:
    """SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite:///") or url in ("sqlite://", "sqlite:///:memory:"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 (it holds password hashes and session tokens) before SQLite
    would create it with the umask's 0644; the -wal and -shm files SQLite creates take the main
    file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass


def make_engine(url: str, pool: dict | None = None) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a 30 s busy timeout and serialised writes."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            _create_private(path)
        engine = create_engine(url, connect_args={"timeout": WRITE_TIMEOUT_S, "check_same_thread": False},
                               **(pool if pool is not None else SQLITE_POOL))
        write_lock = threading.Lock()

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            # pysqlite's own transaction handling defers BEGIN; make it explicit (see _begin).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(WRITE_TIMEOUT_S * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            if conn.get_execution_options().get(READ_ONLY_OPTION):
                conn.exec_driver_sql("BEGIN")  # deferred: a WAL snapshot, no lock
                return
            # a writer: queue behind this process's other writers, then take SQLite's write lock
            if not write_lock.acquire(timeout=WRITE_TIMEOUT_S):
                raise OperationalError("BEGIN IMMEDIATE", {}, Exception(
                    f"database is locked: no write slot within {WRITE_TIMEOUT_S:.0f} s"))
            conn.info["neurorad_write_lock"] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                conn.info.pop("neurorad_write_lock", None)
                write_lock.release()
                raise

        def _release(info) -> None:
            if info.pop("neurorad_write_lock", False):
                write_lock.release()

        @event.listens_for(engine, "commit")
        def _after_commit(conn) -> None:
            # "commit" fires just before the driver's COMMIT; run it here so that the lock is
            # released only once SQLite's own lock is gone (sqlite3 ignores the COMMIT that follows)
            if conn.info.get("neurorad_write_lock"):
                try:
                    conn.connection.dbapi_connection.execute("COMMIT")
                finally:
                    _release(conn.info)

        @event.listens_for(engine, "rollback")
        def _after_rollback(conn) -> None:
            if conn.info.get("neurorad_write_lock"):
                try:
                    dbapi = conn.connection.dbapi_connection
                    if dbapi is not None and dbapi.in_transaction:
                        dbapi.execute("ROLLBACK")
                finally:
                    _release(conn.info)

        @event.listens_for(engine, "checkin")
        def _checkin(_dbapi_conn, record) -> None:  # a connection returned mid-transaction
            _release(record.info)

        return engine
    return create_engine(url, pool_pre_ping=True, **(pool if pool is not None else POSTGRES_POOL))


def migrate(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Upgrade the database schema to ``revision`` with the shipped Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if isinstance(engine_or_url, str):
        engine.dispose()


def schema_revisions(url: str) -> tuple[str | None, str]:
    """(current Alembic revision of the database, shipped head revision)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, str(head)


class ReadOnlySessionError(RuntimeError):
    """Something tried to write through :meth:`Database.read_session`."""


def _refuse_writes(session: Session, _flush_context, _instances) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("a read session cannot write: use Database.session()")


class Database:
    """An engine plus session factories.

    ``with db.session() as s:`` is a write transaction (commits or rolls back);
    ``with db.read_session() as s:`` a read-only snapshot (always rolled back, never locks).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.read_engine = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        self.read_sessionmaker = sessionmaker(self.read_engine, expire_on_commit=False)
        event.listen(self.read_sessionmaker, "before_flush", _refuse_writes)
        self._ping_engine: Engine | None = None
        self._ping_lock = threading.Lock()
        path = sqlite_path(url)
        if path is not None:
            _create_private(path)
            try:
                os.chmod(path, 0o600)  # also an existing file created 0644 by an older version
            except PermissionError:
                pass

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessionmaker() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only session: a snapshot that takes no lock; flushing a change raises
        :class:`ReadOnlySessionError`; it is closed (rolled back) at the end."""
        with self.read_sessionmaker() as s:  # closing ends the transaction and keeps loaded objects usable
            yield s

    def ping(self) -> bool:
        """``SELECT 1`` on a connection of its own (never waits for the request pool)."""
        with self._ping_lock:
            if self._ping_engine is None:
                self._ping_engine = make_engine(self.url, pool={"pool_size": 1, "max_overflow": 0,
                                                                "pool_timeout": 5})
            try:
                with self._ping_engine.execution_options(**{READ_ONLY_OPTION: True}).connect() as c:
                    c.execute(text("SELECT count(*) FROM alembic_version"))  # reads the file, not just the driver
                return True
            except Exception:
                return False

    def dispose(self) -> None:
        self.engine.dispose()
        if self._ping_engine is not None:
            self._ping_engine.dispose()
