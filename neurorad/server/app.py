"""FastAPI application factory: ``create_app(settings)``.

Mounts the REST API (``/api``), the review web pages (``neurorad.server.web.router``) when
installed, and, in its lifespan, the services the settings ask for (receiver, scheduler,
local worker). The database is migrated to the shipped schema at start.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from neurorad import __version__
from neurorad.server.settings import Settings

log = logging.getLogger("neurorad.server")


class DatabaseMonitor:
    """A thread that checks the database once a second (``Database.ping``, own connection);
    ``/api/health`` reports its latest result instead of querying on the request path."""

    def __init__(self, db, interval_s: float = 1.0) -> None:
        self.db, self.interval_s = db, interval_s
        self._ok, self._at = False, float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        ok = self.db.ping()
        self._ok, self._at = ok, time.monotonic()

    def ok(self, max_age_s: float) -> bool:
        return self._ok and time.monotonic() - self._at <= max_age_s

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval_s)

    def start(self) -> DatabaseMonitor:
        self.check()
        self._thread = threading.Thread(target=self._loop, name="neurorad-db-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _mount_metrics(app: FastAPI, plane) -> None:
    """``GET /metrics``: Prometheus text exposition of the installation (neurorad.server.metrics).
    Like every endpoint but ``/api/health`` it needs a signed-in user or a bearer token
    (docs/security.md); the figures carry no identifier."""
    from fastapi import Depends, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from neurorad.server.auth import Principal, current_user
    from neurorad.server.metrics import make_registry

    registry = make_registry(plane.db, plane.storage)

    @app.get("/metrics", include_in_schema=False)
    def metrics(p: Principal = Depends(current_user)) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})


def create_app(settings: Settings | None = None) -> FastAPI:
    from neurorad.server.api import router as api_router
    from neurorad.server.orchestration import DataPlane
    from neurorad.server.services import Services

    settings = settings or Settings()
    plane = DataPlane(settings)
    # every enabled workflow loads now or the server does not start (WorkflowLoadError names it
    # and the import error); nothing falls back to another workflow
    enabled = plane.enabled_workflows()
    log.info("enabled workflows: %s", ", ".join(f"{w.name} {w.version}" for w in enabled))
    plane.db.migrate()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        # Sync endpoints run in anyio's thread pool. Python runs one thread at a time (GIL), so
        # more threads add no throughput, only GIL hand-overs that delay the event loop (and
        # with it /api/health and every waiting client); a small pool keeps the loop responsive.
        anyio.to_thread.current_default_thread_limiter().total_tokens = (
            settings.request_threads or (4 if plane.db.is_sqlite else 16))
        # and hand the GIL over more often than every 5 ms, so the event loop gets it soon
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        monitor = DatabaseMonitor(plane.db).start()
        app.state.db_monitor = monitor
        services = Services(settings, plane).start()
        app.state.services = services
        # Everything imported and built so far lives as long as the server: keep it out of the
        # cyclic collector, whose full passes otherwise stop every thread, the event loop too.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            services.stop()
            monitor.stop()
            app.state.db_monitor = None
            plane.db.dispose()

    # No public docs: /api/docs and /api/openapi.json need a sign-in and load nothing from
    # outside (a hospital network has no CDN; see neurorad.server.api.api_docs).
    app = FastAPI(title="neurorad", version=__version__, lifespan=lifespan,
                  docs_url=None, openapi_url=None, redoc_url=None)
    from neurorad.server.middleware import AdmissionGate, HardeningMiddleware

    app.add_middleware(AdmissionGate, max_in_flight=settings.max_requests_in_flight)
    app.add_middleware(HardeningMiddleware, max_body_bytes=settings.max_request_body_bytes)
    from neurorad.server.logs import RequestIdMiddleware

    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of the request carries its id

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable_text(request, exc):  # a lone surrogate in a JSON string ("\ud800")
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": "text holds characters that are not valid Unicode (lone surrogates)"},
                            status_code=422)

    app.state.settings = settings
    app.state.plane = plane
    app.state.db = plane.db
    app.state.storage = plane.storage
    from neurorad.server.auth import LoginThrottle

    app.state.login_throttle = LoginThrottle(settings.login_max_failures_per_user,
                                             settings.login_max_failures_per_ip, settings.login_window_s)
    app.include_router(api_router)
    _mount_metrics(app, plane)
    try:
        from neurorad.server.web import router as web_router
    except ImportError:
        web_router = None
    except Exception:  # a broken web module must not take the API (and the receiver) down
        log.exception("review web pages not mounted: neurorad.server.web failed to import")
        web_router = None
    if web_router is not None:
        app.include_router(web_router)
    return app
