"""Spatial transforms in world RAS+ millimetres, and resampling through them.

Convention (the same as ITK/elastix, written out once here):

* A :class:`AffineTransform` holds a 4x4 matrix ``fixed_to_moving`` that maps a point given in
  the **fixed** image's world (RAS+ mm) to the corresponding point in the **moving** image's
  world (RAS+ mm): ``y_moving = M @ [x_fixed, 1]``.
* Resampling the moving image onto the fixed grid ("the registered image") therefore reads,
  at every fixed voxel centre ``x``, the moving image at ``M x`` (pull-back; no holes).
* :meth:`AffineTransform.inverse` swaps the roles; :meth:`AffineTransform.then` composes
  ``A.then(B)`` = first A, then B (``B.matrix @ A.matrix``): if A maps fixed->intermediate and B
  maps intermediate->moving, ``A.then(B)`` maps fixed->moving.

ITK works in LPS+; the conversion is ``M_ras = F M_lps F`` with ``F = diag(-1, -1, 1, 1)``
(F is its own inverse), done only in :func:`to_sitk_transform` / :func:`from_sitk_transform`.

Transforms are saved as small JSON files (matrix, kind, direction, metadata), human-readable
and free of ITK version quirks.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from neurorad.errors import InputError
from neurorad.image.sitk_bridge import from_sitk, to_sitk
from neurorad.image.volume import Volume

_F = np.diag([-1.0, -1.0, 1.0, 1.0])

Interpolation = Literal["linear", "nearest", "bspline", "label"]

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
    "label": sitk.sitkLabelGaussian,
}

FORMAT = "neurorad-transform/1"


@dataclass(frozen=True)
class AffineTransform:
    """A rigid or affine map ``fixed world (RAS mm) -> moving world (RAS mm)`` as a 4x4 matrix."""

    matrix: np.ndarray
    kind: str = "affine"  # "rigid" | "affine" | "identity" (informational)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError("transform matrix must be a finite 4x4 array")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError("last row of an affine transform must be [0, 0, 0, 1]")
        if abs(np.linalg.det(m[:3, :3])) < 1e-9:
            raise ValueError("transform is singular")
        object.__setattr__(self, "matrix", m)

    # construction -------------------------------------------------------------
    @classmethod
    def identity(cls) -> AffineTransform:
        return cls(np.eye(4), "identity")

    @classmethod
    def from_euler(
        cls, angles_deg: tuple[float, float, float], translation_mm: tuple[float, float, float],
        center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> AffineTransform:
        """Rigid map: rotate by ``angles_deg`` about RAS x, y, z (applied x, then y, then z) around
        ``center_mm``, then translate by ``translation_mm``."""
        ax, ay, az = (math.radians(a) for a in angles_deg)
        rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
        ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
        rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
        r = rz @ ry @ rx
        c = np.asarray(center_mm, dtype=float)
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = c - r @ c + np.asarray(translation_mm, dtype=float)
        return cls(m, "rigid")

    # algebra -------------------------------------------------------------------
    def inverse(self) -> AffineTransform:
        """The map moving world -> fixed world."""
        return AffineTransform(np.linalg.inv(self.matrix), self.kind, {"inverse_of": self.metadata})

    def then(self, other: AffineTransform) -> AffineTransform:
        """First ``self``, then ``other`` (matrix ``other @ self``)."""
        kind = "rigid" if {self.kind, other.kind} <= {"rigid", "identity"} else "affine"
        return AffineTransform(other.matrix @ self.matrix, kind)

    def apply(self, points_mm: np.ndarray) -> np.ndarray:
        """Map RAS mm points (N, 3) from the fixed to the moving world."""
        p = np.atleast_2d(np.asarray(points_mm, dtype=float))
        return p @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    @property
    def rotation_deg(self) -> float:
        """Angle of the rotation part (polar decomposition for affine maps), in degrees."""
        u, _, vt = np.linalg.svd(self.matrix[:3, :3])
        r = u @ vt
        return float(math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))

    @property
    def scales(self) -> np.ndarray:
        """Singular values of the linear part (1, 1, 1 for a rigid map)."""
        return np.linalg.svd(self.matrix[:3, :3], compute_uv=False)

    def displacement_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Length of the displacement ``|M x - x|`` at each point (N,)."""
        p = np.atleast_2d(np.asarray(points_mm, dtype=float))
        return np.linalg.norm(self.apply(p) - p, axis=1)

    # I/O ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "direction": "fixed_world_RAS_mm -> moving_world_RAS_mm",
            "matrix": self.matrix.tolist(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | Path | None = None) -> AffineTransform:
        if d.get("format") != FORMAT or "matrix" not in d:
            raise InputError(f"not a neurorad transform file (expected format {FORMAT!r})", path)
        try:
            return cls(np.asarray(d["matrix"], dtype=float), str(d.get("kind", "affine")), dict(d.get("metadata", {})))
        except ValueError as exc:
            raise InputError(f"invalid transform: {exc}", path) from exc

    def save(self, path: str | Path) -> Path:
        """Write as JSON, atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=2, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> AffineTransform:
        path = Path(path)
        if not path.exists():
            raise InputError("transform file not found", path)
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"transform file is not valid JSON ({exc})", path) from exc
        return cls.from_dict(d, path)


def to_sitk_transform(t: AffineTransform) -> sitk.AffineTransform:
    """The same map as an ITK transform in LPS (fixed LPS point -> moving LPS point)."""
    m = _F @ t.matrix @ _F
    out = sitk.AffineTransform(3)
    out.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    out.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return out


def from_sitk_transform(tx: sitk.Transform, kind: str = "affine") -> AffineTransform:
    """Convert any linear ITK transform (Euler, Versor, Affine, composite of those) to RAS."""
    m = np.eye(4)
    # Probe the transform at four points: exact for any affine map, whatever its parametrisation.
    origin = np.asarray(tx.TransformPoint((0.0, 0.0, 0.0)))
    cols = [np.asarray(tx.TransformPoint(tuple(float(v) for v in e))) - origin for e in np.eye(3)]
    m[:3, :3] = np.stack(cols, axis=1)
    m[:3, 3] = origin
    return AffineTransform(_F @ m @ _F, kind)


def resample(
    moving: Volume,
    reference: Volume,
    transform: AffineTransform | None = None,
    interpolation: Interpolation | None = None,
    default_value: float = 0.0,
) -> Volume:
    """Resample ``moving`` onto ``reference``'s grid through ``transform`` (fixed->moving map).

    ``interpolation`` defaults to nearest neighbour for boolean/integer images (masks, labels)
    and linear otherwise. Boolean images come back boolean.
    """
    if transform is None:
        transform = AffineTransform.identity()
    is_bool = moving.data.dtype == np.bool_
    if interpolation is None:
        interpolation = "nearest" if (is_bool or np.issubdtype(moving.data.dtype, np.integer)) else "linear"
    src = to_sitk(moving, np.uint8 if is_bool else None)
    if interpolation in ("linear", "bspline") and not np.issubdtype(moving.data.dtype, np.floating):
        src = sitk.Cast(src, sitk.sitkFloat32)
    ref = to_sitk(reference.with_data(np.zeros(reference.spatial_shape, np.uint8)))
    out = sitk.Resample(src, ref, to_sitk_transform(transform), _INTERPOLATORS[interpolation], float(default_value))
    vol = from_sitk(out, moving.metadata)
    data = vol.data.astype(bool) if is_bool else vol.data
    return Volume(data, vol.affine, dict(moving.metadata))
