"""Ingest helpers: validate one instance, import a folder, group into studies/series, and decide
when a study that arrives instance by instance is complete (quiet period).

``validate_instance`` is the gate every received or imported file passes before it is queued:
it raises :class:`neurorad.errors.InputError` naming the file and the problem (non-DICOM bytes,
truncated file, missing pixel data, unsupported transfer syntax, wrong modality, missing UIDs),
with no patient data in the message.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from neurorad.errors import InputError

__all__ = [
    "validate_instance",
    "import_folder",
    "group_instances",
    "StudyCompletion",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "DEFAULT_MODALITIES",
]

log = logging.getLogger(__name__)

DEFAULT_MODALITIES = ("MR", "CT")

#: transfer syntaxes dcm2niix and pydicom can decode (uncompressed, deflate, RLE, JPEG baseline/
#: extended/lossless, JPEG-LS, JPEG 2000); video and newer codecs are refused
SUPPORTED_TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
})

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _read(source: str | Path | bytes, where: str, stop_before_pixels: bool = False) -> Dataset:
    fh = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels)
        # pydicom reads a file cut inside an undefined-length element (encapsulated pixel data,
        # sequences) without raising: it warns and returns what it could (sometimes nothing)
        for w in caught:
            if "End of file reached" in str(w.message) or "truncat" in str(w.message).lower():
                raise InputError("truncated file (ends inside an element)", where)
        return ds
    except InvalidDicomError:
        pass
    except FileNotFoundError:
        raise InputError("file not found", where) from None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"truncated or corrupt DICOM file ({type(exc).__name__})", where) from None
    # no 128-byte preamble: accept a bare dataset only if it parses to a composite instance
    if isinstance(fh, io.BytesIO):
        fh.seek(0)
    try:
        ds = pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels)
        ok = "SOPClassUID" in ds and "SOPInstanceUID" in ds and str(ds.SOPClassUID).startswith("1.")
    except Exception:
        ok = False
    if not ok:
        raise InputError("not a DICOM file", where)
    return ds


def _expected_pixel_bytes(ds: Dataset) -> int | None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return None


def validate_instance(
    path_or_bytes: str | Path | bytes,
    allowed_modalities: Iterable[str] | None = DEFAULT_MODALITIES,
    require_pixels: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read and check one instance; return the Dataset or raise :class:`InputError`.

    ``name`` labels byte input in messages (e.g. the receiving AE and a counter); paths name
    themselves. ``allowed_modalities=None`` accepts any modality.
    """
    where = name or (str(path_or_bytes) if not isinstance(path_or_bytes, bytes | bytearray) else "<received bytes>")
    ds = _read(path_or_bytes, where)
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(kw, "")).strip():
            raise InputError(f"missing {kw} (truncated file or not a composite instance)", where)
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None)
    if ts is not None and str(ts) not in SUPPORTED_TRANSFER_SYNTAXES:
        raise InputError(f"unsupported transfer syntax {ts} ({UID(ts).name})", where)
    if allowed_modalities is not None:
        modality = str(ds.get("Modality", "")).strip().upper()
        allowed = {m.upper() for m in allowed_modalities}
        if modality not in allowed:
            raise InputError(f"modality {modality or '(none)'} not accepted (expected {', '.join(sorted(allowed))})",
                             where)
    present = [kw for kw in _PIXEL_KEYWORDS if kw in ds]
    if require_pixels and not present:
        raise InputError("no pixel data", where)
    if present:  # whenever pixels are there, they must be complete
        elem = ds[present[0]]
        try:
            value = elem.value
        except Exception as exc:
            raise InputError(f"pixel data unreadable ({type(exc).__name__})", where) from None
        if value is None or len(value) == 0:
            raise InputError("pixel data empty (truncated file?)", where)
        compressed = ts is not None and UID(ts).is_compressed
        if present[0] == "PixelData" and not compressed:
            expected = _expected_pixel_bytes(ds)
            if expected is not None and len(value) < expected:
                raise InputError(f"truncated pixel data ({len(value)} of {expected} bytes)", where)
        if compressed:
            from pydicom.encaps import generate_fragmented_frames

            try:
                n = sum(1 for _ in generate_fragmented_frames(value, number_of_frames=int(ds.get("NumberOfFrames", 1)
                                                                                            or 1)))
            except Exception as exc:
                raise InputError(f"encapsulated pixel data corrupt ({type(exc).__name__})", where) from None
            if n == 0:
                raise InputError("encapsulated pixel data has no frames", where)
    return ds


def import_folder(
    path: str | Path,
    on_skip: Callable[[Path, str], None] | None = None,
    allowed_modalities: Iterable[str] | None = None,
    require_pixels: bool = False,
) -> Iterator[Dataset]:
    """Yield every valid DICOM instance under ``path`` (recursively, sorted, hidden files skipped).

    Files that fail :func:`validate_instance` are reported to ``on_skip(path, reason)`` (and logged
    at WARNING) and skipped. Each Dataset has ``.filename`` set to its path.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError("folder not found", root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in sorted(filenames):
            if fname.startswith(".") or fname.upper() == "DICOMDIR":
                continue
            fpath = Path(dirpath) / fname
            try:
                ds = validate_instance(fpath, allowed_modalities, require_pixels)
            except InputError as exc:
                log.warning("skipped %s", exc)
                if on_skip is not None:
                    on_skip(fpath, exc.problem)
                continue
            ds.filename = str(fpath)
            yield ds


def _get(item: Dataset | Mapping[str, Any], kw: str) -> Any:
    if isinstance(item, Dataset):
        return item.get(kw)
    return item.get(kw)


def group_instances(
    instances: Iterable[Dataset | Mapping[str, Any]],
) -> dict[str, dict[str, list[Dataset | Mapping[str, Any]]]]:
    """``{StudyInstanceUID: {SeriesInstanceUID: [instances sorted by InstanceNumber]}}``."""
    out: dict[str, dict[str, list[Any]]] = {}
    for inst in instances:
        study = str(_get(inst, "StudyInstanceUID") or "")
        series = str(_get(inst, "SeriesInstanceUID") or "")
        out.setdefault(study, {}).setdefault(series, []).append(inst)

    def number(inst: Any) -> float:
        try:
            return float(_get(inst, "InstanceNumber"))
        except (TypeError, ValueError):
            return float("inf")

    for series_map in out.values():
        for lst in series_map.values():
            lst.sort(key=number)
    return out


def _seconds(t: float | dt.datetime) -> float:
    return t.timestamp() if isinstance(t, dt.datetime) else float(t)


@dataclass(frozen=True)
class StudyCompletion:
    """A study is complete when no instance arrived for ``quiet_period_s`` seconds.

    DIMSE has no "end of study" message, so receivers wait for a quiet period (the same rule
    Orthanc's ``StableAge`` uses). Pure: give it timestamps (epoch seconds or datetimes).
    """

    quiet_period_s: float = 60.0

    def seconds_until_complete(self, last_arrival: float | dt.datetime, now: float | dt.datetime) -> float:
        return max(0.0, _seconds(last_arrival) + self.quiet_period_s - _seconds(now))

    def is_complete(self, last_arrival: float | dt.datetime, now: float | dt.datetime) -> bool:
        return _seconds(now) - _seconds(last_arrival) >= self.quiet_period_s

    def complete_studies(self, last_arrivals: Mapping[str, float | dt.datetime], now: float | dt.datetime
                         ) -> list[str]:
        """Study UIDs (sorted) whose last arrival is at least the quiet period before ``now``."""
        return sorted(uid for uid, t in last_arrivals.items() if self.is_complete(t, now))
