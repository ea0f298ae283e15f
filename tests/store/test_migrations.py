"""Database upgrades: a database with rows in EVERY table at the oldest shipped schema (0001)
migrates to head without losing a row or changing a value that existed before (SQLite and
PostgreSQL). Rows are generated from the reflected 0001 schema, so a table added to 0001's
history is covered without editing this test."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, MetaData, Numeric, inspect, select
from sqlalchemy.types import LargeBinary

from neurorad.store.db import make_engine, migrate, schema_revisions

OLDEST = "0001"
ROWS = 2


def _value(col, i: int, fks: dict[str, int]):
    if col.name in fks:
        return fks[col.name]
    t = col.type
    if isinstance(t, Boolean):
        return bool(i % 2)
    if isinstance(t, Integer):
        return i
    if isinstance(t, (Float, Numeric)):
        return i + 0.5
    if isinstance(t, DateTime):
        return dt.datetime(2026, 1, i, 8, 30)
    if isinstance(t, JSON):
        return {"k": i}
    if isinstance(t, LargeBinary):
        return bytes([i])
    length = getattr(t, "length", None) or 16
    return f"{col.name[:6]}{i}"[:length]


def test_every_row_survives_oldest_to_head(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine, OLDEST)
        meta = MetaData()
        meta.reflect(engine)
        tables = [t for t in meta.sorted_tables if t.name != "alembic_version"]
        assert len(tables) >= 10
        with engine.begin() as conn:
            for t in tables:
                for i in range(1, ROWS + 1):
                    fks = {fk.parent.name: i for fk in t.foreign_keys}
                    conn.execute(t.insert().values({c.name: _value(c, i, fks) for c in t.columns}))
        with engine.connect() as conn:
            before = {t.name: sorted(map(tuple, conn.execute(select(*t.columns)).all()), key=repr) for t in tables}
        assert all(len(rows) == ROWS for rows in before.values())
        migrate(engine)
        current, head = schema_revisions(engine.url.render_as_string(hide_password=False))
        assert current == head
        meta_after = MetaData()
        meta_after.reflect(engine)
        with engine.connect() as conn:
            for t in tables:
                after_t = meta_after.tables[t.name]
                cols = [after_t.c[c.name] for c in t.columns]  # a column of 0001 dropped later: KeyError here
                after = sorted(map(tuple, conn.execute(select(*cols)).all()), key=repr)
                assert after == before[t.name], t.name
            assert "workflow_runs" in inspect(conn).get_table_names()
    finally:
        engine.dispose()
