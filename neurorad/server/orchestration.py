"""The data plane's orchestration: ingest, completion, selection, jobs, review and delivery.

Ingest (one instance, from the C-STORE receiver or a folder import)::

    parse -> validate -> de-identify (PS3.15, neurorad.dicom.deid) -> write atomically (fsync)
          -> record patient/study/series/instance in one transaction -> answer "stored"

Only after the instance is on disk and committed does the receiver answer success, so a
server killed mid-ingest loses nothing the sender believes was stored; a re-sent instance is
recognised by its (pseudonymised, deterministic) SOP Instance UID and stored once.

A study is complete when no instance arrived for ``quiet_period_s``; the scheduler then
classifies its series, picks the ones the workflow needs (or fails the study with "missing
required series: ..."), and queues one workflow job. A worker runs it (``run_job``), the
results wait for review, an ACCEPTABLE review queues delivery, and the delivery job sends
each result object re-identified to every destination, once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.server import workflows
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
    utcnow,
)
from neurorad.store.queue import JobQueue, Lease, LeaseLost
from neurorad.store.state import StudyState, TransitionError, transition
from neurorad.store.storage import Storage

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
                        if study.state in ("failed", "delivered", "selected", "queued"):
                            if study.state == "queued":
                                s.execute(update(Job).where(Job.study_id == study.id, Job.state == "pending")
                                          .values(state="cancelled", finished_at=now,
                                                  error="new instances arrived"))
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

    # -- completion and selection ---------------------------------------------------------------
    def complete_quiet_studies(self, now=None) -> list[int]:
        """Studies with no new instance for the quiet period move on (select + queue); returns their ids."""
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

    def select_and_queue(self, study_id: int, cutoff=None) -> bool:
        spec = workflows.get(self.settings.workflow)
        with self.db.session() as s:
            study = s.get(Study, study_id, with_for_update=True)
            if study is None or study.state != "received" or (cutoff is not None and study.last_instance_at > cutoff):
                return False
            study.workflow = spec.name
            chosen, missing = self._select(s, study, spec)
            if missing:
                transition(s, study, StudyState.FAILED, "system:selection",
                           f"missing required series: {', '.join(missing)}")
                audit(s, "system:selection", "study.incomplete", "study", study.id, missing=missing)
                return True
            for role, series in chosen.items():
                if series.study_id == study.id:
                    series.selected_as = role
            why = "; ".join(f"{role}: series {x.series_number} ({x.classification})"
                            + (f" of study {x.study_id}" if x.study_id != study.id else "")
                            for role, x in chosen.items())
            transition(s, study, StudyState.SELECTED, "system:selection", why)
            self._queue_workflow(s, study, {role: x.id for role, x in chosen.items()})
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

    def _select(self, s: Session, study: Study, spec: workflows.WorkflowSpec) -> tuple[dict[str, Series], list[str]]:
        """Pick one series per requirement: from this study, or (``prior``) the patient's previous study."""
        chosen: dict[str, Series] = {}
        missing: list[str] = []
        own = [x for x in study.series if x.n_instances > 0]
        for x in own:
            self._classify(s, x)
        priors: list[Series] | None = None
        for req in spec.requirements:
            if req.prior:
                if priors is None:
                    priors = self._prior_series(s, study)
                pool = priors
            else:
                pool = own
            fits = [x for x in pool if (x.modality or "") in req.modalities and x not in chosen.values()
                    and (not req.classes or (x.classification or "").lower() in {c.lower() for c in req.classes})]
            if not fits:
                label = req.role if not req.classes else f"{req.role} ({'/'.join(req.classes)})"
                missing.append(label + (" in a previous study" if req.prior else ""))
                continue
            if req.prior:  # pool is ordered newest study first: take the newest that fits
                newest = fits[0].study_id
                fits = [x for x in fits if x.study_id == newest]
            chosen[req.role] = max(fits, key=lambda x: (x.n_instances, -(x.series_number or 0)))
        return chosen, missing

    def _prior_series(self, s: Session, study: Study) -> list[Series]:
        """Series (images still stored) of the same patient's studies acquired before this one, newest first."""
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
        out: list[Series] = []
        for _, o in sorted(earlier, key=lambda wo: (wo[0], wo[1].id), reverse=True):
            for x in o.series:
                if x.n_instances > 0:
                    self._classify(s, x)
                    out.append(x)
        return out

    def _queue_workflow(self, s: Session, study: Study, series_ids: dict[str, int],
                        actor: str = "system:scheduler") -> Job:
        job = JobQueue.enqueue_in(s, "workflow", {"workflow": study.workflow, "series": series_ids},
                                  study_id=study.id,
                                  idempotency_key=f"workflow:{study.id}:{study.version}",
                                  max_attempts=self.settings.max_attempts, timeout_s=self.settings.job_timeout_s)
        transition(s, study, StudyState.QUEUED, actor, f"job {job.id}")
        return job

    # -- jobs -----------------------------------------------------------------------------------
    def _job_final(self, s: Session, job: Job) -> None:
        """A job ended for good (failed / cancelled): its study says so, with the reason."""
        if job.study_id is None:
            return
        study = s.get(Study, job.study_id)
        if study is None:
            return
        newer = s.scalar(select(Job.id).where(Job.study_id == job.study_id, Job.kind == job.kind, Job.id > job.id)
                         .limit(1))
        if newer is not None:
            # superseded: a newer job of the study decides its state (an old attempt that ends
            # late must not fail a study whose newer run already produced a result)
            log.info("job %s ended (%s) after newer job %s: study state left as %s", job.id, job.state, newer,
                     study.state)
            return
        if job.state == "cancelled" and study.state in ("queued", "running"):
            transition(s, study, StudyState.FAILED, "system:queue", f"{job.kind} job {job.id} cancelled")
        elif job.state == "failed" and study.state not in ("failed", "delivered", "received"):
            transition(s, study, StudyState.FAILED, "system:queue",
                       f"{job.kind} job {job.id} failed after {job.attempts} attempt(s): {job.error}")

    def run_job(self, lease: Lease, progress_cb: Callable[[float, str], None] | None = None) -> str:
        """Run one leased job to its end (complete or fail), in this process. Returns the job's state."""
        handler = {"workflow": self._run_workflow_job, "deliver": self._run_delivery_job}.get(lease.kind)
        if handler is None:
            return self.queue.fail(lease, f"unknown job kind {lease.kind}", retry=False) or "lost"
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

    def _run_workflow_job(self, lease: Lease) -> str:
        with self.db.session() as s:
            study = s.get(Study, lease.study_id, with_for_update=True)
            if study.state == "queued":
                transition(s, study, StudyState.RUNNING, f"worker:{lease.job_id}", f"attempt {lease.attempt}")
            elif study.state != "running":
                raise PermanentError(f"study is {study.state}, not queued")
            spec = workflows.get(lease.payload.get("workflow") or study.workflow or self.settings.workflow)
            inputs: dict[str, list[Path]] = {}
            roles = lease.payload.get("series") or {x.selected_as: x.id for x in study.series if x.selected_as}
            for role, series_id in roles.items():
                x = s.get(Series, int(series_id))
                paths = [self.storage.abspath(i.path) for i in x.instances if i.path]
                if not paths:
                    raise PermanentError(f"images of series {x.series_number} were purged")
                inputs[role] = sorted(paths)
            study_id = study.id

        def progress(fraction: float, message: str = "") -> None:
            self.queue.heartbeat(lease, progress=min(max(fraction, 0.0), 0.99), message=message)

        scratch = self.storage.scratch_dir(f"job{lease.job_id}-")
        outputs = spec.run(inputs, scratch, progress)
        final = self.storage.results_dir(study_id, lease.job_id) / f"attempt{lease.attempt}"
        self.storage.publish_dir(scratch, final)
        files = [final / Path(p).relative_to(scratch) for p in outputs]

        def on_success(s: Session) -> None:
            study = s.get(Study, study_id, with_for_update=True)
            for f in files:
                kind, sop_uid, sop_class = _result_kind(f)
                s.add(Result(study_id=study_id, job_id=lease.job_id, kind=kind, path=self.storage.relpath(f),
                             sop_uid=sop_uid, sop_class_uid=sop_class, sha256=_sha256(f), workflow=spec.name,
                             software_version=__version__))
            s.flush()
            transition(s, study, StudyState.NEEDS_REVIEW, f"worker:{lease.job_id}", f"{len(files)} result object(s)")
            audit(s, f"worker:{lease.job_id}", "workflow.done", "study", study_id, workflow=spec.name,
                  results=len(files))
            if not self.settings.review_required:
                transition(s, study, StudyState.ACCEPTED, "system:auto-accept", "review not required at this site")
                self.queue_delivery(s, self.settings, study, "system:auto-accept")

        if not self.queue.complete(lease, on_success):
            raise LeaseLost(f"job {lease.job_id}: lease lost before completion")
        return "succeeded"

    # -- review and delivery --------------------------------------------------------------------
    @staticmethod
    def queue_delivery(s: Session, settings: Settings, study: Study, actor: str, force: bool = False) -> Job:
        """Queue the delivery job (accepted -> reported, or rejected -> reported when the review
        wrote a "not usable" report); raises TransitionError when there is nothing to deliver."""
        if study.state == "accepted":
            transition(s, study, StudyState.REPORTED, actor, "results accepted; report objects final")
        elif study.state == "rejected":
            if not reviewed_objects(s, study.id):
                raise TransitionError(f"study {study.id} is rejected without a review report: nothing to deliver")
            transition(s, study, StudyState.REPORTED, actor, "result rejected; 'not usable' report final")
        if force:
            s.execute(update(Delivery).where(Delivery.result_id.in_(
                select(Result.id).where(Result.study_id == study.id)), Delivery.state.in_(("rejected", "failed")))
                .values(state="pending"))
            if study.state in ("failed", "delivered"):
                transition(s, study, StudyState.REPORTED, actor, "delivery requested again")
        n = s.scalar(select(Job.id).where(Job.study_id == study.id, Job.kind == "deliver").order_by(Job.id.desc())
                     .limit(1)) or 0
        return JobQueue.enqueue_in(s, "deliver", {}, study_id=study.id,
                                   idempotency_key=f"deliver:{study.id}:{study.version}:{n}",
                                   max_attempts=settings.max_attempts, timeout_s=600.0)

    def _run_delivery_job(self, lease: Lease) -> str:
        from neurorad.dicom.deid import reidentify_dataset

        dests = self.settings.destinations
        with self.db.session() as s:
            study = s.get(Study, lease.study_id)
            if study.state not in ("reported", "failed"):
                raise PermanentError(f"study is {study.state}; only reported results are delivered")
            results = [(r.id, r.path, r.sop_uid) for r in delivery_set(s, study.id)]
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
            study = s.get(Study, lease.study_id, with_for_update=True)
            if rejected:
                if study.state != "failed":
                    transition(s, study, StudyState.FAILED, f"worker:{lease.job_id}",
                               "delivery rejected: " + "; ".join(rejected)[:1500])
            elif study.state in ("reported", "failed"):
                if study.state == "failed":
                    transition(s, study, StudyState.REPORTED, f"worker:{lease.job_id}", "delivery retried")
                transition(s, study, StudyState.DELIVERED, f"worker:{lease.job_id}",
                           f"{len(results)} object(s) to {len(dests)} destination(s)")

        if not self.queue.complete(lease, on_success):
            raise LeaseLost(f"job {lease.job_id}: lease lost before completion")
        return "succeeded"


def reviewed_objects(s: Session, study_id: int) -> list[Result]:
    """DICOM objects of the latest QA decision that wrote any (report version, reviewed SEG and
    secondary captures) on the study's latest succeeded workflow run; [] when none."""
    latest = _latest_workflow_job(s, study_id)
    qa_id = s.scalar(select(func.max(Result.qa_decision_id)).where(
        Result.study_id == study_id, Result.job_id == latest, Result.qa_decision_id.is_not(None)))
    if qa_id is None:
        return []
    return list(s.scalars(select(Result).where(Result.study_id == study_id, Result.qa_decision_id == qa_id,
                                               Result.sop_uid.is_not(None)).order_by(Result.id)).all())


def delivery_set(s: Session, study_id: int) -> list[Result]:
    """What goes to the PACS: after a review, only the latest decision's reviewed objects (its
    report version and, when accepted, the SEG and secondary captures regenerated with the kept
    lesions), never the drafts they supersede (those may show discarded candidates); without a
    review (``review_required`` off) the latest succeeded workflow run's DICOM objects."""
    reviewed = reviewed_objects(s, study_id)
    if reviewed:
        return reviewed
    latest = _latest_workflow_job(s, study_id)
    return list(s.scalars(select(Result).where(
        Result.study_id == study_id, Result.job_id == latest, Result.sop_uid.is_not(None),
        Result.qa_decision_id.is_(None), Result.kind.notlike("review%")).order_by(Result.id)).all())


def _latest_workflow_job(s: Session, study_id: int) -> int | None:
    return s.scalar(select(Job.id).where(Job.study_id == study_id, Job.kind == "workflow",
                                         Job.state == "succeeded").order_by(Job.id.desc()).limit(1))


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


def record_review(s: Session, settings: Settings, study: Study, user_id: int | None, actor: str, decision: str,
                  score: int | None, comment: str | None) -> None:
    """Store a QA decision; ACCEPTABLE -> accepted (+ delivery queued), UNACCEPTABLE -> rejected."""
    s.add(QADecision(study_id=study.id, user_id=user_id, decision=decision, score=score, comment=comment,
                     software_version=__version__))
    target = StudyState.ACCEPTED if decision == "ACCEPTABLE" else StudyState.REJECTED
    transition(s, study, target, actor, f"review: {decision}" + (f" (score {score})" if score else ""))
    audit(s, actor, "study.review", "study", study.id, decision=decision, score=score)
    if target == StudyState.ACCEPTED:
        DataPlane.queue_delivery(s, settings, study, actor)


#: states from which a study's workflow (or selection) may be run again
RETRYABLE_STATES = ("failed", "rejected", "delivered")


def retry(s: Session, settings: Settings, study: Study, actor: str, reason: str) -> None:
    """Retry: re-run selection (incomplete study) or the workflow (failed / rejected / delivered).

    Only from those states (docs/data-plane.md, the state machine): a study that waits for
    review keeps its result (a radiologist rejects it first), and one whose job is queued or
    running is not given a second, racing job (cancel the job first). Raises TransitionError.
    """
    if study.state not in RETRYABLE_STATES:
        raise TransitionError(f"study {study.id} is {study.state}: only a {', '.join(RETRYABLE_STATES)} study is "
                              "retried" + (" (cancel its job first)" if study.state in ("queued", "running") else ""))
    audit(s, actor, "study.retry", "study", study.id, reason=reason, from_state=study.state)
    if study.state == "failed" and any(r for r in study.results) and \
            s.scalar(select(QADecision.id).where(QADecision.study_id == study.id,
                                                 QADecision.decision == "ACCEPTABLE")) is not None:
        DataPlane.queue_delivery(s, settings, study, actor, force=True)
        return
    if study.state == "failed" and not any(x.selected_as for x in study.series):
        transition(s, study, StudyState.RECEIVED, actor, reason)  # selection runs again after the quiet period
        return
    study.workflow = study.workflow or workflows.get(settings.workflow).name
    last = s.scalar(select(Job).where(Job.study_id == study.id, Job.kind == "workflow").order_by(Job.id.desc())
                    .limit(1))
    series_ids = dict((last.payload or {}).get("series", {})) if last is not None else {}
    job = JobQueue.enqueue_in(s, "workflow", {"workflow": study.workflow, "series": series_ids}, study_id=study.id,
                              idempotency_key=f"workflow:{study.id}:{study.version}:retry",
                              max_attempts=settings.max_attempts, timeout_s=settings.job_timeout_s)
    transition(s, study, StudyState.QUEUED, actor, f"{reason}; job {job.id}")


queue_delivery = DataPlane.queue_delivery
