"""Where the real reference data lives once installed (see shared/DATA.md).

Nothing here is committed: Debian's ``mricron-data``, PyPI's ``nilearn`` and the files that
``scripts/fetch_data.sh`` unpacks into ``.data/`` (or ``$NEURORAD_EXTERNAL_DATA``).
Each function raises :class:`InputError` with the install hint when the file is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from neurorad.errors import InputError

MRICRON_TEMPLATES = Path(os.environ.get("NEURORAD_MRICRON_DIR", "/usr/share/mricron/templates"))


def external_data_dir() -> Path:
    """Folder filled by ``scripts/fetch_data.sh`` (``$NEURORAD_EXTERNAL_DATA`` or ``<repo>/.data``)."""
    env = os.environ.get("NEURORAD_EXTERNAL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".data"


def _need(path: Path, hint: str) -> Path:
    if not path.exists():
        raise InputError(f"reference data missing; {hint}", path)
    return path


def mricron(name: str) -> Path:
    """A file of Debian's ``mricron-data`` templates, e.g. ``'ch2.nii.gz'``, ``'aal.nii.gz'``."""
    return _need(MRICRON_TEMPLATES / name, "install it with `apt-get install mricron-data` (make install)")


def colin27_head() -> Path:
    return mricron("ch2.nii.gz")


def colin27_brain() -> Path:
    return mricron("ch2bet.nii.gz")


def mni152(kind: str = "t1") -> Path:
    """nilearn's MNI152 2009 (sym, 1 mm) ``t1`` (brain only), ``gm`` or ``wm`` probability map."""
    import nilearn

    p = Path(nilearn.__file__).parent / "datasets" / "data" / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    return _need(p, "install nilearn (make install)")


def deepmriprep_template(name: str = "Template_4_GS.nii.gz") -> Path:
    """A deepmriprep template/atlas file (3-class tissue map by default)."""
    return _need(external_data_dir() / "deepmriprep" / "templates" / name, "run scripts/fetch_data.sh (make install)")


def rnaseq(name: str) -> Path:
    """RNA-seq data: ``'pasilla'``, ``'airway'`` (folders) or ``'Marioni.RData'``."""
    return _need(external_data_dir() / "rnaseq" / name, "run scripts/fetch_data.sh (make install)")
