"""bench/ms_oracle.py: the known-shape observer's visibility and search threshold against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest

from tests._bench import load_bench


def test_footprint_z_of_a_planted_lesion_in_white_noise_is_its_matched_filter_snr() -> None:
    """White noise of SD s and a uniform lesion of n voxels and amplitude a: the footprint mean has SD s / sqrt(n)
    under the null, so z = a sqrt(n) / s (here 0.03 x sqrt(27) / 0.05 = 3.12); a lesion that is not there scores
    about 0; the null keeps clear of the excluded voxels and of the brain's edge."""
    oracle = load_bench("ms_oracle")
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 0.05, (48, 48, 48)).astype(np.float32)
    brain = np.zeros(diff.shape, bool)
    brain[4:44, 4:44, 4:44] = True
    mask = np.zeros(diff.shape, bool)
    mask[22:25, 22:25, 22:25] = True
    planted = diff + 0.03 * mask
    exclude = np.zeros(diff.shape, bool)
    exclude[21:26, 21:26, 21:26] = True
    rec = oracle.footprint_z(planted, brain, mask, exclude, (1.0, 1.0, 1.0), radius_mm=15.0)
    assert rec["n_voxels"] == 27 and rec["n_null"] > 1000
    assert rec["null_sd"] == pytest.approx(0.05 / np.sqrt(27), rel=0.1)
    expected = 0.03 * np.sqrt(27) / 0.05 + float(diff[mask].mean()) / (0.05 / np.sqrt(27))  # this noise draw too
    assert rec["z"] == pytest.approx(expected, abs=0.35)
    assert abs(oracle.footprint_z(diff, brain, mask, exclude, (1.0, 1.0, 1.0), 15.0)["z"]) < 3.0
    # anisotropic voxels: the neighbourhood is in mm (3 mm slices: a third as many slices)
    thick = oracle.footprint_z(planted, brain, mask, exclude, (1.0, 1.0, 3.0), radius_mm=15.0)
    assert thick["n_null"] < rec["n_null"]
    with pytest.raises(ValueError, match="empty lesion mask"):
        oracle.footprint_z(diff, brain, np.zeros_like(mask), exclude, (1.0, 1.0, 1.0))


def test_search_threshold_is_the_gaussian_tail_at_the_false_positive_budget() -> None:
    oracle = load_bench("ms_oracle")
    # 0.5 FP among 10,000 positions: a one-sided tail of 5e-5, z = 3.8906 (normal tables)
    assert oracle.search_threshold(10_000, 0.5) == pytest.approx(3.8906, abs=1e-3)
    assert oracle.search_threshold(100, 0.5) < oracle.search_threshold(10_000, 0.5)
    with pytest.raises(ValueError):
        oracle.search_threshold(0.4, 0.5)


def test_an_enlarging_lesion_is_judged_on_its_growth_where_the_baseline_lesions_are_known() -> None:
    """The unchanged core of an enlarging lesion shows no change; its growth does. With the baseline lesions in the
    pair (``tb``) the footprint is the growth alone and scores the planted change; without them the whole extent
    is averaged and the core dilutes it."""
    oracle = load_bench("ms_oracle")
    rng = np.random.default_rng(5)
    shape = (48, 48, 48)
    bn = np.ones(shape, np.float32)
    noise = rng.normal(0.0, 0.05, shape).astype(np.float32)
    fn = bn + noise
    brain = np.zeros(shape, bool)
    brain[2:46, 2:46, 2:46] = True
    te = np.zeros(shape, np.uint16)
    te[20:28, 20:28, 20:28] = 7  # follow-up extent: 512 voxels
    tb = np.zeros(shape, np.uint16)
    tb[20:28, 20:28, 20:24] = 1  # the baseline lesion: half of it, bright at both time points
    growth = (te > 0) & (tb == 0)
    fn[growth] += 0.02
    d = {"bn": bn, "fn": fn, "brain": brain, "sp": (1.0, 1.0, 1.0), "tn": np.zeros(shape, np.uint16), "te": te,
         "tb": tb, "lesions": [{"id": 7, "contrast_to_wm": 1.5, "location_bin": "deep"}],
         "opts": {"slice_thickness_mm": (1.0, 1.0)}}
    (rec,) = oracle.pair_records(d, 0, 0.5, 15.0)
    assert rec["footprint"] == "growth" and rec["n_voxels"] == int(growth.sum()) == 256
    # 0.02 x sqrt(256) / 0.05 = 6.4, plus this noise draw's own mean over the growth
    assert rec["z"] == pytest.approx((0.02 + float(noise[growth].mean())) / (0.05 / np.sqrt(256)), abs=0.6)
    del d["tb"]
    (whole,) = oracle.pair_records(d, 0, 0.5, 15.0)
    assert whole["footprint"] == "whole" and whole["n_voxels"] == 512 and whole["z"] < rec["z"]


def test_independent_pairs_are_prepared_with_their_location_bins_and_without_baseline_lesions(tmp_path,
                                                                                          monkeypatch) -> None:
    """``ms_sweep.prepare(phantom="independent")`` caches the independent simulator's pair ``i`` under its own
    name, maps its lesions' locations to the benchmark's bins and, having no baseline lesion map, leaves ``tb``
    out (the oracle then judges enlarging lesions on their whole extent); held-out means the widened phantom."""
    from types import SimpleNamespace

    import neurorad.preprocess.transforms as transforms
    from neurorad.pipelines import ms_lesions as ms

    load_bench("ms_oracle")  # puts bench/ on sys.path
    import ms_benchmark
    import ms_sweep

    truth = np.zeros((4, 4, 4), np.int16)
    truth[1, 1, 1] = 1
    lesions = [{"id": 1, "kind": "new", "location": "deep", "contrast_to_wm": 1.3},
               {"id": 2, "kind": "enlarging", "location": "ventricle_wall", "contrast_to_wm": 1.8}]
    maps = {"truth_new": SimpleNamespace(data=truth), "truth_enlarging": SimpleNamespace(data=truth)}
    case = SimpleNamespace(baseline_flair=None, followup_flair=None, case={"lesions": lesions}, truth=maps)
    spec = {"seed": 7, "slice_thickness_mm": [3.0, 1.0]}
    asked: list[str] = []

    def fake_case(i: int, template: str = "colin27") -> tuple:
        asked.append(template)
        return case, spec

    monkeypatch.setattr(ms_benchmark, "independent_case", fake_case)
    from neurorad.image.volume import Volume

    ctx = SimpleNamespace(bn=np.zeros((4, 4, 4)), fn=np.zeros((4, 4, 4)), brain=np.ones((4, 4, 4), bool),
                          ref=SimpleNamespace(spacing_mm=(1.0, 1.0, 1.0), voxel_volume_mm3=1.0), Tf=None, Tb=None,
                          finer_input_voxel_mm=3.0, crossed_slices=False,
                          b0=Volume(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0])),
                          f0=Volume(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 1.0, 1.0])))
    monkeypatch.setattr(ms, "MSContext", lambda *a, **kw: ctx)
    monkeypatch.setattr(ms, "STEPS", [SimpleNamespace(run=lambda c: None)] * 5)
    monkeypatch.setattr(transforms, "resample", lambda vol, ref, t, mode: SimpleNamespace(data=vol.data))
    import pickle

    path = ms_sweep.prepare(7, 1.0, tmp_path, "independent")
    assert path.name == "independent_7_1.pkl"
    d = pickle.loads(path.read_bytes())
    assert "tb" not in d and d["opts"]["seed"] == 7 and d["finer_input_voxel_mm"] == 3.0
    assert d["crossed_slices"] is False
    assert [les["location_bin"] for les in d["lesions"]] == ["deep", "periventricular"]
    with pytest.raises(ValueError, match="widened phantoms only"):
        ms_sweep.prepare(7, 1.0, tmp_path, "independent", held_out=True)
    # the same simulator in MNI152's brain: its own cache name, the other brain asked for
    path = ms_sweep.prepare(7, 1.0, tmp_path, "independent-mni152")
    assert path.name == "independent_mni152_7_1.pkl" and path.exists()
    assert asked == ["colin27", "mni152"]
    # a pair cached before 1.17.0 lacks the inputs' geometry: load_pair loads it again (step 1) and adds the finer
    # input's largest voxel dimension (here the 1 mm image's), to the dict it returns and to the cache
    # (and, before 1.26.0, whether the inputs are slices of two orientations: here 3 mm axial against 1 mm 3D, not)
    del d["finer_input_voxel_mm"], d["crossed_slices"]
    path = tmp_path / "independent_7_1.pkl"
    path.write_bytes(pickle.dumps(d))
    _, loaded = ms_sweep.load_pair(7, 1.0, tmp_path, "independent")
    assert loaded["finer_input_voxel_mm"] == pytest.approx(1.0) and loaded["crossed_slices"] is False
    assert pickle.loads(path.read_bytes())["finer_input_voxel_mm"] == pytest.approx(1.0)
    assert asked == ["colin27", "mni152", "colin27"]
    # a pair prepared with another N4 handling (every pair cached before workflow 1.20.0: one unit's shift; before
    # 1.21.0: 4-voxel samples on a fine grid) is refused, naming the file, rather than judged as the workflow's
    assert loaded["bias"] == {"n4_nonpositive": "relative", "n4_shift_medians": 2.0, "n4_fine_grid_sample_mm": 6.0}
    for old in ({k: v for k, v in loaded.items() if k != "bias"}, {**loaded, "bias": {"n4_nonpositive": "floor"}},
                {**loaded, "bias": {"n4_nonpositive": "relative", "n4_shift_medians": 2.0}}):
        path.write_bytes(pickle.dumps(old))
        with pytest.raises(ValueError, match="independent_7_1.pkl: prepared with N4"):
            ms_sweep.load_pair(7, 1.0, tmp_path, "independent")


def test_an_engine_finds_a_lesion_when_its_detections_cover_40_percent_of_it(tmp_path, monkeypatch) -> None:
    """``--engines``: each engine runs the workflow's detection steps on the prepared pair at its shipped
    operating point (``ms_benchmark.engine_config``; the network's probability from the per-pair cache for the
    learned engines), and a truth lesion is found as the benchmark counts it: detections cover >= 40% of it."""
    oracle = load_bench("ms_oracle")
    import ms_sweep

    tn = np.zeros((10, 10, 10), np.int16)
    tn[0, 0, :10] = 1   # 10 voxels, 4 covered: found
    tn[2, 2, :10] = 2   # 10 voxels, 3 covered: not found
    te = np.zeros_like(tn)
    te[4, 4, :6] = 3    # covered by two detections, 1 + 1 of 6: not found
    lab = np.zeros(tn.shape, np.int32)
    lab[0, 0, :4] = 1
    lab[2, 2, :3] = 2
    lab[4, 4, 0] = 3
    lab[4, 4, 1] = 4
    seen: list = []

    def detect(d, cfg, p):
        seen.append((cfg.lesion_engine, cfg.post.min_peak_score, p))
        return lab, [0.5] * int(lab.max())

    monkeypatch.setattr(ms_sweep, "detect", detect)
    monkeypatch.setattr(ms_sweep, "learned_probability_cached",
                        lambda path, d, cfg: None if cfg.lesion_engine == "classical" else "P")
    d = {"tn": tn, "te": te}
    lab[8, 8, 8] = 5  # a detection touching no truth lesion: a false positive
    assert oracle.engine_found(tmp_path / "x.pkl", d, "classical") == ({1: True, 2: False, 3: False}, 1)
    lab[4, 4, 2] = 4
    assert oracle.engine_found(tmp_path / "x.pkl", d, "fusion")[0][3] is True  # the two cover 3 of 6 together
    from neurorad.pipelines.ms_lesions import MSConfig

    shipped = MSConfig().post.min_peak_score
    assert seen == [("classical", shipped, None), ("fusion", shipped, "P")]
    oracle.engine_found(tmp_path / "x.pkl", d, "classical", ("post.min_peak_score=0.3",))  # --set: a rule variant
    assert seen[-1] == ("classical", 0.3, None)
    oracle.engine_found(tmp_path / "x.pkl", d, "default")  # the workflow's default engine: fusion since 1.22.0
    assert seen[-1] == ("fusion", shipped, "P")


def test_by_bin_gives_the_ideal_expectation_and_each_engine_per_benchmark_bin() -> None:
    """Per bin the mean of the observer's probabilities, the lesions under their search threshold and the fraction
    each engine found, keyed as the benchmark's summary keys its bins; a row without a contrast stays out of the
    contrast grouping only."""
    oracle = load_bench("ms_oracle")
    bench = load_bench("ms_benchmark")

    def row(contrast, location, kind, slices, z, p, found):  # noqa: ANN001, ANN202
        return {"contrast_to_wm": contrast, "location": location, "kind": kind, "slice_thickness_mm": slices,
                "z": z, "z_threshold": 4.0, "p_ideal": p, "found_default": found}

    rows = [row(1.2, "juxtacortical", "new", [1.0, 5.0], 2.0, 0.02, False),
            row(1.4, "juxtacortical", "enlarging", [3.0, 3.0], 4.5, 0.69, True),
            row(1.7, "deep", "new", [5.0, 1.0], 9.0, 1.0, True),
            row(None, "deep", "new", [1.0, 1.0], float("nan"), 0.0, False)]
    out = oracle.by_bin(rows, ["default"])
    first = f"{bench.CONTRAST_BINS[0][0]:g}-{bench.CONTRAST_BINS[0][1]:g}"
    assert out["contrast_to_wm"][first] == {"lesions": 2, "ideal_expected": 0.355, "under_search_threshold": 1,
                                            "found_default": 0.5}
    assert sum(v["lesions"] for v in out["contrast_to_wm"].values()) == 3  # the row without a contrast left out
    assert out["location"]["deep"]["lesions"] == 2 and out["location"]["deep"]["under_search_threshold"] == 1
    assert out["kind"]["new"]["ideal_expected"] == pytest.approx((0.02 + 1.0 + 0.0) / 3, abs=1e-3)
    assert set(out["thicker_slice"]) == {"1 mm", "3 mm", "5 mm"}
    assert out["thicker_slice"]["5 mm"] == {"lesions": 2, "ideal_expected": 0.51, "under_search_threshold": 1,
                                            "found_default": 0.5}
    assert "found_fusion" not in out["kind"]["new"]


def test_found_is_read_and_refused_before_any_pair_runs(tmp_path, monkeypatch, capsys) -> None:
    """``--found`` takes a sweep's per-pair records (common space). A benchmark record (``ms_benchmark.py --json``: a
    dict of ``cases``), a list of something else or a file that is no JSON is refused with its name before the first
    pair is prepared (session 49: a benchmark record was read only after 40 held-out pairs had run, and failed on
    a TypeError)."""
    oracle = load_bench("ms_oracle")
    ran = []
    monkeypatch.setattr(oracle, "_run", lambda job: ran.append(job) or ([], {}))
    bench_record = tmp_path / "bench.json"
    bench_record.write_text('{"summary": {}, "cases": []}')
    other = tmp_path / "other.json"
    other.write_text('[{"pair": 1}]')
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for path, says in ((bench_record, "a benchmark record"), (other, "expected a sweep's per-pair records"),
                       (broken, "not a readable JSON file")):
        with pytest.raises(SystemExit):
            oracle.main(["--cases", "0", "--cache", str(tmp_path), "--found", str(path)])
        err = capsys.readouterr().err
        assert says in err and str(path) in err
    assert ran == []
    good = tmp_path / "sweep.json"
    good.write_text('[{"case": 0, "lesions": [{"id": 3, "voxels": 10, "hits": [{"det": 1, "peak": 0.5, '
                    '"covered": 6}]}]}]')
    assert oracle.sweep_records(good)[0]["lesions"][0]["id"] == 3


def test_prep_set_is_checked_before_any_pair_runs_and_reaches_every_pair(tmp_path, monkeypatch, capsys) -> None:
    """``--prep-set field=value`` (steps 1-5 prepared another way, in ``ms_sweep``'s cache folder for it: session 50
    read how visible the lesions are after another N4) takes MSConfig's own fields only: a detection rule
    (``group.param``) or an unknown field is refused, naming it, before the first pair is prepared; a valid one is
    handed to every pair's ``load_pair`` and recorded in the summary."""
    import concurrent.futures

    oracle = load_bench("ms_oracle")
    for bad, says in (("candidate.z_threshold=3", "MSConfig's own fields"), ("no_such_field=1", "no_such_field")):
        with pytest.raises(SystemExit):
            oracle.main(["--cases", "0", "--cache", str(tmp_path), "--prep-set", bad])
        assert says in capsys.readouterr().err

    class InProcess:  # the pool's map, run here so the stand-in below is the one called
        def __init__(self, *_a: object) -> None: ...
        def __enter__(self) -> InProcess:
            return self
        def __exit__(self, *_a: object) -> None: ...
        def map(self, fn, jobs):  # noqa: ANN001, ANN201
            return [fn(j) for j in jobs]

    seen: list[tuple] = []

    class Stop(Exception):
        pass

    def load_pair(i, voxel_mm, cache, phantom, prep_settings=None, held_out=False):  # noqa: ANN001, ANN202
        seen.append((i, prep_settings, held_out))
        raise Stop

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", InProcess)
    import ms_sweep  # on the path once load_bench / main put bench/ there

    monkeypatch.setattr(ms_sweep, "load_pair", load_pair)
    with pytest.raises(Stop):
        oracle.main(["--cases", "3", "--held-out", "--cache", str(tmp_path), "--prep-set", "n4_nonpositive=floor"])
    assert seen == [(3, ["n4_nonpositive=floor"], True)]
