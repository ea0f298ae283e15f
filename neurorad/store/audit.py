"""Append-only audit log (who, what, which object, when, software version).

Never put patient identifiers in ``details``: objects are named by internal ids or pseudonyms.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.store.models import AuditEvent, utcnow


def audit(session: Session, actor: str, action: str, object_type: str | None = None,
          object_id: object = None, **details: Any) -> AuditEvent:
    """Add one audit event to the session (the caller's transaction commits it)."""
    ev = AuditEvent(at=utcnow(), actor=actor, action=action, object_type=object_type,
                    object_id=None if object_id is None else str(object_id), details=details,
                    software_version=__version__)
    session.add(ev)
    return ev
