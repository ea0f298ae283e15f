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
    review = {"result_version": 1, "decision": "ACCEPTABLE", "score": 4}
    assert client.post("/api/studies/999/review", json=review, headers=h["technologist"]).status_code == 403
    assert client.post("/api/studies/999/review", json=review, headers=h["radiologist"]).status_code == 404
    assert client.post("/api/users", json={"username": "x", "password": "long-enough-pw", "role": "admin"},
                       headers=h["radiologist"]).status_code == 403


def test_logout_ends_the_session(client):
    csrf = login(client, "radiologist")
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/studies").status_code == 401


def test_sign_in_is_rate_limited_per_username_then_reset_on_success(client, app):
    """5 failures for one username -> 429 with Retry-After, even with the right password; the
    window passing (fake clock) lets the user in, and a success clears the count."""
    now = [1000.0]
    throttle = app.state.login_throttle
    throttle._clock = lambda: now[0]
    wrong = {"username": "radiologist", "password": "not-the-password"}
    right = {"username": "radiologist", "password": PASSWORDS["radiologist"]}
    for i in range(throttle.max_user):
        now[0] += 1.0
        assert client.post("/api/auth/login", json=wrong).status_code == 401, i
    r = client.post("/api/auth/login", json=right)
    assert r.status_code == 429
    # oldest failure at t=1001 leaves the 300 s window at 1301; now is 1005
    assert int(r.headers["Retry-After"]) == 1301 - 1005
    assert "neurorad_session" not in r.headers.get("set-cookie", "")
    # other users from the same client are not locked out by one user's failures (IP limit is higher)
    assert client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]}).status_code == 200
    client.cookies.clear()
    now[0] = 1301.5  # the first failure left the window: one more attempt allowed
    assert client.post("/api/auth/login", json=right).status_code == 200
    client.cookies.clear()
    # reset on success: a full set of failures is needed again before the next 429
    for _ in range(throttle.max_user - 1):
        assert client.post("/api/auth/login", json=wrong).status_code == 401
    assert client.post("/api/auth/login", json=right).status_code == 200
    with app.state.db.session() as s:
        from neurorad.store.models import AuditEvent

        actions = s.scalars(select(AuditEvent.action)).all()
    assert actions.count("auth.login_failed") == 2 * throttle.max_user - 1
    assert actions.count("auth.login_throttled") == 1


def test_sign_in_is_rate_limited_per_client_ip(client, app):
    """Many usernames guessed from one address: the IP limit stops them all (also real users)."""
    throttle = app.state.login_throttle
    for i in range(throttle.max_ip):
        r = client.post("/api/auth/login", json={"username": f"guess{i}", "password": "x" * 10})
        assert r.status_code == 401, i
    r = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_login_throttle_counts_each_address_and_user_separately():
    from neurorad.server.auth import LoginThrottle

    t = [0.0]
    th = LoginThrottle(max_failures_per_user=3, max_failures_per_ip=4, window_s=60.0, clock=lambda: t[0])
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # one user attacked from three addresses
        assert th.retry_after_s(ip, "alice") is None
        th.failure(ip, "alice")
        t[0] += 10.0
    assert th.retry_after_s("10.0.0.9", "Alice") == 60 - 30  # case-insensitive username key
    assert th.retry_after_s("10.0.0.1", "bob") is None
    # an attacker's own success does not wipe the address's failures against other users
    for name in ("bob", "carol", "dave"):
        th.failure("10.0.0.7", name)
    th.success("10.0.0.7", "mallory")
    th.failure("10.0.0.7", "erin")
    assert th.retry_after_s("10.0.0.7", "frank") is not None
    t[0] += 61.0
    assert th.retry_after_s("10.0.0.7", "frank") is None and th.retry_after_s("10.0.0.1", "alice") is None
