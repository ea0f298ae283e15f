"""Self-contained HTML reports: figures drawn with matplotlib (Agg) and embedded as base64 PNG.

Every figure function returns PNG bytes so it can be tested and embedded; :func:`html_report`
assembles titled sections (figures and tables) into one file with no external resources.
No patient identifiers are added beyond the case labels the caller passes.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from neurorad.evaluate.calibration import Reliability  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap(metrics: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """Patient x metric heat map; each column min-max scaled for colour, raw values printed when small."""
    cols = [c for c in columns if c in metrics.columns]
    vals = metrics[cols].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    span = (vals.max() - vals.min()).replace(0, 1)
    scaled = (vals - vals.min()) / span
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(cols), 1 + 0.3 * len(vals)))
    ax.imshow(scaled.to_numpy(float), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(vals)), [str(c) for c in metrics.index])
    if vals.size <= 600:
        for (i, j), v in np.ndenumerate(vals.to_numpy(float)):
            ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2g}", ha="center", va="center", fontsize=6, color="w")
    ax.set_title("per-patient metrics (colour: column-scaled)")
    return _png(fig)


def reliability_diagram(rel: Reliability, title: str = "reliability") -> bytes:
    """Accuracy vs confidence per bin, with the identity line and bin counts."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(4.5, 5), height_ratios=[3, 1], sharex=True)
    centres = 0.5 * (rel.edges[1:] + rel.edges[:-1])
    w = np.diff(rel.edges)
    ok = rel.count > 0
    ax.bar(centres[ok], rel.accuracy[ok], width=w[ok], edgecolor="k", alpha=0.7, label="fraction positive")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot(rel.mean_confidence[ok], rel.accuracy[ok], "ro", ms=3, label="bin mean")
    ax.set_ylabel("fraction positive")
    ax.set_title(f"{title}: ECE {100 * rel.ece:.2f}%, MCE {100 * rel.mce:.2f}%")
    ax.legend(fontsize=7)
    ax2.bar(centres, np.maximum(rel.count, 1), width=w, log=True, color="grey")
    ax2.set_xlabel("predicted probability")
    ax2.set_ylabel("voxels")
    return _png(fig)


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = "lesion-level ROC") -> bytes:
    """ROC curve."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=2)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"{title} (AUC {auc:.3f})")
    return _png(fig)


def robustness_curves(bands: pd.DataFrame, metric: str) -> bytes:
    """Mean metric vs perturbation level with its confidence band, one line per perturbation."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, g in bands.groupby("perturbation"):
        g = g.sort_values("level")
        ax.plot(g["level"], g["mean"], marker="o", label=str(name))
        ax.fill_between(g["level"], g["ci_low"], g["ci_high"], alpha=0.2)
    ax.set_xlabel("perturbation level (epsilon)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.set_title(f"robustness: {metric} (95% CI over patients)")
    return _png(fig)


def interval_violins(widths: dict[str, Sequence[float]], title: str = "prediction-interval width") -> bytes:
    """Violin plot of interval widths per group (e.g. per patient)."""
    keys = [k for k, v in widths.items() if len(v) > 1]
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * max(len(keys), 1), 4))
    if keys:
        ax.violinplot([np.asarray(widths[k], float) for k in keys], showmedians=True)
        ax.set_xticks(range(1, len(keys) + 1), keys, rotation=60, ha="right")
    ax.set_ylabel("interval width")
    ax.set_title(title)
    return _png(fig)


def alarm_vs_dice(alarms: np.ndarray, dice: np.ndarray) -> bytes:
    """Scatter of alarm count vs Dice with the Pearson r in the title."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    rng = np.random.default_rng(0)
    ax.scatter(np.asarray(alarms) + rng.uniform(-0.15, 0.15, len(alarms)), dice, s=12)
    ok = np.isfinite(dice)
    r = np.corrcoef(np.asarray(alarms)[ok], np.asarray(dice)[ok])[0, 1] if ok.sum() > 2 else np.nan
    ax.set_xlabel("alarm count")
    ax.set_ylabel("Dice (fusion vs truth)")
    ax.set_title(f"alarms vs Dice (r = {r:.2f})")
    return _png(fig)


def pca_scatter(scores: pd.DataFrame) -> bytes:
    """PC1 vs PC2 coloured by site."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for s, g in scores.groupby("site"):
        ax.scatter(g["PC1"], g["PC2"] if "PC2" in g else np.zeros(len(g)), s=14, label=str(s))
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.legend(fontsize=7, title="site")
    ax.set_title("image-quality metrics PCA")
    return _png(fig)


def html_report(title: str, sections: Sequence[tuple[str, object]]) -> str:
    """HTML page; each section is (heading, PNG bytes | DataFrame | str)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, bytes):
            parts.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,"
                         f"{base64.b64encode(content).decode()}'>")
        elif isinstance(content, pd.DataFrame):
            parts.append(content.to_html(float_format=lambda v: f"{v:.4g}", border=0))
        else:
            parts.append(f"<p>{html.escape(str(content))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
