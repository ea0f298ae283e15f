"""FastAPI application factory: ``create_app(settings)``.

Mounts the REST API (``/api``), the review web pages (``neurorad.server.web.router``) when
installed, and, in its lifespan, the services the settings ask for (receiver, scheduler,
local worker). The database is migrated to the shipped schema at start.
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI

from neurorad import __version__
from neurorad.server.settings import Settings

log = logging.getLogger("neurorad.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    from neurorad.server.api import router as api_router
    from neurorad.server.orchestration import DataPlane
    from neurorad.server.services import Services

    settings = settings or Settings()
    plane = DataPlane(settings)
    plane.db.migrate()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        # Sync endpoints run in anyio's thread pool. Python runs one thread at a time (GIL), so
        # more threads add no throughput, only GIL hand-overs that delay the event loop (and
        # with it /api/health and every waiting client); a small pool keeps the loop responsive.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        # and hand the GIL over more often than every 5 ms, so the event loop gets it soon
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        services = Services(settings, plane).start()
        app.state.services = services
        try:
            yield
        finally:
            services.stop()
            plane.db.dispose()

    # No public docs: /api/docs and /api/openapi.json need a sign-in and load nothing from
    # outside (a hospital network has no CDN; see neurorad.server.api.api_docs).
    app = FastAPI(title="neurorad", version=__version__, lifespan=lifespan,
                  docs_url=None, openapi_url=None, redoc_url=None)
    from neurorad.server.middleware import AdmissionGate, HardeningMiddleware

    app.add_middleware(AdmissionGate, max_in_flight=settings.max_requests_in_flight)
    app.add_middleware(HardeningMiddleware, max_body_bytes=settings.max_request_body_bytes)

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
