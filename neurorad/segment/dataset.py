"""Training datasets in the nnU-Net v2 raw layout (Isensee et al., Nat Methods 2021).

::

    Dataset001_Name/
      dataset.json        {"channel_names": {"0": "FLAIR", ...}, "labels": {"background": 0, "lesion": 1},
                           "numTraining": N, "file_ending": ".nii.gz"}
      imagesTr/<case>_0000.nii.gz, <case>_0001.nii.gz ...   one file per channel (contrast)
      labelsTr/<case>.nii.gz                                integer labels

This is the layout sites already use for nnU-Net, so a site's dataset trains here unchanged and
a dataset written here trains in nnU-Net unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurorad.atomic import atomic_dir
from neurorad.errors import InputError
from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume


@dataclass(frozen=True)
class RawDataset:
    """A dataset in the nnU-Net raw layout (paths only; images load on demand)."""

    root: Path
    channel_names: tuple[str, ...]
    labels: dict[int, str]
    cases: tuple[str, ...]
    file_ending: str = ".nii.gz"

    def image_paths(self, case: str) -> list[Path]:
        return [self.root / "imagesTr" / f"{case}_{c:04d}{self.file_ending}" for c in range(len(self.channel_names))]

    def label_path(self, case: str) -> Path:
        return self.root / "labelsTr" / f"{case}{self.file_ending}"

    def load_case(self, case: str) -> tuple[list[Volume], Volume]:
        imgs = [load_nifti(p) for p in self.image_paths(case)]
        lab = load_nifti(self.label_path(case))
        lab_arr = np.asarray(lab.data)
        if lab_arr.size and (lab_arr.min() < 0 or lab_arr.max() >= len(self.labels)):
            raise InputError(f"label values {int(lab_arr.min())}..{int(lab_arr.max())} outside the "
                             f"{len(self.labels)} labels of dataset.json", self.label_path(case))
        return imgs, lab


def read_meta_json(folder: Path, name: str, missing: str) -> dict:
    """``folder/name`` parsed, or an :class:`InputError` naming the file: ``missing`` (what the folder is not)
    when it is absent, the parser's message when it is not JSON."""
    path = folder / name
    if not path.is_file():
        raise InputError(f"{missing}: {name} missing", folder)
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{name} is not valid JSON ({exc})", path) from exc


def read_dataset(root: str | Path) -> RawDataset:
    """Read and check a dataset folder: dataset.json, every case has every channel and a label."""
    root = Path(root)
    dj = root / "dataset.json"
    meta = read_meta_json(root, "dataset.json", "not an nnU-Net raw dataset")
    for key in ("channel_names", "labels"):
        if key not in meta:
            raise InputError(f"dataset.json lacks {key!r}", dj)
    ending = meta.get("file_ending", ".nii.gz")
    chans = tuple(str(meta["channel_names"][k]) for k in sorted(meta["channel_names"], key=int))
    labels = {int(v): str(k) for k, v in meta["labels"].items() if not isinstance(v, list)}
    if sorted(labels) != list(range(len(labels))) or labels.get(0) is None:
        raise InputError("dataset.json labels must be 0..K-1 with 0 = background", dj)
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise InputError("imagesTr/ or labelsTr/ missing", root)
    cases = sorted(p.name[: -len(ending)] for p in lab_dir.iterdir() if p.name.endswith(ending))
    if not cases:
        raise InputError(f"no labels (*{ending}) in labelsTr", lab_dir)
    ds = RawDataset(root, chans, labels, tuple(cases), ending)
    for c in cases:
        missing = [p.name for p in ds.image_paths(c) if not p.is_file()]
        if missing:
            raise InputError(f"case {c}: missing image file(s) {', '.join(missing)} "
                             f"(expected {len(chans)} channel(s): {', '.join(chans)})", img_dir)
    if "numTraining" in meta and int(meta["numTraining"]) != len(cases):
        raise InputError(f"dataset.json says numTraining={meta['numTraining']} but labelsTr holds {len(cases)}", dj)
    return ds


def write_dataset(out: str | Path, cases: Iterable[tuple[str, list[Volume], Volume]], channel_names: list[str],
                  labels: dict[int, str], description: str = "", overwrite: bool = False,
                  extra: dict | None = None) -> RawDataset:
    """Write ``(case_id, [image per channel], label)`` tuples as an nnU-Net raw dataset, atomically."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError("output folder exists and is not empty (use --overwrite)", out)
    n = 0
    with atomic_dir(out) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for case_id, images, label in cases:
            if len(images) != len(channel_names):
                raise ValueError(f"case {case_id}: {len(images)} images for {len(channel_names)} channels")
            for c, img in enumerate(images):
                path = tmp / "imagesTr" / f"{case_id}_{c:04d}.nii.gz"
                save_nifti(img.with_data(np.asarray(img.data, np.float32)), path)
            save_nifti(label.with_data(np.asarray(label.data, np.uint8)), tmp / "labelsTr" / f"{case_id}.nii.gz")
            n += 1
        meta = {"channel_names": {str(i): c for i, c in enumerate(channel_names)},
                "labels": {name: int(k) for k, name in sorted(labels.items())},
                "numTraining": n, "file_ending": ".nii.gz", "description": description, **(extra or {})}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return read_dataset(out)
