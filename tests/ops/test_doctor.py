"""``neurorad doctor``: a healthy installation passes; each broken part fails with its fix."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest
from typer.testing import CliRunner

from neurorad.cli import app as cli_app
from neurorad.server import doctor
from neurorad.server.settings import Destination, Settings, default_vault_key_file
from neurorad.store import Database
from neurorad.store.db import migrate


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("NEURORAD_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("NEURORAD_VAULT_KEY", raising=False)
    monkeypatch.delenv("NEURORAD_DATABASE_URL", raising=False)
    data = tmp_path / "data"
    settings = Settings(data_dir=data, workflows=["summary"])
    db = Database(settings.database_url)
    db.migrate()
    db.dispose()
    key = default_vault_key_file(settings.data_dir)
    key.parent.mkdir(parents=True, mode=0o700)
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    return settings


def _run(settings, *extra):
    return CliRunner().invoke(cli_app, ["doctor", "--data-dir", str(settings.data_dir), *extra])


def _by_name(checks):
    return {c.name: c for c in checks}


def test_healthy_site_passes(site):
    res = _run(site, "--no-peers")
    assert res.exit_code == 0, res.output
    assert "[  OK] database schema" in res.output
    assert "[  OK] vault key" in res.output
    assert "0 failed" in res.output


def test_old_schema_fails_with_the_upgrade_command(site):
    site.data_dir.joinpath("neurorad.db").unlink()
    migrate(site.database_url, "0003")
    res = _run(site, "--no-peers")
    assert res.exit_code == 1
    assert "at revision 0003" in res.output and "neurorad db upgrade" in res.output


def test_missing_database_fails_and_is_not_created(site):
    site.data_dir.joinpath("neurorad.db").unlink()
    checks = _by_name(doctor.check_database(site))
    assert checks["database"].status == doctor.FAIL
    assert not site.data_dir.joinpath("neurorad.db").exists()


def test_readable_key_file_fails_with_chmod(site):
    key = default_vault_key_file(site.data_dir)
    key.chmod(0o644)
    res = _run(site, "--no-peers")
    assert res.exit_code == 1
    assert f"chmod 600 {key}" in res.output


def test_tampered_model_fails(site, tmp_path):
    folder = tmp_path / "models" / "toy"
    folder.mkdir(parents=True)
    (folder / "fold_0.pt").write_bytes(b"weights")
    card = {"name": "toy", "version": "1.0.0", "task": "t", "labels": {"0": "bg"}, "contrasts": ["FLAIR"],
            "preprocessing": {}, "training_data": "none", "validation": {}, "intended_use": "test",
            "licence": "MIT", "files": {"fold_0.pt": hashlib.sha256(b"weights").hexdigest()}}
    (folder / "model.json").write_text(json.dumps(card))
    assert _by_name(doctor.check_models())["model toy 1.0.0"].status == doctor.OK
    (folder / "fold_0.pt").write_bytes(b"changed")
    bad = _by_name(doctor.check_models())["model toy 1.0.0"]
    assert bad.status == doctor.FAIL and "does not match" in bad.detail


def test_peers_reachable_and_unreachable(site):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]  # bound, not listening: connection refused
            site.destinations = [Destination(name="up", dicomweb_url=f"http://127.0.0.1:{port}/dicom-web"),
                                 Destination(name="down", dicomweb_url=f"https://127.0.0.1:{closed}/dicom-web"),
                                 Destination(name="dimse", ae_title="PACS", host="127.0.0.1", port=closed)]
            checks = _by_name(doctor.check_peers(site, timeout_s=2.0))
    assert checks["destination up"].status == doctor.OK
    assert checks["destination up TLS"].status == doctor.WARN
    assert checks["destination down"].status == doctor.FAIL
    assert checks["destination dimse"].status == doctor.FAIL and "PACS@127.0.0.1" in checks["destination dimse"].detail


def test_low_disk_fails(site):
    gb = 1e9
    assert doctor.check_disk(site, usage=lambda p: (100 * gb, 99.5 * gb, 0.5 * gb))[0].status == doctor.FAIL
    assert doctor.check_disk(site, usage=lambda p: (100 * gb, 95 * gb, 5 * gb))[0].status == doctor.WARN
    assert doctor.check_disk(site, usage=lambda p: (100 * gb, 50 * gb, 50 * gb))[0].status == doctor.OK


def test_missing_binary_for_postgres_fails(site):
    site.database_url = "postgresql+psycopg://u@127.0.0.1:1/x"
    checks = _by_name(doctor.check_binaries(site, which=lambda name: None))
    assert checks["binary pg_dump"].status == doctor.FAIL
    assert checks["binary storescu"].status == doctor.WARN


def test_unknown_workflow_fails(site):
    site.workflows = ["no-such-workflow"]
    assert doctor.check_workflows(site)[0].status == doctor.FAIL
