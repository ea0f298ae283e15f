"""Authentication, roles, sessions and CSRF of the API."""

from __future__ import annotations

from sqlalchemy import select

from neurorad.store.models import User
from tests.server.conftest import PASSWORDS, login


def test_health_is_open_and_everything_else_needs_auth(client, app):
    assert client.get("/api/health").json()["status"] == "ok"
    paths = {p: ops for p, ops in app.openapi()["paths"].items() if p.startswith("/api")}
    assert len(paths) >= 15
    for p, ops in paths.items():
        if p in ("/api/health", "/api/auth/login"):
            continue
        path = p.replace("{study_id}", "1").replace("{job_id}", "1").replace("{result_id}", "1") \
            .replace("{series_id}", "1")
        for method in ops:
            resp = client.request(method, path)
            assert resp.status_code == 401, (method, path, resp.status_code)


def test_passwords_are_argon2id_and_login_sets_safe_cookies(client, app):
    with app.state.db.session() as s:
        hashes = s.scalars(select(User.password_hash)).all()
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert not any(pw in h for h in hashes for pw in PASSWORDS.values())
    assert client.post("/api/auth/login", json={"username": "admin", "password": "wrong-password"}).status_code == 401
    r = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert r.status_code == 200
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("neurorad_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session.replace("Strict", "strict")
    assert client.get("/api/auth/me").json()["username"] == "admin"


def test_csrf_required_for_cookie_posts_not_for_tokens(client, app):
    csrf = login(client, "admin")
    body = {"username": "newtech", "password": "long-enough-pw", "role": "technologist"}
    assert client.post("/api/users", json=body).status_code == 403  # no token
    assert client.post("/api/users", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/api/users", json=body, headers={"X-CSRF-Token": csrf,
                                                         "Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/users", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    client.cookies.clear()
    token = app.state.test_tokens["admin"]
    body["username"] = "newtech2"
    r = client.post("/api/users", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201
    assert client.get("/api/studies", headers={"Authorization": "Bearer nr_wrong"}).status_code == 401


def test_roles(client, app):
    tok = app.state.test_tokens
    h = {r: {"Authorization": f"Bearer {t}"} for r, t in tok.items()}
    assert client.get("/api/audit", headers=h["admin"]).status_code == 200
    assert client.get("/api/audit", headers=h["radiologist"]).status_code == 403
    assert client.get("/api/studies", headers=h["technologist"]).status_code == 200
    review = {"decision": "ACCEPTABLE", "score": 4}
    assert client.post("/api/studies/999/review", json=review, headers=h["technologist"]).status_code == 403
    assert client.post("/api/studies/999/review", json=review, headers=h["radiologist"]).status_code == 404
    assert client.post("/api/users", json={"username": "x", "password": "long-enough-pw", "role": "admin"},
                       headers=h["radiologist"]).status_code == 403


def test_logout_ends_the_session(client):
    csrf = login(client, "radiologist")
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/studies").status_code == 401
