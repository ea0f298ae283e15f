"""The data plane's orchestration: ingest, completion, selection, jobs, review and delivery.

Ingest (one instance, from the C-STORE receiver or a folder import)::

    parse -> validate -> de-identify (PS3.15, neurorad.dicom.deid) -> write atomically (fsync)
          -> record patient/study/series/instance in one transaction -> answer "stored"

Only after the instance is on disk and committed does the receiver answer success, so a
server killed mid-ingest loses nothing the sender believes was stored; a re-sent instance is
recognised by its (pseudonymised, deterministic) SOP Instance UID and stored once.

A study is complete when no instance arrived for ``quiet_period_s``; the scheduler then
classifies its series and routes it to every enabled workflow (``Settings.workflows``, loaded
through :mod:`neurorad.workflows.registry`) whose requirements (the contract's
:class:`~neurorad.workflows.contract.Requirements`: roles, series classes from the one classifier,
prior studies of the same patient) it meets: one :class:`~neurorad.store.models.WorkflowRun` and
one workflow job each. A study meeting none becomes ``no_workflow`` with every workflow's reason.
A worker runs a job (``run_job``: :func:`neurorad.workflows.runner.execute`), the run's result
waits for review (:mod:`neurorad.server.decisions`), an ACCEPTABLE review queues delivery, and the
delivery job sends each of the run's objects re-identified to every destination, once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.server.settings import Destination, Settings
from neurorad.store.audit import audit
from neurorad.store.db import Database
from neurorad.store.models import (
    Delivery,
    Instance,
    Job,
    Patient,
    QADecision,
    QuarantineItem,
    Result,
    Series,
    Study,
    WorkflowRun,
    utcnow,
)
from neurorad.store.queue import JobQueue, Lease, LeaseLost
from neurorad.store.state import StudyState, TransitionError, can_transition, sync_study_state, transition
from neurorad.store.storage import Storage
from neurorad.workflows import registry
from neurorad.workflows.contract import (
    Requirements,
    Review,
    SeriesRole,
    Workflow,
    WorkflowInputs,
    WorkflowResult,
)

log = logging.getLogger("neurorad.server")
SYSTEM = "system"

# transfer syntaxes whose pixel data we can read here (uncompressed, deflated, and those the
# installed pydicom pixel handlers decode); anything else is refused with its UID named
_SUPPORTED_TS = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",  # RLE lossless (pydicom's own decoder)
}
_IMAGE_STORAGE_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID")


def _server_trouble() -> tuple[type[BaseException], ...]:
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    from neurorad.dicom.vault import VaultKeyError

    return (OSError, SQLAlchemyError, sqlite3.Error, VaultKeyError, MemoryError)


#: errors of the server (disk, database, vault key), never of an incoming instance
_SERVER_TROUBLE = _server_trouble()


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one incoming instance (no identifiers in here)."""

    stored: bool
    reason: str | None = None
    category: str | None = None
    study_id: int | None = None
    duplicate: bool = False


def _categorise(problem: str) -> str:
    p = problem.lower()
    for key, cat in (("not a dicom", "not_dicom"), ("transfer syntax", "transfer_syntax"), ("modality", "modality"),
                     ("truncated", "truncated"), ("corrupt", "truncated"), ("no pixel", "no_pixels"),
                     ("pixel data empty", "no_pixels"), ("missing", "invalid")):
        if key in p:
            return cat
    return "invalid"


class Refused(Exception):
    def __init__(self, category: str, reason: str) -> None:
        self.category, self.reason = category, reason
        super().__init__(reason)


def _compressed_ts_supported(ts: str) -> bool:
    try:
        from pydicom.pixels.utils import get_decoder  # pydicom >= 3

        return get_decoder(ts).is_available
    except Exception:
        return False


def validate_instance(ds: pydicom.Dataset, allowed_modalities: tuple[str, ...]) -> None:
    """Checks before de-identification: required UIDs, modality, pixel data, transfer syntax.

    Raises :class:`Refused` with a reason a technologist can act on (never an identifier).
    """
    missing = [kw for kw in _IMAGE_STORAGE_REQUIRED if not str(getattr(ds, kw, "") or "").strip()]
    if missing:
        raise Refused("invalid", f"missing required attribute(s): {', '.join(missing)}")
    modality = str(getattr(ds, "Modality", "") or "").upper()
    if modality not in allowed_modalities:
        raise Refused("modality", f"modality {modality or '(none)'} not accepted (accepted: "
                                  f"{', '.join(allowed_modalities)})")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise Refused("no_pixels", "no pixel data (an image instance without an image)")
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts and ts not in _SUPPORTED_TS and not _compressed_ts_supported(ts):
        raise Refused("transfer_syntax", f"unsupported transfer syntax {ts}")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    bits = int(getattr(ds, "BitsAllocated", 0) or 0)
    if not (rows and cols and bits):
        raise Refused("invalid", "image without Rows/Columns/BitsAllocated")
    if ts in _SUPPORTED_TS - {"1.2.840.10008.1.2.1.99"} and "PixelData" in ds:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        expected = rows * cols * frames * spp * bits // 8
        got = len(ds.PixelData)
        if got < expected:
            raise Refused("truncated", f"pixel data truncated ({got} of {expected} bytes)")


def vault_key_location(data_dir: Path) -> Path:
    """The default vault key file of ``data_dir``, created (0600, in a 0700 folder) when missing:
    :func:`neurorad.server.settings.default_vault_key_file`, outside the data folder. An older
    installation's ``DATA_DIR/vault.key`` is still used, with a warning to move it."""
    from neurorad.dicom.vault import write_key_file
    from neurorad.server.settings import default_vault_key_file

    legacy = Path(data_dir) / "vault.key"
    if legacy.exists():
        log.warning("the vault key is inside the data folder (%s): a backup of the folder carries the key; move "
                    "it out and set vault_key_file (docs/security.md)", legacy)
        return legacy
    key_file = default_vault_key_file(data_dir)
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            write_key_file(key_file)
        except FileExistsError:
            pass
    return key_file


class DataPlane:
    """Database, storage, queue and vault of one neurorad installation (per process)."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.storage = Storage(settings.data_dir)
        self.db = db or Database(settings.database_url)
        self.queue = JobQueue(self.db, lease_s=settings.lease_s, backoff_base_s=settings.backoff_base_s)
        self.queue.final_hooks.append(self._job_final)
        self._vault = None
        self._deid_options = None
        self._workflows: list[Workflow] | None = None

    # -- vault --------------------------------------------------------------------------------
    @property
    def vault(self):
        if self._vault is None:
            from neurorad.dicom.vault import PseudonymVault

            key_file = self.settings.vault_key_file
            if key_file is None and not os.environ.get("NEURORAD_VAULT_KEY"):
                key_file = vault_key_location(self.settings.data_dir)
            self._vault = PseudonymVault.from_env_or_file(self.storage.vault_dir / "vault.sqlite", key_file)
        return self._vault

    @property
    def deid_options(self):
        if self._deid_options is None:
            from neurorad.dicom.deid import DeidOptions

            # dates shifted per patient (longitudinal comparison needs intervals), descriptions
            # cleaned (series selection reads them), sex/age kept (reference ranges need them)
            self._deid_options = DeidOptions(retain_longitudinal_modified_dates=True, clean_descriptors=True,
                                             retain_patient_characteristics=True)
        return self._deid_options

    # -- ingest -------------------------------------------------------------------------------
    def quarantine(self, source: str | None, category: str, reason: str, data: bytes | None = None) -> None:
        with self.db.session() as s:
            s.add(QuarantineItem(source=source, category=category, reason=reason[:2000],
                                 sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
                                 size_bytes=len(data) if data is not None else None))
            audit(s, f"dicom:{source or 'unknown'}", "ingest.refused", None, None, category=category, reason=reason)
        log.warning("refused instance from %s: %s", source, reason)

    def ingest_bytes(self, data: bytes, source: str | None = None) -> IngestOutcome:
        """Ingest one DICOM file's bytes (Part 10, or a bare dataset); refusals are quarantined.

        Checks are :func:`neurorad.dicom.ingest.validate_instance` (readable, required UIDs,
        transfer syntax, modality, pixel data present and complete).
        """
        from neurorad.dicom.ingest import validate_instance as dicom_validate
        from neurorad.errors import InputError

        try:
            ds = dicom_validate(bytes(data), self.settings.allowed_modalities, name=source or "received")
        except InputError as exc:
            category = _categorise(exc.problem)
            self.quarantine(source, category, exc.problem, data)
            return IngestOutcome(False, exc.problem, category)
        return self.ingest_dataset(ds, source, data, validated=True)

    def ingest_dataset(self, ds: pydicom.Dataset, source: str | None = None,
                       raw: bytes | None = None, validated: bool = False) -> IngestOutcome:
        """Validate, de-identify, store and record one instance; refusals are quarantined."""
        from neurorad.dicom.deid import QuarantineError, deidentify_dataset

        try:
            if not validated:
                validate_instance(ds, self.settings.allowed_modalities)
            try:
                result = deidentify_dataset(ds, self.vault, self.deid_options)
            except QuarantineError as exc:
                raise Refused("deid", f"de-identification refused the instance: {exc.reason}") from None
            out = result.dataset
            buf = io.BytesIO()
            out.save_as(buf, enforce_file_format=True)
            data = buf.getvalue()
        except Refused as exc:
            self.quarantine(source, exc.category, exc.reason, raw)
            return IngestOutcome(False, exc.reason, exc.category)
        except _SERVER_TROUBLE:
            raise  # not the instance's fault: the receiver answers "out of resources" (retried)
        except Exception as exc:  # a malformed element deep inside: refuse, keep serving
            reason = f"could not process instance ({type(exc).__name__})"
            self.quarantine(source, "invalid", reason, raw)
            log.debug("ingest failure", exc_info=True)
            return IngestOutcome(False, reason, "invalid")
        return self._record(out, data, source, result.pseudonym)

    def _record(self, ds: pydicom.Dataset, data: bytes, source: str | None, pseudo: str) -> IngestOutcome:
        study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        rel = self.storage.instance_relpath(study_uid, series_uid, sop_uid)
        sha = hashlib.sha256(data).hexdigest()
        for attempt in range(5):
            try:
                with self.db.session() as s:
                    inst = s.scalar(select(Instance).where(Instance.sop_uid == sop_uid))
                    if inst is not None:  # a re-sent instance: store once
                        inst.times_received += 1
                        if inst.path is None or not self.storage.abspath(inst.path).exists():
                            self.storage.write_instance(rel, data)
                            inst.path, inst.sha256, inst.size_bytes, inst.purged_at = rel, sha, len(data), None
                        study_id = inst.series.study_id
                        return IngestOutcome(True, study_id=study_id, duplicate=True)
                    self.storage.write_instance(rel, data)
                    patient = s.scalar(select(Patient).where(Patient.pseudo_id == pseudo))
                    if patient is None:
                        patient = Patient(pseudo_id=pseudo)
                        s.add(patient)
                        s.flush()
                    study = s.scalar(select(Study).where(Study.study_uid == study_uid).with_for_update())
                    now = utcnow()
                    if study is None:
                        study = Study(patient_id=patient.id, study_uid=study_uid, state="received", source_aet=source,
                                      received_at=now, last_instance_at=now, workflow=None)
                        s.add(study)
                        s.flush()
                        transition_first(s, study)
                    else:
                        study.last_instance_at = now
                        if study.state in ("failed", "delivered", "selected", "queued", "no_workflow"):
                            if study.state == "queued":
                                s.execute(update(Job).where(Job.study_id == study.id, Job.state == "pending")
                                          .values(state="cancelled", finished_at=now,
                                                  error="new instances arrived"))
                                for run in study.runs:
                                    if run.state == "queued":
                                        transition(s, run, StudyState.FAILED, f"dicom:{source or 'unknown'}",
                                                   "new instances arrived; routed again when complete")
                            transition(s, study, StudyState.RECEIVED, f"dicom:{source or 'unknown'}",
                                       "new instances arrived")
                    series = s.scalar(select(Series).where(Series.series_uid == series_uid))
                    if series is None:
                        series = Series(study_id=study.id, series_uid=series_uid,
                                        modality=str(getattr(ds, "Modality", "") or "") or None,
                                        description=str(getattr(ds, "SeriesDescription", "") or "")[:128] or None,
                                        series_number=_int_or_none(getattr(ds, "SeriesNumber", None)),
                                        n_instances=0)
                        s.add(series)
                        s.flush()
                    series.n_instances += 1
                    mods = set(filter(None, (study.modalities or "").split(",")))
                    mods.add(series.modality or "")
                    study.modalities = ",".join(sorted(m for m in mods if m))
                    s.add(Instance(series_id=series.id, sop_uid=sop_uid, sop_class_uid=str(ds.SOPClassUID),
                                   path=rel, sha256=sha, size_bytes=len(data), received_at=now))
                    return IngestOutcome(True, study_id=study.id)
            except IntegrityError:
                if attempt == 4:
                    raise
                continue  # another thread created the same patient/study/series/instance: retry
        raise AssertionError("unreachable")

    # -- completion and routing -----------------------------------------------------------------
    def enabled_workflows(self) -> list[Workflow]:
        """The site's enabled workflows, loaded (start-up check: a workflow that cannot be imported
        or does not meet the contract raises :class:`~neurorad.workflows.registry.WorkflowLoadError`
        naming it; nothing falls back to another workflow)."""
        if self._workflows is None:
            self._workflows = registry.load_enabled(list(self.settings.workflows))
        return self._workflows

    def complete_quiet_studies(self, now=None) -> list[int]:
        """Studies with no new instance for the quiet period move on (route + queue); returns their ids."""
        from datetime import timedelta

        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.quiet_period_s)
        with self.db.session() as s:
            ids = s.scalars(select(Study.id).where(Study.state == "received", Study.last_instance_at <= cutoff)).all()
        done = []
        for sid in ids:
            if self.select_and_queue(sid, cutoff):
                done.append(sid)
        return done

    def image_store(self):
        """The DICOMweb image store of ``storage = "dicomweb"`` (:class:`~neurorad.dicom.dicomweb.DicomWebClient`)."""
        from neurorad.dicom.dicomweb import DicomWebClient

        st = self.settings
        auth = (st.storage_username, st.storage_password or "") if st.storage_username else None
        return DicomWebClient(st.storage_dicomweb_url, auth=auth)

    def publish_study(self, study_id: int, batch: int = 50) -> int:
        """``storage = "dicomweb"``: send the study's stored (de-identified) instances to the image
        store by STOW-RS (PS3.18 10.5), ``batch`` per request; returns how many. Raises
        :class:`~neurorad.dicom.dicomweb.DicomWebError` when the store cannot be reached or refuses
        an instance (the caller leaves the study to the next pass)."""
        from neurorad.dicom.dicomweb import DicomWebError

        with self.db.read_session() as s:
            paths = list(s.scalars(select(Instance.path).join(Series).where(
                Series.study_id == study_id, Instance.path.is_not(None)).order_by(Instance.id)))
        client = self.image_store()
        for k in range(0, len(paths), batch):
            outcomes = client.store([pydicom.dcmread(self.storage.abspath(p)) for p in paths[k:k + batch]])
            refused = [o for o in outcomes if not o.ok]
            if refused:
                raise DicomWebError(f"image store refused {len(refused)} instance(s) of study {study_id}: "
                                    f"{refused[0].reason or 'no reason given'}")
        return len(paths)

    def select_and_queue(self, study_id: int, cutoff=None) -> bool:
        """Route a complete study to every enabled workflow whose requirements its series (and the
        same patient's earlier studies) meet, one run + job each; a study meeting none becomes
        ``no_workflow`` with each workflow's reason (also in the audit log). With ``storage =
        "dicomweb"`` the study is first sent to the image store; while that fails it stays
        ``received`` and is tried again on the next pass (False)."""
        wfs = self.enabled_workflows()
        if self.settings.storage == "dicomweb":
            from neurorad.dicom.dicomweb import DicomWebError

            with self.db.read_session() as s:
                state = s.scalar(select(Study.state).where(Study.id == study_id))
            if state != "received":
                return False
            try:
                self.publish_study(study_id)
            except (DicomWebError, OSError) as exc:
                log.warning("study %s not sent to the image store (%s); tried again on the next pass", study_id,
                            public_error(exc))
                return False
        with self.db.session() as s:
            study = s.get(Study, study_id, with_for_update=True)
            if study is None or study.state != "received" or (cutoff is not None and study.last_instance_at > cutoff):
                return False
            applies: list[tuple[Workflow, dict[str, Series]]] = []
            skipped: dict[str, str] = {}
            for wf in wfs:
                chosen, missing = self._select(s, study, wf.requirements)
                if missing:
                    skipped[wf.name] = "missing " + ", ".join(missing)
                else:
                    applies.append((wf, chosen))
            if not applies:
                why = "no workflow applies: " + ("; ".join(f"{n}: {r}" for n, r in skipped.items())
                                                 or "no workflow is enabled")
                transition(s, study, StudyState.NO_WORKFLOW, "system:selection", why[:2000])
                audit(s, "system:selection", "study.no_workflow", "study", study.id, reasons=skipped,
                      enabled=[w.name for w in wfs])
                return True
            for _wf, chosen in applies:
                for role, series in chosen.items():
                    if series.study_id == study.id:
                        roles = set(filter(None, (series.selected_as or "").split(","))) | {role}
                        series.selected_as = ",".join(sorted(roles))[:64]
            why = "; ".join(f"{wf.name}: " + ", ".join(
                f"{role} = series {x.series_number} ({x.classification})"
                + (f" of study {x.study_id}" if x.study_id != study.id else "") for role, x in chosen.items())
                for wf, chosen in applies)
            transition(s, study, StudyState.SELECTED, "system:selection", why[:2000])
            study.workflow = ",".join(wf.name for wf, _ in applies)[:64]
            audit(s, "system:selection", "study.routed", "study", study.id,
                  workflows=[wf.name for wf, _ in applies], skipped=skipped)
            jobs = []
            for wf, chosen in applies:
                job = self._queue_run(s, study, wf, {role: x.id for role, x in chosen.items()})
                if job is not None:
                    jobs.append(f"{wf.name}: job {job.id}")
            sync_study_state(s, study, "system:scheduler", "; ".join(jobs) or None)
        return True

    def _classify(self, s: Session, series: Series) -> str:
        """The series' class from the dicom classifier (on a stored, de-identified header)."""
        if series.classification:
            return series.classification
        inst = s.scalar(select(Instance).where(Instance.series_id == series.id, Instance.path.is_not(None)).limit(1))
        label = "unknown"
        if inst is not None:
            try:
                label = classify_header(self.storage.abspath(inst.path))
            except Exception:
                log.debug("classification failed", exc_info=True)
        series.classification = label
        return label

    def _select(self, s: Session, study: Study, req: Requirements) -> tuple[dict[str, Series], list[str]]:
        """One series per role of ``req``: from this study, or (``prior = k``) the k-th previous
        study of the same patient that has a fitting series; required roles not met are listed."""
        chosen: dict[str, Series] = {}
        missing: list[str] = []
        own = [x for x in study.series if x.n_instances > 0]
        for x in own:
            self._classify(s, x)
        priors: list[list[Series]] | None = None
        for role in req.series:
            if role.prior:
                if priors is None:
                    priors = self._prior_studies_series(s, study)
                fits_by_study = [[x for x in group if self._fits(x, role, chosen)] for group in priors]
                fits_by_study = [g for g in fits_by_study if g]
                fits = fits_by_study[role.prior - 1] if len(fits_by_study) >= role.prior else []
            else:
                fits = [x for x in own if self._fits(x, role, chosen)]
            if not fits:
                if role.required:
                    label = role.role if not role.classes else f"{role.role} ({'/'.join(role.classes)})"
                    missing.append(label + (f" in a previous study (prior {role.prior})" if role.prior else ""))
                continue
            # a 3D acquisition first when the role prefers one (its header is read only then), then the
            # most instances, then the lowest series number
            prefer_3d = role.prefer_3d and len(fits) > 1
            chosen[role.role] = max(fits, key=lambda x: (prefer_3d and self._is_3d(s, x), x.n_instances,
                                                         -(x.series_number or 0)))
        return chosen, missing

    def _is_3d(self, s: Session, series: Series) -> bool:
        """Whether the series is a 3D acquisition (:func:`neurorad.dicom.classify.is_3d` on a stored header)."""
        from neurorad.dicom.classify import is_3d

        inst = s.scalar(select(Instance).where(Instance.series_id == series.id, Instance.path.is_not(None)).limit(1))
        if inst is None:
            return False
        try:
            ds = pydicom.dcmread(self.storage.abspath(inst.path), stop_before_pixels=True,
                                 specific_tags=["MRAcquisitionType", "SliceThickness"])
        except Exception:
            log.debug("header unreadable for the 3D check", exc_info=True)
            return False
        return is_3d({"MRAcquisitionType": str(ds.get("MRAcquisitionType", "") or ""),
                      "SliceThickness": ds.get("SliceThickness")})

    @staticmethod
    def _fits(x: Series, role: SeriesRole, chosen: dict[str, Series]) -> bool:
        return ((x.modality or "") in role.modalities and x not in chosen.values()
                and (not role.classes or (x.classification or "").lower() in {c.lower() for c in role.classes}))

    def _prior_studies_series(self, s: Session, study: Study) -> list[list[Series]]:
        """Series (images still stored) of the same patient's studies acquired before this one,
        grouped per study, newest study first."""
        def when(st: Study) -> str:
            inst = s.scalar(select(Instance).join(Series).where(Series.study_id == st.id,
                                                                 Instance.path.is_not(None)).limit(1))
            if inst is None:
                return ""
            try:
                ds = pydicom.dcmread(self.storage.abspath(inst.path), stop_before_pixels=True,
                                     specific_tags=["StudyDate", "StudyTime"])
                return f"{getattr(ds, 'StudyDate', '') or ''}{getattr(ds, 'StudyTime', '') or ''}"
            except Exception:
                return ""

        this = when(study)
        others = s.scalars(select(Study).where(Study.patient_id == study.patient_id, Study.id != study.id,
                                               Study.images_purged_at.is_(None))).all()
        dated = [(when(o), o) for o in others]
        earlier = [(w, o) for w, o in dated if (w and this and w < this) or (not (w and this) and o.id < study.id)]
        out: list[list[Series]] = []
        for _, o in sorted(earlier, key=lambda wo: (wo[0], wo[1].id), reverse=True):
            group = []
            for x in o.series:
                if x.n_instances > 0:
                    self._classify(s, x)
                    group.append(x)
            out.append(group)
        return out

    def _queue_run(self, s: Session, study: Study, wf: Workflow, series_ids: dict[str, int],
                   actor: str = "system:scheduler", reason: str | None = None) -> Job | None:
        """Create (or move on) the study's run of ``wf`` and queue its workflow job."""
        return queue_run(s, self.settings, study, wf.name, wf.version, series_ids, actor, reason)

    # -- jobs -----------------------------------------------------------------------------------
    def _job_final(self, s: Session, job: Job) -> None:
        """A job ended for good (failed / cancelled): its run (and the study) say so, with the reason."""
        if job.study_id is None:
            return
        study = s.get(Study, job.study_id)
        if study is None:
            return
        run = s.get(WorkflowRun, job.run_id) if job.run_id else None
        same = Job.run_id == job.run_id if job.run_id else Job.study_id == job.study_id
        newer = s.scalar(select(Job.id).where(same, Job.kind == job.kind, Job.id > job.id).limit(1))
        if newer is not None:
            # superseded: a newer job of the run decides its state (an old attempt that ends late
            # must not fail a run whose newer job already produced a result)
            log.info("job %s ended (%s) after newer job %s: state left as is", job.id, job.state, newer)
            return
        target = run if run is not None else study
        if job.state == "cancelled" and target.state in ("queued", "running"):
            transition(s, target, StudyState.FAILED, "system:queue", f"{job.kind} job {job.id} cancelled")
        elif job.state == "failed" and target.state not in ("failed", "delivered", "received"):
            transition(s, target, StudyState.FAILED, "system:queue",
                       f"{job.kind} job {job.id} failed after {job.attempts} attempt(s): {job.error}")
        if run is not None:
            sync_study_state(s, study, "system:queue")

    def run_job(self, lease: Lease, progress_cb: Callable[[float, str], None] | None = None) -> str:
        """Run one leased job to its end (complete or fail), in this process. Returns the job's state."""
        from neurorad.server.logs import job_id

        handler = {"workflow": self._run_workflow_job, "deliver": self._run_delivery_job}.get(lease.kind)
        if handler is None:
            return self.queue.fail(lease, f"unknown job kind {lease.kind}", retry=False) or "lost"
        token = job_id.set(lease.job_id)  # every log line of the job carries its id (neurorad.server.logs)
        try:
            return handler(lease)
        except LeaseLost as exc:
            log.warning("job %s: %s", lease.job_id, exc)
            return self.queue.fail(lease, str(exc), retry=False) or "lost"
        except PermanentError as exc:
            return self.queue.fail(lease, str(exc), retry=False) or "lost"
        except Exception as exc:
            # the traceback goes to the server log only; the job's error (shown to every role in
            # the API and the web pages) names the exception, never file paths or code lines
            log.warning("job %s attempt %s failed", lease.job_id, lease.attempt, exc_info=True)
            return self.queue.fail(lease, public_error(exc)) or "lost"
        finally:
            job_id.reset(token)

    def _inputs(self, s: Session, run: WorkflowRun, series_ids: dict[str, Any], scratch: Path) -> WorkflowInputs:
        """Role -> a folder of the series' stored (de-identified) instances (symbolic links), the
        study dates of each role, the accepted earlier results of the same workflow for the same
        patient (newest first) and the site's options for the workflow."""
        series: dict[str, Path] = {}
        dates: dict[str, str] = {}
        for role, series_id in series_ids.items():
            x = s.get(Series, int(series_id))
            paths = [self.storage.abspath(i.path) for i in x.instances if i.path] if x is not None else []
            if not paths:
                raise PermanentError(f"images of the series for role {role!r} were purged")
            folder = scratch / "inputs" / role
            folder.mkdir(parents=True)
            if self.settings.storage == "dicomweb":  # this host need not see the data folder's images/
                paths = []
                for i, ds in enumerate(self.image_store().retrieve_series(x.study.study_uid, x.series_uid)):
                    paths.append(folder / f"{i:05d}.dcm")
                    pydicom.dcmwrite(paths[-1], ds, enforce_file_format=True)
                if not paths:
                    raise RuntimeError(f"the image store has no instance of the series for role {role!r}")
            else:
                for i, p in enumerate(sorted(paths)):
                    (folder / f"{i:05d}.dcm").symlink_to(p)
            series[role] = folder
            try:
                ds = pydicom.dcmread(paths[0], stop_before_pixels=True, specific_tags=["StudyDate"])
                if getattr(ds, "StudyDate", ""):
                    dates[role] = str(ds.StudyDate)
            except Exception:
                log.debug("no study date for role %s", role, exc_info=True)
        priors = self._prior_results(s, run)
        rejected = [(res, rev) for res, rev, _ in self._prior_results(s, run, "UNACCEPTABLE")]
        return WorkflowInputs(series, dates, [(res, rev) for res, rev, _ in priors],
                              dict(self.settings.workflow_options.get(run.workflow, {})),
                              prior_dirs=[d for _, _, d in priors], prior_rejected=rejected)

    def _prior_results(self, s: Session, run: WorkflowRun, decision: str = "ACCEPTABLE"
                       ) -> list[tuple[WorkflowResult, Review | None, Path]]:
        """Results of the same workflow on the same patient's earlier studies whose review was
        ``decision``, newest first, with their folders."""
        study = s.get(Study, run.study_id)
        rows = s.execute(select(WorkflowRun, QADecision).join(Study, Study.id == WorkflowRun.study_id)
                         .join(QADecision, QADecision.id == WorkflowRun.decision_id)
                         .where(Study.patient_id == study.patient_id, WorkflowRun.workflow == run.workflow,
                                WorkflowRun.id != run.id, QADecision.decision == decision)
                         .order_by(Study.id.desc())).all()
        if decision != "ACCEPTABLE":  # only studies without an accepted run, and not this study (a retry)
            accepted = set(s.scalars(select(WorkflowRun.study_id)
                                     .join(QADecision, QADecision.id == WorkflowRun.decision_id)
                                     .join(Study, Study.id == WorkflowRun.study_id)
                                     .where(Study.patient_id == study.patient_id, WorkflowRun.workflow == run.workflow,
                                            QADecision.decision == "ACCEPTABLE")))
            rows = [(p, d) for p, d in rows if p.study_id != run.study_id and p.study_id not in accepted]
        out = []
        for prior, dec in rows:
            anchor = s.get(Result, prior.result_id) if prior.result_id else None
            if anchor is None:
                continue
            path = self.storage.abspath(anchor.path)
            folder = path.parent if path.name == WorkflowResult.RESULT_JSON else path
            try:
                res = WorkflowResult.read_json(folder)
            except Exception:  # an older result in another shape: not a comparable prior
                continue
            out.append((res, review_of(dec), folder))
        return out

    def _run_workflow_job(self, lease: Lease) -> str:
        from neurorad.errors import InputError
        from neurorad.workflows.runner import execute

        run_id = lease.payload.get("run_id")
        if run_id is None:
            raise PermanentError("workflow job without a run (queued before migration 0004): retry the study")
        scratch = self.storage.scratch_dir(f"job{lease.job_id}-")
        with self.db.session() as s:
            run = s.get(WorkflowRun, int(run_id), with_for_update=True)
            if run is None:
                raise PermanentError(f"no workflow run {run_id}")
            if run.state == "queued":
                transition(s, run, StudyState.RUNNING, f"worker:{lease.job_id}", f"attempt {lease.attempt}")
                sync_study_state(s, run.study, f"worker:{lease.job_id}")
            elif run.state != "running":
                raise PermanentError(f"{run.workflow} run is {run.state}, not queued")
            try:
                wf = registry.load(run.workflow)
            except registry.WorkflowLoadError as exc:
                raise PermanentError(str(exc)) from None
            inputs = self._inputs(s, run, lease.payload.get("series") or run.series, scratch)
            study_id, run_key = run.study_id, run.id

        def progress(fraction: float, message: str = "") -> None:
            self.queue.heartbeat(lease, progress=min(max(fraction, 0.0), 0.99), message=message)

        try:
            result = execute(wf, inputs, scratch / "out", progress)
        except InputError as exc:  # the input cannot be processed: a retry cannot fix it
            raise PermanentError(f"{wf.name}: {exc}") from exc
        final = self.storage.results_dir(study_id, lease.job_id) / f"attempt{lease.attempt}"
        self.storage.publish_dir(scratch / "out", final)
        shutil.rmtree(scratch, ignore_errors=True)
        anchor = final / WorkflowResult.RESULT_JSON
        files = [anchor] + sorted(p for p in final.rglob("*") if p.is_file() and p != anchor)

        def on_success(s: Session) -> None:
            run = s.get(WorkflowRun, run_key, with_for_update=True)
            study = s.get(Study, study_id, with_for_update=True)
            rows = []
            for f in files:
                kind, sop_uid, sop_class = _result_kind(f)
                rows.append(Result(study_id=study_id, job_id=lease.job_id, run_id=run_key, kind=kind,
                                   path=self.storage.relpath(f), sop_uid=sop_uid, sop_class_uid=sop_class,
                                   sha256=_sha256(f), workflow=wf.name, software_version=__version__))
            s.add_all(rows)
            s.flush()
            run.job_id, run.result_id, run.workflow_version = lease.job_id, rows[0].id, wf.version
            actor = f"worker:{lease.job_id}"
            transition(s, run, StudyState.NEEDS_REVIEW, actor,
                       f"result version {rows[0].id}: {len(result.findings)} finding(s), {len(files)} file(s)")
            audit(s, actor, "workflow.done", "study", study_id, workflow=wf.name, version=wf.version, run_id=run_key,
                  result_version=rows[0].id, results=len(files), alarms=len(result.alarms))
            if not self.settings.review_required:
                transition(s, run, StudyState.ACCEPTED, "system:auto-accept", "review not required at this site")
                self.queue_delivery(s, self.settings, run, "system:auto-accept")
            sync_study_state(s, study, actor)

        if not self.queue.complete(lease, on_success):
            raise LeaseLost(f"job {lease.job_id}: lease lost before completion")
        return "succeeded"

    # -- review and delivery --------------------------------------------------------------------
    @staticmethod
    def queue_delivery(s: Session, settings: Settings, run: WorkflowRun, actor: str, force: bool = False) -> Job:
        """Queue the delivery job of one run (accepted -> reported, or rejected -> reported when the
        review wrote a "not usable" report); raises TransitionError when there is nothing to deliver."""
        if run.state == "accepted":
            transition(s, run, StudyState.REPORTED, actor, "results accepted; report objects final")
        elif run.state == "rejected":
            if not reviewed_objects(s, run):
                raise TransitionError(f"{run.workflow} run of study {run.study_id} is rejected without a review "
                                      "report: nothing to deliver")
            transition(s, run, StudyState.REPORTED, actor, "result rejected; 'not usable' report final")
        if force:
            s.execute(update(Delivery).where(Delivery.result_id.in_(
                select(Result.id).where(Result.run_id == run.id)), Delivery.state.in_(("rejected", "failed")))
                .values(state="pending"))
            if run.state in ("failed", "delivered"):
                transition(s, run, StudyState.REPORTED, actor, "delivery requested again")
        n = s.scalar(select(func.count(Job.id)).where(Job.run_id == run.id, Job.kind == "deliver")) or 0
        job = JobQueue.enqueue_in(s, "deliver", {"run_id": run.id}, study_id=run.study_id,
                                  idempotency_key=f"deliver:{run.id}:{run.version}:{n}",
                                  max_attempts=settings.max_attempts, timeout_s=600.0)
        job.run_id = run.id
        sync_study_state(s, s.get(Study, run.study_id), actor)
        return job

    def _run_delivery_job(self, lease: Lease) -> str:
        from neurorad.dicom.deid import reidentify_dataset

        dests = self.settings.destinations
        run_id = lease.payload.get("run_id")
        if run_id is None:
            raise PermanentError("delivery job without a run (queued before migration 0004): request delivery again")
        with self.db.session() as s:
            run = s.get(WorkflowRun, int(run_id))
            if run is None or run.state not in ("reported", "failed"):
                raise PermanentError(f"run is {run.state if run else 'missing'}; only reported results are delivered")
            results = [(r.id, r.path, r.sop_uid) for r in delivery_set(s, run)]
            prior_uids = prior_study_uids(s, run)
            for rid, _, _ in results:
                for d in dests:
                    if s.scalar(select(Delivery).where(Delivery.result_id == rid,
                                                       Delivery.destination == d.name)) is None:
                        s.add(Delivery(result_id=rid, destination=d.name))
        transient: list[str] = []
        rejected: list[str] = []
        for rid, path, _sop in results:
            for d in dests:
                with self.db.session() as s:
                    dl = s.scalar(select(Delivery).where(Delivery.result_id == rid, Delivery.destination == d.name))
                    if dl.state in ("sent", "rejected"):
                        if dl.state == "rejected":
                            rejected.append(f"{d.name}: {dl.last_error}")
                        continue
                    dl.attempts += 1
                ds = pydicom.dcmread(self.storage.abspath(path))
                out = reidentify_dataset(ds, self.vault)
                identify_report_document(out, self.storage.abspath(path), self.vault, prior_uids)
                self.queue.heartbeat(lease, message=f"sending result {rid} to {d.name}")
                status, reason = send_to(d, out)
                with self.db.session() as s:
                    dl = s.scalar(select(Delivery).where(Delivery.result_id == rid, Delivery.destination == d.name))
                    if status == "sent":
                        dl.state, dl.delivered_at, dl.last_error = "sent", utcnow(), None
                        audit(s, f"worker:{lease.job_id}", "delivery.sent", "result", rid, destination=d.name)
                    elif status == "rejected":
                        dl.state, dl.last_error = "rejected", reason
                        rejected.append(f"{d.name}: {reason}")
                        audit(s, f"worker:{lease.job_id}", "delivery.rejected", "result", rid, destination=d.name,
                              reason=reason)
                    else:
                        dl.last_error = reason
                        transient.append(f"{d.name}: {reason}")
        if transient:
            raise DeliveryRetry("; ".join(transient))

        def on_success(s: Session) -> None:
            run = s.get(WorkflowRun, int(run_id), with_for_update=True)
            actor = f"worker:{lease.job_id}"
            if rejected:
                if run.state != "failed":
                    transition(s, run, StudyState.FAILED, actor, "delivery rejected: " + "; ".join(rejected)[:1500])
            elif run.state in ("reported", "failed"):
                if run.state == "failed":
                    transition(s, run, StudyState.REPORTED, actor, "delivery retried")
                transition(s, run, StudyState.DELIVERED, actor,
                           f"{len(results)} object(s) to {len(dests)} destination(s)")
            sync_study_state(s, s.get(Study, run.study_id), actor)

        if not self.queue.complete(lease, on_success):
            raise LeaseLost(f"job {lease.job_id}: lease lost before completion")
        return "succeeded"


ENCAPSULATED_PDF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def prior_study_uids(s: Session, run: WorkflowRun) -> list[str]:
    """The (pseudonymised) Study Instance UIDs of the prior studies a run compared with, in the order
    of the report's prior exam dates (:func:`neurorad.workflows.outputs.report_context`: the
    workflow's prior roles by ``prior``, newest first); empty when the workflow cannot be loaded."""
    from neurorad.store.models import Series

    try:
        wf = registry.load(run.workflow)
    except registry.WorkflowLoadError:
        return []
    series = run.series or {}
    roles = sorted((r for r in wf.requirements.series if r.prior > 0 and r.role in series), key=lambda r: r.prior)
    out = []
    for r in roles:
        try:
            ser = s.get(Series, int(series[r.role]))
        except (TypeError, ValueError):  # not one series id: no prior date to restore
            return []
        if ser is None or ser.study is None:
            return []
        out.append(str(ser.study.study_uid))
    return out


def identify_report_document(out: pydicom.Dataset, stored: Path, vault: Any,
                             prior_uids: Sequence[str] = ()) -> bool:
    """Put the identified copy of the report into an outgoing (re-identified) Encapsulated PDF.

    The stored PDF was rendered from de-identified data (no name, ID or birth date); just before
    sending, :func:`neurorad.report.render.identified_pdf_bytes` renders the same report with the
    patient's identity and the original exam dates from the vault (this exam's, and the prior
    exams' of ``prior_uids``, :func:`prior_study_uids`), in a temporary folder that is deleted at
    once, and the bytes replace the document in ``out`` only. The report PDF is the one
    ``neurorad.workflows.outputs`` wrapped (``<folder>/report.pdf`` for
    ``<folder>/dicom/<name>.dcm``); False (``out`` unchanged) when there is none or no sidecar."""
    from neurorad.report.render import PatientIdentity, identified_pdf_bytes

    if str(getattr(out, "SOPClassUID", "")) != ENCAPSULATED_PDF_SOP_CLASS or stored.parent.name != "dicom":
        return False
    pdf = stored.parent.parent / "report.pdf"
    if not pdf.is_file():
        return False
    try:
        patient = PatientIdentity.from_dicom(vault.reidentify_patient(str(pydicom.dcmread(
            stored, stop_before_pixels=True, specific_tags=["PatientID"]).PatientID)))
        study = vault.study(str(pydicom.dcmread(stored, stop_before_pixels=True,
                                                specific_tags=["StudyInstanceUID"]).StudyInstanceUID))
    except Exception:  # noqa: BLE001 - no vault record: the stored (de-identified) report is sent
        log.warning("no identity for the report document %s; sent as stored", stored.name)
        return False
    current = str(study.get("StudyDate") or "")
    priors = []
    for uid in prior_uids:
        try:
            priors.append(str(vault.study(uid).get("StudyDate") or ""))
        except Exception:  # noqa: BLE001 - no vault record for a prior study
            priors.append("")
    changes: dict[str, Any] = {}
    if current and all(priors):
        changes = {"exam_date": current}
        if priors:
            changes["prior_exam_dates"] = tuple(priors)
    else:
        # never mix original and stored (shifted or removed) dates in one report: the interval would be wrong
        log.warning("original exam dates not all in the vault; report sent with the stored dates")
    data = identified_pdf_bytes(pdf, patient, **changes)
    if data is None:
        return False
    out.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")
    if "EncapsulatedDocumentLength" in out:
        out.EncapsulatedDocumentLength = len(data)
    return True


def queue_run(s: Session, settings: Settings, study: Study, workflow: str, version: str, series_ids: dict[str, int],
              actor: str, reason: str | None = None) -> Job | None:
    """Create the study's run of ``workflow`` (or move an existing one back to ``queued``) and queue
    its workflow job; None when the run cannot be re-queued from its state (e.g. under review)."""
    run = s.scalar(select(WorkflowRun).where(WorkflowRun.study_id == study.id, WorkflowRun.workflow == workflow))
    if run is None:
        run = WorkflowRun(study_id=study.id, workflow=workflow, workflow_version=version, state="queued",
                          series=dict(series_ids), version=1)
        s.add(run)
        s.flush()
        from neurorad.store.models import StudyTransition

        s.add(StudyTransition(study_id=study.id, run_id=run.id, from_state=None, to_state="queued", at=utcnow(),
                              actor=actor, reason=reason or f"routed to {workflow}", software_version=__version__))
    elif can_transition(run.state, "queued"):
        transition(s, run, StudyState.QUEUED, actor, reason or "queued again")
        run.series = dict(series_ids)
    else:
        log.warning("study %s: %s run is %s; not queued again", study.id, workflow, run.state)
        return None
    job = JobQueue.enqueue_in(s, "workflow", {"workflow": workflow, "run_id": run.id, "series": dict(series_ids)},
                              study_id=study.id, idempotency_key=f"workflow:{run.id}:{run.version}",
                              max_attempts=settings.max_attempts, timeout_s=settings.job_timeout_s)
    job.run_id = run.id
    run.job_id = job.id
    return job


def review_of(dec: QADecision) -> Review:
    """The contract's :class:`Review` of a stored decision."""
    values = dict(dec.form_values or {})
    if not values and dec.score is not None:
        values = {"score": str(dec.score)}
    verdicts = {int(c["lesion_id"] if "lesion_id" in c else c["finding_id"]): str(c["verdict"])
                for c in dec.candidates or []}
    missed = tuple((float(m["x_mm"]), float(m["y_mm"]), float(m["z_mm"])) for m in dec.missed_lesions or [])
    return Review("ACCEPTABLE" if dec.decision == "ACCEPTABLE" else "UNACCEPTABLE", values, verdicts, missed,
                  dec.comment or "", "", dec.created_at.isoformat(timespec="seconds") if dec.created_at else "",
                  tuple(dec.timepoints_accepted or ()))


def reviewed_objects(s: Session, run: WorkflowRun) -> list[Result]:
    """DICOM objects of the run's latest QA decision that wrote any (report version, reviewed SEG,
    SR and secondary captures) on the run's current result; [] when none."""
    qa_id = s.scalar(select(func.max(Result.qa_decision_id)).where(
        Result.run_id == run.id, Result.job_id == run.job_id, Result.qa_decision_id.is_not(None)))
    if qa_id is None:
        return []
    return list(s.scalars(select(Result).where(Result.run_id == run.id, Result.qa_decision_id == qa_id,
                                               Result.sop_uid.is_not(None)).order_by(Result.id)).all())


def delivery_set(s: Session, run: WorkflowRun) -> list[Result]:
    """What goes to the PACS for one run: after a review, only the latest decision's reviewed objects
    (never the drafts they supersede: those may show discarded findings); without a review
    (``review_required`` off) the run's current result's DICOM objects."""
    reviewed = reviewed_objects(s, run)
    if reviewed:
        return reviewed
    return list(s.scalars(select(Result).where(
        Result.run_id == run.id, Result.job_id == run.job_id, Result.sop_uid.is_not(None),
        Result.qa_decision_id.is_(None), Result.kind.notlike("review%")).order_by(Result.id)).all())


def public_error(exc: BaseException) -> str:
    """A job error as users see it: the exception's type and first message line, without
    absolute file paths (which name the data folder and may carry study folders)."""
    import re

    first = (str(exc).strip().splitlines() or [""])[0]
    first = re.sub(r"(?:[A-Za-z]:)?[/\\][^\s'\"]+", "<path>", first)
    return f"{type(exc).__name__}: {first}"[:500]


class PermanentError(Exception):
    """A job error that a retry cannot fix."""


class DeliveryRetry(Exception):
    """A transient delivery failure (peer down, 5xx): retried with back-off."""


def transition_first(s: Session, study: Study) -> None:
    """Record the study's creation as its first transition (None -> received)."""
    from neurorad.store.models import StudyTransition

    s.add(StudyTransition(study_id=study.id, from_state=None, to_state="received", at=utcnow(),
                          actor=f"dicom:{study.source_aet or 'unknown'}", reason="first instance received",
                          software_version=__version__))


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _sha256(path: Path) -> str:
    from neurorad.provenance import sha256_file

    return sha256_file(path)


_KIND_BY_CLASS = {
    "1.2.840.10008.5.1.4.1.1.66.4": "seg",
    "1.2.840.10008.5.1.4.1.1.104.1": "pdf",
    "1.2.840.10008.5.1.4.1.1.7": "sc",
    "1.2.840.10008.5.1.4.1.1.7.4": "sc",
    "1.2.840.10008.5.1.4.1.1.88.11": "sr",
    "1.2.840.10008.5.1.4.1.1.88.22": "sr",
    "1.2.840.10008.5.1.4.1.1.88.33": "sr",
    "1.2.840.10008.5.1.4.1.1.88.34": "sr",
}


def _result_kind(path: Path) -> tuple[str, str | None, str | None]:
    """(kind, SOP Instance UID, SOP Class UID) of a result file; non-DICOM files are kind = suffix."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        cls = str(ds.SOPClassUID)
        return _KIND_BY_CLASS.get(cls, "dicom"), str(ds.SOPInstanceUID), cls
    except Exception:
        name = path.name.lower()
        for suffix, kind in ((".nii.gz", "nifti"), (".nii", "nifti"), (".pdf", "report_pdf"), (".html", "html"),
                             (".csv", "csv"), (".json", "json")):
            if name.endswith(suffix):
                return kind, None, None
        return "file", None, None


def classify_header(path: Path) -> str:
    """Class of a series (T1, FLAIR, ...) from one stored header, by the dicom series rules."""
    from neurorad.dicom.classify import classify_series, series_attributes

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return classify_series(series_attributes(ds)).label


def send_to(dest: Destination, ds: pydicom.Dataset) -> tuple[str, str | None]:
    """Send one dataset: ("sent", None), ("rejected", reason) or ("retry", reason)."""
    try:
        if dest.kind == "stow":
            return _stow(dest, ds)
        return _cstore(dest, ds)
    except Exception as exc:  # network down etc.: transient
        return "retry", f"{type(exc).__name__}: {exc}"[:500]


def _stow(dest: Destination, ds: pydicom.Dataset) -> tuple[str, str | None]:
    """STOW-RS (PS3.18 10.5) with neurorad.dicom.dicomweb.DicomWebClient.

    A Failure Reason from the server, or HTTP 4xx (not 408/429), is a rejection; an unreachable
    server, 5xx, 408 and 429 are retried by the queue.
    """
    from neurorad.dicom.dicomweb import DicomWebClient, DicomWebError

    auth = (dest.username, dest.password or "") if dest.username else None
    try:
        out = DicomWebClient(dest.dicomweb_url, auth=auth).store([ds])[0]
    except DicomWebError as exc:
        return "retry", str(exc)[:500]
    if out.ok:
        return "sent", None
    reason = out.reason or "failure"
    http = out.http_status
    if out.reason_code is None and (http is None or http >= 500 or http in (408, 429)):
        return "retry", f"STOW-RS: {reason}"
    code = f" (reason 0x{out.reason_code:04X})" if out.reason_code is not None else ""
    return "rejected", f"STOW-RS: {reason}{code}"


def _cstore(dest: Destination, ds: pydicom.Dataset) -> tuple[str, str | None]:
    """C-STORE (PS3.7 9.1.1) with neurorad.dicom.transport.send_cstore.

    Failure statuses are rejections, except 0xA7xx (out of resources) and no response, which are
    retried; an unreachable peer is retried, a rejected association is a rejection.
    """
    from neurorad.dicom.transport import TransportError, send_cstore

    try:
        out = send_cstore([ds], dest.host, int(dest.port), dest.ae_title or "ANY-SCP")[0]
    except TransportError as exc:
        msg = str(exc)
        if msg.endswith(" rejected"):
            return "rejected", "association rejected by the destination (check AE titles)"
        return "retry", "peer unreachable"
    if out.ok:
        return "sent", None
    if out.status is None or (out.status & 0xFF00) == 0xA700:
        return "retry", f"C-STORE: {out.error or 'no response'}" + (
            f" (status 0x{out.status:04X})" if out.status is not None else "")
    return "rejected", f"C-STORE status 0x{out.status:04X}"


#: states from which a study's workflows (or routing) may be run again
RETRYABLE_STATES = ("failed", "rejected", "delivered", "no_workflow")


def retry(s: Session, settings: Settings, study: Study, actor: str, reason: str) -> list[str]:
    """Retry a study: route it again when no workflow ran (incomplete study, no workflow applied),
    else, per run, deliver again (failed delivery of an accepted result) or re-run the workflow
    (failed / rejected / delivered runs). Only from :data:`RETRYABLE_STATES` (docs/data-plane.md):
    a study awaiting review keeps its result (a radiologist rejects it first), one whose job is
    queued or running is not given a second, racing job. Returns what was done; TransitionError
    when nothing can be retried."""
    if study.state not in RETRYABLE_STATES:
        raise TransitionError(f"study {study.id} is {study.state}: only a {', '.join(RETRYABLE_STATES)} study is "
                              "retried" + (" (cancel its job first)" if study.state in ("queued", "running") else ""))
    audit(s, actor, "study.retry", "study", study.id, reason=reason, from_state=study.state)
    runs = s.scalars(select(WorkflowRun).where(WorkflowRun.study_id == study.id).order_by(WorkflowRun.id)).all()
    if not runs:
        last = s.scalar(select(Job).where(Job.study_id == study.id, Job.kind == "workflow").order_by(Job.id.desc())
                        .limit(1))
        if study.workflow and (last is not None or study.state in ("rejected", "delivered")):
            # a study processed before workflow runs existed (migration 0004): its workflow runs again
            job = queue_run(s, settings, study, study.workflow.split(",")[0], "",
                            dict((last.payload or {}).get("series") or {}) if last is not None else {}, actor, reason)
            sync_study_state(s, study, actor, reason)
            return [f"{study.workflow}: job {job.id}"] if job is not None else []
        transition(s, study, StudyState.RECEIVED, actor, reason)  # routed again after the quiet period
        return ["routing"]
    done = []
    for run in runs:
        accepted = run.decision_id is not None and s.scalar(select(QADecision.decision).where(
            QADecision.id == run.decision_id)) == "ACCEPTABLE"
        if run.state == "failed" and accepted and reviewed_objects(s, run):
            DataPlane.queue_delivery(s, settings, run, actor, force=True)
            done.append(f"{run.workflow}: delivery")
        elif run.state in ("failed", "rejected", "delivered"):
            job = queue_run(s, settings, study, run.workflow, run.workflow_version or "", dict(run.series or {}),
                            actor, reason)
            if job is not None:
                done.append(f"{run.workflow}: job {job.id}")
    if not done:
        raise TransitionError(f"study {study.id}: no run can be retried ({', '.join(r.state for r in runs)})")
    sync_study_state(s, study, actor, "; ".join(done))
    return done


queue_delivery = DataPlane.queue_delivery
