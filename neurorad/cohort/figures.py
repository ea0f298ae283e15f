"""Figures of a cohort model: nomogram, ROC, calibration, decision curve (PNG, matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurorad.cohort.model import Nomogram
from neurorad.evaluate.roc import decision_curve, roc_curve


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def nomogram_figure(model: Nomogram, path: Path, title: str = "") -> Path:
    """rms-style nomogram: a points axis (0-100), one axis per predictor, total points and risk."""
    plt = _plt()
    rows = len(model.predictors) + 3
    fig, ax = plt.subplots(figsize=(9, 0.55 * rows + 1), dpi=100)
    ax.set_xlim(-30, 105)
    ax.set_ylim(-rows, 1)
    ax.axis("off")

    def axis(y: float, label: str, ticks: list[tuple[float, str]]) -> None:
        ax.text(-29, y, label, va="center", fontsize=8)
        xs = [t for t, _ in ticks]
        ax.plot([min(xs), max(xs)], [y, y], "k-", lw=0.8)
        for k, (x, s) in enumerate(sorted(ticks)):
            ax.plot([x, x], [y, y + 0.12], "k-", lw=0.8)
            # alternate labels above/below so that close ticks (categories) stay readable
            ax.text(x, y + 0.18 if k % 2 == 0 else y - 0.32, s, ha="center", fontsize=6)

    axis(0, "Points", [(float(x), f"{x:.0f}") for x in range(0, 101, 10)])
    for i, p in enumerate(model.predictors, 1):
        if p in model.levels:
            ticks = [(model.points(p, v), v) for v in model.levels[p]]
        else:
            lo, hi = model.ranges[p]
            vals = np.array([0.0, 1.0]) if (lo, hi) == (0.0, 1.0) else np.linspace(lo, hi, 6)  # 0/1: no/yes
            ticks = [(model.points(p, v), f"{v:.3g}") for v in vals]
        axis(-i, p, ticks)
    max_total = sum(max(model.points(p, v) for v in (model.levels.get(p) or model.ranges[p]))
                    for p in model.predictors)
    totals = np.linspace(0, max_total, 9)
    scale = 100 / max_total if max_total > 0 else 1.0
    axis(-(len(model.predictors) + 1), "Total points", [(t * scale, f"{t:.0f}") for t in totals])
    risks = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95]
    fine = np.linspace(0, max_total, 2000)
    r = model.total_points_to_risk(fine)
    ticks = [(float(np.interp(q, r, fine)) * scale, f"{q:g}") for q in risks if r.min() <= q <= r.max()]
    if ticks:
        axis(-(len(model.predictors) + 2), f"Risk of {model.outcome}", ticks)
    ax.set_title(title or f"Nomogram ({model.label})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def roc_figure(prob: np.ndarray, y: np.ndarray, auc: dict[str, Any], path: Path, title: str = "") -> Path:
    plt = _plt()
    fpr, tpr, _ = roc_curve(prob, y)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(fpr, tpr, "b-", lw=1.5, label=f"AUC {auc['auc']:.3f} (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def calibration_figure(validation: dict[str, Any], path: Path, title: str = "") -> Path:
    plt = _plt()
    c = pd.DataFrame(validation["calibration"])
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="ideal")
    ax.plot(c["predicted"], c["apparent"], "b--", lw=1, label="apparent")
    ax.plot(c["predicted"], c["corrected"], "r-", lw=1.5, label=f"bias-corrected (B={validation['n_boot']})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed probability")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def decision_curve_figure(prob: np.ndarray, y: np.ndarray, path: Path, title: str = "") -> Path:
    plt = _plt()
    dc = decision_curve(prob, y)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(dc["threshold"], dc["net_benefit"], "b-", label="model")
    ax.plot(dc["threshold"], dc["treat_all"], "g--", label="treat all")
    ax.plot(dc["threshold"], dc["treat_none"], "k-", lw=0.8, label="treat none")
    ax.set_ylim(-0.05, max(0.05, float(np.max(dc["net_benefit"])) * 1.1))
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
