"""Authentication and authorisation shared by the REST API and the review web pages.

* Users sign in with a password stored as an Argon2id hash (RFC 9106, ``argon2-cffi``
  defaults) and get a session: a random 256-bit secret in an ``HttpOnly``, ``SameSite=Strict``
  cookie (``Secure`` when the request came over HTTPS, or always with ``settings.secure_cookies``);
  the database keeps only its SHA-256.
* Machines use API tokens (``Authorization: Bearer nr_...``), stored as SHA-256. A token
  expires (default 90 days, at most 365); one minted in a web session expires with it and is
  revoked when it signs out; tokens are listed and revoked with ``GET/DELETE /api/tokens`` and
  ``neurorad token list|revoke``.
* Roles: ``admin`` (everything), ``radiologist`` (review), ``technologist`` (operations).
* CSRF (OWASP "synchronizer token" pattern): every cookie-authenticated unsafe request
  (POST/PUT/PATCH/DELETE) must carry the session's CSRF token in the ``X-CSRF-Token`` header
  or a ``csrf_token`` form field, and a present ``Origin`` header must match the server. The
  token is returned by login and ``GET /api/auth/me`` and readable from the non-HttpOnly
  ``neurorad_csrf`` cookie. Bearer-token requests are exempt (no ambient credentials).

* Sign-in is rate limited (:class:`LoginThrottle`): failed attempts are counted per client IP
  and per username in a sliding window (default 5 per username and 20 per IP in 5 minutes;
  OWASP Authentication Cheat Sheet, "protect against automated attacks"); over the limit the
  login answers 429 with ``Retry-After`` and does not check the password. A success clears the
  username's failures and that username's share of the IP's. The counters live in the memory
  of the server process (``neurorad serve`` is one process); several API processes would each
  count on their own.

Web pages use: ``Depends(current_user)``, ``Depends(require_role("radiologist"))`` and
``Depends(csrf_protect)`` on their form posts; ``current_user_optional`` for pages that redirect
to a login form instead of answering 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, Response
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from neurorad.store.models import ApiToken, User, WebSession, utcnow

ROLES = ("admin", "radiologist", "technologist")
SESSION_COOKIE = "neurorad_session"
CSRF_COOKIE = "neurorad_csrf"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_TOKEN_USE_RESOLUTION = timedelta(minutes=1)
_hasher = PasswordHasher()
# verified against when the user does not exist, so timing does not reveal valid usernames
_DUMMY_HASH = _hasher.hash("neurorad-dummy-password")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, and how they authenticated."""

    user_id: int
    username: str
    role: str
    via: str  # "session" or "token"
    csrf_token: str | None = None
    token_id: int | None = None
    token_last_used: datetime | None = None
    session_id: int | None = None  # the web session (also of a token minted in one)
    expires_at: datetime | None = None  # of the session or token

    @property
    def actor(self) -> str:
        return f"user:{self.username}"


class LoginThrottle:
    """Failed sign-ins per client IP and per username in a sliding window (in memory, thread-safe).

    ``retry_after_s(ip, username)`` is None while both are under their limit, else the whole
    seconds until the oldest failure that keeps them over it leaves the window. ``failure``
    counts one failed attempt for both; ``success`` forgets the username's failures and, from
    the IP's, only those against that username (a reader who mistyped is not punished, but an
    attacker's own valid account cannot wipe the IP's failures against other accounts).
    Keys idle for a whole window are pruned, so memory stays bounded by recent traffic.

    ``attempt(ip, username)`` is what the sign-in uses: in one step it checks the limits and,
    when the attempt may go ahead, counts it as a failure at once (a success then clears it).
    Checking and counting separately let parallel requests all pass the check before any
    failure was counted (40 concurrent wrong passwords, none refused).

    Memory: usernames are kept as a 16-byte hash (a 10 MB username costs what a short one
    costs), and at most ``max_keys`` usernames and addresses are tracked; beyond that the
    oldest are forgotten first.
    """

    max_keys: int = 100_000

    def __init__(self, max_failures_per_user: int = 5, max_failures_per_ip: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_failures_per_user < 1 or max_failures_per_ip < 1 or window_s <= 0:
            raise ValueError("login throttle limits must be positive")
        self.max_user, self.max_ip, self.window_s = max_failures_per_user, max_failures_per_ip, float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._user: dict[str, deque[float]] = {}
        self._ip: dict[str, deque[tuple[float, str]]] = {}
        self._last_prune = clock()

    @staticmethod
    def _key(username: str) -> str:
        folded = username.strip().casefold().encode("utf-8", "surrogatepass")
        return hashlib.sha256(folded).digest()[:16].hex()

    def _bound(self) -> None:
        for table in (self._user, self._ip):
            while len(table) > self.max_keys:
                table.pop(next(iter(table)))  # dicts keep insertion order: the oldest key

    def attempt(self, ip: str, username: str) -> int | None:
        """None and the attempt counted as a failure (until :meth:`success`), or the seconds to
        wait (nothing counted) when the username or the address is over its limit."""
        with self._lock:
            wait = self._retry_after_locked(ip, username)
            if wait is None:
                self._failure_locked(ip, username)
            return wait

    def _prune(self, now: float) -> None:
        cutoff = now - self.window_s
        for k in list(self._user):
            q = self._user[k]
            while q and q[0] <= cutoff:
                q.popleft()
            if not q:
                del self._user[k]
        for k in list(self._ip):
            qi = self._ip[k]
            while qi and qi[0][0] <= cutoff:
                qi.popleft()
            if not qi:
                del self._ip[k]

    def _wait(self, times: list[float], limit: int, now: float) -> float | None:
        recent = [t for t in times if t > now - self.window_s]
        if len(recent) < limit:
            return None
        # the attempt is allowed again once only limit-1 failures remain in the window
        return recent[len(recent) - limit] + self.window_s - now

    def _retry_after_locked(self, ip: str, username: str) -> int | None:
        now = self._clock()
        waits = [
            self._wait(list(self._user.get(self._key(username), ())), self.max_user, now),
            self._wait([t for t, _ in self._ip.get(ip, ())], self.max_ip, now),
        ]
        waits = [w for w in waits if w is not None]
        return max(1, math.ceil(max(waits))) if waits else None

    def retry_after_s(self, ip: str, username: str) -> int | None:
        with self._lock:
            return self._retry_after_locked(ip, username)

    def _failure_locked(self, ip: str, username: str) -> None:
        now = self._clock()
        if now - self._last_prune > self.window_s:
            self._prune(now)
            self._last_prune = now
        key = self._key(username)
        self._user.setdefault(key, deque()).append(now)
        self._ip.setdefault(ip, deque()).append((now, key))
        self._bound()

    def failure(self, ip: str, username: str) -> None:
        with self._lock:
            self._failure_locked(ip, username)

    def success(self, ip: str, username: str) -> None:
        with self._lock:
            key = self._key(username)
            self._user.pop(key, None)
            q = self._ip.get(ip)
            if q is not None:
                kept = deque(item for item in q if item[1] != key)
                if kept:
                    self._ip[ip] = kept
                else:
                    del self._ip[ip]


def client_ip(request: Request) -> str:
    """The client's address as the server sees it (uvicorn applies X-Forwarded-For only from
    ``--forwarded-allow-ips``, by default 127.0.0.1, i.e. a reverse proxy on the same machine)."""
    return request.client.host if request.client is not None else "unknown"


# -- user and token administration (used by the CLI and the admin API) ----------------------
def create_user(s: Session, username: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if s.scalar(select(User).where(User.username == username)) is not None:
        raise ValueError(f"user {username!r} exists")
    user = User(username=username, password_hash=hash_password(password), role=role, active=True)
    s.add(user)
    s.flush()
    return user


def authenticate(s: Session, username: str, password: str) -> User | None:
    user = s.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    return user


def needs_rehash(user: User) -> bool:
    """The user's hash was made with weaker parameters than today's (rehash at sign-in)."""
    return _hasher.check_needs_rehash(user.password_hash)


def cookies_secure(request: Request) -> bool:
    """Session cookies get ``Secure`` when the settings say so or the request came over HTTPS
    (directly, or through a reverse proxy trusted by uvicorn's ``--forwarded-allow-ips`` that
    sets ``X-Forwarded-Proto: https``)."""
    return bool(request.app.state.settings.secure_cookies) or request.url.scheme == "https"


#: lifetime of an API token unless its creator asks for less (``neurorad token create --days``)
DEFAULT_TOKEN_DAYS = 90.0
MAX_TOKEN_DAYS = 365.0


def create_api_token(s: Session, user: User, name: str, days: float | None = None,
                     session_id: int | None = None, not_after: datetime | None = None) -> str:
    """Create a token; the plaintext is returned once and never stored.

    It expires after ``days`` (default :data:`DEFAULT_TOKEN_DAYS`, at most
    :data:`MAX_TOKEN_DAYS`) or at ``not_after`` if that is sooner. A token minted in a web
    session carries its ``session_id`` and is revoked when that session signs out.
    """
    days = DEFAULT_TOKEN_DAYS if days is None else float(days)
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise ValueError(f"token lifetime must be between 0 and {MAX_TOKEN_DAYS:g} days")
    expires = utcnow() + timedelta(days=days)
    if not_after is not None:
        expires = min(expires, not_after)
    token = "nr_" + secrets.token_urlsafe(32)
    s.add(ApiToken(user_id=user.id, name=name, token_sha256=sha256_hex(token), expires_at=expires,
                   session_id=session_id))
    s.flush()
    return token


def token_rows(s: Session, user_id: int | None = None) -> list[dict]:
    """API tokens (never their secret), newest first; only ``user_id``'s when given."""
    q = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    if user_id is not None:
        q = q.where(ApiToken.user_id == user_id)
    now = utcnow()
    out = []
    for tok, username in s.execute(q).all():
        state = "revoked" if tok.revoked else "expired" if tok.expires_at is not None and tok.expires_at <= now \
            else "active"
        out.append({"id": tok.id, "user": username, "name": tok.name, "created_at": tok.created_at,
                    "expires_at": tok.expires_at, "last_used_at": tok.last_used_at, "state": state,
                    "session_bound": tok.session_id is not None})
    return out


def revoke_token(s: Session, token_id: int, user_id: int | None = None) -> bool:
    """Revoke one token (only ``user_id``'s when given); False when there is no such token."""
    tok = s.get(ApiToken, token_id)
    if tok is None or (user_id is not None and tok.user_id != user_id):
        return False
    tok.revoked = True
    return True


def create_session(s: Session, user: User, hours: float) -> tuple[str, str]:
    """A new web session: (cookie secret, csrf token)."""
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    s.add(WebSession(user_id=user.id, secret_sha256=sha256_hex(secret), csrf_token=csrf,
                     expires_at=utcnow() + timedelta(hours=hours)))
    s.flush()
    return secret, csrf


def set_session_cookies(response: Response, secret: str, csrf: str, secure: bool, max_age_s: int) -> None:
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="strict", secure=secure,
                        max_age=max_age_s, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict", secure=secure,
                        max_age=max_age_s, path="/")


def clear_session_cookies(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


# -- dependencies ------------------------------------------------------------------------------
_SQLITE_REQUEST_WRITERS = 1
_write_gates: dict[tuple[int, int], asyncio.Semaphore] = {}


def _write_gate(db) -> asyncio.Semaphore:
    """Requests that write wait here, in the event loop (no thread held), for one of the
    database's write slots: 1 on SQLite (one writer at a time anyway), several on PostgreSQL."""
    key = (id(db), id(asyncio.get_running_loop()))
    gate = _write_gates.get(key)
    if gate is None:
        gate = _write_gates[key] = asyncio.Semaphore(_SQLITE_REQUEST_WRITERS if db.is_sqlite else 16)
    return gate


#: threads that end request sessions (commit / rollback / close). Not the request pool: a
#: session that waits behind queued requests keeps its connection (and, writing, the lock).
_SESSION_END_THREADS = anyio.CapacityLimiter(4)


async def _end(fn) -> None:
    await anyio.to_thread.run_sync(fn, limiter=_SESSION_END_THREADS)


async def get_db_session(request: Request):
    """The request's database session.

    GET/HEAD: a read-only snapshot (:meth:`neurorad.store.db.Database.read_session`; it never
    waits for a writer). Other methods: a write transaction, committed when the endpoint
    returns; such requests first queue for a write slot in the event loop, so a burst of
    writes never occupies the request thread pool that readers need. Sessions end on threads
    of their own, so a connection is handed back as soon as its endpoint is done.
    """
    db = request.app.state.db
    if request.method in _SAFE_METHODS:
        s = db.read_sessionmaker()
        try:
            yield s
        finally:
            await _end(s.close)
        return
    async with _write_gate(db):
        s = db.sessionmaker()
        try:
            yield s
            await _end(s.commit)
        except BaseException:
            await _end(s.rollback)
            raise
        finally:
            await _end(s.close)


def _principal(request: Request, s: Session) -> Principal | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        digest = sha256_hex(auth[7:].strip())
        row = s.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                        .where(ApiToken.token_sha256 == digest)).first()
        if row is None or row[0].revoked or not row[1].active:
            return None
        if row[0].expires_at is not None and row[0].expires_at <= utcnow():
            return None
        return Principal(row[1].id, row[1].username, row[1].role, "token", token_id=row[0].id,
                         token_last_used=row[0].last_used_at, session_id=row[0].session_id,
                         expires_at=row[0].expires_at)
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    row = s.execute(select(WebSession, User).join(User, User.id == WebSession.user_id)
                    .where(WebSession.secret_sha256 == sha256_hex(secret))).first()
    if row is None or row[0].expires_at < utcnow() or not row[1].active:
        return None
    return Principal(row[1].id, row[1].username, row[1].role, "session", row[0].csrf_token,
                     session_id=row[0].id, expires_at=row[0].expires_at)


_touch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurorad-token-use")


def _touch_token(db, token_id: int) -> None:
    try:
        with db.session() as w:
            w.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))
    except Exception:  # noqa: BLE001 - a usage timestamp must not fail anything
        pass


def current_user_optional(request: Request) -> Principal | None:
    """The caller, or None when not signed in.

    Uses its own short read-only snapshot (not the request's), so authentication never waits
    for, nor holds, the write lock (SQLite). A token's ``last_used_at`` is written at most once
    a minute, in a write transaction of its own.
    """
    if hasattr(request.state, "principal"):
        return request.state.principal
    db = request.app.state.db
    with db.read_session() as s:
        p = _principal(request, s)
    if p is not None and p.token_id is not None and (
            p.token_last_used is None or utcnow() - p.token_last_used > _TOKEN_USE_RESOLUTION):
        _touch_pool.submit(_touch_token, db, p.token_id)  # off the request: never waits for a writer
    request.state.principal = p
    return p


def current_user(principal: Principal | None = Depends(current_user_optional)) -> Principal:
    """The caller; 401 when not authenticated."""
    if principal is None:
        raise HTTPException(status_code=401, detail="authentication required",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


#: Roles that record QA decisions (the study's verdict, its report, its delivery). Exactly these:
#: unlike every other permission, admins do NOT pass (they manage users and settings, they do not
#: read studies). Every decision path (REST and web) depends on :func:`require_decider`.
DECIDING_ROLES = ("radiologist",)


def require_role(*roles: str):
    """Dependency factory: the caller must have one of ``roles`` (admin always passes)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def _check(principal: Principal = Depends(current_user)) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            raise HTTPException(status_code=403, detail=f"requires role {' or '.join(roles)}")
        return principal

    return _check


def require_decider(principal: Principal = Depends(current_user)) -> Principal:
    """The caller may record a QA decision (role in :data:`DECIDING_ROLES`; admins do not); else 403.

    As a dependency it runs before the endpoint looks the study up, so a role that may not
    decide gets 403 whatever study id it names (the answer does not reveal which ids exist).
    """
    if principal.role not in DECIDING_ROLES:
        raise HTTPException(status_code=403, detail="only radiologists record QA decisions")
    return principal


def safe_redirect_target(target: str | None, default: str = "/worklist") -> str:
    """``target`` when it is a path on this server, else ``default`` (no open redirect).

    Browsers read ``//host``, ``/%5Chost`` (a backslash is a path separator) and ``/%09/host``
    (ASCII tab and newline are stripped) as another host (WHATWG URL standard), so a target
    must start with one ``/`` and hold no second leading slash, no backslash, no control
    character and no whitespace.
    """
    if not target or not target.startswith("/") or len(target) > 2000:
        return default
    if any(c == "\\" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    if target.startswith("//"):
        return default
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


async def csrf_protect(request: Request, principal: Principal | None = Depends(current_user_optional)) -> None:
    """Refuse cookie-authenticated unsafe requests without the session's CSRF token (403)."""
    if request.method in _SAFE_METHODS or principal is None or principal.via != "session":
        return
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not principal.csrf_token or not hmac.compare_digest(sent, principal.csrf_token):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong")
