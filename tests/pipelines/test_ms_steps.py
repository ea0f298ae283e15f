"""Each step of the MS workflow run alone on a context built by hand (fast, synthetic arrays).

Oracles: a bright ball added at follow-up is the one new lesion (analytic volume); the
centroid is moved by the known common -> follow-up translation; the atlas store returns what
was stored; the two time points really run in two threads.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from neurorad.image.volume import Volume
from neurorad.pipelines import ms_lesions as ms
from neurorad.preprocess.transforms import AffineTransform
from neurorad.segment.ms_difference import REASON_DRIFT


def _ball(shape, centre, r):
    g = np.indices(shape).astype(float)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= r * r


def _context(tmp_path, lesion: bool = True) -> ms.MSContext:
    rng = np.random.default_rng(3)
    shape = (48, 48, 48)
    brain = _ball(shape, (24, 24, 24), 22)
    tissue = np.where(_ball(shape, (24, 24, 24), 16), 1.0, 1.35)  # "white matter" inside a "grey" shell
    b = np.where(brain, tissue + 0.02 * rng.standard_normal(shape), 0).astype(np.float32)
    f = np.where(brain, tissue + 0.02 * rng.standard_normal(shape), 0).astype(np.float32)
    if lesion:
        f[_ball(shape, (24, 20, 26), 3.5)] = 1.6
    cfg = replace(ms.MSConfig(), atlas=False, write_report=False, write_dicom=False)
    ctx = ms.MSContext(cfg, tmp_path, None, None)
    ctx.ref = Volume(np.zeros(shape, np.float32), np.eye(4))
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -2.0, 1.0]
    ctx.Tb, ctx.Tf = AffineTransform(np.eye(4), "rigid"), AffineTransform(shift, "rigid")
    ctx.brain, ctx.bn, ctx.fn = brain, b, f
    return ctx


def test_steps_list_is_the_methods_section():
    assert [s.name for s in ms.STEPS] == ["load", "brain", "register", "bias", "normalise", "candidates",
                                          "postprocess", "fp_reduction", "classify", "atlas", "decide", "outputs"]
    for s in ms.STEPS:
        assert callable(s.run) and s.run.__doc__ and s.description


def test_detection_steps_alone_find_the_new_ball(tmp_path):
    ctx = _context(tmp_path)
    for name in ("candidates", "postprocess", "fp_reduction", "classify", "atlas", "decide"):
        next(s for s in ms.STEPS if s.name == name).run(ctx)
    assert ctx.n == 1 and ctx.kinds == ["new"]
    assert ctx.decision is not None and ctx.decision.active and ctx.decision.gadolinium
    truth = _ball(ctx.bn.shape, (24, 20, 26), 3.5)
    det = ctx.labels == 1
    assert np.count_nonzero(det & truth) / truth.sum() >= 0.8
    # centroid reported in the follow-up's world: common voxel (24, 20, 26) + (5, -2, 1)
    r = ctx.rows[0]
    assert (r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm) == pytest.approx((29.0, 18.0, 27.0), abs=0.6)
    assert [p.name for p in ctx.prov.steps] == ["candidates", "postprocess", "fp_reduction", "classify", "atlas",
                                                "decide"]


def test_detection_steps_alone_stable_pair_is_not_active(tmp_path):
    ctx = _context(tmp_path, lesion=False)
    for name in ("candidates", "postprocess", "fp_reduction", "classify", "decide"):
        next(s for s in ms.STEPS if s.name == name).run(ctx)
    assert ctx.n == 0 and ctx.decision is not None and not ctx.decision.active


def test_atlas_registration_is_stored_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURORAD_CACHE", str(tmp_path))
    monkeypatch.setattr(ms, "_atlas_memo", {})
    assert ms.cached_atlas_transform("ab" * 32, "affine:3") is None
    m = np.eye(4)
    m[:3, :3] *= 1.1
    m[:3, 3] = [1.0, 2.0, 3.0]
    ms.store_atlas_transform("ab" * 32, "affine:3", AffineTransform(m, "affine"))
    monkeypatch.setattr(ms, "_atlas_memo", {})  # a new process: read back from disk
    got = ms.cached_atlas_transform("ab" * 32, "affine:3")
    assert got is not None and np.allclose(got.matrix, m)
    assert ms.cached_atlas_transform("ab" * 32, "affine:2") is None  # other settings: not reused

    # the atlas step registers once per image content: the second pair sharing the baseline reuses it
    calls = []

    def fake_atlas(reference, brain, backend, transform_type, spacing_mm=3.0):
        calls.append(1)
        return {}, 1.2, AffineTransform(np.eye(4), "affine")

    monkeypatch.setattr(ms, "atlas_to_subject", fake_atlas)
    monkeypatch.setattr(ms, "atlas_labels", lambda ref, t: {"aal": (np.zeros(ref.spatial_shape, np.int16), {}),
                                                            "jhu": (np.zeros(ref.spatial_shape, np.int16), {})})
    for fu_hash in ("f1" * 32, "f2" * 32):
        ctx = _context(tmp_path)
        ctx.cfg = replace(ctx.cfg, atlas=True)
        ctx.prov.inputs.update(baseline="b0" * 32, followup=fu_hash)
        for name in ("candidates", "postprocess", "fp_reduction", "classify", "atlas"):
            next(s for s in ms.STEPS if s.name == name).run(ctx)
    assert len(calls) == 1
    assert ctx.prov.steps[-1].parameters["reused_from"] == "baseline"


def test_time_points_run_in_two_threads_and_errors_propagate():
    seen = set()
    barrier = threading.Barrier(2, timeout=10)

    def work(x):
        seen.add(threading.get_ident())
        barrier.wait()  # deadlocks (times out) unless both run at once
        return x * 2

    assert ms._both(work, 1, 2, True) == (2, 4) and len(seen) == 2

    def boom(x):
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad"):
        ms._both(boom, 1, 2, True)
    assert ms._both(lambda x: x + 1, 1, 2, False) == (2, 3)


def test_joint_normalisation_in_two_threads_gives_the_same_values():
    """Step 5 maps each time point in a thread of its own (concurrent_timepoints): the values must be those of one
    thread, bit for bit, and the map must do its job (the follow-up, a gamma-distorted, rescaled copy, lands on the
    baseline's scale; a wrong map would leave them apart, so the comparison can fail)."""
    from neurorad.pipelines import _engines

    rng = np.random.default_rng(3)
    base = rng.gamma(4.0, 50.0, (40, 44, 36)).astype(np.float32)
    grid = np.eye(4)
    b = Volume(base, grid)
    f = Volume((2.7 * base ** 0.9 + 150.0 + rng.normal(0, 2.0, base.shape)).astype(np.float32), grid)
    mask = _ball(base.shape, (20, 22, 18), 15)
    one = _engines.joint_normalise(b, f, mask, "nyul", concurrent=False)
    two = _engines.joint_normalise(b, f, mask, "nyul", concurrent=True)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert one[3] == two[3]
    assert np.median(one[0][mask]) == pytest.approx(1.0)
    apart = np.median(np.abs(base[mask] / np.median(base[mask]) - f.data[mask] / np.median(f.data[mask])))
    after = np.median(np.abs(one[0][mask] - one[1][mask]))
    print(f"median |baseline - follow-up|: each divided by its median {apart:.3f}, jointly normalised {after:.3f}")
    assert after < 0.3 * apart


def test_brain_extraction_is_serialised(monkeypatch):
    """An engine that is not ``reentrant`` (keeps per-call state in its instance, as deepbet's own object does: a
    concurrent second mask differed) is never run by two threads at once."""
    import time

    from neurorad.pipelines import _engines

    inside, overlaps = [0], [0]

    class NotReentrant:
        def extract(self, volume):  # noqa: ANN001, ANN202
            inside[0] += 1
            overlaps[0] = max(overlaps[0], inside[0])
            time.sleep(0.05)
            inside[0] -= 1
            return volume.with_data(np.ones(volume.spatial_shape, bool))

    engine = NotReentrant()
    monkeypatch.setattr(_engines, "get_extractor", lambda name: engine)
    v = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    ms._both(lambda x: _engines.brain_mask(x, "deepbet"), v, v, True)
    assert overlaps[0] == 1


@pytest.mark.parametrize(("backend", "iterations", "expected"), [("elastix", 123, 123), ("elastix", None, 400),
                                                                 ("sitk", 123, None)])
def test_register_step_hands_elastix_its_iterations(tmp_path, monkeypatch, backend, iterations, expected):
    """MSConfig.elastix_iterations (default 400) reaches elastix and only elastix (sitk keeps its own)."""
    seen: dict = {}

    class Stop(Exception):
        pass

    def fake_register(fixed, moving, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(ms, "register", fake_register)
    cfg = replace(ms.MSConfig(), registration_backend=backend)
    if iterations is not None:
        cfg = replace(cfg, elastix_iterations=iterations)
    ctx = ms.MSContext(cfg, tmp_path, None, None)
    shape = (20, 20, 20)
    brain = _ball(shape, (10, 10, 10), 7)
    vol = Volume(np.where(brain, 1.0, 0.0).astype(np.float32), np.eye(4))
    ctx.b0, ctx.f0 = vol, vol
    ctx.mb = ctx.mf = vol.with_data(brain)
    with pytest.raises(Stop):
        ms.step_register(ctx)
    assert seen["backend"] == backend
    assert seen.get("iterations") == expected
    assert ctx.prov.steps[-1].parameters["elastix_iterations"] == cfg.elastix_iterations


@pytest.mark.parametrize(("spacing", "shrink_mm", "expected"), [((1.0, 1.0, 1.0), 6.0, (6, 6, 6)),
                                                                ((1.0, 1.0, 5.0), 6.0, (6, 6, 1)),
                                                                ((1.0, 1.0, 5.0), None, 4),
                                                                ((1.0, 1.0, 1.0), None, (6, 6, 6))])
def test_bias_step_shrinks_towards_a_spacing(tmp_path, monkeypatch, spacing, shrink_mm, expected):
    """MSConfig.n4_shrink_mm reaches N4 as per-axis factors of the common grid; when None, a grid fine on every axis
    is sampled at n4_fine_grid_sample_mm (6 mm, workflow 1.21.0) and any other at n4_shrink voxels; the provenance
    records what was asked and the engine the factors used."""
    from neurorad.pipelines import _engines

    seen: list = []

    def fake_n4(volume, mask=None, shrink_factor=4, iterations=(), nonpositive="floor", shift_medians=None):
        seen.append((shrink_factor, nonpositive, shift_medians))
        return volume

    monkeypatch.setattr(_engines, "n4_bias_correct", fake_n4)
    cfg = replace(ms.MSConfig(), n4_shrink_mm=shrink_mm)
    ctx = ms.MSContext(cfg, tmp_path, None, None)
    vol = Volume(np.ones((12, 12, 12), np.float32), np.diag([*spacing, 1.0]))
    ctx.ref, ctx.b_c, ctx.f_c, ctx.brain = vol, vol, vol, np.ones((12, 12, 12), bool)
    ms.step_bias(ctx)
    # each time point shifted by two of its brain medians (workflow 1.20.0), whatever its units
    assert seen == [(expected, "relative", 2.0)] * 2
    step = ctx.prov.steps[-1]
    assert step.parameters["shrink_mm"] == shrink_mm
    assert (step.parameters["nonpositive"], step.parameters["shift_medians"]) == ("relative", 2.0)
    assert step.parameters["fine_grid_sample_mm"] == 6.0
    assert step.parameters["shrink_factor"] == (list(expected) if isinstance(expected, tuple) else expected)
    assert ("to 6 mm" in step.engine) == (expected != 4)
    assert (f"shrink {'x'.join(map(str, expected))}" if expected != 4 else "shrink 4,") in step.engine


def _row(i, kind, vol, base):
    from neurorad.quantify.lesions import LesionRow

    return LesionRow(i, kind, vol, 5.0, 0.0, 0.0, 0.0, baseline_volume_mm3=base)


def test_an_enlarging_lesion_smaller_than_its_baseline_is_flagged():
    assert ms.shrunken_enlarging_warning([_row(1, "new", 30.0, 0.0), _row(2, "enlarging", 1083.0, 392.0)]) is None
    w = ms.shrunken_enlarging_warning([_row(1, "new", 30.0, 0.0), _row(2, "enlarging", 170.0, 624.0)])
    assert w is not None and "2 (170 vs 624 mm3)" in w and "check it against the difference map" in w
    w2 = ms.shrunken_enlarging_warning([_row(1, "enlarging", 10.0, 20.0), _row(3, "enlarging", 5.0, 9.0)])
    assert w2 is not None and w2.startswith("enlarging lesions 1 (10 vs 20 mm3), 3 (5 vs 9 mm3) measure ")


def test_atlas_step_warns_about_a_shrunken_enlarging_lesion(tmp_path):
    from neurorad.segment.ms_difference import EnlargingExtent

    ctx = _context(tmp_path)
    for name in ("candidates", "postprocess", "fp_reduction", "classify"):
        next(s for s in ms.STEPS if s.name == name).run(ctx)
    assert ctx.n == 1
    vol = float(np.count_nonzero(ctx.labels == 1))  # 1 mm voxels
    ctx.kinds = ["enlarging"]  # as if it had touched a baseline lesion larger than itself
    ctx.extents = {1: EnlargingExtent(1, baseline_volume_mm3=vol + 50.0, followup_volume_mm3=vol, rim_volume_mm3=vol)}
    next(s for s in ms.STEPS if s.name == "atlas").run(ctx)
    assert ctx.rows[0].volume_change_mm3 == pytest.approx(-50.0, abs=1.0)
    assert any("measures smaller at follow-up" in w for w in ctx.warnings)


def test_reference_series_falls_back_to_this_process_when_the_child_fails(tmp_path, caplog):
    """A failed child (here: one that reports an error) costs time, not the result: the series is synthesised
    in process, every slice, and the fallback is logged."""
    from neurorad.errors import ProcessingError

    class FailedWriter:
        def result(self):
            raise ProcessingError("the DICOM series writer failed: simulated")

    vol = Volume(np.arange(8 * 6 * 5, dtype=np.float32).reshape(8, 6, 5), np.diag([1.0, 1.0, 2.0, 1.0]))
    files: dict[str, str] = {}
    with caplog.at_level("WARNING", logger="neurorad.pipelines.ms_lesions"):
        dss = ms._source_datasets(vol, tmp_path, files, FailedWriter())
    assert len(dss) == 5 and "dicom_followup_reference" in files
    assert "simulated" in caplog.text
    assert (dss[0].Rows, dss[0].Columns) == (6, 8)


def test_a_dicom_follow_up_is_its_own_reference_series(tmp_path):
    """A follow-up read from a DICOM folder: the SEG references its own datasets; nothing is synthesised, and
    _start_reference_writer starts no child for it."""
    from neurorad.image.dicom_series import read_dicom_series, write_dicom_series

    vol = Volume(np.arange(8 * 6 * 5, dtype=np.float32).reshape(8, 6, 5) + 1, np.diag([1.0, 1.0, 2.0, 1.0]))
    folder = write_dicom_series(vol, tmp_path / "fu", series_description="FLAIR")
    f_raw = read_dicom_series(folder)
    files: dict[str, str] = {}
    dss = ms._source_datasets(f_raw, tmp_path / "run", files)
    assert len(dss) == 5 and files == {} and not (tmp_path / "run").exists()
    assert {ds.SeriesInstanceUID for ds in dss} == {f_raw.metadata["dicom"]["SeriesInstanceUID"]}
    ctx = ms.MSContext(ms.MSConfig(), tmp_path / "run", None, None)
    ctx.f_raw = f_raw
    ms._start_reference_writer(ctx)
    assert ctx.reference_writer is None


def test_reference_series_from_the_child_process_when_switched_on(tmp_path):
    """MSConfig.reference_series_process (on by default since workflow 1.8.1): the child started after the load step
    writes the NIfTI follow-up's reference series, and the run's DICOM step collects it (every slice, pixels as
    written); switched off, no child is started and the series is written at the end, in process."""
    vol = Volume(np.arange(8 * 6 * 5, dtype=np.float32).reshape(8, 6, 5) + 1, np.diag([1.0, 1.0, 2.0, 1.0]))
    run = tmp_path / "run"
    run.mkdir()
    assert ms.MSConfig().reference_series_process  # the default
    ctx = ms.MSContext(ms.MSConfig(), run, None, None)
    ctx.f_raw = vol
    ms._start_reference_writer(ctx)
    assert ctx.reference_writer is not None
    files: dict[str, str] = {}
    dss = ms._source_datasets(vol, run, files, ctx.reference_writer)
    assert len(dss) == 5 and "dicom_followup_reference" in files
    assert sorted(p.name for p in (run / "dicom").iterdir()) == ["followup_reference"]
    assert dss[0].pixel_array.shape == (6, 8)
    off = ms.MSContext(replace(ms.MSConfig(), reference_series_process=False), tmp_path / "off", None, None)
    off.f_raw = vol
    ms._start_reference_writer(off)
    assert off.reference_writer is None  # switched off: written at the end, in process


def _lesion_beside_a_baseline_lesion(seed: int, followup_old: float):
    """A 48^3 brain (tissue 1.0 inside radius 19, 1.3 outside, noise SD 0.02), a baseline lesion (radius 4, 1.7 at
    baseline, ``followup_old`` at follow-up) and a new ball (radius 2.5, 1.6) one voxel beside it at follow-up.
    Returns shape, brain, baseline, follow-up and the two balls."""
    rng = np.random.default_rng(seed)
    shape = (48, 48, 48)
    brain = _ball(shape, (24, 24, 24), 22)
    tissue = np.where(_ball(shape, (24, 24, 24), 19), 1.0, 1.3)
    b = np.where(brain, tissue + 0.02 * rng.standard_normal(shape), 0).astype(np.float32)
    f = np.where(brain, tissue + 0.02 * rng.standard_normal(shape), 0).astype(np.float32)
    old = _ball(shape, (24, 24, 20), 4)
    new = _ball(shape, (24, 24, 20 + 4 + 1 + 2.5), 2.5)
    b[old], f[old], f[new] = 1.7, followup_old, 1.6
    return shape, brain, b, f, old, new


def _detection_context(cfg, out, brain, b, f, steps=("candidates", "postprocess", "fp_reduction", "classify")):
    """``steps`` (by default 6-9) of ``cfg`` run on images already on one 1 mm grid (identity transforms); returns
    the context."""
    ctx = ms.MSContext(cfg, out, None, None)
    ctx.ref = Volume(np.zeros(brain.shape, np.float32), np.eye(4))
    ctx.Tb = ctx.Tf = AffineTransform(np.eye(4), "rigid")
    ctx.brain, ctx.bn, ctx.fn = brain, b, f
    for name in steps:
        next(s for s in ms.STEPS if s.name == name).run(ctx)
    return ctx


def test_a_new_lesion_beside_an_unchanged_one_is_searched_for_when_the_candidate_is_dropped(tmp_path):
    """Steps 6-9: a baseline lesion (radius 4, 1.7) unchanged at follow-up and a new ball (radius 2.5, 1.6) one
    voxel beside it. Their candidate touches the baseline lesion, so it is 'enlarging'; the baseline lesion did not
    grow (its half-maximum size x1.0 plus the neighbour < 1.5), so step 9 drops it and, without the search, the new
    ball is lost. With ``split_beside_unchanged`` the part beyond the touch radius is a new lesion covering the ball.
    Oracle: the balls drawn."""
    shape, brain, b, f, old, new = _lesion_beside_a_baseline_lesion(seed=3, followup_old=1.7)
    found = {}
    for search in (False, True):
        cfg = replace(ms.MSConfig(), atlas=False, write_report=False, write_dicom=False)
        cfg = replace(cfg, classify=replace(cfg.classify, split_beside_unchanged=search))
        ctx = _detection_context(cfg, tmp_path / str(search), brain, b, f)
        classify = ctx.prov.steps[-1].parameters
        assert classify["dropped_not_grown"] == [1]
        found[search] = (ctx.labels[new] > 0).mean()
        if search:
            assert ctx.kinds == ["new"] and classify["new_beside_unchanged"]["kept"] == 1
            assert not (ctx.labels[old] > 0).any()
    assert found[False] == 0.0 and found[True] >= 0.8


def test_brain_step_leaves_out_what_a_skull_stripped_series_holds_no_signal_for(tmp_path, monkeypatch):
    """Workflow 1.22.1: a brain mask found again on a skull-stripped series can keep a rim where the series is zero
    (no data). Oracle by construction: the engine returns a ball of 22 voxels for both time points; the baseline
    was stripped to a ball of 19 voxels, with a zero cavity inside it (dark CSF rounded to 0 in an integer
    series), and the follow-up holds signal everywhere. The baseline's mask becomes the ball of 19 with its
    cavity, the follow-up's stays whole, and a warning and the provenance name the baseline's loss in mL."""
    from neurorad.pipelines import _engines

    shape, spacing = (48, 48, 48), 2.5
    aff = np.diag([spacing, spacing, spacing, 1.0])
    rng = np.random.default_rng(5)
    big, small = _ball(shape, (24, 24, 24), 22), _ball(shape, (24, 24, 24), 19)
    cavity = _ball(shape, (24, 24, 24), 3)
    f = rng.uniform(0.05, 1.0, shape).astype(np.float32)
    b = np.where(small & ~cavity, rng.uniform(0.05, 1.0, shape), 0.0).astype(np.float32)
    monkeypatch.setattr(_engines, "brain_mask", lambda v, engine: (v.with_data(big), "stub", None))
    cfg = replace(ms.MSConfig(), atlas=False, write_report=False, write_dicom=False)
    ctx = ms.MSContext(cfg, tmp_path, None, None)
    ctx.b0, ctx.f0 = Volume(b, aff), Volume(f, aff)
    ms.step_brain(ctx)
    assert np.array_equal(np.asarray(ctx.mb.data, bool), small)
    assert np.array_equal(np.asarray(ctx.mf.data, bool), big)
    lost_ml = np.count_nonzero(big & ~small) * spacing**3 / 1000
    params = next(s for s in ctx.prov.steps if s.name == "brain").parameters
    assert params["baseline_mask_without_signal_ml"] == pytest.approx(lost_ml, abs=0.01)
    assert params["followup_mask_without_signal_ml"] == 0.0
    assert [w for w in ctx.warnings if "hold no signal" in w] == [
        f"baseline: {lost_ml:.1f} mL of the brain mask hold no signal (zero, as outside a skull-stripped series): "
        "left out of the comparison"]


def _ball_image(shape, spacing_mm, centre_mm, radius_mm, rng) -> Volume:
    """A ball of 2.0 in tissue of 1.0 (noise 0.02) on an axis-aligned grid, centre and radius in world mm."""
    aff = np.diag([*spacing_mm, 1.0])
    aff[:3, 3] = -np.asarray(spacing_mm) * (np.asarray(shape) - 1) / 2
    g = np.indices(shape).astype(float)
    r2 = sum((g[i] * spacing_mm[i] + aff[i, 3] - centre_mm[i]) ** 2 for i in range(3))
    data = np.where(r2 <= radius_mm**2, 2.0, 1.0) + 0.02 * rng.standard_normal(shape)
    return Volume(data.astype(np.float32), aff)


def test_load_step_averages_a_sub_millimetre_grid_to_about_1_mm_and_keeps_its_slices(tmp_path):
    """A 2D FLAIR reconstructed on a 512 matrix (0.45 mm pixels, 5 mm slices) is averaged in-plane to 0.9 mm (two of
    its pixels; workflow 1.23.0) and a 1 mm baseline is left alone. Oracles: the slices keep their world positions,
    a ball's world centroid moves by < 0.05 mm, its excess signal integrated over the grid (the ball's volume x
    its contrast, analytic) is kept within 1 %, and with
    ``fine_grid_below_mm=None`` nothing is averaged."""
    rng = np.random.default_rng(0)
    f = _ball_image((240, 240, 12), (0.45, 0.45, 5.0), (3.0, -4.0, 2.0), 12.0, rng)
    b = _ball_image((64, 64, 64), (1.0, 1.0, 1.0), (3.0, -4.0, 2.0), 12.0, rng)

    def loaded(cfg: ms.MSConfig, name: str) -> ms.MSContext:
        ctx = ms.MSContext(replace(cfg, lesion_engine="classical"), tmp_path / name, b, f)
        ms.step_load(ctx)
        return ctx

    ctx = loaded(ms.MSConfig(), "on")
    assert np.allclose(ctx.f0.spacing_mm, (0.9, 0.9, 5.0)) and ctx.f0.spatial_shape == (120, 120, 12)
    assert np.array_equal(ctx.b0.data, b.data) and np.allclose(ctx.b0.affine, b.affine)

    def slice_z(v: Volume) -> np.ndarray:
        return v.voxel_to_world(np.array([[0, 0, k] for k in range(v.spatial_shape[2])]))[:, 2]

    assert np.allclose(slice_z(ctx.f0), slice_z(f), atol=1e-6)

    def centroid_and_excess(v: Volume) -> tuple[np.ndarray, float]:
        excess = np.asarray(v.data, np.float64) - 1.0
        w = np.where(excess > 0.3, excess, 0.0)  # well above the noise (SD 0.02) on either grid
        centroid = (v.voxel_to_world(np.argwhere(w > 0)) * w[w > 0][:, None]).sum(0) / w.sum()
        return centroid, float(excess.sum() * v.voxel_volume_mm3)

    (c0, e0), (c1, e1) = centroid_and_excess(f), centroid_and_excess(ctx.f0)
    assert np.linalg.norm(c1 - c0) < 0.05
    assert e1 == pytest.approx(e0, rel=0.01) and e0 == pytest.approx(4 / 3 * np.pi * 12.0**3, rel=0.05)
    load = next(s for s in ctx.prov.steps if s.name == "load")
    assert load.parameters["followup_spacing_mm_averaged_from"] == [0.45, 0.45, 5.0]
    assert "baseline_spacing_mm_averaged_from" not in load.parameters
    off = loaded(replace(ms.MSConfig(), fine_grid_below_mm=None), "off")
    assert np.allclose(off.f0.spacing_mm, (0.45, 0.45, 5.0))


def test_a_new_lesion_beside_a_drifting_one_is_searched_for_when_step_8_drops_the_candidate(tmp_path):
    """Steps 6-9: a baseline lesion (radius 4, 1.7) whose signal drifts up at follow-up (1.9) and a new ball (radius
    2.5, 1.6) one voxel beside it share one candidate. The drift rule of step 8 reads the stable lesion's baseline
    contrast and drops the whole candidate, the new ball with it. With ``split_beside_dropped`` the part beyond
    the touch radius is searched as step 9 searches a candidate whose baseline lesion did not grow, judged by the
    false-positive rules on its own, and kept as a new lesion covering the ball; the drifting lesion stays dropped.
    Oracle: the balls drawn. The classical engine alone, without the intensity mapping: the drifting lesion holds
    every voxel of its baseline intensity, so the mapping would learn its drift as a protocol change."""
    shape, brain, b, f, old, new = _lesion_beside_a_baseline_lesion(seed=4, followup_old=1.9)
    found = {}
    for search in (False, True):
        cfg = replace(ms.MSConfig(), lesion_engine="classical", atlas=False, write_report=False, write_dicom=False)
        cfg = replace(cfg, classify=replace(cfg.classify, split_beside_dropped=search),
                      candidate=replace(cfg.candidate, intensity_mapping=False))
        ctx = _detection_context(cfg, tmp_path / str(search), brain, b, f)
        assert ctx.n0 == 1 and [d.reason for d in ctx.decisions] == [REASON_DRIFT]
        classify = ctx.prov.steps[-1].parameters
        found[search] = (ctx.labels[new] > 0).mean()
        assert not (ctx.labels[old] > 0).any()
        if search:
            assert classify["beside_dropped_candidates"] == 1
            assert ctx.kinds == ["new"] and classify["new_beside_unchanged"]["kept"] == 1
    assert found[False] == 0.0 and found[True] >= 0.8


def test_step_8_passes_the_other_engines_score_and_the_crossed_geometry_to_the_shift_test(tmp_path):
    """Workflow 1.26.0's wiring in ``step_fp_reduction``: with both engines' scores on the context (the fusion engine)
    the misregistration test takes the shifted baseline's noise maximum off inside a candidate the learned score
    reaches (FPParams.shift_confirm_score), so less of a faint new ball (gain 0.1 = 2 image SDs) is "explained" by
    a shift; on slices of two orientations (``ctx.crossed_slices``) the uncorrected test stays and the fraction is
    the classical engine's alone. Oracle: the drawn ball and the learned score put on it."""
    shape = (48, 48, 48)
    brain = _ball(shape, (24, 24, 24), 22)
    rng = np.random.default_rng(11)
    tissue = np.where(brain, 1.0, 0.0).astype(np.float32)
    b = (tissue + 0.05 * rng.standard_normal(shape) * brain).astype(np.float32)
    f = (tissue + 0.05 * rng.standard_normal(shape) * brain).astype(np.float32)
    lesion = _ball(shape, (24, 24, 18), 3.0)
    f[lesion] += 0.1
    explained = {}
    for case, learned_sees, crossed in (("classical", None, False), ("fusion", 1.0, False),
                                        ("fusion, crossed", 1.0, True), ("fusion, learned blind", 0.0, False)):
        cfg = replace(ms.MSConfig(), atlas=False, write_report=False, write_dicom=False, lesion_engine="classical")
        ctx = _detection_context(cfg, tmp_path / case, brain, b, f, steps=("candidates", "postprocess"))
        assert ctx.n0 == 1 and (ctx.labels0[lesion] == 1).mean() > 0.5
        if learned_sees is not None:
            ctx.classical_score = ctx.cand.score
            ctx.learned_score = np.where(lesion, learned_sees, 0.0).astype(np.float32)
        ctx.crossed_slices = crossed
        ms.step_fp_reduction(ctx)
        explained[case] = ctx.decisions[0].shift_explained_fraction
    assert explained["fusion"] < 0.5 * explained["classical"]
    assert explained["fusion, crossed"] == explained["classical"] == explained["fusion, learned blind"]


@pytest.mark.parametrize(("shift", "radius", "kept_if_crossed"), [(3, 4.5, True), (3, 4.0, False)])
def test_step_9_holds_enlarging_lesions_on_crossed_slices_to_their_own_growth_bound(tmp_path, shift, radius,
                                                                                      kept_if_crossed):
    """``ClassifyParams.crossed_min_volume_ratio`` (session 49): on slices of two orientations (``ctx.crossed_slices``)
    step 9's unchanged-enlarging check asks for that growth instead of ``enlarging_min_volume_ratio`` (1.5). A
    baseline ball (radius 5) grown by a second ball ``shift`` voxels off-centre: radius 4.5 is x 1.29 in volume
    (oracle: the drawn balls' voxel counts), dropped as unchanged on a pair of one slice plane and kept as enlarging
    on a crossed one with the bound at 1.25; radius 4.0 (x 1.14) is dropped on both."""
    shape = (48, 48, 48)
    brain = _ball(shape, (24, 24, 24), 22)
    rng = np.random.default_rng(5)
    tissue = np.where(brain, 1.0, 0.0)
    old = _ball(shape, (24, 24, 24), 5)
    new = old | _ball(shape, (24, 24, 24 + shift), radius)
    truth_ratio = new.sum() / old.sum()
    assert (1.25 < truth_ratio < 1.5) == kept_if_crossed
    from scipy import ndimage

    b = (tissue + 0.8 * ndimage.gaussian_filter(old.astype(float), 0.8)
         + 0.02 * rng.standard_normal(shape) * brain).astype(np.float32)
    f = (tissue + 0.8 * ndimage.gaussian_filter(new.astype(float), 0.8)
         + 0.02 * rng.standard_normal(shape) * brain).astype(np.float32)
    for crossed in (False, True):
        cfg = replace(ms.MSConfig(), atlas=False, write_report=False, write_dicom=False, lesion_engine="classical")
        cfg = replace(cfg, classify=replace(cfg.classify, enlarging_min_volume_ratio=1.5,
                                            crossed_min_volume_ratio=1.25))
        ctx = _detection_context(cfg, tmp_path / f"{crossed}", brain, b, f,
                                 steps=("candidates", "postprocess", "fp_reduction"))
        assert ctx.n == 1 and (ctx.labels[new & ~old] > 0).mean() > 0.5
        ctx.crossed_slices = crossed
        next(s for s in ms.STEPS if s.name == "classify").run(ctx)
        kept = crossed and kept_if_crossed
        assert ctx.kinds == (["enlarging"] if kept else [])
        assert ctx.prov.steps[-1].parameters["dropped_not_grown"] == ([] if kept else [1])


def test_step_8_gives_the_learned_engines_candidates_on_crossed_slices_their_own_rescue_bound(tmp_path):
    """``ClassifyParams.crossed_learned_rescue_ratio`` (workflow 1.29.0): the enlarging-lesion path of step 8 asks a
    dropped candidate's baseline lesion to have grown by that factor instead of ``rescue_growth_ratio`` (and at most
    that under the low-drift bound) only for the learned engine's candidates on slices of two orientations; the
    classical engine's, and any engine's on one slice plane, keep 2.1 / 1.8. Read from the step's record of the
    bounds it used."""
    shape = (32, 32, 32)
    brain = _ball(shape, (16, 16, 16), 14)
    rng = np.random.default_rng(3)
    b = (np.where(brain, 1.0, 0.0) + 0.05 * rng.standard_normal(shape) * brain).astype(np.float32)
    f = (np.where(brain, 1.0, 0.0) + 0.05 * rng.standard_normal(shape) * brain).astype(np.float32)
    f[_ball(shape, (16, 16, 12), 3.0)] += 0.4
    used = {}
    for engine in ("classical", "learned"):
        for crossed in (False, True):
            cfg = replace(ms.MSConfig(), atlas=False, write_report=False, write_dicom=False, lesion_engine=engine)
            cfg = replace(cfg, classify=replace(cfg.classify, rescue_growth_ratio=2.1,
                                                rescue_growth_ratio_low_drift=1.8, crossed_learned_rescue_ratio=1.55))
            ctx = _detection_context(replace(cfg, lesion_engine="classical"), tmp_path / f"{engine}{crossed}", brain,
                                     b, f, steps=("candidates", "postprocess"))
            ctx.cfg = cfg
            ctx.crossed_slices = crossed
            ms.step_fp_reduction(ctx)
            p = ctx.prov.steps[-1].parameters
            used[(engine, crossed)] = (p["rescue_growth_ratio"], p["rescue_growth_ratio_low_drift"])
    assert used[("learned", True)] == (1.55, 1.55)
    assert used[("learned", False)] == used[("classical", True)] == used[("classical", False)] == (2.1, 1.8)
