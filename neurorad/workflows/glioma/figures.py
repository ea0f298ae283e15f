"""Report figure of the glioma workflow: the whole-tumour volume trend over the three time points.

EASE (PAPERS.md A3/A4) compares the volumes of the current study and two priors; issue 12 asks for a
volume-trend plot in the report. The figure is drawn when the result is made (``volume_trend.png`` in
the result folder) and named by the workflow's report section; the generic report layer only embeds
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neurorad.clinical.glioma import PROGRESSION_VOLUME_INCREASE


@dataclass(frozen=True)
class TrendPoint:
    label: str  # "t-2", "t-1", "t"
    date: str  # YYYYMMDD or ""
    volume_ml: float
    compared: bool  # accepted, compatible prior (or the current study)


def _x_label(p: TrendPoint) -> str:
    d = p.date
    return f"{p.label}\n{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else p.label


def volume_trend_figure(points: list[TrendPoint], path: Path) -> Path:
    """Whole-tumour volume (mL) per time point, oldest first: compared points filled and joined,
    points not compared (not accepted or another software version) hollow and labelled; a dashed line
    at the +40 % progression flag relative to the newest compared prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.0), dpi=100)
    xs = list(range(len(points)))
    comp = [(x, p) for x, p in zip(xs, points, strict=True) if p.compared]
    ax.plot([x for x, _ in comp], [p.volume_ml for _, p in comp], "-o", color="#c0392b", lw=1.5, ms=6)
    for x, p in zip(xs, points, strict=True):
        if not p.compared:
            ax.plot([x], [p.volume_ml], "o", mfc="white", mec="grey", ms=6)
            ax.annotate("not compared", (x, p.volume_ml), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=7, color="grey")
        else:
            ax.annotate(f"{p.volume_ml:.1f} mL", (x, p.volume_ml), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8)
    priors = [p for p in points[:-1] if p.compared]
    if priors:
        flag = priors[-1].volume_ml * (1.0 + PROGRESSION_VOLUME_INCREASE)
        ax.axhline(flag, ls="--", lw=1, color="grey")
        ax.text(xs[0], flag, f" +{PROGRESSION_VOLUME_INCREASE:.0%} vs {priors[-1].label}", va="bottom", fontsize=7,
                color="grey")
    top = max([p.volume_ml for p in points] + ([flag] if priors else []))
    ax.set_ylim(0, top * 1.25 + 1e-3)
    ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_xticks(xs, [_x_label(p) for p in points], fontsize=8)
    ax.set_ylabel("Whole tumour (mL)", fontsize=9)
    ax.set_title("Whole-tumour volume trend", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
