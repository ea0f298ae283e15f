"""DICOMweb client (DICOM PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store.

A thin wrapper over ``dicomweb-client`` (which implements the HTTP/multipart details) that adds
basic auth, timeouts, and a per-instance STOW-RS outcome read from the response's
Referenced SOP Sequence (0008,1199) / Failed SOP Sequence (0008,1198) with the Failure Reason
(0008,1197) and Warning Reason (0008,1196) codes of PS3.18 10.5.3, also when the server answers
with an HTTP error (400/409) that carries the response dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from neurorad.errors import NeuroradError

__all__ = ["DicomWebClient", "StowOutcome", "DicomWebError", "parse_stow_response", "FAILURE_REASONS"]

log = logging.getLogger(__name__)

#: PS3.18 Table 10.5.3-1 / PS3.4 C-STORE status codes seen as STOW-RS Failure Reason
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA710: "out of resources (storage)",
    0xA770: "out of resources",
    0xA900: "data set does not match SOP class",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class (warning)",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
    0xC123: "referenced Study Instance UID does not match",
}


class DicomWebError(NeuroradError):
    """A DICOMweb request failed (network, HTTP status, or unreadable answer)."""

    exit_code = 4


@dataclass(frozen=True)
class StowOutcome:
    """One instance's STOW-RS result; ``reason_code`` is the Failure/Warning Reason when given,
    ``http_status`` the status of the STOW-RS response (PS3.18 10.5.3: 200, 202 partial, 409
    all failed, 4xx/5xx; None when unknown), so callers tell rejections from transient errors
    without reading ``reason``."""

    sop_instance_uid: str
    ok: bool
    warning: bool = False
    reason_code: int | None = None
    reason: str | None = None
    http_status: int | None = None


def parse_stow_response(response: Dataset | None, sent_uids: Iterable[str], http_status: int | None = None
                        ) -> list[StowOutcome]:
    """Per-instance outcomes from a STOW-RS response dataset (None: no body).

    Instances in neither sequence are reported as failed ("not acknowledged"), so nothing is
    silently assumed stored.
    """
    sent = [str(u) for u in sent_uids]
    by_uid: dict[str, StowOutcome] = {}
    if response is not None:
        for item in response.get("FailedSOPSequence", []) or []:
            uid = str(item.get("ReferencedSOPInstanceUID", ""))
            code = item.get("FailureReason")
            code = int(code) if code is not None else None
            by_uid[uid] = StowOutcome(uid, False, False, code, FAILURE_REASONS.get(code or -1, "failure"), http_status)
        for item in response.get("ReferencedSOPSequence", []) or []:
            uid = str(item.get("ReferencedSOPInstanceUID", ""))
            code = item.get("WarningReason")
            code = int(code) if code is not None else None
            by_uid[uid] = StowOutcome(uid, True, code is not None, code,
                                      FAILURE_REASONS.get(code, "warning") if code is not None else None, http_status)
    out = []
    for uid in sent:
        if uid in by_uid:
            out.append(by_uid[uid])
        else:
            why = "not acknowledged by the server" + (f" (HTTP {http_status})" if http_status else "")
            out.append(StowOutcome(uid, False, False, None, why, http_status))
    return out


class DicomWebClient:
    """QIDO-RS / WADO-RS / STOW-RS against one DICOMweb service root (e.g. ``http://pacs/dicom-web``).

    ``max_attempts`` > 1 turns on dicomweb-client's retry with exponential back-off (429/408/503/504);
    by default each call is tried once and the caller's queue retries.
    """

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout_s: float = 60.0,
                 session: requests.Session | None = None, max_attempts: int = 1) -> None:
        self.url = url.rstrip("/")
        session = session or requests.Session()
        if auth is not None:
            session.auth = auth
        self._session = session
        self.timeout_s = timeout_s
        self._client = DICOMwebClient(url=self.url, session=session, timeout=timeout_s)
        # retries belong to the delivery queue (idempotent, logged); dicomweb-client's own retry
        # loop (5 attempts with exponential back-off, also on refused connections) only when asked
        if max_attempts > 1:
            self._client.set_http_retry_params(retry=True, max_attempts=max_attempts)
        else:
            self._client.set_http_retry_params(retry=False)

    def __repr__(self) -> str:  # never show credentials
        return f"DicomWebClient(url={self.url!r})"

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            raise DicomWebError(f"{what} at {self.url}: HTTP {code}") from None
        except requests.RequestException as exc:
            raise DicomWebError(f"{what} at {self.url}: {type(exc).__name__}") from None

    # QIDO-RS
    def search_studies(self, filters: Mapping[str, Any] | None = None, fields: Iterable[str] | None = None,
                       limit: int | None = None, offset: int | None = None) -> list[dict[str, Any]]:
        """QIDO-RS studies; returns DICOM JSON objects (tags as keys, e.g. ``"0020000D"``)."""
        return self._call("QIDO-RS search studies", self._client.search_for_studies,
                          search_filters=dict(filters or {}), fields=list(fields) if fields else None,
                          limit=limit, offset=offset) or []

    def search_series(self, study_uid: str | None = None, filters: Mapping[str, Any] | None = None,
                      fields: Iterable[str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """QIDO-RS series (of one study when ``study_uid`` is given)."""
        return self._call("QIDO-RS search series", self._client.search_for_series,
                          study_instance_uid=study_uid, search_filters=dict(filters or {}),
                          fields=list(fields) if fields else None, limit=limit) or []

    def search_instances(self, study_uid: str | None = None, series_uid: str | None = None,
                         filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """QIDO-RS instances."""
        return self._call("QIDO-RS search instances", self._client.search_for_instances,
                          study_instance_uid=study_uid, series_instance_uid=series_uid,
                          search_filters=dict(filters or {})) or []

    # WADO-RS
    def retrieve_study(self, study_uid: str) -> list[Dataset]:
        """WADO-RS all instances of a study as pydicom Datasets."""
        return list(self._call("WADO-RS retrieve study", self._client.retrieve_study, study_uid))

    def retrieve_series(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """WADO-RS all instances of one series."""
        return list(self._call("WADO-RS retrieve series", self._client.retrieve_series, study_uid, series_uid))

    # STOW-RS
    def store(self, datasets: Iterable[Dataset], study_uid: str | None = None) -> list[StowOutcome]:
        """STOW-RS; one :class:`StowOutcome` per dataset (raises only when the server is unreachable)."""
        items = list(datasets)
        if not items:
            return []
        uids = [str(ds.SOPInstanceUID) for ds in items]
        try:
            response = self._client.store_instances(items, study_instance_uid=study_uid)
            return parse_stow_response(response, uids, 200)
        except requests.HTTPError as exc:
            resp = exc.response
            body = None
            if resp is not None and resp.content:
                try:
                    body = Dataset.from_json(resp.json())
                except (ValueError, TypeError, KeyError):
                    body = None
            status = resp.status_code if resp is not None else None
            log.warning("STOW-RS at %s answered HTTP %s", self.url, status)
            return parse_stow_response(body, uids, status)
        except requests.RequestException as exc:
            raise DicomWebError(f"STOW-RS at {self.url}: {type(exc).__name__}") from None
