"""``neurorad backup`` / ``neurorad restore``: the database and the data folder, consistent and checkable.

A backup is a folder ``neurorad-backup-<UTC time>/`` holding

* ``database.sqlite`` (SQLite's online backup API, https://sqlite.org/backup.html: a consistent
  copy while the server runs) or ``database.pgdump`` (``pg_dump --format=custom``, one
  consistent snapshot, https://www.postgresql.org/docs/15/app-pgdump.html);
* ``data/``: the data folder's images, results and the pseudonym vault (its SQLite files also
  through the online backup API), without the scratch folder ``work/``;
* ``manifest.json``: software version, schema revision, database kind, the row count of every
  table and the size and sha256 of every file, which :func:`restore` checks.

The vault KEY is not in the backup (it lives outside the data folder, docs/security.md): back it
up apart, or the restored vault's pseudonyms cannot be reversed. Files are copied while the
server may run: an instance stored during the copy may be missing from the file list although its
row is in the database (or the reverse); stop ingest for a backup that must be exact.

:func:`restore` refuses a target that holds data (an empty instance only), restores the
database (SQLite file, or ``pg_restore`` into an empty PostgreSQL database), copies the files,
migrates the schema to head (a backup of an older version) and checks the row counts and file
hashes against the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from neurorad.errors import InputError, ProcessingError
from neurorad.provenance import sha256_file

MANIFEST = "manifest.json"
_SKIP_TOP = {"work", "neurorad.db", "neurorad.db-wal", "neurorad.db-shm", "neurorad.db-journal"}


@dataclass(frozen=True)
class BackupReport:
    path: Path
    tables: dict[str, int]
    files: int
    bytes: int


def _sqlite_copy(src: Path, dst: Path) -> None:
    """SQLite online backup: a consistent copy of a live database (WAL included)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
        s.backup(d)
    s.close()
    d.close()
    os.chmod(dst, 0o600)


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for pg_dump/pg_restore (password in PGPASSWORD, not argv)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return u.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def table_counts(url: str) -> dict[str, int]:
    """Rows per table of the neurorad schema (alembic_version excluded)."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as c:
            names = [n for n in inspect(c).get_table_names() if n != "alembic_version"]
            return {n: int(c.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one()) for n in sorted(names)}
    finally:
        engine.dispose()


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise ProcessingError(f"{cmd[0]} not found: install postgresql-client (`neurorad doctor`)") from None
    if r.returncode != 0:
        raise ProcessingError(f"{what} failed: {r.stderr.strip()[-500:]}")


def _pg_dump_with_counts(database_url: str, out: Path) -> dict[str, int]:
    """``pg_dump`` and the row counts of the SAME snapshot: a repeatable-read transaction exports
    its snapshot (``pg_export_snapshot()``), counts in it and stays open while ``pg_dump
    --snapshot`` dumps exactly that state (PostgreSQL docs, 9.27.5 Snapshot Synchronization)."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as c:
            snapshot = c.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            names = [n for n in inspect(c).get_table_names() if n != "alembic_version"]
            counts = {n: int(c.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one()) for n in sorted(names)}
            conn, env = _libpq(database_url)
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                  "--file", str(out), conn], env, "pg_dump")
            c.rollback()
    finally:
        engine.dispose()
    return counts


def backup(data_dir: Path, database_url: str, dest: Path) -> BackupReport:
    """Write a backup of the installation (``data_dir``, ``database_url``) into a new folder under ``dest``."""
    from neurorad import __version__
    from neurorad.store.db import schema_revisions, sqlite_path

    data_dir = Path(data_dir).resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = Path(dest) / f"neurorad-backup-{stamp}"
    tmp = Path(dest) / f".{final.name}.partial"
    if final.exists():
        raise InputError("a backup with this time stamp exists; wait a second", final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    db_file = sqlite_path(database_url)
    if db_file is not None:
        if not db_file.exists():
            raise InputError("no database to back up", db_file)
        _sqlite_copy(db_file, tmp / "database.sqlite")
        counts = table_counts(f"sqlite:///{tmp / 'database.sqlite'}")
        db_kind = "sqlite"
    else:
        counts = _pg_dump_with_counts(database_url, tmp / "database.pgdump")
        db_kind = "postgresql"
    files: dict[str, dict] = {}
    for src in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        rel = src.relative_to(data_dir)
        if rel.parts[0] in _SKIP_TOP:
            continue
        dst = tmp / "data" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.name.endswith(("-wal", "-shm", "-journal")) and _is_sqlite(src.with_name(src.name.rsplit("-", 1)[0])):
            continue  # folded into the online backup of its database
        if _is_sqlite(src):
            _sqlite_copy(src, dst)
        else:
            shutil.copy2(src, dst)
        files[str(rel)] = {"bytes": dst.stat().st_size, "sha256": sha256_file(dst)}
    current, _head = schema_revisions(f"sqlite:///{tmp / 'database.sqlite'}" if db_kind == "sqlite" else database_url)
    manifest = {"format": 1, "software_version": __version__, "created": stamp, "database": db_kind,
                "schema_revision": current, "tables": counts, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, final)
    return BackupReport(final, counts, len(files), sum(f["bytes"] for f in files.values()))


def _target_empty(data_dir: Path, database_url: str) -> None:
    from neurorad.store.db import sqlite_path

    data_dir = Path(data_dir)
    if data_dir.exists() and any(p.is_file() for sub in ("images", "results", "vault")
                                 for p in (data_dir / sub).rglob("*") if (data_dir / sub).exists()):
        raise InputError("restore needs an empty instance: the data folder holds files", data_dir)
    db_file = sqlite_path(database_url)
    if db_file is not None:
        if db_file.exists() and db_file.stat().st_size > 0:
            raise InputError("restore needs an empty instance: a database exists", db_file)
        return
    counts = table_counts(database_url)
    if counts:
        raise InputError(f"restore needs an empty PostgreSQL database; it has tables ({', '.join(list(counts)[:5])})")


def restore(backup_dir: Path, data_dir: Path, database_url: str) -> BackupReport:
    """Restore a backup into an EMPTY instance; migrate to head; check rows and files against the manifest."""
    from neurorad.store.db import migrate, sqlite_path

    backup_dir = Path(backup_dir)
    try:
        manifest = json.loads((backup_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"not a neurorad backup ({exc})", backup_dir) from None
    _target_empty(data_dir, database_url)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = sqlite_path(database_url)
    if manifest["database"] == "sqlite":
        if db_file is None:
            raise InputError("a SQLite backup restores into SQLite (convert with a migration tool for PostgreSQL)",
                             backup_dir)
        db_file.unlink(missing_ok=True)
        _sqlite_copy(backup_dir / "database.sqlite", db_file)
    else:
        if db_file is not None:
            raise InputError("a PostgreSQL backup restores into PostgreSQL (--database-url)", backup_dir)
        conn, env = _libpq(database_url)
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", conn,
              str(backup_dir / "database.pgdump")], env, "pg_restore")
    problems = []
    for rel, meta in manifest["files"].items():
        src, dst = backup_dir / "data" / rel, data_dir / rel
        if not src.is_file():
            problems.append(f"{rel}: missing from the backup")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if _is_sqlite(src):
            _sqlite_copy(src, dst)
        else:
            shutil.copy2(src, dst)
        if sha256_file(dst) != meta["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    counts = table_counts(database_url)
    for table, n in manifest["tables"].items():
        if counts.get(table, -1) < n:
            problems.append(f"table {table}: {counts.get(table)} rows restored, the backup recorded {n}")
    if problems:
        raise ProcessingError(f"restore from {backup_dir} incomplete: {'; '.join(problems[:10])}")
    migrate(database_url)
    return BackupReport(backup_dir, counts, len(manifest["files"]), sum(f["bytes"] for f in manifest["files"].values()))
