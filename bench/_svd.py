"""Shared runner of bench/wmh.py and bench/cmb.py: held-out phantoms, every engine of a workflow in one
run, the papers' protocol (neurorad.evaluate.case.protocol_summary) and the seconds per volume.

Per case: the phantom is built (seeded), its image is rescaled by a random scanner factor and a gamma
contrast change, written as NIfTI, and the brain mask is computed once with deepbet (timed); every
engine then runs the whole workflow (neurorad.workflows.runner.execute, no DICOM outputs) with that
brain mask, so the engines see identical inputs. Seconds per volume = brain extraction + the engine's
whole run (load, registration of the priors, engine, measurements, files), wall clock and CPU (all
threads of the process: on a shared machine wall time is inflated by other load, CPU time is not).

The phantoms are synthetic (neurorad.phantom): the figures say how the engines behave on them, not
on patients.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def run_bench(kind: str, contrast: str, workflow_name: str, engines: list[str], specs: list[dict[str, Any]],
              protocol: str, out: Path | None, brain: str = "deepbet",
              on_case: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict[str, Any]:
    from neurorad.evaluate.case import evaluate_case
    from neurorad.evaluate.lesions import PROTOCOLS
    from neurorad.image.nifti import load_nifti, save_nifti
    from neurorad.preprocess.brain_extraction import extract_brain
    from neurorad.workflows import registry
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.runner import execute

    wf = registry.load(workflow_name)
    ptc = PROTOCOLS[protocol]["pred_truth_coverage"]
    rows: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    lesions: dict[str, list[Any]] = {e: [] for e in engines}
    seconds: dict[str, list[float]] = {e: [] for e in engines}
    cpu: dict[str, list[float]] = {e: [] for e in engines}
    brain_s: list[float] = []
    brain_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="neurorad-bench-") as td:
        tmp = Path(td)
        for i, spec in enumerate(specs):
            spec = dict(spec)
            scale, gamma = spec.pop("scanner_scale"), spec.pop("gamma")
            vol, truth, truth_brain = phantom_volume(kind, contrast, spec, scale, gamma)
            path = tmp / f"case{i}.nii.gz"
            save_nifti(vol, path)
            t0, c0 = time.perf_counter(), time.process_time()
            if brain == "truth":
                bmask = truth_brain
            else:
                bmask = np.asarray(extract_brain(load_nifti(path), engine=brain).data, bool)
            brain_s.append(time.perf_counter() - t0)
            brain_cpu.append(time.process_time() - c0)
            for e in engines:
                outd = tmp / f"out_{i}_{e}"
                t0, c0 = time.perf_counter(), time.process_time()
                res = execute(wf, WorkflowInputs({contrast: path}, options={"engine": e, "brain_mask": bmask}), outd,
                              write_outputs=False)
                seconds[e].append(time.perf_counter() - t0 + brain_s[-1])
                cpu[e].append(time.process_time() - c0 + brain_cpu[-1])
                pred = np.asarray(load_nifti(outd / res.mask).data) > 0
                prob = np.clip(np.asarray(load_nifti(outd / res.files["probability"]).data, np.float32), 0, 1)
                row, les = evaluate_case(pred, truth, vol.spacing_mm, prob=prob, pred_truth_coverage=ptc)
                row = {"case": i, "engine": e, "seconds": seconds[e][-1], "cpu_seconds": cpu[e][-1], **spec,
                       "scanner_scale": scale, "gamma": gamma, **row}
                rows[e].append(row)
                lesions[e].append(les)
            if out is not None:  # partial summary after every case (a long run stopped early still reports)
                _write(out, workflow_name, protocol, brain, i + 1, engines, rows, lesions, seconds, cpu, brain_s)
                on_case(f"case {i + 1}/{len(specs)} {e}: dice {row['dice']:.3f}, lesions true "
                        f"{row['n_true_lesions']:.0f} found {row['n_detected_lesions']:.0f} predicted "
                        f"{row['n_pred_lesions']:.0f} FP {row['n_fp_lesions']:.0f}, {seconds[e][-1]:.1f} s")
    return _write(out, workflow_name, protocol, brain, len(specs), engines, rows, lesions, seconds, cpu, brain_s)


def phantom_volume(kind: str, contrast: str, spec: dict[str, Any], scale: float, gamma: float
                   ) -> tuple[Any, np.ndarray, np.ndarray]:
    """One benchmark phantom: its ``contrast`` image under a scanner intensity ``scale`` and ``gamma``, the
    lesion truth and the brain truth (bool arrays on the image grid)."""
    from neurorad.phantom.cases import make_case

    case = make_case(kind, **spec)
    img = case.images[contrast]
    data = np.asarray(img.data, np.float64)
    vol = img.with_data((np.power(np.clip(data, 0, None) / max(data.max(), 1e-9), gamma) * data.max()
                         * scale).astype(np.float32))
    return vol, np.asarray(case.truth[f"truth_{kind}"].data) > 0, np.asarray(case.truth["truth_brain"].data, bool)


def _write(out: Path | None, workflow_name: str, protocol: str, brain: str, n: int, engines: list[str],
           rows: dict, lesions: dict, seconds: dict, cpu: dict, brain_s: list[float]) -> dict[str, Any]:
    from neurorad.evaluate.case import protocol_summary

    summary = {}
    for e in engines:
        s = protocol_summary(rows[e], lesions[e])
        s["seconds_mean"] = float(np.mean(seconds[e]))
        s["seconds_max"] = float(np.max(seconds[e]))
        s["brain_seconds_mean"] = float(np.mean(brain_s))
        s["cpu_seconds_mean"] = float(np.mean(cpu[e]))
        summary[e] = s
    result = {"workflow": workflow_name, "protocol": protocol, "cases": n, "brain": brain,
              "summary": summary, "rows": [r for e in engines for r in rows[e]]}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=float))
    return result


def table(summary: dict[str, dict[str, float]], keys: list[tuple[str, str, str]]) -> str:
    """A markdown table: one row per figure (label, summary key, the paper's value), one column per engine."""
    engines = list(summary)
    lines = ["| figure | paper | " + " | ".join(engines) + " |", "|---|---|" + "---|" * len(engines)]
    for label, key, paper in keys:
        vals = []
        for e in engines:
            v = summary[e].get(key, float("nan"))
            if isinstance(v, str):
                vals.append(v)
                continue
            vals.append("-" if v is None or (isinstance(v, float) and np.isnan(v)) else
                        (f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}"))
        lines.append(f"| {label} | {paper} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def bench_args(doc: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line shared by bench/wmh.py and bench/cmb.py."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20, help="held-out phantoms (default 20)")
    ap.add_argument("--engines", default="", help="comma-separated engines (default: every engine of the workflow)")
    ap.add_argument("--brain", default="deepbet", help="deepbet (as in use) or truth (the phantom's mask)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows and the summary here")
    return ap.parse_args(argv)


def engines_of(workflow_name: str, arg: str) -> list[str]:
    """The engines named in ``arg`` (comma-separated), or every engine of the workflow."""
    from neurorad.workflows import registry

    return [e for e in arg.split(",") if e] or list(registry.load(workflow_name).engines)
