"""DIMSE transport (DICOM PS3.7/PS3.8) with pynetdicom: a C-STORE/C-ECHO receiver, C-STORE and
C-ECHO senders. DICOMweb lives in :mod:`neurorad.dicom.dicomweb`, folder import in
:mod:`neurorad.dicom.ingest`.

Network peers are tested against DCMTK (``storescu``/``echoscu``/``storescp``). Retrying,
queueing and idempotency are the caller's job (``store`` / delivery orchestration); these
functions do one association and report per instance. pynetdicom's logger is kept at WARNING
by default so that dataset contents never reach the logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from neurorad.errors import NeuroradError

__all__ = ["StoreSCP", "StoreOutcome", "TransportError", "send_cstore", "echo", "STATUS_SUCCESS"]

log = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

STATUS_SUCCESS = 0x0000
#: C-STORE status returned when ``on_instance`` raises (PS3.4 B.2.3 "Cannot understand" range)
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
_WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}


class TransportError(NeuroradError):
    """The association could not be made or broke (peer down, rejected, timed out)."""

    exit_code = 4


InstanceCallback = Callable[[Dataset, str], "int | None"]
BytesCallback = Callable[[bytes, str], "int | None"]


class StoreSCP:
    """A Storage SCP + Verification SCP on ``host:port`` (``port=0``: any free port; see ``.port``).

    ``on_instance(ds, calling_aet)`` is called for every received instance with the dataset
    (``ds.file_meta`` set from the association: transfer syntax, SOP class/instance) and the
    calling AE title; it returns a C-STORE status (None means 0x0000 Success). Alternatively
    ``on_instance_bytes(data, calling_aet)`` gets the instance undecoded as DICOM Part 10 bytes
    (file meta included), so that data that does not parse still reach the caller. If either raises, the
    peer gets 0xA700 for OSError (disk full) or 0xC000 otherwise, and the error is logged without
    dataset contents. ``allowed_calling_aets``: if given, associations from other calling AE titles
    are rejected (A-ASSOCIATE-RJ, "calling AE title not recognised"). The called AE title must match
    ``ae_title``. All storage SOP classes and all transfer syntaxes pynetdicom knows are accepted.
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        host: str = "127.0.0.1",
        allowed_calling_aets: Iterable[str] | None = None,
        on_instance: InstanceCallback | None = None,
        on_instance_bytes: BytesCallback | None = None,
    ) -> None:
        if not 0 < len(ae_title) <= 16:
            raise NeuroradError(f"AE title must be 1-16 characters: {ae_title!r}")
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.allowed_calling_aets = None if allowed_calling_aets is None else [str(a) for a in allowed_calling_aets]
        self.on_instance = on_instance
        self.on_instance_bytes = on_instance_bytes
        if on_instance is not None and on_instance_bytes is not None:
            raise NeuroradError("give on_instance or on_instance_bytes, not both")
        self._server: Any = None
        self._lock = threading.Lock()
        self.received = 0

    def _handle_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            if self.on_instance_bytes is not None:
                # undecoded: an instance that does not parse still reaches the caller (quarantine)
                status = self.on_instance_bytes(bytes(event.encoded_dataset(include_meta=True)), calling)
            else:
                ds = event.dataset
                ds.file_meta = event.file_meta
                status = self.on_instance(ds, calling) if self.on_instance is not None else None
        except OSError as exc:
            log.error("C-STORE from %s: storing failed (%s)", calling, type(exc).__name__)
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # never let a callback error kill the association silently
            log.error("C-STORE from %s: handler failed (%s)", calling, type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        with self._lock:
            self.received += 1
        return STATUS_SUCCESS if status is None else int(status)

    def start(self) -> StoreSCP:
        """Start listening in background threads; returns self."""
        if self._server is not None:
            return self
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        if self.allowed_calling_aets is not None:
            ae.require_calling_aet = self.allowed_calling_aets
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = int(self._server.server_address[1])
        log.info("Storage SCP %s listening on %s:%d", self.ae_title, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class StoreOutcome:
    """Result of sending one instance: ``status`` is the C-STORE status (None: none received)."""

    sop_instance_uid: str
    ok: bool
    status: int | None
    warning: bool = False
    error: str | None = None
    source: str | None = None


def _load(item: Dataset | str | Path) -> tuple[Dataset, str | None]:
    if isinstance(item, Dataset):
        return item, None
    return pydicom.dcmread(item), str(item)


def _transfer_syntax(ds: Dataset) -> UID:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        return UID(ts)
    return ImplicitVRLittleEndian if getattr(ds, "is_implicit_VR", False) else ExplicitVRLittleEndian


def send_cstore(
    datasets_or_paths: Iterable[Dataset | str | Path],
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "NEURORAD",
    timeout_s: float = 30.0,
) -> list[StoreOutcome]:
    """Send instances with C-STORE over one association; one :class:`StoreOutcome` per instance.

    Presentation contexts are proposed per (SOP class, transfer syntax) found in the data, plus
    Explicit/Implicit VR Little Endian for uncompressed data. Raises :class:`TransportError` if the
    association is rejected or cannot be made; a broken association mid-way marks the rest failed.
    """
    items = list(datasets_or_paths)
    headers: list[tuple[str, str, UID, str | None]] = []
    for it in items:
        if isinstance(it, Dataset):
            headers.append((str(it.SOPClassUID), str(it.SOPInstanceUID), _transfer_syntax(it), None))
        else:
            h = pydicom.dcmread(it, stop_before_pixels=True)
            headers.append((str(h.SOPClassUID), str(h.SOPInstanceUID), _transfer_syntax(h), str(it)))
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    # one context per (SOP class, compressed syntax); uncompressed data share one context per class
    contexts: dict[tuple[str, str], list[str]] = {}
    for sop_class, _, ts, _ in headers:
        if ts.is_compressed:
            contexts.setdefault((sop_class, str(ts)), [ts])
        else:
            tss = contexts.setdefault((sop_class, "uncompressed"), [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            if ts not in tss:
                tss.insert(0, ts)
    if len(contexts) > 128:
        raise TransportError(f"{len(contexts)} presentation contexts needed; at most 128 per association")
    for (sop_class, _), tss in contexts.items():
        ae.add_requested_context(sop_class, tss)
    if not items:
        return []
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise TransportError(f"association to {called_aet}@{host}:{port} {why}")
    outcomes: list[StoreOutcome] = []
    try:
        for it, (_sop_class, sop_uid, _ts, source) in zip(items, headers, strict=True):
            if not assoc.is_established:
                outcomes.append(StoreOutcome(sop_uid, False, None, error="association lost", source=source))
                continue
            try:
                ds, _ = _load(it)
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # e.g. no accepted presentation context
                outcomes.append(StoreOutcome(sop_uid, False, None, error=str(exc).splitlines()[0], source=source))
                continue
            code = int(status.Status) if status is not None and "Status" in status else None
            if code is None:
                outcomes.append(StoreOutcome(sop_uid, False, None, error="no response (timeout or abort)",
                                             source=source))
            elif code == STATUS_SUCCESS or code in _WARNING_STATUSES:
                outcomes.append(StoreOutcome(sop_uid, True, code, warning=code != STATUS_SUCCESS, source=source))
            else:
                outcomes.append(StoreOutcome(sop_uid, False, code, error=f"C-STORE status 0x{code:04X}",
                                             source=source))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def echo(host: str, port: int, aet: str, calling_aet: str = "NEURORAD", timeout_s: float = 10.0) -> bool:
    """C-ECHO ``aet`` at ``host:port``: True when the peer answers Success, False otherwise."""
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return status is not None and int(status.get("Status", -1)) == STATUS_SUCCESS
    finally:
        if assoc.is_established:
            assoc.release()
