"""Server settings: one dataclass, filled from the CLI, the environment or tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorad.store.retention import DEFAULT_RETENTION_DAYS


def default_data_dir() -> Path:
    """``$NEURORAD_DATA_DIR`` or ``~/.neurorad``."""
    return Path(os.environ.get("NEURORAD_DATA_DIR") or Path.home() / ".neurorad").expanduser()


def default_key_dir() -> Path:
    """``$NEURORAD_KEY_DIR`` or ``~/.config/neurorad/keys``: where keys live, outside any data folder."""
    return Path(os.environ.get("NEURORAD_KEY_DIR") or Path.home() / ".config" / "neurorad" / "keys").expanduser()


def default_vault_key_file(data_dir: Path) -> Path:
    """The vault key of the installation whose data folder is ``data_dir``, kept OUTSIDE it (a
    backup or copy of the data folder must not carry both the vault and its key): one file per
    data folder in :func:`default_key_dir`, named after a hash of the folder's path."""
    import hashlib

    tag = hashlib.sha256(str(Path(data_dir).expanduser().resolve()).encode()).hexdigest()[:16]
    return default_key_dir() / f"vault-{tag}.key"


#: values of ``Settings.storage``
STORAGE_KINDS = ("shared", "dicomweb")


@dataclass
class Destination:
    """Where results go back to: a DICOMweb (STOW-RS) base URL or a DIMSE peer (C-STORE)."""

    name: str = "pacs"
    dicomweb_url: str | None = None
    username: str | None = None
    password: str | None = None
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def kind(self) -> str:
        return "stow" if self.dicomweb_url else "cstore"


@dataclass
class Settings:
    """Everything ``neurorad serve`` / ``neurorad worker`` need.

    ``database_url`` defaults to SQLite ``DATA_DIR/neurorad.db``. ``quiet_period_s`` is how long
    no instance must arrive before a study counts as complete. ``workflows`` are the enabled
    workflows (names of installed workflows, ``neurorad workflows``): each complete study is
    routed to every one whose series requirements it meets; each must load at start-up or the
    server and worker refuse to start. ``workflow_options``: per workflow, options passed to its
    runs (e.g. ``{"<workflow>": {"engine": "<engine name>"}}``).
    """

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # receiver (DICOM C-STORE SCP); port None = no receiver
    ae_title: str = "NEURORAD"
    dicom_host: str = "127.0.0.1"
    dicom_port: int | None = 11112
    # calling AE titles the receiver accepts; empty (the default): none, the receiver does not
    # start (with a warning); ["*"]: any (neurorad.server.services.receiver_allow_list)
    allowed_calling_aets: list[str] | None = None
    allowed_modalities: tuple[str, ...] = ("MR", "CT")
    quiet_period_s: float = 30.0
    workflows: list[str] = field(default_factory=lambda: ["summary"])
    workflow_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # vault: key from $NEURORAD_VAULT_KEY, else this file, else default_vault_key_file(data_dir)
    # (outside the data folder; created 0600 on first start)
    vault_key_file: Path | None = None
    # results go back to
    destinations: list[Destination] = field(default_factory=list)
    review_required: bool = True
    # where workers read a study's stored (de-identified) instances (docs/deployment.md): "shared" (the
    # data folder's images/, mounted at the same path on every host) or "dicomweb" (an internal DICOMweb
    # image store at storage_dicomweb_url, e.g. Orthanc: the scheduler sends each complete study there by
    # STOW-RS before queueing it, and workers retrieve the series they need by WADO-RS)
    storage: str = "shared"
    storage_dicomweb_url: str | None = None
    storage_username: str | None = None
    storage_password: str | None = None
    # queue
    lease_s: float = 30.0
    job_timeout_s: float = 3600.0
    max_attempts: int = 3
    backoff_base_s: float = 5.0
    workers: int = 1
    executor: str = "local"
    # local executor: jobs one job process runs, one after the other, before a fresh one replaces it
    # (neurorad.server.worker). A fresh process pays first-run costs on every step (an MS job 22.5 s
    # against 19-20 s in a process that ran one before: bench/ms_speed.py --job-process); 1 gives every
    # job a process of its own. Only a job that succeeded hands its process on: one that failed (inside the
    # workflow too), timed out, was cancelled or killed its process ends it, so the next job starts fresh.
    jobs_per_process: int = 20
    # retention
    retention_days: float = DEFAULT_RETENTION_DAYS
    # web
    session_hours: float = 12.0
    # sign-in rate limit (neurorad.server.auth.LoginThrottle): failures per window, then HTTP 429
    login_max_failures_per_user: int = 5
    login_max_failures_per_ip: int = 20
    login_window_s: float = 300.0
    # viewer: send compact display copies (int16 scaled images, uint8 labels; neurorad.server.web.display)
    viewer_display_copies: bool = True
    secure_cookies: bool = False
    # threads running request handlers (neurorad.server.app; anyio's default is 40); None: 4 on
    # SQLite (the work is Python, one thread at a time), 16 on PostgreSQL (they wait on the network)
    request_threads: int | None = None
    # requests inside the application at once; more wait in the event loop (neurorad.server.middleware)
    max_requests_in_flight: int = 32
    # largest request body (bytes) outside the DICOM upload (neurorad.server.middleware): 413 above
    max_request_body_bytes: int = 1 << 20
    # what create_app starts in its lifespan (``neurorad serve`` turns them on)
    run_receiver: bool = False
    run_scheduler: bool = False
    run_worker: bool = False
    scheduler_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.workflows, str):
            self.workflows = [w.strip() for w in self.workflows.split(",") if w.strip()]
        self.workflows = list(dict.fromkeys(self.workflows))
        if int(self.jobs_per_process) < 1:
            raise ValueError(f"jobs_per_process must be >= 1, not {self.jobs_per_process!r}")
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.storage not in STORAGE_KINDS:
            raise ValueError(f"storage must be one of {', '.join(STORAGE_KINDS)}, not {self.storage!r}")
        if self.storage == "dicomweb" and not self.storage_dicomweb_url:
            raise ValueError('storage = "dicomweb" needs storage_dicomweb_url (the image store\'s DICOMweb root)')
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'neurorad.db'}"
