"""The tuning sweep's rule-variant option (bench/ms_sweep.py --set): every variant named in docs/ms-lesions-log.md
is reproducible from the command line, and a mistyped parameter is an error, never a silent default run."""

from __future__ import annotations

import pytest

from neurorad.pipelines.ms_lesions import MSConfig
from tests._bench import load_bench


def _sweep():
    return load_bench("ms_sweep")


def test_set_overrides_parameters_and_reads_literals() -> None:
    sweep = _sweep()
    base = MSConfig()
    cfg = sweep.apply_overrides(base, ["fp.drift_ratio=0.45", "fp.diffuse_max_focal_volume_mm3=None",
                                       "classify.rescue_growth_ratio = 3", "fp.dipole_rule=False"])
    assert cfg.fp.drift_ratio == 0.45 and cfg.fp.diffuse_max_focal_volume_mm3 is None
    assert cfg.classify.rescue_growth_ratio == 3 and cfg.fp.dipole_rule is False
    # everything else untouched, and the input config is not modified
    assert cfg.fp.dipole_ratio == base.fp.dipole_ratio and cfg.candidate == base.candidate
    assert base.fp.drift_ratio != 0.45
    assert sweep.apply_overrides(base, []) == base


@pytest.mark.parametrize("item, message", [
    ("fp.drift_ratio", "expected group.param=value"),
    ("drift_ratio=0.4", "expected group.param=value"),
    ("nope.drift_ratio=0.4", "not a parameter group"),
    ("fp.drift_ration=0.4", "FPParams has no parameter 'drift_ration'"),
])
def test_set_rejects_what_it_cannot_apply(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _sweep().apply_overrides(MSConfig(), [item])


def test_original_phantom_tuning_pairs_stay_off_the_benchmark_seeds(tmp_path) -> None:
    with pytest.raises(ValueError, match="use i >= 100"):
        _sweep().prepare(5, 1.0, tmp_path, "original")
    with pytest.raises(ValueError, match="unknown phantom"):
        _sweep().prepare(100, 1.0, tmp_path, "other")


def test_prep_set_prepares_pairs_with_it_in_their_own_cache(tmp_path, monkeypatch) -> None:
    """--prep-set: steps 1-5 run with the MSConfig field set, cached apart from the default's pairs (which are
    untouched), and a field MSConfig does not have is an error."""
    from types import SimpleNamespace

    import neurorad.phantom.cases as cases
    from neurorad.pipelines import ms_lesions as ms

    sweep = _sweep()
    seen: dict = {}

    class Stop(Exception):
        pass

    def context(cfg, folder, *args, **kw):
        seen.update(cfg=cfg, folder=folder)
        raise Stop

    monkeypatch.setattr(cases, "ms_pair", lambda **kw: SimpleNamespace(baseline_flair=None, followup_flair=None))
    monkeypatch.setattr(ms, "MSContext", context)
    with pytest.raises(Stop):
        sweep.prepare(0, 2.0, tmp_path, "widened", ["n4_shrink_mm=5.0"])
    assert seen["cfg"] == MSConfig(n4_shrink_mm=5.0) and seen["folder"] == tmp_path / "prep_n4_shrink_mm=5.0"
    assert sweep.prep_cache(tmp_path, ["b=1", "a=2"]) == tmp_path / "prep_a=2_b=1"
    with pytest.raises(Stop):
        sweep.prepare(0, 2.0, tmp_path)
    assert seen["cfg"] == MSConfig() and seen["folder"] == tmp_path
    with pytest.raises(ValueError, match="no field 'n4_shrink_cm'"):
        sweep.prepare(0, 2.0, tmp_path, "widened", ["n4_shrink_cm=5"])


def test_pairs_in_other_slice_planes_are_prepared_from_their_options_and_cached_apart(tmp_path, monkeypatch) -> None:
    """--phantom widened-crossed / widened-oriented: the tuning seed's pair in other slice planes
    (``widened_ms_options(orientation=...)``), cached beside, not over, its axial twin (held-out pairs too)."""
    from types import SimpleNamespace

    import neurorad.phantom.cases as cases
    from neurorad.pipelines import ms_lesions as ms

    sweep = _sweep()
    # each of the benchmark's widened phantoms (the sweep's, one list) is a plane the phantom draws
    assert {cases.widened_ms_options(0, orientation=o)["seed"] for o in
            load_bench("ms_benchmark").WIDENED_PHANTOMS.values()} == {0}
    made: list[dict] = []

    class Stop(Exception):
        pass

    def context(cfg, folder, *args, **kw):
        raise Stop

    monkeypatch.setattr(cases, "ms_pair", lambda **kw: made.append(kw) or SimpleNamespace(baseline_flair=None,
                                                                                         followup_flair=None))
    monkeypatch.setattr(ms, "MSContext", context)
    (tmp_path / "tuning_4_2.pkl").write_bytes(b"axial twin")
    assert sweep.prepare(4, 2.0, tmp_path) == tmp_path / "tuning_4_2.pkl"  # cached: nothing made
    (tmp_path / "tuning_crossed_5_2.pkl").write_bytes(b"cached")
    assert sweep.prepare(5, 2.0, tmp_path, "widened-crossed") == tmp_path / "tuning_crossed_5_2.pkl"
    (tmp_path / "heldout_crossed_5_2.pkl").write_bytes(b"cached")
    assert sweep.prepare(5, 2.0, tmp_path, "widened-crossed", held_out=True) == tmp_path / "heldout_crossed_5_2.pkl"
    assert not made
    for phantom, orientation in (("widened-crossed", "crossed"), ("widened-oriented", "random")):
        with pytest.raises(Stop):
            sweep.prepare(4, 2.0, tmp_path, phantom)
        want = cases.widened_ms_options(100_004, negative=False, orientation=orientation)
        assert made[-1] == {**want, "in_plane_mm": 2.0}
    assert made[0]["slice_axis"][0] != made[0]["slice_axis"][1]
    with pytest.raises(Stop):
        sweep.prepare(7, 2.0, tmp_path, "widened-crossed", held_out=True)
    assert made[-1]["seed"] == 7 and "slice_axis" in made[-1]
    with pytest.raises(ValueError, match="widened phantoms only"):
        sweep.prepare(7, 2.0, tmp_path, "original", held_out=True)


def test_a_crossed_pair_prepared_without_the_workflows_round_trip_is_refused(tmp_path) -> None:
    """A cached pair of two slice planes holds images resampled with or without MSConfig.crossed_round_trip; read
    under the other setting it is not the workflow's pair, and the sweep refuses it, naming the file. A pair that is
    not crossed is read under either."""
    import pickle

    from neurorad.pipelines.ms_lesions import MSConfig

    sweep = _sweep()
    cfg = MSConfig()
    folder = sweep.prep_cache(tmp_path, ["crossed_round_trip=True"])
    folder.mkdir(parents=True)
    base = dict(bias=sweep._bias_setting(cfg), finer_input_voxel_mm=3.0)
    (folder / "tuning_crossed_2_1.pkl").write_bytes(pickle.dumps({**base, "crossed_slices": True}))
    with pytest.raises(ValueError, match="tuning_crossed_2_1.pkl: a crossed pair prepared with crossed_round_trip=F"):
        sweep.load_pair(2, 1.0, tmp_path, "widened-crossed", ["crossed_round_trip=True"])
    (folder / "tuning_crossed_3_1.pkl").write_bytes(pickle.dumps({**base, "crossed_slices": True,
                                                                  "crossed_round_trip": True}))
    assert sweep.load_pair(3, 1.0, tmp_path, "widened-crossed", ["crossed_round_trip=True"])[1]["crossed_round_trip"]
    (folder / "tuning_4_1.pkl").write_bytes(pickle.dumps({**base, "crossed_slices": False}))
    assert not sweep.load_pair(4, 1.0, tmp_path, "widened", ["crossed_round_trip=True"])[1]["crossed_slices"]
    # a crossed pair cached before its geometry was recorded: step 1 finds it crossed, then it is judged
    (folder / "tuning_crossed_5_2.pkl").write_bytes(pickle.dumps({"bias": base["bias"]}))
    with pytest.raises(ValueError, match="tuning_crossed_5_2.pkl: a crossed pair prepared with crossed_round_trip=F"):
        sweep.load_pair(5, 2.0, tmp_path, "widened-crossed", ["crossed_round_trip=True"])


#: --set variants under which the third pair's enlarging-lesion rescue keeps a candidate (a low growth ratio
#: for the rescue and for the unchanged-enlarging check), and under which the unchanged-enlarging check drops
#: one (the rescue's candidates, not grown by the shipped 1.8)
_RESCUED = ["classify.rescue_growth_ratio=0.5", "classify.enlarging_min_volume_ratio=0.5"]
_NOT_GROWN = ["classify.rescue_growth_ratio=0.5"]


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "variants"), [(100_202, [[]]), (100_208, [[]]), (100_211, [_RESCUED, _NOT_GROWN])])
def test_sweep_detection_is_the_workflows(seed: int, variants: list[list[str]], tmp_path) -> None:
    """bench/ms_sweep.detect reruns steps 6-9 on cached arrays for every tuning table in docs/ms-lesions-log.md; its
    lesions must be the workflow's own (same labels, same count) on widened pairs (tuning seeds, 2 mm grid) whose
    candidates meet the border, diffuse-change, misregistration and moved-structure rules and hold enlarging
    lesions. Since workflow 1.8.1 the sweep runs the workflow's own step functions on a context rebuilt from the
    cache (before, it chained the engine's functions itself and missed step 9's per-lesion judgement of enlarging
    candidates), so this checks that the cache holds everything steps 6-9 read and that the rebuilt context (grid
    from the cached spacing) gives the same answer as the run that made it. The enlarging-lesion rescue and
    the unchanged-enlarging check do not fire on the first two pairs with the shipped settings; on the third,
    under two --set variants, the rescue keeps a candidate and the check drops one (both asserted), so those
    paths are compared too."""
    import numpy as np

    from neurorad.phantom.cases import ms_pair, widened_ms_options
    from neurorad.pipelines import ms_lesions as ms

    opts = widened_ms_options(seed)
    opts["in_plane_mm"] = 2.0
    case = ms_pair(**opts)
    ctx = ms.MSContext(MSConfig(), tmp_path, case.baseline_flair, case.followup_flair)
    names = [s.name for s in ms.STEPS]
    for step in ms.STEPS[: names.index("candidates")]:
        step.run(ctx)
    assert ctx.ref is not None
    d = {"bn": ctx.bn, "fn": ctx.fn, "brain": ctx.brain, "sp": ctx.ref.spacing_mm, "vox": ctx.ref.voxel_volume_mm3}
    for items in variants:
        ctx.cfg = _sweep().apply_overrides(MSConfig(), items)
        for step in ms.STEPS[names.index("candidates"): names.index("classify") + 1]:
            step.run(ctx)
        assert ctx.labels is not None
        params = {s.name: s.parameters for s in ctx.prov.steps}  # this variant's (the last run of each step)
        if items == _RESCUED:
            assert params["fp_reduction"]["kept_as_grown"] and ctx.n >= 1
        if items == _NOT_GROWN:
            assert params["classify"]["dropped_not_grown"]
        lab, peaks = _sweep().detect(d, ctx.cfg)
        assert ctx.n >= 1 and len(peaks) == ctx.n, items
        assert np.array_equal(lab, ctx.labels), items


@pytest.mark.slow
def test_sweep_runs_the_learned_engines_on_a_probability_cached_per_pair(tmp_path, monkeypatch) -> None:
    """--engine fusion / learned: the network's probability is computed once per pair and model and cached beside
    the pair; detection from the cached map gives the workflow's own fusion lesions (the candidate step running the
    network itself), a second read comes from the cache without the network, and a given map is what the learned
    engine detects on (an all-zero map: no learned lesion, whatever the network would have said)."""
    from dataclasses import replace

    import numpy as np

    from neurorad.errors import InputError
    from neurorad.phantom.cases import ms_pair, widened_ms_options
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.segment import ms_learned

    sweep = _sweep()
    opts = widened_ms_options(100_202)
    opts["in_plane_mm"] = 2.0
    case = ms_pair(**opts)
    cfg = MSConfig(lesion_engine="fusion")
    ctx = ms.MSContext(cfg, tmp_path, case.baseline_flair, case.followup_flair)
    names = [s.name for s in ms.STEPS]
    for step in ms.STEPS[: names.index("classify") + 1]:
        step.run(ctx)
    assert ctx.ref is not None and ctx.labels is not None and ctx.n >= 1
    d = {"bn": ctx.bn, "fn": ctx.fn, "brain": ctx.brain, "sp": ctx.ref.spacing_mm, "vox": ctx.ref.voxel_volume_mm3}
    pair = tmp_path / "tuning_0_2.pkl"
    classical = replace(MSConfig(), lesion_engine="classical")
    assert sweep.learned_probability_cached(pair, d, classical) is None  # the classical engine: no network
    p = sweep.learned_probability_cached(pair, d, cfg)
    cached = list(tmp_path.glob("tuning_0_2.learned_*.npz"))
    rec = ms_learned.engine_record(cfg.learned.model, cfg.learned.mirror_axes)
    mirrored = "_mirror" + "".join(map(str, cfg.learned.mirror_axes)) if cfg.learned.mirror_axes else ""
    assert rec["mirror_axes"] == list(cfg.learned.mirror_axes)
    assert [c.name for c in cached] == [f"tuning_0_2.learned_{rec['sha256'][:16]}_{rec['inference_engine']}"
                                        f"{mirrored}.npz"]
    assert p.shape == ctx.brain.shape and p.dtype == np.float32 and float(p.max()) > 0.5
    lab, peaks = sweep.detect(d, cfg, p)
    assert len(peaks) == ctx.n and np.array_equal(lab, ctx.labels)

    def no_network(*args, **kw):
        raise AssertionError("the network ran although its output was cached or given")

    monkeypatch.setattr(ms_learned, "learned_probability", no_network)
    assert np.array_equal(sweep.learned_probability_cached(pair, d, cfg), p)
    if rec["inference_engine"] == "torch-bf16":  # a float32 run (a CPU without bfloat16) never reads this cache
        from neurorad.segment import engine as engine_module

        ms_learned.learned_segmenter.cache_clear()
        try:
            with monkeypatch.context() as mp:
                mp.setattr(engine_module, "bf16_supported", lambda: False)
                with pytest.raises(AssertionError, match="the network ran"):
                    sweep.learned_probability_cached(pair, d, cfg)
        finally:
            ms_learned.learned_segmenter.cache_clear()
    learned = replace(cfg, lesion_engine="learned")
    lab_l, peaks_l = sweep.detect(d, learned, p)
    assert len(peaks_l) >= 1  # the network's own lesions on this active pair
    assert sweep.detect(d, learned, np.zeros_like(p))[1] == []
    with pytest.raises(InputError, match="given probability map on grid"):
        sweep.detect(d, learned, p[:-1])


@pytest.mark.slow
def test_benchmark_runs_the_network_once_for_the_learned_and_fusion_engines(tmp_path, monkeypatch) -> None:
    """bench/ms_benchmark.py --engine learned,fusion: one network run per pair feeds both engines, and each engine's
    lesions equal a run of that engine alone in the workflow (whose candidate step runs the network itself)."""
    import numpy as np

    from neurorad.phantom.cases import ms_pair, widened_ms_options
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.segment import ms_learned

    bench = load_bench("ms_benchmark")
    opts = widened_ms_options(100_202)
    opts["in_plane_mm"] = 2.0
    case = ms_pair(**opts)
    calls = []
    real = ms_learned.learned_probability

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ms_learned, "learned_probability", counted)
    (tmp_path / "both").mkdir()
    both = bench.run_engines(case, ["learned", "fusion"], None, tmp_path / "both")
    assert len(calls) == 1
    for engine in ("learned", "fusion"):
        res, seconds = both[engine]
        assert not isinstance(res, Exception) and seconds > 0
        alone = ms.run_ms_lesions(case.baseline_flair, case.followup_flair, tmp_path / f"alone_{engine}",
                                  bench.engine_config(engine, None))
        assert len(calls) == 2  # the workflow's own candidate step ran the network
        calls.clear()
        calls.append(1)
        assert [(r.kind, r.volume_mm3) for r in res.lesions] == [(r.kind, r.volume_mm3) for r in alone.lesions]
        assert np.array_equal(res.labels.data, alone.labels.data)


def test_froc_by_thicker_slice_counts_each_class_apart() -> None:
    """Two 5/1 mm pairs and one 1 mm pair with known detections: each class's found lesions, false positives and
    patient specificity at each threshold, counted by hand."""
    les = {"id": 1, "voxels": 10, "hits": [{"det": 1, "peak": 0.6, "covered": 8}]}
    recs = [
        {"case": 0, "truth_active": True, "lesions": [les], "slice_thickness_mm": [5.0, 1.0],
         "detections": [{"det": 1, "peak": 0.6, "fp": False}, {"det": 2, "peak": 0.4, "fp": True}]},
        {"case": 1, "truth_active": False, "lesions": [], "slice_thickness_mm": [1.0, 5.0],
         "detections": [{"det": 1, "peak": 0.12, "fp": True}]},
        {"case": 2, "truth_active": False, "lesions": [], "slice_thickness_mm": 1.0,
         "detections": [{"det": 1, "peak": 0.2, "fp": True}]},
    ]
    out = _sweep().froc_by_thickness(recs, thresholds=(0.1, 0.3, 0.5))
    assert sorted(out) == ["1 mm", "5 mm"]
    five = {p["threshold"]: p for p in out["5 mm"]["froc"]}
    assert out["5 mm"]["pairs"] == 2
    assert [five[t]["false_positives"] for t in (0.1, 0.3, 0.5)] == [2, 1, 0]
    assert [five[t]["found"] for t in (0.1, 0.3, 0.5)] == [1, 1, 1]
    assert [five[t]["patient_specificity"] for t in (0.1, 0.3, 0.5)] == [0.0, 1.0, 1.0]
    one = {p["threshold"]: p for p in out["1 mm"]["froc"]}
    assert [one[t]["false_positives"] for t in (0.1, 0.3)] == [1, 0]


def test_a_sweep_record_carries_the_volumes_the_benchmark_scores() -> None:
    """A pair on 1 x 1 x 3 mm voxels: a new lesion of 8 voxels, half covered by a detection of 6 voxels, and an
    enlarging lesion of 4 voxels covered by none; a false positive of 2 voxels. Counted by hand: the record's truth
    and detection volumes, and ``ms_benchmark.lesion_volume_ratios`` reading them (6 x 3 / (8 x 3) mm^3)."""
    import numpy as np

    bench = load_bench("ms_benchmark")
    tn, te, lab = (np.zeros((10, 10, 4), np.int32) for _ in range(3))
    tn[0:2, 0:2, 0:2] = 1
    te[6:8, 6:8, 0] = 1
    lab[0:2, 0:2, 0] = 1  # 4 of the new lesion's voxels
    lab[2, 0:2, 0] = 1  # and 2 beside it
    lab[4, 4, 0:2] = 2
    rec = _sweep().score_case({"tn": tn, "te": te, "vox": 3.0}, lab, [0.9, 0.4], 7)
    new, enlarging = rec["lesions"]
    assert (new["kind"], new["voxels"], new["volume_mm3"]) == ("new", 8, 24.0)
    assert (enlarging["kind"], enlarging["volume_mm3"], enlarging["hits"]) == ("enlarging", 12.0, [])
    assert new["hits"] == [{"det": 1, "peak": 0.9, "covered": 4, "volume_mm3": 18.0}]
    assert [(d["volume_mm3"], d["fp"]) for d in rec["detections"]] == [(18.0, False), (6.0, True)]
    assert bench.lesion_volume_ratios(rec, 0.1) == [18.0 / 24.0, None]
    no_size = _sweep().score_case({"tn": tn, "te": te}, lab, [0.9, 0.4], 7)  # a pair without its voxel volume
    assert no_size["lesions"][0]["volume_mm3"] is None and no_size["detections"][0]["volume_mm3"] is None
    assert no_size["lesions"][0]["hits"][0]["covered"] == 4
