"""Patient orientation of 2D images (PS3.3 C.7.6.1.1.1) from the letters at their edges.

A displayed image shows, at its left and top edges, the patient directions those edges point
to (``R`` and ``A`` for an axial slice in radiological convention). DICOM's PatientOrientation
names the directions the rows and the columns *run towards* (left to right, top to bottom),
i.e. the opposite letters, with H/F (head/feet) for superior/inferior.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["patient_orientation"]

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "F", "I": "H", "H": "F", "F": "H"}


def patient_orientation(left_top: Sequence[str]) -> tuple[str, str]:
    """(row direction, column direction) of an image whose left and top edges show ``left_top``:
    ``("R", "A")`` -> ``("L", "P")``; a superior top edge (``S``) gives ``F`` (columns run to the feet)."""
    try:
        return _OPPOSITE[str(left_top[0]).upper()], _OPPOSITE[str(left_top[1]).upper()]
    except (KeyError, IndexError):
        raise ValueError(f"edge letters must be two of R/L/A/P/S/I/H/F, got {tuple(left_top)!r}") from None
