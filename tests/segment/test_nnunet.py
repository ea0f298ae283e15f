"""nnU-Net v2 adapter against a model that nnU-Net itself trains here (tiny, CPU, seconds).

The oracle is nnU-Net's own file-to-file prediction (``nnUNetPredictor.predict_from_files_sequential``,
its SimpleITK reader and writer) on the same image: the adapter hands nnU-Net arrays instead of
files, so any axis, spacing or geometry slip between neurorad's volumes and nnU-Net's conventions
shows up as a difference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurorad.errors import InputError, ProcessingError
from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.segment.planted import grid, random_scene, render_scene

pytest.importorskip("nnunetv2", reason="nnunetv2 is installed by `make install` (see Makefile)")

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def nnunet_results(planted_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nnU-Net's results folder after nnU-Net trained 1 epoch of 2 iterations on the planted dataset."""
    work = tmp_path_factory.mktemp("nnunet")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(HERE / "nnunet_tiny.py"), str(planted_dataset.parent), "900", str(work)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return Path(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_nnunet_trained_model_predicts_through_adapter_on_input_grid(nnunet_results, tmp_path):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from neurorad.segment.nnunet import NnUNetSegmenter

    assert (nnunet_results / "plans.json").is_file() and (nnunet_results / "fold_0" / "checkpoint_final.pth").is_file()
    # an image on another grid than training: other spacing and shape, two axes flipped
    shape, aff = grid((38, 30, 26), (1.2, 1.4, 1.8), axcodes_flip=(True, True, False))
    img, _ = render_scene(random_scene(np.random.default_rng(7), 36.0), shape, aff, seed=3)
    path = save_nifti(img, tmp_path / "in" / "case_0000.nii.gz")
    vol = load_nifti(path)

    seg = NnUNetSegmenter(nnunet_results, folds=(0,), mirror_tta=False)
    res = seg.predict([vol])
    prob = np.asarray(res.probabilities.data)
    assert prob.shape == (*vol.spatial_shape, 2)
    assert np.allclose(res.probabilities.affine, vol.affine)
    assert np.allclose(prob.sum(-1), 1.0, atol=1e-4)
    assert res.record["engine"] == "nnunetv2" and len(res.record["weights_sha256"]) == 64

    oracle = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                             perform_everything_on_device=False, device=torch.device("cpu"),
                             verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    oracle.initialize_from_trained_model_folder(str(nnunet_results), use_folds=(0,),
                                                checkpoint_name="checkpoint_final.pth")
    out = tmp_path / "out"
    out.mkdir()
    oracle.predict_from_files_sequential([[str(path)]], [str(out / "case")], save_probabilities=True)
    ref_labels = load_nifti(out / "case.nii.gz")
    assert np.allclose(ref_labels.affine, vol.affine, atol=1e-4)
    ref_prob = np.load(out / "case.npz")["probabilities"].transpose(3, 2, 1, 0)  # nnU-Net [K, z, y, x]
    assert np.abs(ref_prob - prob).max() < 1e-4
    assert np.array_equal(np.asarray(res.label_map().data), np.asarray(ref_labels.data))

    # a variant trainer (nnU-Net's own search would stop at the Primus trainers, which need timm): found
    variant = tmp_path / "variant" / nnunet_results.name
    shutil.copytree(nnunet_results, variant)
    ck = torch.load(variant / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ck["trainer_name"] = "nnUNetTrainerNoMirroring"
    torch.save(ck, variant / "fold_0" / "checkpoint_final.pth")
    res_v = NnUNetSegmenter(variant, mirror_tta=False).predict([vol])
    assert np.abs(np.asarray(res_v.probabilities.data) - prob).max() < 1e-5
    ck["trainer_name"] = "NoSuchTrainer"
    torch.save(ck, variant / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ProcessingError, match="'NoSuchTrainer' not found"):
        NnUNetSegmenter(variant).predict([vol])
    (variant / "fold_0" / "checkpoint_final.pth").write_bytes(b"truncated")
    with pytest.raises(ProcessingError, match="corrupt or not an nnU-Net checkpoint"):
        NnUNetSegmenter(variant).predict([vol])

    # the same folder without its plans: a clear error naming the folder and the missing file
    broken = tmp_path / "noplans" / nnunet_results.name
    shutil.copytree(nnunet_results, broken)
    (broken / "plans.json").unlink()
    with pytest.raises(InputError, match="plans.json missing") as exc:
        NnUNetSegmenter(broken)
    assert str(broken) in str(exc.value)


@pytest.mark.slow
def test_site_nnunet_model_as_haematoma_engine(nnunet_results, tmp_path):
    """A site's nnU-Net results folder named as the ich workflow's engine (``nnunet:FOLDER``, issue 14): the
    mask lies on the input grid, holds only voxels nnU-Net calls foreground (or holes they enclose) inside
    the brain, and the provenance names nnU-Net's model."""
    from scipy import ndimage

    from neurorad.segment.haematoma import engine_record, learned_haematoma, learned_segmenter

    shape, aff = grid((36, 32, 24), (1.5, 1.5, 2.0), axcodes_flip=(False, True, False))
    img, _ = render_scene(random_scene(np.random.default_rng(11), 34.0), shape, aff, seed=5)
    vol = load_nifti(save_nifti(img, tmp_path / "ct.nii.gz"))
    brain = vol.with_data(np.ones(vol.spatial_shape, np.uint8))
    brain.data[:4] = 0  # a slab outside the brain: nothing may be called haematoma there
    engine = f"nnunet:{nnunet_results}"
    mask, record = learned_haematoma(vol, brain, engine, min_component_ml=0.0)
    assert mask.spatial_shape == vol.spatial_shape and np.allclose(mask.affine, vol.affine)
    seg = learned_segmenter(engine)
    assert type(seg).__name__ == "NnUNetSegmenter"  # nnU-Net's own predictor, not a neurorad network
    fg = np.asarray(seg.predict([vol]).probabilities.data)[..., 1:].sum(-1) >= 0.5
    m = np.asarray(mask.data) > 0
    assert not (m & ~ndimage.binary_fill_holes(fg & (np.asarray(brain.data) > 0))).any()
    assert not m[:4].any()
    assert (m == ndimage.binary_fill_holes(fg & (np.asarray(brain.data) > 0))).all()
    rec = engine_record(engine)
    assert rec["kind"] == "learned" and rec["name"] == record["name"] and len(rec["sha256"]) == 64
