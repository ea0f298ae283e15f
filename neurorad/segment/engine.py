"""Network engines: a registered model (one network or a k-fold ensemble) as a :class:`Segmenter`.

``load_segmenter("name@version")`` verifies the model folder's hashes, rebuilds the networks
from the card and returns a :class:`NetworkSegmenter`. Its ``engine`` is ``torch`` (float32),
``onnx`` (ONNX Runtime on CPU, after ``neurorad model export-onnx``) or ``torch-bf16`` (the network
cast to bfloat16, on CPUs with native bfloat16: AVX512-BF16 or AMX); ``auto`` takes the one the
export measured as fastest among those that reproduced the float32 result (card
``inference.preferred_engine``; ``inference.fallback_engine`` where this CPU lacks bfloat16).

k-fold ensembles: the members' softmax outputs are averaged; the standard deviation of their
foreground probability is returned as the uncertainty map (member disagreement, the signal
the ensemble quality alarms count).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurorad.errors import InputError, ProcessingError
from neurorad.image.volume import Volume
from neurorad.segment.base import Segmentation, check_inputs
from neurorad.segment.inference import InferenceSpec, PreprocessSpec, predict_array, prepare, to_input_grid
from neurorad.segment.networks import ArchSpec, build_network
from neurorad.segment.registry import ModelInfo, find_model, weight_files

WEIGHTS_FORMAT = "neurorad-weights-1"
ENGINES = ("auto", "torch", "onnx", "torch-bf16")


def save_weights(net: torch.nn.Module, path: str | Path) -> None:
    """Save a network's state dict (CPU tensors) in neurorad's weights format."""
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"format": WEIGHTS_FORMAT, "state_dict": sd}, str(path))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file; a corrupt or foreign file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on truncated/garbled files
        raise ProcessingError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ProcessingError(f"{path}: not a neurorad weights file (no state_dict)")
    return obj["state_dict"]


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state dict's names, dtypes, shapes and values (independent of file format)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def build_from_state(arch: ArchSpec, state: dict[str, torch.Tensor], source: str | Path = "") -> torch.nn.Module:
    net = build_network(arch)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ProcessingError(f"{source}: weights do not fit the {arch.architecture} described by the card "
                              f"({str(exc).splitlines()[0][:200]})") from exc
    net.eval()
    return net


def fold_batch_norm(net: torch.nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution into that convolution's weights
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``: inference only, running statistics), in place;
    returns how many were folded.

    The pattern is MONAI's ``Convolution`` block (``conv`` then ``adn`` whose first layer ``N`` is the
    norm, the U-Nets' "NDA" order). Why: on 2 cores batch norm was 17 % of the 2D U-Net's time
    (16 slices of 256 x 256, bfloat16; cProfile), a memory pass per layer that the folded
    convolution does for free. Instance norms (statistics of the input itself) cannot be folded
    and are left alone, as are other architectures' blocks.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    for m in net.modules():
        conv, adn = getattr(m, "conv", None), getattr(m, "adn", None)
        bn = getattr(adn, "N", None)
        plain_conv = (isinstance(conv, torch.nn.modules.conv._ConvNd)
                      and not isinstance(conv, torch.nn.modules.conv._ConvTransposeNd))
        if (plain_conv and isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) and bn.track_running_stats
                and next(iter(adn.children())) is bn):
            m.conv = fuse_conv_bn_eval(conv.eval(), bn.eval())
            adn.N = torch.nn.Identity()
            n += 1
    return n


def channels_last_forward(net: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` (in eval mode) in channels-last memory format with its batch norms folded
    (:func:`fold_batch_norm`), as a callable that converts its input batch too.

    oneDNN's convolutions run about 1.5-2x faster on CPU in this layout (measured on 2 cores for the
    2D U-Net, 16-256 channels, 256 x 256 slices; outputs equal to 1e-6); the logits are the same tensor values.
    """
    fold_batch_norm(net.eval())
    dims = next((m.weight.ndim - 2 for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), 2)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    net = net.to(memory_format=fmt)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x.contiguous(memory_format=fmt))

    forward.module = net  # type: ignore[attr-defined]
    return forward


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles, as oneDNN uses them);
    elsewhere bfloat16 convolutions are emulated and slower than float32, so the engine is refused."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch: no such probes
        return False


def bf16_forward(net: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` with weights and activations in bfloat16 (channels-last), returning float32 logits.

    Why not ``torch.autocast``: autocast re-casts the weights of every layer at every call; on 2 cores
    the 2D U-Net (16-256 channels, 16 slices of 256 x 256) took 0.65 s per batch with autocast, 0.29 s
    with the weights cast once (float32 channels-last: 1.0 s), with the same softmax to 4e-4. Batch
    norms are folded into the convolutions first (:func:`fold_batch_norm`); the sliding window's
    Gaussian blending and the softmax stay float32.
    Whether a model keeps its accuracy in bfloat16 is checked per model at export
    (:func:`neurorad.segment.onnx_engine.export_model_onnx`) before ``auto`` may choose it.
    """
    if not bf16_supported():
        raise InputError("engine torch-bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                         "use torch or onnx")
    fold_batch_norm(net.eval())  # folded in float32, then cast
    dims = next((m.weight.ndim - 2 for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), 2)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    net = net.to(torch.bfloat16).to(memory_format=fmt)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(torch.bfloat16).contiguous(memory_format=fmt)).float()

    forward.module = net  # type: ignore[attr-defined]
    return forward


class NetworkSegmenter:
    """One network or a k-fold ensemble behind the :class:`Segmenter` protocol."""

    def __init__(self, forwards: list[Callable[[torch.Tensor], torch.Tensor]], arch: ArchSpec,
                 preprocessing: PreprocessSpec, inference: InferenceSpec, labels: dict[int, str],
                 contrasts: Sequence[str], name: str = "unnamed", version: str = "0.0.0",
                 weights_sha256: str | None = None, engine: str = "torch") -> None:
        if not forwards:
            raise ValueError("no networks")
        if len(contrasts) != arch.in_channels:
            raise ValueError(f"{len(contrasts)} contrasts but the network takes {arch.in_channels} channel(s)")
        if len(labels) != arch.out_channels:
            raise ValueError(f"{len(labels)} labels but the network gives {arch.out_channels} classes")
        self.forwards = forwards
        self.arch = arch
        self.preprocessing = preprocessing
        self.inference = inference
        self.labels = dict(labels)
        self.contrasts = tuple(contrasts)
        self.name = name
        self.version = version
        self._weights = weights_sha256
        self.engine = engine

    @property
    def weights_sha256(self) -> str | None:
        return self._weights

    def predict_prepared(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean class probabilities ``[K, i, j, k]`` and member disagreement (None for one member)
        on the working grid of an already prepared array."""
        probs = []
        for f in self.forwards:
            probs.append(predict_array(f, arr, self.arch, self.inference))
        if len(probs) == 1:
            return probs[0], None
        stack = np.stack(probs)
        return stack.mean(0), (1.0 - stack[:, 0]).std(0).astype(np.float32)

    def predict(self, volumes: Sequence[Volume] | Volume) -> Segmentation:
        vols = check_inputs(volumes, self.contrasts, f"model {self.name} {self.version}")
        t0 = time.perf_counter()
        arr, _, grid = prepare(vols, self.preprocessing)
        t1 = time.perf_counter()
        with torch.inference_mode():
            prob, unc = self.predict_prepared(arr)
        t2 = time.perf_counter()
        ref = vols[0]
        out = to_input_grid(prob, grid, ref)
        unc_vol = None
        if unc is not None:
            unc_vol = Volume(to_input_grid(np.stack([1.0 - unc, unc]), grid, ref)[..., 1], ref.affine.copy(),
                             {"uncertainty": "std of ensemble members' foreground probability"})
        record: dict[str, Any] = {
            "engine": self.engine, "name": self.name, "version": self.version, "weights_sha256": self._weights,
            "architecture": self.arch.architecture, "members": len(self.forwards),
            "mirror_tta": self.inference.mirror_tta,
            **({"mirror_axes": list(self.inference.mirror_axes)}
               if self.inference.mirror_tta and self.inference.mirror_axes is not None else {}),
            "seconds": {"preprocess": round(t1 - t0, 3), "network": round(t2 - t1, 3),
                        "resample": round(time.perf_counter() - t2, 3)},
        }
        return Segmentation(Volume(out, ref.affine.copy(), {}), self.labels, unc_vol, record)


def _labels(card: dict[str, Any]) -> dict[int, str]:
    return {int(k): str(v) for k, v in card["labels"].items()}


def segmenter_from_model(info: ModelInfo, engine: str = "auto", mirror_tta: bool | None = None,
                         threads: int | None = None, mirror_axes: Sequence[int] | None = None) -> NetworkSegmenter:
    """A :class:`NetworkSegmenter` for a verified registry model. ``mirror_tta`` overrides the card's test-time
    mirroring; ``mirror_axes`` (spatial axes of the RAS working grid) mirrors only those, and ``()`` none
    (:class:`~neurorad.segment.inference.InferenceSpec`)."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    card = info.card
    arch = ArchSpec.from_dict(card["architecture"])
    prep = PreprocessSpec.from_dict(card["preprocessing"])
    inf = InferenceSpec.from_dict(card.get("inference", {}))
    if mirror_tta is not None:
        inf = InferenceSpec(inf.patch_size, inf.overlap, mirror_tta, inf.batch_size, inf.mirror_axes)
    if mirror_axes is not None:
        axes = tuple(int(a) for a in mirror_axes)
        inf = InferenceSpec(inf.patch_size, inf.overlap, bool(axes), inf.batch_size, axes or None)
    onnx_files = sorted(f for f in card["files"] if f.endswith(".onnx"))
    if engine == "auto":
        engine = card.get("inference", {}).get("preferred_engine", "torch")
        if engine == "torch-bf16" and not bf16_supported():  # measured on another CPU
            engine = card.get("inference", {}).get("fallback_engine", "torch")
        if engine == "onnx" and not onnx_files:
            engine = "torch"
    if engine == "onnx":
        from neurorad.segment.onnx_engine import onnx_forward

        if not onnx_files:
            raise InputError(f"model {info.name} {info.version} has no ONNX export; run "
                             f"`neurorad model export-onnx {info.name}@{info.version}`", info.path)
        forwards = [onnx_forward(info.path / f, threads) for f in onnx_files]
    else:
        files = weight_files(card)
        if not files:
            raise InputError("model lists no weight files (*.pt)", info.path)
        wrap = bf16_forward if engine == "torch-bf16" else channels_last_forward
        forwards = [wrap(build_from_state(arch, load_weights(info.path / f), info.path / f)) for f in files]
    return NetworkSegmenter(forwards, arch, prep, inf, _labels(card), card["contrasts"], info.name, info.version,
                            info.weights_sha256, engine)


def open_model_reference(ref: str, mirror_axes: Sequence[int] | None = None) -> Any:
    """The Segmenter a workflow's engine option names: ``nnunet:FOLDER`` is a site's nnU-Net v2 results folder
    (:class:`neurorad.segment.nnunet.NnUNetSegmenter`, nnU-Net's own predictor, which mirrors as its plans say);
    anything else a registry ``name[@version]`` or model folder (:func:`load_segmenter`, the faster recorded
    engine), with ``mirror_axes`` its test-time mirroring when given (:func:`segmenter_from_model`)."""
    if ref.startswith("nnunet:"):
        from neurorad.segment.nnunet import NnUNetSegmenter

        return NnUNetSegmenter(ref.split(":", 1)[1])
    return load_segmenter(ref, engine="auto", mirror_axes=mirror_axes)


def load_segmenter(ref: str | Path, engine: str = "auto", mirror_tta: bool | None = None,
                   version: str | None = None, mirror_axes: Sequence[int] | None = None) -> NetworkSegmenter:
    """A registered model (path, ``name`` or ``name@version``) ready to ``predict``; refuses a
    model whose files changed since their hashes were recorded. ``mirror_tta``, ``mirror_axes``: the test-time
    mirroring (:func:`segmenter_from_model`)."""
    return segmenter_from_model(find_model(str(ref), version), engine, mirror_tta, mirror_axes=mirror_axes)
