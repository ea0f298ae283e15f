"""The admin commands: user add, token create, db upgrade, purge."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neurorad.cli import app
from neurorad.server.app import create_app
from neurorad.server.settings import Settings


def test_user_token_db_purge(tmp_path):
    runner = CliRunner()
    d = ["--data-dir", str(tmp_path)]
    r = runner.invoke(app, ["db", "upgrade", *d])
    assert r.exit_code == 0 and "head" in r.output
    r = runner.invoke(app, ["user", "add", "tech1", "--role", "technologist", "--password", "tech1-password", *d])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["user", "add", "tech1", "--role", "technologist", "--password", "tech1-password", *d])
    assert r.exit_code != 0  # exists
    r = runner.invoke(app, ["user", "add", "x", "--role", "janitor", "--password", "long-enough-pw", *d])
    assert r.exit_code != 0
    r = runner.invoke(app, ["token", "create", "tech1", *d])
    assert r.exit_code == 0
    token = r.output.strip().splitlines()[-1]
    assert token.startswith("nr_")
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        assert c.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "technologist"
    r = runner.invoke(app, ["purge", "--days", "0", "--dry-run", *d])
    assert r.exit_code == 0 and "would purge 0 instances" in r.output
