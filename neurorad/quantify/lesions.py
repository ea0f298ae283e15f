"""Lesion tables: one row per connected component with size, position and location.

Volumes are voxel counts x voxel volume (mm^3); centroids are centres of mass of the
component's voxels mapped through the grid's affine to RAS+ mm; the equivalent diameter is
that of a sphere of the same volume, ``(6 V / pi)^(1/3)``.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from neurorad.image.volume import Volume
from neurorad.quantify.components import describe_components, label_maximum


@dataclass
class LesionRow:
    """One lesion of a lesion table."""

    id: int
    kind: str  # e.g. 'new' / 'enlarging'
    volume_mm3: float
    diameter_mm: float  # equivalent-sphere diameter
    centroid_x_mm: float  # RAS+ world coordinates
    centroid_y_mm: float
    centroid_z_mm: float
    aal_region: str = ""
    jhu_tract: str = ""
    max_score: float = 0.0
    n_voxels: int = 0
    # volume of the lesion at baseline (0 for a new lesion; for an enlarging lesion the old lesion
    # it grew from) and the change baseline -> follow-up (volume_mm3 is the follow-up volume)
    baseline_volume_mm3: float = 0.0
    volume_change_mm3: float = 0.0
    # False when the workflow's rule says the volume cannot be measured at this resolution (e.g. a
    # lesion smaller than the slice thickness allows); volume_note then says so for people
    volume_measurable: bool = True
    volume_note: str = ""

    @property
    def location(self) -> str:
        """Human-readable location: the white-matter tract if any, then the AAL region."""
        parts = [p for p in (self.jhu_tract, self.aal_region) if p]
        return ", ".join(parts) if parts else "unlabelled region"


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter of a sphere of the same volume."""
    return float((6.0 * max(volume_mm3, 0.0) / np.pi) ** (1.0 / 3.0))


def lesion_table(
    labels: Volume,
    n: int,
    kinds: list[str] | None = None,
    score: np.ndarray | None = None,
    aal: list[tuple[str, float]] | None = None,
    jhu: list[tuple[str, float]] | None = None,
) -> list[LesionRow]:
    """Build the table for components 1..n of ``labels`` (a label Volume)."""
    comps = describe_components(labels.data, n, labels.voxel_volume_mm3)
    peaks = (
        label_maximum(score, labels.data, n) if (score is not None and n) else None
    )
    rows = []
    for i, c in enumerate(comps):
        xyz = labels.voxel_to_world(np.asarray(c.centroid_ijk))[0]
        rows.append(
            LesionRow(
                id=c.label,
                kind=kinds[i] if kinds else "lesion",
                volume_mm3=round(c.volume_mm3, 2),
                diameter_mm=round(equivalent_diameter_mm(c.volume_mm3), 2),
                centroid_x_mm=round(float(xyz[0]), 1),
                centroid_y_mm=round(float(xyz[1]), 1),
                centroid_z_mm=round(float(xyz[2]), 1),
                aal_region=aal[i][0] if aal else "",
                jhu_tract=jhu[i][0] if jhu else "",
                max_score=round(float(peaks[i]), 3) if peaks is not None else 0.0,
                n_voxels=c.n_voxels,
                volume_change_mm3=round(c.volume_mm3, 2),
            )
        )
    return rows


def write_lesion_csv(rows: list[LesionRow], path: str | Path) -> Path:
    """Write the table as CSV (header always present, also for zero lesions)."""
    path = Path(path)
    names = [f.name for f in fields(LesionRow)] + ["location"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=names)
        w.writeheader()
        for r in rows:
            d = asdict(r)
            d["location"] = r.location
            w.writerow(d)
    return path
