"""Structured logs: one JSON object per line with the request or job it belongs to.

``neurorad --log-json serve`` (or ``NEURORAD_LOG_FORMAT=json``, which job processes and Dask
tasks inherit) writes each record as ``{"time", "level", "logger", "message", "request_id",
"job_id", "exc"}`` (time in UTC, ISO 8601), ready for journald/Loki/Elasticsearch. The request id
comes from a well-formed ``X-Request-ID`` header (a reverse proxy's) or is made here, and is sent
back in the response's ``X-Request-ID``; the job id is set while a job runs
(``DataPlane.run_job``).

Identifiers: log messages name internal ids, pseudonymised UIDs and reasons only (the data
plane's rule, docs/data-plane.md); ``pynetdicom``'s request details stay at WARNING
(``neurorad.cli.server._quiet_dicom_logs``). ``tests/ops/test_logs.py`` runs a study with
realistic identifiers through the API and a job and finds none in the log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("neurorad_request_id", default=None)
job_id: ContextVar[int | None] = ContextVar("neurorad_job_id", default=None)

_GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ENV = "NEURORAD_LOG_FORMAT"


def json_wanted() -> bool:
    """True when ``$NEURORAD_LOG_FORMAT`` is ``json``."""
    return os.environ.get(ENV, "").strip().lower() == "json"


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON, with the current request and job ids."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
            "job_id": getattr(record, "job_id", None) or job_id.get(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO, use_json: bool | None = None, stream=None) -> None:
    """Configure the root logger: JSON lines, or the plain format (``logging.basicConfig``, which
    leaves a root logger that already has handlers, e.g. a test runner's, alone)."""
    use_json = json_wanted() if use_json is None else use_json
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_neurorad_json", False)]:
        root.removeHandler(h)
    if not use_json:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=stream or sys.stderr)
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._neurorad_json = True  # type: ignore[attr-defined]
    for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(h)  # a plain stream handler would print every line twice
    root.addHandler(handler)
    root.setLevel(level)
    os.environ[ENV] = "json"  # job processes (forkserver) and Dask tasks started later inherit it


def configure_job_process() -> None:
    """In a job's process (child or Dask task): JSON logs when the worker asked for them."""
    if json_wanted() and not any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers):
        configure(logging.INFO, use_json=True)


class RequestIdMiddleware:
    """Pure ASGI: sets :data:`request_id` for the request (its ``X-Request-ID`` when well formed,
    else a new one) and returns it in the response's ``X-Request-ID``."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope.get("headers", []):
            if k == b"x-request-id":
                value = v.decode("latin-1")
                rid = value if _GOOD_REQUEST_ID.match(value) else None
                break
        rid = rid or uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
