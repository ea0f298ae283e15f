"""Long-running parts of ``neurorad serve``: DICOM receiver, scheduler, local worker."""

from __future__ import annotations

import logging
import threading
import time

from neurorad.server.orchestration import DataPlane
from neurorad.server.settings import Settings

log = logging.getLogger("neurorad.server")

# C-STORE failure statuses (PS3.4 GG.4-1): refused instances get "cannot understand" or
# "data set does not match SOP class"; the reason is in the quarantine list of the API.
STATUS_REFUSED = 0xC000
STATUS_INVALID = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700


def make_receiver(settings: Settings, plane: DataPlane):
    """The C-STORE SCP (neurorad.dicom.transport.StoreSCP) feeding :meth:`DataPlane.ingest_bytes`."""
    from neurorad.dicom.transport import StoreSCP

    def on_bytes(data: bytes, calling_aet: str) -> int:
        # Undecoded Part 10 bytes (StoreSCP's public hook): an instance that does not decode
        # (truncated) still reaches the data plane, which parses, validates and quarantines it.
        # OSError (disk full) -> 0xA700 and other errors -> 0xC000 are answered by StoreSCP.
        try:
            outcome = plane.ingest_bytes(data, calling_aet)
        except Exception:
            # Validation and de-identification errors are quarantined inside ingest_bytes; what
            # escapes is the server's own trouble (database busy, disk): a valid instance must
            # get a status the sender retries (PS3.4 GG.4-1: 0xA7xx out of resources), never a
            # permanent failure.
            log.warning("C-STORE from %s: instance not stored (transient), answered 0xA700", calling_aet,
                        exc_info=True)
            return STATUS_OUT_OF_RESOURCES
        if outcome.stored:
            return 0x0000
        return STATUS_INVALID if outcome.category in ("invalid", "no_pixels", "truncated") else STATUS_REFUSED

    allowed = receiver_allow_list(settings)
    if allowed is not None and not allowed:
        raise ReceiverNotAllowed(NO_AET_WARNING)
    return StoreSCP(settings.ae_title, settings.dicom_port or 0, settings.dicom_host, allowed,
                    on_instance_bytes=on_bytes)


NO_AET_WARNING = ("DICOM receiver not started: no calling AE title is allowed. List the AE titles of the "
                  "scanners and PACS that send to neurorad (config 'allowed_calling_aets' or `neurorad serve "
                  "--allow-aet TITLE`); ['*'] accepts any sender (not for a clinical network).")


class ReceiverNotAllowed(RuntimeError):
    """The receiver has no calling AE title to accept (the allow-list is empty)."""


def receiver_allow_list(settings: Settings) -> list[str] | None:
    """Calling AE titles the receiver accepts: the settings' list; ``None`` (any) only for an
    explicit ``["*"]``. A missing or empty list allows nobody: an allow-list is the default for
    a clinical install (a device that may send images must be named)."""
    titles = [str(a).strip() for a in (settings.allowed_calling_aets or []) if str(a).strip()]
    if "*" in titles:
        return None
    return titles


class Scheduler:
    """Every few seconds: declare quiet studies complete (select + queue); once a day: retention."""

    def __init__(self, settings: Settings, plane: DataPlane) -> None:
        self.settings, self.plane = settings, plane
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_purge = 0.0

    def tick(self) -> None:
        try:
            self.plane.complete_quiet_studies()
        except Exception:
            log.exception("scheduler: completion check failed")
        if time.time() - self._last_purge > 24 * 3600:
            self._last_purge = time.time()
            try:
                from neurorad.store.retention import purge_images

                rep = purge_images(self.plane.db, self.plane.storage, self.settings.retention_days)
                if rep.studies:
                    log.info("retention: purged images of %d studies (%d instances)", rep.studies, rep.instances)
            except Exception:
                log.exception("scheduler: retention failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.scheduler_interval_s):
            self.tick()

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name="neurorad-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)


class Services:
    """Receiver + scheduler + local worker, as ``neurorad serve`` runs them."""

    def __init__(self, settings: Settings, plane: DataPlane) -> None:
        self.settings, self.plane = settings, plane
        self.receiver = None
        self.scheduler: Scheduler | None = None
        self.worker = None
        self._worker_thread: threading.Thread | None = None

    def start(self) -> Services:
        s = self.settings
        if s.run_receiver and s.dicom_port is not None:
            allowed = receiver_allow_list(s)
            if allowed is None:
                log.warning("DICOM receiver accepts ANY calling AE title (allowed_calling_aets = ['*']): "
                            "name the senders on a clinical network")
            if allowed is not None and not allowed:
                log.warning(NO_AET_WARNING)
            else:
                self.receiver = make_receiver(s, self.plane).start()
        if s.run_scheduler:
            self.scheduler = Scheduler(s, self.plane).start()
        if s.run_worker:
            from neurorad.server.worker import Worker

            self.worker = Worker(s)
            self._worker_thread = threading.Thread(target=self.worker.run, name="neurorad-worker", daemon=True)
            self._worker_thread.start()
        return self

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.worker is not None:
            self.worker.stop()
            self._worker_thread.join(15)
