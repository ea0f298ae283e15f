"""The phantom anatomy agrees with independent real templates it was not built from."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from neurorad import resources
from neurorad.image import Volume, resample_to_reference
from neurorad.image.masks import dice
from neurorad.phantom import load_anatomy


def test_tissue_maps_match_deepmriprep_three_class_template():
    anat = load_anatomy()
    img = nib.load(str(resources.deepmriprep_template()))
    ref = np.asarray(img.dataobj).astype(np.float32)
    for channel, tissue in ((0, "gm"), (1, "wm")):
        ours = resample_to_reference(Volume(np.array(anat.fractions[tissue]), anat.affine),
                                     (ref.shape[:3], img.affine), "linear").data
        theirs = ref[..., channel] / ref[..., channel].max()
        assert dice(ours > 0.5, theirs > 0.5) > 0.78, tissue


def test_brain_matches_colin27_brain_and_fractions_are_valid():
    anat = load_anatomy()
    colin_brain = np.asarray(nib.load(str(resources.colin27_brain())).dataobj) > 0
    assert dice(anat.brain_mask, colin_brain) > 0.9
    total = sum(anat.fractions.values())
    assert float(total.max()) <= 1.0 + 1e-5 and float(total.min()) >= 0.0
    assert np.all(total[anat.brain_mask] > 0.99)  # brain voxels are fully accounted for
    # parenchyma volume in litres: MNI space is larger than an average head (1.2-1.9 L)
    assert 1.2 < float((anat.fractions["gm"] + anat.fractions["wm"]).sum()) / 1e6 < 1.9
    # two lateral ventricles of 10-30 mL each
    from scipy import ndimage

    lab, n = ndimage.label(anat.regions["ventricles"])
    sizes = sorted(ndimage.sum(anat.regions["ventricles"], lab, range(1, n + 1)))
    assert n == 2 and 10_000 < sizes[0] and sizes[1] < 30_000
    # skull surrounds the brain: along the midline above the vertex we meet bone
    i = 90  # x = 0 mm on the Colin27 grid
    column = anat.fractions["bone"][i, 108, :]
    top_brain = np.max(np.nonzero(anat.brain_mask[i, 108, :]))
    assert column[top_brain + 1: top_brain + 15].max() > 0.5


def test_disk_cache_of_placement_masks_is_exact(tmp_path, monkeypatch):
    from neurorad.phantom import anatomy as mod

    anat = load_anatomy()
    gm, wm, csf = (np.array(anat.fractions[t]) for t in ("gm", "wm", "csf"))
    brain = np.array(anat.brain_mask)
    fresh = mod._placement_masks(brain, gm, wm, csf)
    monkeypatch.setenv("NEURORAD_CACHE", str(tmp_path))
    first = mod._cached_masks(brain, gm, wm, csf)  # computes and writes
    assert len(list(tmp_path.glob("phantom-*.npz"))) == 1
    second = mod._cached_masks(brain, gm, wm, csf)  # reads
    for k in fresh:
        np.testing.assert_array_equal(first[k], fresh[k])
        np.testing.assert_array_equal(second[k], fresh[k])
        if k != "near":
            np.testing.assert_array_equal(anat.regions[k], fresh[k])
