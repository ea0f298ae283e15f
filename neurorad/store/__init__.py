"""neurorad.store: database models, state machine, job queue, storage, retention, audit.

SQLAlchemy 2 + Alembic; SQLite by default (WAL), PostgreSQL for a site. See docs/data-plane.md.
"""

from neurorad.store.db import Database, make_engine, migrate, sqlite_url
from neurorad.store.queue import JobQueue, Lease, LeaseLost
from neurorad.store.state import StudyState, TransitionError, transition
from neurorad.store.storage import Storage

__all__ = ["Database", "make_engine", "migrate", "sqlite_url", "JobQueue", "Lease", "LeaseLost", "StudyState",
           "TransitionError", "transition", "Storage"]
