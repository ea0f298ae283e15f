"""``neurorad backup`` / ``restore``: a filled instance restored into an empty one has every study,
result (with its file) and audit event; on SQLite (online backup API) and PostgreSQL (pg_dump)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from neurorad.cli import app as cli_app
from neurorad.errors import InputError
from neurorad.server.app import create_app
from neurorad.server.auth import create_api_token, create_user
from neurorad.server.settings import Settings
from neurorad.store import Database
from neurorad.store.backup import MANIFEST, backup, restore
from neurorad.store.models import AuditEvent, Instance, Result, Study
from neurorad.store.storage import Storage
from tests.server.dicomdata import write_series
from tests.store.pgcluster import PostgresCluster


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def _urls(kind, tmp_path, pg_factory):
    if kind == "sqlite":
        return None, None
    cluster = pg_factory()
    return cluster.create_database(), cluster.create_database()


def _fill(settings, tmp_path, run_jobs: bool = True) -> None:
    """Two studies through the API and the summary workflow: rows, files, results, audit events."""
    app = create_app(settings)
    with app.state.db.session() as s:
        u = create_user(s, "tech", "tech-password-1", "technologist")
        auth = {"Authorization": f"Bearer {create_api_token(s, u, 't')}", "Content-Type": "application/dicom"}
    with TestClient(app) as client:
        for i in range(2):
            for f in write_series(tmp_path / f"in{i}", "FLAIR", n_slices=2, size=32):
                assert client.post("/api/instances", content=f.read_bytes(), headers=auth).status_code < 300
        plane = app.state.plane
        assert len(plane.complete_quiet_studies()) == 2
        while run_jobs and (lease := plane.queue.claim("test")) is not None:
            assert plane.run_job(lease) == "succeeded"


def _snapshot(settings):
    db = Database(settings.database_url)
    storage = Storage(settings.data_dir)
    try:
        with db.read_session() as s:
            studies = sorted((x.study_uid, x.state) for x in s.scalars(select(Study)))
            results = sorted((r.id, r.path, r.sha256) for r in s.scalars(select(Result)))
            audit = sorted((a.id, a.action, a.actor) for a in s.scalars(select(AuditEvent)))
            instances = sorted((i.sop_uid, i.path, i.sha256) for i in s.scalars(select(Instance)))
    finally:
        db.dispose()
    from neurorad.provenance import sha256_file

    for _, path, sha in results + [(None, p, h) for _, p, h in instances]:
        assert sha256_file(storage.abspath(path)) == sha, path  # every file there with its recorded hash
    return studies, results, audit, instances


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_backup_restore_into_empty_instance(kind, tmp_path, monkeypatch, request):
    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    src_url, dst_url = _urls(kind, tmp_path, lambda: request.getfixturevalue("pg"))
    src = Settings(data_dir=tmp_path / "site", database_url=src_url, quiet_period_s=0.0, dicom_port=0,
                   workflows=["summary"])
    _fill(src, tmp_path)
    before = _snapshot(src)
    studies, results, audit, instances = before
    assert len(studies) == 2 and len(results) >= 4 and len(audit) >= 4 and len(instances) == 4
    res = CliRunner().invoke(cli_app, ["backup", str(tmp_path / "backups"), "--data-dir", str(src.data_dir),
                                       *(["--database-url", src_url] if src_url else [])])
    assert res.exit_code == 0, res.output
    (bdir,) = (tmp_path / "backups").iterdir()
    assert (bdir / MANIFEST).is_file() and not list((tmp_path / "backups").glob(".*partial"))
    dst = Settings(data_dir=tmp_path / "restored", database_url=dst_url, workflows=["summary"])
    res = CliRunner().invoke(cli_app, ["restore", str(bdir), "--data-dir", str(dst.data_dir),
                                       *(["--database-url", dst_url] if dst_url else [])])
    assert res.exit_code == 0, res.output
    assert _snapshot(dst) == before
    # a second restore into the now filled instance is refused, nothing overwritten
    with pytest.raises(InputError, match="empty"):
        restore(bdir, dst.data_dir, str(dst.database_url))


def test_tampered_backup_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    src = Settings(data_dir=tmp_path / "site", quiet_period_s=0.0, dicom_port=0, workflows=["summary"])
    _fill(src, tmp_path, run_jobs=False)
    rep = backup(src.data_dir, str(src.database_url), tmp_path / "b")
    victim = next(p for p in (rep.path / "data" / "images").rglob("*") if p.is_file())
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(Exception, match="sha256 differs"):
        restore(rep.path, tmp_path / "restored", f"sqlite:///{tmp_path / 'restored' / 'neurorad.db'}")
