"""Files of the data plane under one data directory, written atomically.

Layout (all names are pseudonymised UIDs or internal ids, never patient identifiers)::

    DATA_DIR/neurorad.db            SQLite database (default)
    DATA_DIR/vault/                 pseudonym vault (encrypted; neurorad.dicom.vault)
    DATA_DIR/images/<study>/<series>/<sop>.dcm   de-identified instances
    DATA_DIR/results/<study id>/<job id>/...     result objects of workflow jobs
    DATA_DIR/work/                  scratch space (temporary files before rename)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_SAFE = re.compile(r"^[0-9A-Za-z.\-_]{1,128}$")


def _safe(name: str) -> str:
    if not _SAFE.match(name):
        raise ValueError(f"unsafe path component {name!r}")
    return name


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write bytes to ``path`` via a temporary file + rename; durable when ``fsync``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Storage:
    """Paths and atomic file operations under the data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir).expanduser().resolve()
        for sub in ("images", "results", "work", "vault"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def db_path(self) -> Path:
        return self.root / "neurorad.db"

    @property
    def vault_dir(self) -> Path:
        return self.root / "vault"

    def instance_relpath(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        return f"images/{_safe(study_uid)}/{_safe(series_uid)}/{_safe(sop_uid)}.dcm"

    def results_dir(self, study_id: int, job_id: int) -> Path:
        return self.root / "results" / str(int(study_id)) / str(int(job_id))

    def abspath(self, relpath: str) -> Path:
        p = (self.root / relpath).resolve()
        if self.root not in p.parents:
            raise ValueError(f"path escapes the data dir: {relpath}")
        return p

    def relpath(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def write_instance(self, relpath: str, data: bytes) -> Path:
        p = self.abspath(relpath)
        atomic_write(p, data)
        return p

    def scratch_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root / "work"))

    def publish_dir(self, tmp: Path, final: Path) -> None:
        """Move a finished scratch dir into place (replacing a half-published older copy)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def delete(self, relpath: str) -> bool:
        p = self.abspath(relpath)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        # remove empty parents up to images/
        for parent in p.parents:
            if parent == self.root / "images" or parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break
        return True
