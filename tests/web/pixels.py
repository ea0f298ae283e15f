"""Reading results from screenshots (WebGL canvases cannot be read back in headless Chromium)."""

from __future__ import annotations

import io

import numpy as np


def png_to_rgb(png: bytes) -> np.ndarray:
    """Decode a PNG screenshot into an (H, W, 3) uint8 array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def overlay_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the red lesion overlay (NiiVue 'red' colormap blended over grey anatomy)."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 150) & (r - g > 90) & (r - b > 90)


def crosshair_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the crosshair (drawn in light blue, RGB ~ (51, 153, 255))."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (b > 200) & (b - r > 120) & (g > 100) & (g < 200)


def crosshair_center(rgb: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the crosshair: the column and row with the most crosshair pixels."""
    m = crosshair_mask(rgb)
    if m.sum() < 20:
        return None
    return float(np.argmax(m.sum(axis=0))), float(np.argmax(m.sum(axis=1)))
