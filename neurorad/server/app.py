"""FastAPI application factory: ``create_app(settings)``.

Mounts the REST API (``/api``), the review web pages (``neurorad.server.web.router``) when
installed, and, in its lifespan, the services the settings ask for (receiver, scheduler,
local worker). The database is migrated to the shipped schema at start.
"""

from __future__ import annotations

import logging
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
        services = Services(settings, plane).start()
        app.state.services = services
        try:
            yield
        finally:
            services.stop()
            plane.db.dispose()

    app = FastAPI(title="neurorad", version=__version__, lifespan=lifespan,
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
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
