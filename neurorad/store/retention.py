"""Retention: purge image data after a configurable period; reports, results and audit stay.

Default period 183 days (6 months), as in the EASE volumetry deployment (PAPERS.md A): the images a
result was computed from are deleted, the study row, its transitions, results, QA decisions,
deliveries and the audit log are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from neurorad.store.audit import audit
from neurorad.store.db import Database
from neurorad.store.models import Instance, Series, Study, utcnow
from neurorad.store.storage import Storage

DEFAULT_RETENTION_DAYS = 183.0
# studies still in flight keep their images whatever their age
_ACTIVE = ("received", "selected", "queued", "running")


@dataclass(frozen=True)
class PurgeReport:
    studies: int
    instances: int
    bytes_freed: int


def purge_images(db: Database, storage: Storage, retention_days: float = DEFAULT_RETENTION_DAYS,
                 actor: str = "system:retention", dry_run: bool = False) -> PurgeReport:
    """Delete stored instances of studies received more than ``retention_days`` ago."""
    cutoff = utcnow() - timedelta(days=retention_days)
    n_studies = n_inst = n_bytes = 0
    with db.session() as s:
        study_ids = s.scalars(select(Study.id).where(Study.received_at < cutoff, Study.images_purged_at.is_(None),
                                                     Study.state.not_in(_ACTIVE))).all()
    for sid in study_ids:
        with db.session() as s:
            study = s.get(Study, sid)
            insts = s.scalars(select(Instance).join(Series).where(Series.study_id == sid,
                                                                   Instance.purged_at.is_(None))).all()
            freed = 0
            for inst in insts:
                freed += inst.size_bytes
                if not dry_run and inst.path:
                    storage.delete(inst.path)
                    inst.purged_at, inst.path = utcnow(), None
            if not dry_run:
                study.images_purged_at = utcnow()
                audit(s, actor, "retention.purge", "study", sid, instances=len(insts), bytes=freed,
                      retention_days=retention_days)
            n_studies += 1
            n_inst += len(insts)
            n_bytes += freed
    return PurgeReport(n_studies, n_inst, n_bytes)
