"""Outputs of the radiogenomics protocol: CSV tables, bar charts (paper Figs. 5-7) and an HTML report.

Everything is written into a temporary folder beside the destination and moved in at the
end, so an interrupted run never leaves a half-written result that looks complete.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from neurorad.genomics.protocol import METRICS, anova_between_classifiers, paper_table, summarize


def bar_chart(summary: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    """Grouped bars: DER size on x, one bar per classifier, error bars = SD over splits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary[summary["metric"] == metric]
    sizes = sorted(s["n_genes"].unique())
    clfs = list(dict.fromkeys(s["classifier"]))
    width = 0.8 / max(len(clfs), 1)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, c in enumerate(clfs):
        sc = s[s["classifier"] == c].set_index("n_genes").reindex(sizes)
        x = np.arange(len(sizes)) + (i - (len(clfs) - 1) / 2) * width
        ax.bar(x, sc["mean"], width, yerr=sc["sd"].fillna(0.0), capsize=2, label=c)
    ax.set_xticks(np.arange(len(sizes)), [str(k) for k in sizes])
    ax.set_xlabel("number of DERs")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    results: pd.DataFrame, out_dir: str | Path, target: str, meta: dict, radiomics_anova: pd.DataFrame | None = None
) -> dict[str, Path]:
    """results.csv, summary.csv, anova.csv, one PNG per metric (and group), report.html.

    ``radiomics_anova`` (feature x target ANOVA p-values) is written as radiomics_anova.csv and shown.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".radiogenomics-", dir=out.parent))
    try:
        summary = summarize(results)
        anova = anova_between_classifiers(results)
        results.to_csv(tmp / "results.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        anova.to_csv(tmp / "anova.csv", index=False)
        if radiomics_anova is not None:
            radiomics_anova.to_csv(tmp / "radiomics_anova.csv", index_label="feature")
        groups = sorted(results["group"].unique()) if "group" in results.columns else [None]
        figs: list[str] = []
        for g in groups:
            sg = summary if g is None else summary[summary["group"] == g]
            for m in METRICS:
                name = f"bar_{m}.png" if g is None else f"bar_{m}_{g}.png"
                bar_chart(sg, m, tmp / name, f"{target}: {m.replace('_', ' ')}" + ("" if g is None else f" ({g})"))
                figs.append(name)
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>Radiogenomics report</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #bbb;padding:3px 6px}</style></head><body>",
            f"<h1>Radiogenomics classifiers: {html.escape(target)}</h1>",
            "<p>" + "; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items()) + "</p>",
            "<p>Mean ± SD over splits; last row: one-way ANOVA p-value between classifiers "
            "(the layout of the paper's Tables 2-4).</p>",
        ]
        for g in groups:
            if g is not None:
                parts.append(f"<h2>Group {html.escape(str(g))}</h2>")
            for k in sorted(results["n_genes"].unique()):
                parts.append(f"<h3>{k} DERs</h3>")
                parts.append(paper_table(summary, anova, int(k), g).to_html(escape=True))
        if radiomics_anova is not None:
            parts.append("<h2>Radiomics features: one-way ANOVA p-value against the target</h2>")
            parts.append(radiomics_anova.map(lambda v: f"{v:.3g}").to_html())
        if "group" in results.columns:
            parts.append("<h2>Group comparison (mean balanced accuracy, all DER sizes)</h2>")
            comp = summary[summary["metric"] == "balanced_accuracy"].pivot_table(
                index=["classifier", "n_genes"], columns="group", values="mean")
            parts.append(comp.round(3).to_html())
        parts.append("<h2>Figures</h2>")
        parts += [f"<p><img src='{f}' alt='{f}'></p>" for f in figs]
        parts.append("</body></html>")
        (tmp / "report.html").write_text("\n".join(parts), encoding="utf-8")
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
            written[f.name] = out / f.name
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
