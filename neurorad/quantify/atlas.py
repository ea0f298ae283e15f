"""Atlas lookup: region names for lesions from label atlases already resampled to the subject.

The atlases are Debian ``mricron-data``'s AAL (Tzourio-Mazoyer et al. 2002, 116 regions,
``aal.nii.gz`` + ``aal.nii.txt``) and JHU white-matter labels (Mori et al. 2008, 48 tracts,
``JHU-WhiteMatter-labels-1mm.nii.gz`` + ``.txt``), both on the Colin27/MNI grid. Bringing them
into the subject (registration) is the pipeline's job; this module only reads names and looks up
labels on a common grid, so it needs nothing but arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurorad.errors import InputError
from neurorad.image.nifti import load_nifti
from neurorad.image.volume import Volume


@dataclass(frozen=True)
class Atlas:
    """A label volume and the name of each label (0 = unlabelled)."""

    name: str
    volume: Volume
    names: dict[int, str]

    def name_of(self, label: int) -> str:
        return self.names.get(int(label), f"label {int(label)}") if label else ""


def read_label_names(path: str | Path) -> dict[int, str]:
    """Parse an mricron ``.txt`` label list: ``<index> <name> [code]`` per line (space or tab)."""
    path = Path(path)
    if not path.exists():
        raise InputError("atlas label list missing", path)
    names: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1].replace("_", " ")
    if not names:
        raise InputError("no label names found", path)
    names.pop(0, None)
    return names


def load_atlas(name: str, image_path: str | Path, names_path: str | Path, mirror_lr: bool = False) -> Atlas:
    """Load a label atlas (NIfTI) and its name list.

    ``mirror_lr`` mirrors the atlas in world space (x -> -x). Debian mricron-data's
    ``JHU-WhiteMatter-labels-1mm.nii.gz`` needs it: its "_R" tracts lie at x < 0 under its own
    header, while AAL's "_R" regions (and the JHU atlas in FSL) lie at x > 0 (checked in
    tests/quantify/test_lesions.py).
    """
    vol = load_nifti(image_path)
    aff = vol.affine.copy()
    if mirror_lr:
        aff = np.diag([-1.0, 1.0, 1.0, 1.0]) @ aff
    labels = Volume(np.rint(vol.data).astype(np.int32), aff, dict(vol.metadata))
    return Atlas(name, labels, read_label_names(names_path))


def component_regions(
    labels: np.ndarray, n: int, atlas_labels: np.ndarray, names: dict[int, str]
) -> list[tuple[str, float]]:
    """Most frequent non-zero atlas region of each component 1..n, with the fraction of its voxels.

    ``labels`` and ``atlas_labels`` must share one grid. A component with no labelled voxel gets
    ``("", 0.0)``.
    """
    if np.asarray(labels).shape != np.asarray(atlas_labels).shape:
        raise ValueError("component labels and atlas must share one grid")
    out: list[tuple[str, float]] = []
    flat_l = np.asarray(labels).ravel()
    flat_a = np.asarray(atlas_labels).ravel().astype(np.int64)
    sel = flat_l > 0
    comp, reg = flat_l[sel], flat_a[sel]
    for lab in range(1, n + 1):
        r = reg[comp == lab]
        total = r.size
        r = r[r > 0]
        if total == 0 or r.size == 0:
            out.append(("", 0.0))
            continue
        vals, counts = np.unique(r, return_counts=True)
        best = int(vals[np.argmax(counts)])
        out.append((names.get(best, f"label {best}"), float(counts.max() / total)))
    return out
