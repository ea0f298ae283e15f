"""ONNX export of registered models and an ONNX Runtime forward pass (CPU).

``export_model_onnx(folder)`` writes ``fold_<i>.onnx`` beside each ``fold_<i>.pt`` (fixed patch
size, dynamic batch; the sliding window always feeds whole patches), checks that ONNX Runtime
reproduces the torch logits, times the engines on one batch of windows and records the fastest
as the card's ``inference.preferred_engine`` (what ``engine="auto"`` runs). On a CPU with native
bfloat16 it also times ``torch-bf16`` (:func:`neurorad.segment.engine.bf16_forward`), which may
be preferred only if its class probabilities on the same batch stay within ``bf16_tolerance`` of
float32 (a tenth of the smallest probability of the card's ``operating_point`` where it has one:
:func:`bf16_tolerance_for`) and its arg-max agrees on at least ``BF16_MIN_AGREEMENT`` of the voxels; the faster float32
engine is recorded as ``inference.fallback_engine`` for CPUs without bfloat16. The card's file
hashes are updated, so a changed export refuses to run like changed weights.

The voxel check is strict on purpose: it refuses bfloat16 when any voxel of one test batch moves by more than
the tolerance. A model's workflow may show instead that its results do not change with bfloat16 (the same
lesions on a benchmark); :func:`accept_bf16` then records that evidence on the card and prefers ``torch-bf16``
(``neurorad model accept-bf16``), keeping the float32 fallback for CPUs without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurorad.errors import InputError, ProcessingError
from neurorad.segment.networks import ArchSpec
from neurorad.segment.registry import finalize_folder, open_model, weight_files


def onnx_forward(path: str | Path, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable mapping a float32 batch tensor to logits through an ONNX Runtime CPU session, on ``threads``
    intra-op threads (default: torch's own count, so ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` bound
    both engines alike; ONNX Runtime's own default would take every core whatever the caller set)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
        raise ProcessingError("onnxruntime is not installed") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ProcessingError(f"{path}: cannot load ONNX model ({type(exc).__name__})") from exc
    name = sess.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = sess.run(None, {name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)

    forward.session = sess  # type: ignore[attr-defined]
    return forward


def export_network(net: torch.nn.Module, arch: ArchSpec, patch: tuple[int, ...], path: str | Path) -> None:
    """Export ``net`` for inputs ``[batch, channels, *patch]`` (batch dynamic) to ONNX (opset 17)."""
    import warnings

    dummy = torch.zeros(2, arch.net_in_channels, *patch[: arch.spatial_dims])
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constant folding and instance norm
        torch.onnx.export(net, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


#: torch-bf16 is eligible for ``auto`` only if its arg-max equals float32's on this fraction of the check voxels
BF16_MIN_AGREEMENT = 0.999


def bf16_tolerance_for(card: dict[str, Any], default: float = 0.05) -> float:
    """The largest probability change bfloat16 may make for this model: ``default``, or a tenth of the smallest
    probability in the card's ``operating_point`` where it has one (a model thresholded at given probabilities,
    e.g. the MS learned engine's anchors of 0.08: a bfloat16 change of 0.038, measured on ms-unet3d, would move
    where a lesion ends)."""
    def numbers(v: Any) -> list[float]:
        if isinstance(v, dict):
            return [x for w in v.values() for x in numbers(w)]
        if isinstance(v, list | tuple):
            return [x for w in v for x in numbers(w)]
        return [float(v)] if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1 else []

    anchors = numbers(card.get("operating_point", {}))
    return min(default, min(anchors) / 10) if anchors else default


def export_model_onnx(folder: str | Path, repeats: int = 3, tolerance: float = 1e-3,
                      bf16_tolerance: float = 0.05) -> dict[str, Any]:
    """Export every member of the model in ``folder`` to ONNX, verify and time it (see module doc)."""
    from neurorad.segment.engine import (
        bf16_forward,
        bf16_supported,
        build_from_state,
        channels_last_forward,
        load_weights,
    )
    from neurorad.segment.inference import InferenceSpec

    info = open_model(folder, check=True)
    card = dict(info.card)
    arch = ArchSpec.from_dict(card["architecture"])
    inf = InferenceSpec.from_dict(card.get("inference", {}))
    files = weight_files(card)
    if not files:
        raise InputError("model lists no weight files (*.pt) to export", info.path)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(inf.batch_size, arch.net_in_channels,
                                                                *inf.patch_size[: arch.spatial_dims]))
                         .astype(np.float32))
    bf16 = bf16_supported()
    diffs, t_torch, t_onnx, t_bf16, bf16_diffs, bf16_agree = [], 0.0, 0.0, 0.0, [], []
    for f in files:
        net = build_from_state(arch, load_weights(info.path / f), info.path / f)
        out = info.path / (Path(f).stem + ".onnx")
        export_network(net, arch, inf.patch_size, out)
        fwd = onnx_forward(out)
        with torch.inference_mode():
            ref = net(x)
            diffs.append(float((fwd(x) - ref).abs().max()))
            fast = channels_last_forward(net)  # the torch engine's own forward (engine.segmenter_from_model)
            t_torch += _time(lambda fast=fast: fast(x), repeats)
            if bf16:  # last: bf16_forward casts this member's network in place
                p_ref = torch.softmax(ref, 1)
                half = bf16_forward(net)
                p_half = torch.softmax(half(x), 1)
                bf16_diffs.append(float((p_half - p_ref).abs().max()))
                bf16_agree.append(float((p_half.argmax(1) == p_ref.argmax(1)).float().mean()))
                t_bf16 += _time(lambda half=half: half(x), repeats)
        t_onnx += _time(lambda fwd=fwd: fwd(x), repeats)
    max_diff = max(diffs)
    if max_diff > tolerance:
        for f in files:
            (info.path / (Path(f).stem + ".onnx")).unlink(missing_ok=True)
        raise ProcessingError(f"ONNX export of {info.name} differs from torch by {max_diff:.2e} (> {tolerance}); "
                              "not kept")
    fallback = "onnx" if t_onnx < t_torch else "torch"
    preferred = fallback
    report: dict[str, Any] = {"max_abs_diff": max_diff, "torch_s": round(t_torch, 4), "onnx_s": round(t_onnx, 4),
                              "batch": list(x.shape)}
    if bf16:
        bf16_tol = bf16_tolerance_for(card, bf16_tolerance)
        ok = max(bf16_diffs) <= bf16_tol and min(bf16_agree) >= BF16_MIN_AGREEMENT
        report.update({"bf16_s": round(t_bf16, 4), "bf16_max_prob_diff": round(max(bf16_diffs), 5),
                       "bf16_tolerance": round(bf16_tol, 6),
                       "bf16_argmax_agreement": round(min(bf16_agree), 6), "bf16_accepted": ok})
        if ok and t_bf16 < min(t_torch, t_onnx):
            preferred = "torch-bf16"
    report.update({"preferred_engine": preferred, "fallback_engine": fallback,
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    import onnxruntime as ort

    report["onnxruntime"] = ort.__version__
    card["inference"] = {**card.get("inference", {}), "preferred_engine": preferred, "fallback_engine": fallback,
                         "onnx_export": report}
    finalize_folder(info.path, card)
    return report


def accept_bf16(folder: str | Path, evidence: str) -> dict[str, Any]:
    """Prefer ``torch-bf16`` for the model in ``folder`` on the evidence of a check at the level of its workflow's
    results, when the export's voxel check (:func:`export_model_onnx`) refused it: ``evidence`` (the benchmark's
    command and what it showed, e.g. the same lesions on N pairs) is written on the card's ``onnx_export`` as
    ``bf16_accepted_by``. Needs an export that timed bfloat16 on this kind of CPU (``bf16_s``) faster than the
    float32 fallback engine, which stays the engine of CPUs without native bfloat16. Returns the export record;
    the weights' hashes are unchanged (the folder is verified first, so a changed file is never re-blessed)."""
    info = open_model(folder, check=True)
    card = dict(info.card)
    inf = dict(card.get("inference") or {})
    rep = dict(inf.get("onnx_export") or {})
    if "bf16_s" not in rep:
        raise InputError("the card has no bfloat16 timing: run `neurorad model export-onnx` on a CPU with native "
                         "bfloat16 first", info.path)
    fallback = str(inf.get("fallback_engine") or rep.get("fallback_engine") or "onnx")
    t_fallback = rep.get(f"{fallback}_s")
    if t_fallback is not None and not float(rep["bf16_s"]) < float(t_fallback):
        raise InputError(f"torch-bf16 ({rep['bf16_s']} s per window batch) is not faster than the {fallback} engine "
                         f"({t_fallback} s): nothing to gain", info.path)
    if not evidence.strip():
        raise InputError("accepting bfloat16 needs the evidence: the check of the workflow's results (command and "
                         "outcome)", info.path)
    rep.update({"bf16_accepted": True, "bf16_accepted_by": evidence.strip(), "preferred_engine": "torch-bf16",
                "fallback_engine": fallback})
    card["inference"] = {**inf, "preferred_engine": "torch-bf16", "fallback_engine": fallback, "onnx_export": rep}
    finalize_folder(info.path, card)
    return rep
