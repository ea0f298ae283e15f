"""The one image type of neurorad: a voxel array with its affine and metadata.

Conventions (as nibabel, NIfTI-1 sform/qform):

* ``data`` is indexed ``data[i, j, k]`` (plus an optional 4th axis for time/channels);
* ``affine`` maps voxel indices ``(i, j, k, 1)`` to world coordinates in **RAS+ millimetres**;
* ``metadata`` holds anything else (e.g. ``"dicom"``: the series' DICOM attributes as a dict,
  ``"source"``: the path it was read from, ``"modality"``, ``"contrast"``).

A ``Volume`` never copies its array behind your back: ``with_data`` shares the affine
(copied: it is 16 numbers) and takes the array you give it as is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from neurorad.errors import InputError


@dataclass(eq=False)
class Volume:
    """Voxel array + 4x4 voxel-to-RAS+ affine (mm) + metadata."""

    data: np.ndarray
    affine: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        src = self.metadata.get("source")
        if self.affine.shape != (4, 4) or not np.all(np.isfinite(self.affine)):
            raise InputError("affine must be a finite 4x4 matrix", src)
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise InputError("affine is singular (zero voxel size or collapsed axes)", src)
        if self.data.ndim not in (3, 4):
            raise InputError(f"expected a 3D (or 4D) image, got {self.data.ndim}D shape {self.data.shape}", src)

    # geometry -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        s = self.data.shape
        return int(s[0]), int(s[1]), int(s[2])

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along the three array axes, in mm."""
        sp = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(sp[0]), float(sp[1]), float(sp[2])

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``'RAS'`` or ``'LPS'`` (nibabel ``aff2axcodes``)."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def is_oblique(self) -> bool:
        """True when the voxel axes are not aligned with the world axes (tolerance 1e-4)."""
        d = self.affine[:3, :3] / np.asarray(self.spacing_mm)
        return bool(np.any((np.abs(d) > 1e-4) & (np.abs(d) < 1 - 1e-4)))

    @property
    def center_mm(self) -> np.ndarray:
        """World (RAS mm) position of the centre of the voxel grid."""
        c = (np.asarray(self.spatial_shape, dtype=float) - 1) / 2
        return self.affine[:3, :3] @ c + self.affine[:3, 3]

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices (N, 3) to RAS mm (N, 3)."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map RAS mm points (N, 3) to continuous voxel indices (N, 3)."""
        inv = np.linalg.inv(self.affine)
        xyz = np.atleast_2d(np.asarray(xyz, dtype=float))
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes share spatial shape and affine (within ``atol_mm``)."""
        return self.spatial_shape == other.spatial_shape and bool(
            np.allclose(self.affine, other.affine, atol=atol_mm)
        )

    # construction ---------------------------------------------------------
    def with_data(self, data: np.ndarray, **metadata_updates: Any) -> Volume:
        """A new Volume on the same grid holding ``data`` (not copied)."""
        data = np.asarray(data)
        if data.shape[:3] != self.spatial_shape:
            raise ValueError(f"data shape {data.shape} does not match grid {self.spatial_shape}")
        meta = copy.copy(self.metadata)
        meta.update(metadata_updates)
        return Volume(data, self.affine.copy(), meta)

    def copy(self) -> Volume:
        return Volume(self.data.copy(), self.affine.copy(), copy.deepcopy(self.metadata))

    def check_finite(self) -> Volume:
        """Raise :class:`InputError` when any voxel is NaN or infinite."""
        if np.issubdtype(self.data.dtype, np.floating) and not np.all(np.isfinite(self.data)):
            n = int(np.size(self.data) - np.count_nonzero(np.isfinite(self.data)))
            raise InputError(f"{n} voxels are NaN or infinite", self.metadata.get("source"))
        return self

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing_mm)
        return f"Volume(shape={self.shape}, spacing_mm=({sp}), orientation={self.orientation}, dtype={self.data.dtype})"
