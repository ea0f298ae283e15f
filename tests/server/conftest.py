"""Server fixtures: an app on a temp data dir, users of each role, logged-in clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from neurorad.server.app import create_app
from neurorad.server.auth import create_api_token, create_user
from neurorad.server.settings import Settings

PASSWORDS = {"admin": "admin-pass-123", "radiologist": "rad-pass-1234", "technologist": "tech-pass-123"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", quiet_period_s=0.0, dicom_port=0, lease_s=5.0,
                    backoff_base_s=0.1, workflows=["summary"], allowed_calling_aets=["MODALITY1", "MOD1"])


@pytest.fixture
def app(settings):
    app = create_app(settings)
    with app.state.db.session() as s:
        tokens = {}
        for role, pw in PASSWORDS.items():
            u = create_user(s, role, pw, role)
            tokens[role] = create_api_token(s, u, "test")
    app.state.test_tokens = tokens
    return app


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def login(client: TestClient, role: str) -> str:
    r = client.post("/api/auth/login", json={"username": role, "password": PASSWORDS[role]})
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]
