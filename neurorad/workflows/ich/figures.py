"""Report figures of the ICH workflow: the axis figure and the centre-movement arrow.

PNG, radiological convention (patient right on image left) for axial and coronal views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurorad.image.volume import Volume


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axis_figure(ct: Volume, mask: Volume, diameters_mm: dict[str, float], axis: str, path: Path, title: str) -> Path:
    """Axial slice of maximum haematoma area (AP and LR extents) and coronal slice of maximum area
    (SI extent) of a CT on a RAS grid, with the haematoma outline and the diameters drawn."""
    plt = _plt()
    m = np.asarray(mask.data) > 0
    img = np.asarray(ct.data, np.float32)
    sx, sy, sz = ct.spacing_mm
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    if m.any():
        k = int(np.argmax(m.sum(axis=(0, 1))))
        j = int(np.argmax(m.sum(axis=(0, 2))))
    else:
        k, j = img.shape[2] // 2, img.shape[1] // 2
    views = ((axes[0], img[:, :, k], m[:, :, k], (sx, sy), "axial", ("ap", "lr")),
             (axes[1], img[:, j, :], m[:, j, :], (sx, sz), "coronal", ("si",)))
    for ax, sl, ms, (s0, s1), name, keys in views:
        sl, ms = sl[::-1], ms[::-1]  # radiological: patient right (high x) on the image left
        ext = (0, sl.shape[0] * s0, 0, sl.shape[1] * s1)
        ax.imshow(sl.T, cmap="gray", vmin=0, vmax=90, origin="lower", extent=ext)
        if ms.any():
            ax.contour(ms.T.astype(float), levels=[0.5], colors="red", linewidths=1, origin="lower", extent=ext)
            ii, jj = np.nonzero(ms)
            ci, cj = (ii.mean() + 0.5) * s0, (jj.mean() + 0.5) * s1
            if "lr" in keys:
                ax.plot([ii.min() * s0, (ii.max() + 1) * s0], [cj, cj], "c-", lw=1.5)
            if "ap" in keys or "si" in keys:
                ax.plot([ci, ci], [jj.min() * s1, (jj.max() + 1) * s1], "y-", lw=1.5)
        ax.set_title(f"{name}: " + ", ".join(f"{a.upper()} {diameters_mm.get(a, 0):.0f} mm" for a in keys), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="w", fontsize=9)
    fig.suptitle(f"{title}: longitudinal axis {axis}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def centre_arrow_figure(template_t1: Volume, c0: tuple[float, float, float], c1: tuple[float, float, float],
                        path: Path) -> Path:
    """The centre movement c0 -> c1 (RAS mm, template space) drawn as an arrow on axial, coronal and
    sagittal maximum-intensity projections of the template (the paper's Figure 3, one case)."""
    plt = _plt()
    t = np.asarray(template_t1.data, np.float32)
    aff = template_t1.affine
    inv = np.linalg.inv(aff)
    p0 = inv[:3, :3] @ np.asarray(c0) + inv[:3, 3]
    p1 = inv[:3, :3] @ np.asarray(c1) + inv[:3, 3]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), dpi=100)
    views = (("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))
    for ax, (name, drop, (a, b)) in zip(axes, views, strict=True):
        proj = t.max(axis=drop)
        ax.imshow(proj.T, cmap="gray", origin="lower")
        ax.annotate("", xy=(p1[a], p1[b]), xytext=(p0[a], p0[b]),
                    arrowprops={"arrowstyle": "->", "color": "red", "lw": 2})
        ax.plot([p0[a]], [p0[b]], "o", color="orange", ms=4)
        if name != "sagittal":
            ax.invert_xaxis()  # radiological: patient right on image left
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    d = float(np.linalg.norm(np.asarray(c1) - np.asarray(c0)))
    fig.suptitle(f"Haematoma centre movement {d:.1f} mm (orange: prior, arrow head: current; MNI152 template)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
