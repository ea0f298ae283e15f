"""Key images in radiological convention with orientation letters: one renderer for every workflow.

A key image is an axial slice through a finding shown as a radiologist's viewer shows it:
**radiological convention** (patient right on the image left, anterior at the top), the
orientation letters burned in at the middle of each edge (``R`` left, ``L`` right, ``A`` top,
``P`` bottom) in a dark margin around the image so they never hide anatomy, and the result's
label map drawn in colour. The same pixels go into the report (PNG) and, as secondary captures,
to the PACS, whose ``PatientOrientation`` is :func:`patient_orientation` of the letters
(``L\\P`` for this display: columns run to the patient's left, rows to posterior; PS3.3 C.7.6.1.1.1).

The slice is taken on the volume's own grid after an exact axis permutation/flip to (L, P, S)
(:func:`display_axes`; no interpolation), so the pixels are the voxels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from neurorad.dicom.orientation import patient_orientation
from neurorad.image.volume import Volume

__all__ = ["KeyImagePanel", "display_axes", "render_key_image", "save_png", "load_png", "patient_orientation",
           "AXIAL_LETTERS", "DEFAULT_COLOURS"]

#: Letters at the (left, right, top, bottom) edges of an axial slice in radiological convention.
AXIAL_LETTERS = ("R", "L", "A", "P")
#: Overlay colours by label value when the caller gives none (RGB 0-255).
DEFAULT_COLOURS = ((255, 40, 40), (255, 200, 0), (40, 200, 255), (80, 255, 80), (255, 80, 255), (255, 140, 0))


def display_axes(volume: Volume, contiguous: bool = True) -> Volume:
    """``volume`` with its axes permuted/flipped (exactly) to i -> patient Left, j -> Posterior,
    k -> Superior, so that ``data[:, :, k].T`` is an axial slice in radiological convention.

    ``contiguous=False`` returns a view of ``volume``'s data (transposes and flips only, no copy): a caller
    that reads one slice then copies one slice instead of the whole volume."""
    ornt = nib.orientations.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    tr = nib.orientations.ornt_transform(ornt, target)
    data = nib.orientations.apply_orientation(np.asarray(volume.data), tr)
    aff = volume.affine @ nib.orientations.inv_ornt_aff(tr, volume.spatial_shape)
    return Volume(np.ascontiguousarray(data) if contiguous else data, aff, dict(volume.metadata))


class KeyImagePanel:
    """One panel of a key image: a background volume, whether the label map is drawn on it, a title."""

    def __init__(self, volume: Volume, overlay: bool = False, title: str = "",
                 window: tuple[float, float] | None = None) -> None:
        self.volume, self.overlay, self.title, self.window = volume, overlay, title, window


def _auto_window(data: np.ndarray) -> tuple[float, float]:
    ref = data[data > 0] if np.any(data > 0) else data.ravel()
    if ref.size == 0:
        return 0.0, 1.0
    lo, hi = float(np.percentile(ref, 1)), float(np.percentile(ref, 99.5))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


@lru_cache(maxsize=8)
def _font(size: int):  # noqa: ANN202 - PIL font object
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), size)


def _draw_text(img: np.ndarray, text: str, centre_xy: tuple[float, float], size: int,
               colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.text(centre_xy, text, fill=colour, font=_font(size), anchor="mm")
    return np.asarray(pil)


def _panel_pixels(vol: Volume, labels: np.ndarray | None, k: int, window: tuple[float, float] | None,
                  colours: Mapping[int, tuple[int, int, int]], alpha: float) -> np.ndarray:
    sl = np.asarray(vol.data[:, :, k], dtype=np.float32).T  # rows = P (top anterior), cols = L (left = R)
    lo, hi = window or _auto_window(np.asarray(vol.data, np.float32))
    grey = (np.clip((sl - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.float32)
    rgb = np.stack([grey] * 3, axis=-1)
    if labels is not None:
        lab = np.rint(np.asarray(labels[:, :, k])).astype(np.int32).T
        for value in np.unique(lab):
            if value == 0:
                continue
            colour = colours.get(int(value), DEFAULT_COLOURS[(int(value) - 1) % len(DEFAULT_COLOURS)])
            sel = lab == value
            rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(colour, np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_key_image(
    panels: Sequence[KeyImagePanel],
    labels: Volume | None = None,
    centre_mm: Sequence[float] | None = None,
    slice_index: int | None = None,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    alpha: float = 0.6,
    min_size_px: int = 192,
) -> np.ndarray:
    """An RGB key image (rows x columns x 3, uint8): the panels side by side, each an axial slice in
    radiological convention with R/L/A/P letters in a dark margin, the label map in colour on the
    panels with ``overlay=True``.

    The slice is the one through ``centre_mm`` (RAS world mm; e.g. a finding's centroid) or
    ``slice_index`` (k in the display grid of :func:`display_axes`), else the middle slice. Every
    panel volume and ``labels`` must share one grid (same shape and affine). Small images are
    enlarged by an integer factor (nearest neighbour) to at least ``min_size_px`` so the letters stay
    readable; ``colours`` maps label value -> RGB.
    """
    if not panels:
        raise ValueError("a key image needs at least one panel")
    # views, not copies: only the one slice drawn is read (a copy of every panel volume per key image took
    # most of the time of a workflow's key images)
    vols = [display_axes(p.volume, contiguous=False) for p in panels]
    ref = vols[0]
    for v in vols[1:]:
        if v.spatial_shape != ref.spatial_shape or not np.allclose(v.affine, ref.affine, atol=1e-3):
            raise ValueError("key-image panels must share one grid (same shape and affine)")
    lab = None
    if labels is not None:
        lv = display_axes(labels, contiguous=False)
        if lv.spatial_shape != ref.spatial_shape or not np.allclose(lv.affine, ref.affine, atol=1e-3):
            raise ValueError("the label map of a key image must lie on the panels' grid")
        lab = np.asarray(lv.data)  # rounded to whole labels slice by slice (_panel_pixels)
    nk = ref.spatial_shape[2]
    if centre_mm is not None:
        ijk = np.linalg.inv(ref.affine) @ np.array([*map(float, centre_mm), 1.0])
        k = int(np.clip(round(float(ijk[2])), 0, nk - 1))
    elif slice_index is not None:
        k = int(np.clip(slice_index, 0, nk - 1))
    else:
        k = nk // 2
    colours = dict(colours or {})
    rows, cols = ref.spatial_shape[1], ref.spatial_shape[0]
    scale = max(1, int(np.ceil(min_size_px / max(rows, cols))))
    size = max(10, int(round(0.07 * max(rows, cols) * scale)))
    margin = int(size * 1.4)
    title_h = int(size * 1.6) if any(p.title for p in panels) else 0
    out = []
    for p, v in zip(panels, vols, strict=True):
        px = _panel_pixels(v, lab if p.overlay else None, k, p.window, colours, alpha)
        px = np.repeat(np.repeat(px, scale, axis=0), scale, axis=1)
        h, w = px.shape[:2]
        canvas = np.zeros((h + 2 * margin + title_h, w + 2 * margin, 3), np.uint8)
        y0 = title_h + margin
        canvas[y0:y0 + h, margin:margin + w] = px
        left, right, top, bottom = AXIAL_LETTERS
        canvas = _draw_text(canvas, left, (margin / 2, y0 + h / 2), size)
        canvas = _draw_text(canvas, right, (margin + w + margin / 2, y0 + h / 2), size)
        canvas = _draw_text(canvas, top, (margin + w / 2, title_h + margin / 2), size)
        canvas = _draw_text(canvas, bottom, (margin + w / 2, y0 + h + margin / 2), size)
        if p.title:
            canvas = _draw_text(canvas, p.title, (canvas.shape[1] / 2, title_h / 2), max(8, int(size * 0.8)),
                                (220, 220, 220))
        out.append(canvas)
    gap = np.full((out[0].shape[0], 4, 3), 64, np.uint8)
    pieces: list[np.ndarray] = []
    for n, c in enumerate(out):
        if n:
            pieces.append(gap)
        pieces.append(c)
    return np.ascontiguousarray(np.concatenate(pieces, axis=1))


def save_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG (Pillow)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
    return path


def load_png(path: str | Path) -> np.ndarray:
    """An RGB uint8 array from a PNG (alpha dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
