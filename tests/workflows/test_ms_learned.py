"""Learned MS engine and its fusion with the classical engine (issue 17).

Oracles: hand-built score maps whose components' fate (kept by either confident engine, dropped when neither
is, disagreement flagged when one is confident and the other blind) is known by construction; the score
mapping's anchors; a tiny training run of the real entry (`python -m neurorad.workflows.ms_lesions.train`) on
hand-built pairs, whose model folder the engine then loads (hashes checked) and runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from neurorad.errors import InputError, ProcessingError
from neurorad.image.volume import Volume
from neurorad.segment import ms_learned
from neurorad.segment.ms_difference import PostParams, binarise_components
from neurorad.segment.ms_learned import (
    LearnedParams,
    disagreement_warning,
    engine_disagreement,
    fuse_scores,
    merge_engine_lesions,
    probability_to_score,
)


def _ball(shape: tuple[int, int, int], centre: tuple[int, int, int], r: float) -> np.ndarray:
    g = np.indices(shape)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= r * r


def test_probability_maps_onto_the_classical_score_anchors() -> None:
    p = LearnedParams(extent_probability=0.3, core_probability=0.5)
    s = probability_to_score(np.array([0.0, 0.3, 0.5, 1.0, 0.4, 0.75]), p)
    assert np.allclose(s, [0.0, 0.01, 0.1, 1.0, 0.055, 0.55], atol=1e-6)
    grid = probability_to_score(np.linspace(0, 1, 101), p)
    assert np.all(np.diff(grid) > 0)  # increasing: the FROC order of candidates is the probability order
    with pytest.raises(ValueError, match="extent_probability"):
        LearnedParams(extent_probability=0.6, core_probability=0.5)


def test_learned_and_fusion_engines_map_the_probability_with_their_own_operating_points() -> None:
    """The learned engine alone and the learned part of the fusion engine have their own anchors (workflow
    1.10.0: chosen apart by the tuning sweep); each engine's score puts its own anchors on 0.01 and 0.1."""
    p = LearnedParams()
    assert p.anchors("learned") == ms_learned.DEFAULT_ANCHORS["learned"]
    assert p.anchors("fusion") == ms_learned.DEFAULT_ANCHORS["fusion"]
    assert p.anchors("learned") != p.anchors("fusion")
    for engine in ("learned", "fusion"):
        extent, core = p.anchors(engine)
        s = probability_to_score(np.array([extent, core]), p, engine=engine)
        assert np.allclose(s, [0.01, 0.1], atol=1e-6), engine
    # one probability between the two operating points: confident for the learned engine, not for fusion's part
    mid = (p.anchors("learned")[1] + p.anchors("fusion")[1]) / 2
    assert probability_to_score(np.array([mid]), p)[0] > 0.1 > probability_to_score(np.array([mid]), p,
                                                                                    engine="fusion")[0]
    with pytest.raises(ValueError, match="fusion_extent_probability"):  # 0.6 over the fusion core it falls on
        LearnedParams(fusion_extent_probability=0.6).anchors("fusion")
    with pytest.raises(ValueError, match="core_probability must be in"):
        LearnedParams(core_probability=1.2)
    with pytest.raises(ValueError, match="unknown engine"):
        p.anchors("classical")


def test_operating_point_comes_from_the_model_card_unless_a_parameter_overrides_it() -> None:
    """The anchors belong to a model's calibration: a card's operating point replaces the defaults, an anchor given
    as a parameter (a sweep's --set) replaces the card's, and the record says where each came from."""
    card = {"learned": (0.2, 0.6), "fusion": (0.25, 0.7)}
    p = LearnedParams()
    assert p.anchors("learned", card) == (0.2, 0.6) and p.anchors("fusion", card) == (0.25, 0.7)
    resolved, record = p.resolve(card)
    assert resolved.anchors("learned") == (0.2, 0.6)  # resolved: no card needed any more
    assert record["learned"] == {"extent_probability": 0.2, "core_probability": 0.6, "source": "model card"}
    given, record = LearnedParams(core_probability=0.5).resolve(card)
    assert given.anchors("learned") == (0.2, 0.5)
    assert record["learned"]["source"] == "model card + parameters" and record["fusion"]["source"] == "model card"
    _, record = LearnedParams().resolve(None)
    assert record["fusion"] == {"extent_probability": ms_learned.DEFAULT_ANCHORS["fusion"][0],
                                "core_probability": ms_learned.DEFAULT_ANCHORS["fusion"][1], "source": "default"}
    # a card with only the learned engine's point: fusion falls back on the defaults
    assert p.anchors("fusion", {"learned": (0.2, 0.6)}) == ms_learned.DEFAULT_ANCHORS["fusion"]
    # a parameter that contradicts the card's other anchor is named
    with pytest.raises(ValueError, match="extent_probability < core_probability"):
        LearnedParams(extent_probability=0.65).anchors("learned", card)


def test_fusion_keeps_a_candidate_when_either_engine_is_confident_and_flags_strong_disagreement() -> None:
    """Four blobs: A confident in the classical engine only, B in the learned engine only, C weak in both
    (below the 0.1 peak), D confident in both. Fusion keeps A, B, D and drops C; A and B are strong
    disagreements (the other engine below 0.01 there), D is not."""
    shape = (40, 40, 40)
    cls, lrn = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    blobs = {"A": (10, 10, 10), "B": (10, 30, 10), "C": (30, 10, 30), "D": (30, 30, 30)}
    m = {k: _ball(shape, c, 3) for k, c in blobs.items()}
    cls[m["A"]], lrn[m["B"]] = 0.8, 0.9
    cls[m["C"]], lrn[m["C"]] = 0.05, 0.06
    cls[m["D"]], lrn[m["D"]] = 0.7, 0.95
    fused = fuse_scores(cls, lrn)
    assert np.array_equal(fused, np.maximum(cls, lrn))
    lab, n = binarise_components(fused, 1.0, PostParams())
    kept = {k for k, mk in m.items() if lab[mk].any()}
    assert kept == {"A", "B", "D"} and n == 3
    # each engine alone keeps only its own confident blobs
    assert {k for k, mk in m.items() if binarise_components(cls, 1.0)[0][mk].any()} == {"A", "D"}
    assert {k for k, mk in m.items() if binarise_components(lrn, 1.0)[0][mk].any()} == {"B", "D"}
    recs = {r["id"]: r for r in engine_disagreement(lab, n, cls, lrn, LearnedParams())}
    by_blob = {k: recs[int(lab[m[k]].max())] for k in ("A", "B", "D")}
    assert by_blob["A"]["disagree"] and by_blob["A"]["found_by"] == "classical"
    assert by_blob["B"]["disagree"] and by_blob["B"]["found_by"] == "learned"
    assert not by_blob["D"]["disagree"] and by_blob["D"]["found_by"] == "both"
    assert by_blob["A"]["classical_peak"] == pytest.approx(0.8) and by_blob["B"]["learned_peak"] == pytest.approx(0.9)
    w = disagreement_warning(list(recs.values()))
    assert w is not None and "2 of 3" in w and "only the classical engine" in w and "only the learned engine" in w
    assert disagreement_warning([by_blob["D"]]) is None
    # a weak (not blind) second opinion is no strong disagreement
    lrn2 = lrn.copy()
    lrn2[m["A"]] = 0.02
    recs2 = engine_disagreement(lab, n, cls, lrn2, LearnedParams())
    assert not next(r for r in recs2 if r["id"] == int(lab[m["A"]].max()))["disagree"]
    with pytest.raises(ValueError, match="shapes"):
        fuse_scores(cls, lrn[:-1])


def test_engine_disagreement_peaks_equal_scipy_per_label_maximum() -> None:
    """Oracle: ``scipy.ndimage.maximum`` per label over the whole grid (what the function computed before it
    looked only inside each lesion's bounding box), on random scores and lesions, with a number that has no
    voxels (its peaks are 0) and labels touching the grid's edges."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    shape = (30, 26, 20)
    cls, lrn = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32) * 0.2
    lab, n = ndimage.label(rng.random(shape) > 0.93)
    lab[lab == 4] = 0  # number 4 left empty
    assert n > 10
    recs = engine_disagreement(lab, n, cls, lrn, LearnedParams())
    idx = np.arange(1, n + 1)
    assert [r["id"] for r in recs] == idx.tolist()
    assert [r["classical_peak"] for r in recs] == [round(float(v), 4) for v in ndimage.maximum(cls, lab, idx)]
    assert [r["learned_peak"] for r in recs] == [round(float(v), 4) for v in ndimage.maximum(lrn, lab, idx)]
    assert recs[3]["classical_peak"] == recs[3]["learned_peak"] == 0.0


def test_merged_lesions_are_either_engines_own_with_overlaps_united() -> None:
    """Oracle by construction: A a classical lesion only, B a learned one only, D both (the learned one larger),
    E a classical lesion and a learned one that overlaps it and a third, F, a classical neighbour (joined to
    the one it overlaps most), G a learned enlarging lesion (its kind and extent kept, renumbered)."""
    shape = (48, 48, 24)
    m = {"A": _ball(shape, (8, 8, 12), 3), "B": _ball(shape, (8, 38, 12), 3),
         "D": _ball(shape, (38, 38, 12), 3), "D_big": _ball(shape, (38, 38, 12), 5),
         "E": _ball(shape, (24, 18, 12), 4), "F": _ball(shape, (24, 27, 12), 2), "EF": _ball(shape, (24, 21, 12), 4),
         "G": _ball(shape, (40, 8, 12), 3)}
    lab_c = np.zeros(shape, np.int32)
    for k, name in enumerate(("A", "D", "E", "F"), start=1):
        lab_c[m[name]] = k
    kinds_c, ext_c = ["new", "enlarging", "new", "new"], {2: "extent of D"}
    lab_l = np.zeros(shape, np.int32)
    for k, name in enumerate(("EF", "B", "D_big", "G"), start=1):
        lab_l[m[name] & (lab_l == 0)] = k
    lab, n, kinds, ext = merge_engine_lesions(lab_c, 4, kinds_c, ext_c, lab_l, 4, ["new", "new", "new", "enlarging"],
                                              {4: "extent of G"})
    assert n == 6 and kinds == ["new", "enlarging", "new", "new", "new", "enlarging"]
    assert ext == {2: "extent of D", 6: "extent of G"}
    assert np.array_equal(lab[lab_c > 0], lab_c[lab_c > 0])  # every classical lesion keeps its voxels and number
    assert np.array_equal(lab == 2, m["D_big"])  # D: both delineations united under the classical number
    overlap_e, overlap_f = np.count_nonzero(m["EF"] & m["E"]), np.count_nonzero(m["EF"] & m["F"])
    assert overlap_e > overlap_f  # so EF joins E
    assert np.array_equal(lab == 3, m["E"] | (m["EF"] & ~m["F"]))
    assert np.array_equal(lab == 5, m["B"]) and np.array_equal(lab == 6, m["G"])
    assert set(np.unique(lab)) == set(range(n + 1))
    with pytest.raises(ValueError, match="shapes"):
        merge_engine_lesions(lab_c, 4, kinds_c, ext_c, lab_l[:-1], 4, ["new"] * 4, {})
    # nothing learned: the classical lesions unchanged
    same = merge_engine_lesions(lab_c, 4, kinds_c, ext_c, np.zeros(shape, np.int32), 0, [], {})
    assert np.array_equal(same[0], lab_c) and same[1:] == (4, kinds_c, ext_c)


def _steps_6_to_9(engine: str, bn: np.ndarray, fn: np.ndarray, brain: np.ndarray, prob: np.ndarray, tmp_path: Path,
                  monkeypatch):  # noqa: ANN202 - MSContext
    """The workflow's steps 6-9 (candidates .. classify) on a common-space pair on a 1.5 mm grid, the network
    replaced by the probability map ``prob``."""
    from types import SimpleNamespace

    from neurorad.pipelines import ms_lesions as ms

    fake = SimpleNamespace(name="fake-net", version="0.0.1", weights_sha256="0" * 64)
    monkeypatch.setattr(ms_learned, "learned_segmenter", lambda ref, mirror_axes=(): fake)
    monkeypatch.setattr(ms_learned, "learned_probability", lambda seg, b, f, br: np.where(br, prob, 0))
    ctx = ms.MSContext(ms.MSConfig(lesion_engine=engine, atlas=False), tmp_path, "b", "f")
    ctx.ref = Volume(np.zeros(bn.shape, np.float32), np.diag([1.5, 1.5, 1.5, 1.0]))
    ctx.bn, ctx.fn, ctx.brain = bn, fn, brain
    for step in (ms.step_candidates, ms.step_postprocess, ms.step_fp_reduction, ms.step_classify):
        step(ctx)
    return ctx


def _noisy_brain_pair(shape: tuple[int, int, int], radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ball brain in the middle of ``shape`` and two time points of independent noise (SD 0.03) around 1."""
    rng = np.random.default_rng(3)
    brain = _ball(shape, tuple(n // 2 for n in shape), radius)
    bn = np.where(brain, 1.0 + 0.03 * rng.standard_normal(shape), 0).astype(np.float32)
    fn = np.where(brain, 1.0 + 0.03 * rng.standard_normal(shape), 0).astype(np.float32)
    return brain, bn, fn


def _fusion_pair() -> dict:
    """A common-space pair on a 1.5 mm grid: a bright new lesion the classical engine finds, and a faint one
    (1.04 x the brain) that no subtraction of this noise can see."""
    shape = (44, 44, 36)
    brain, bn, fn = _noisy_brain_pair(shape, 17)
    bright, faint = _ball(shape, (14, 22, 18), 3), _ball(shape, (30, 22, 18), 3)
    fn[bright] = 1.8
    fn[faint] *= 1.04
    return dict(bn=bn, fn=fn, brain=brain, bright=bright, faint=faint, shape=shape)


def test_fusion_reports_the_classical_lesions_unchanged_plus_the_learned_engines_own(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """The workflow's steps 6-9 on a hand-built pair, the network replaced by a probability map confident on
    the faint lesion and on the bright one: fusion reports exactly the classical engine's lesions with the same
    voxels, plus the faint lesion (the learned engine's own detection), and records what each engine found."""
    from scipy import ndimage

    d = _fusion_pair()
    prob = np.zeros(d["shape"], np.float32)
    prob[d["faint"] | d["bright"]] = 0.97

    def detect(engine: str):  # noqa: ANN202
        return _steps_6_to_9(engine, d["bn"], d["fn"], d["brain"], prob, tmp_path, monkeypatch)

    c, f = detect("classical"), detect("fusion")
    assert c.n >= 1 and (c.labels[d["bright"]] > 0).mean() > 0.5 and not c.labels[d["faint"]].any()
    assert f.n == c.n + 1 and f.kinds[:c.n] == c.kinds
    assert np.array_equal(f.labels[c.labels > 0], c.labels[c.labels > 0])  # classical lesions kept as they were
    added = f.labels == f.n  # the learned engine's own lesion, added last, delineated inside the faint lesion
    near = ndimage.binary_dilation(d["faint"], iterations=2)
    assert np.count_nonzero(added & d["faint"]) >= 10 and not (added & ~near).any(), np.count_nonzero(added & ~near)
    rec = next(s for s in f.prov.steps if s.name == "classify").parameters
    assert rec["fusion"]["classical_lesions"] == c.n and rec["fusion"]["added_by_learned"] == 1
    added_rec = next(a for a in rec["engine_agreement"] if a["id"] == f.n)
    assert added_rec["learned_peak"] > 0.9 and added_rec["classical_peak"] < 0.1  # only the network is confident
    assert np.array_equal(f.cand.score, np.maximum(f.classical_score, f.learned_score))  # the table's peaks


def test_fusion_keeps_a_learned_lesion_inside_a_region_the_classical_rules_drop_whole(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """A focal lesion (1.8 x) inside a 10 mL region-wide change (1.3 x): the classical engine's candidate is the
    whole region, which its diffuse-change rule drops (with the reader's warning), and the lesion goes with it.
    The network is confident on the lesion alone. Fusion reports it: each engine's detection runs on its own
    score and their lesions are united, so a lesion is not lost with a classical candidate that holds it (the
    earlier fusion, which added only learned candidates overlapping no classical one, lost it)."""
    shape = (48, 48, 40)
    brain, bn, fn = _noisy_brain_pair(shape, 20)
    region, lesion = _ball(shape, (24, 24, 20), 9), _ball(shape, (24, 24, 20), 2.5)
    fn[region] *= 1.3
    fn[lesion] = 1.8
    prob = np.where(lesion, 0.97, 0.0).astype(np.float32)

    def detect(engine: str):  # noqa: ANN202
        return _steps_6_to_9(engine, bn, fn, brain, prob, tmp_path, monkeypatch)

    c, f = detect("classical"), detect("fusion")
    assert c.n == 0 and any(not d.kept and "diffuse" in d.reason for d in c.decisions)
    assert any("diffuse FLAIR change" in w for w in c.warnings)
    assert f.n == 1 and (f.labels[lesion] == 1).mean() > 0.8
    assert any("diffuse FLAIR change" in w for w in f.warnings)  # the reader is still told about the region


def _segmenter(contrasts: tuple[str, ...]):  # noqa: ANN202
    from neurorad.segment.base import ClassicalSegmenter

    return ClassicalSegmenter("one-channel", lambda vols: np.zeros(vols[0].spatial_shape, np.int64),
                              {0: "background", 1: "lesion"}, contrasts, version="0.0.1")


def test_a_model_with_the_wrong_channel_count_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    import neurorad.segment.engine as engine_mod
    from neurorad.pipelines import ms_lesions as ms

    ms_learned.learned_segmenter.cache_clear()
    monkeypatch.setattr(engine_mod, "open_model_reference", lambda ref, mirror_axes=None: _segmenter(("FLAIR",)))
    cfg = ms.MSConfig(lesion_engine="fusion", learned=LearnedParams(model="site-flair-only@1.0.0"))
    ctx = ms.MSContext(cfg, tmp_path, tmp_path / "missing_baseline.nii.gz", tmp_path / "missing_followup.nii.gz")
    with pytest.raises(InputError, match=r"site-flair-only@1.0.0 takes 1 input channel\(s\) \(FLAIR\).*needs 2"):
        ms.step_load(ctx)  # refused before the (missing) inputs are even read
    assert ctx.b_raw is None
    ms_learned.learned_segmenter.cache_clear()
    with pytest.raises(InputError, match="unknown lesion engine 'deep'"):
        ms.step_load(ms.MSContext(ms.MSConfig(lesion_engine="deep"), tmp_path, "b", "f"))


def _tiny_pair(i: int) -> dict:
    """A hand-built common-space pair on a 2 mm grid: a brain ball, grey noise, one new lesion at follow-up."""
    rng = np.random.default_rng(i)
    shape = (24, 24, 24)
    brain = _ball(shape, (12, 12, 12), 10)
    bn = np.where(brain, 1.0 + 0.03 * rng.standard_normal(shape), 0).astype(np.float32)
    fn = np.where(brain, 1.0 + 0.03 * rng.standard_normal(shape), 0).astype(np.float32)
    les = _ball(shape, (8 + i, 12, 12), 2.5)
    fn[les] = 1.8
    return dict(bn=bn, fn=fn, brain=brain, label=les.astype(np.uint8), affine=np.diag([2.0, 2.0, 2.0, 1.0]),
                opts={})


def test_training_entry_makes_a_registry_model_the_engine_runs(tmp_path: Path, monkeypatch) -> None:
    """The real entry (`--cases 3 --epochs 1 --iterations 1`) on hand-built pairs (the workflow's steps 1-5 are
    replaced by a cache of tiny pairs): a model folder with hashes and a card that says the data are synthetic
    and gives the retrain command; the learned and fusion engines load it and score a tiny pair."""
    from neurorad.segment.ms_difference import CandidateParams, candidate_score
    from neurorad.segment.registry import read_card, verify
    from neurorad.workflows.ms_lesions import train as tr

    def fake_prepare(i: int, cache: Path) -> Path:
        cache.mkdir(parents=True, exist_ok=True)
        p = cache / f"pair_{tr.TRAIN_SEED0 + i}.pkl"
        p.write_bytes(pickle.dumps(_tiny_pair(i)))
        return p

    monkeypatch.setattr(tr, "prepare_pair", fake_prepare)
    cfg = {k: dict(v) for k, v in tr.CONFIG.items()}
    cfg["data"].update(patch_size=[32, 32, 32], spacing_mm=[2.0, 2.0, 2.0])
    cfg["training"].update(batch_size=1)
    cfg["inference"].update(patch_size=[32, 32, 32])
    monkeypatch.setattr(tr, "CONFIG", cfg)
    assert tr.main(["--out", str(tmp_path / "run"), "--cases", "3", "--epochs", "1", "--iterations", "1"]) == 0
    model = tmp_path / "run" / "run" / "model"
    assert verify(model) == []
    card = read_card(model)
    assert f"{card['name']}@{card['version']}" == ms_learned.LEARNED_MODEL
    assert card["contrasts"] == ["baseline_flair", "followup_flair"] and card["architecture"]["in_channels"] == 2
    assert "SYNTHETIC" in card["training_data"]
    assert card["validation"]["command"].startswith("python -m neurorad.workflows.ms_lesions.train --out RUN")
    # fine-tuning from that model (`--init`): recorded in the card and the retrain command, at half the rate;
    # a successor's `--version` is the card's
    assert tr.main(["--out", str(tmp_path / "tuned"), "--cases", "3", "--epochs", "1", "--iterations", "1",
                    "--init", str(model), "--version", "0.9.0"]) == 0
    tuned = read_card(tmp_path / "tuned" / "run" / "model")
    assert tuned["version"] == "0.9.0" and "--version 0.9.0" in tuned["validation"]["command"]
    assert tuned["training"]["init_weights"]["weights_state_sha256"] == card["training"]["weights_state_sha256"][0]
    assert f"--init {model}" in tuned["validation"]["command"]
    assert tuned["training"]["config"]["training"]["learning_rate"] == tr.CONFIG["training"]["learning_rate"] / 2

    ms_learned.learned_segmenter.cache_clear()
    d = _tiny_pair(1)
    ref = Volume(d["bn"], d["affine"])
    cand = candidate_score(d["bn"], d["fn"], d["brain"], (2.0, 2.0, 2.0), CandidateParams())
    params = LearnedParams(model=str(model))
    c_l, classical, learned, rec = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "learned", params)
    assert f"{rec['name']}@{rec['version']}" == ms_learned.LEARNED_MODEL and len(rec["sha256"]) == 64
    assert np.array_equal(classical, cand.score) and np.array_equal(c_l.score, learned)
    assert learned.shape == d["brain"].shape and 0 <= learned.min() and learned.max() <= 1
    assert not learned[~d["brain"]].any()
    c_f, _, learned_f, _ = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "fusion", params)
    assert np.array_equal(c_f.score, classical)  # fusion: the classical detection runs on its own score first
    # each engine maps the same network output with its own operating point; a given map skips the network
    prob = ms_learned.learned_probability(ms_learned.learned_segmenter(str(model)), ref, d["fn"], d["brain"])
    assert np.array_equal(learned, probability_to_score(prob, params, engine="learned"))
    assert np.array_equal(learned_f, probability_to_score(prob, params, engine="fusion"))
    given = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "learned", params, probability=prob)
    assert np.array_equal(given[2], learned)
    # test-time mirroring (LearnedParams.mirror_axes): none by default; left-right runs the mirrored pass too and is
    # recorded (the averaging itself: tests/segment/test_inference_mirroring.py)
    assert rec["mirror_axes"] == []
    mirrored = LearnedParams(model=str(model), mirror_axes=(0,))
    *_, rec_m = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "learned", mirrored)
    seg_m = ms_learned.learned_segmenter(str(model), (0,))
    assert rec_m["mirror_axes"] == [0] and seg_m.inference.mirror_tta and seg_m.inference.mirror_axes == (0,)
    assert not ms_learned.learned_segmenter(str(model)).inference.mirror_tta
    assert np.array_equal(c_f.difference, cand.difference)  # the FP rules still see the classical difference
    assert rec["operating_point"]["source"] == "default"  # this card has no operating point yet
    # an operating point written onto the model's card (after a sweep) is the one the engines then use
    ms_learned.set_operating_point(str(model), learned=(0.2, 0.6), fusion=(0.25, 0.7), chosen_by="a test sweep")
    assert verify(model) == [] and read_card(model)["operating_point"]["chosen_by"] == "a test sweep"
    assert ms_learned.model_operating_point(str(model)) == {"learned": (0.2, 0.6), "fusion": (0.25, 0.7)}
    _, _, learned_card, rec = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "learned", params,
                                                              probability=prob)
    assert rec["operating_point"] == {"extent_probability": 0.2, "core_probability": 0.6, "source": "model card"}
    assert np.array_equal(learned_card, probability_to_score(prob, LearnedParams(extent_probability=0.2,
                                                                                 core_probability=0.6)))
    override = LearnedParams(model=str(model), core_probability=0.4)
    _, _, learned_set, rec = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "learned", override,
                                                             probability=prob)
    assert rec["operating_point"]["source"] == "model card + parameters"
    assert np.array_equal(learned_set, probability_to_score(prob, LearnedParams(extent_probability=0.2,
                                                                                core_probability=0.4)))
    # a malformed card point is refused naming the model; a changed weights file is not re-blessed
    card_path = model / "model.json"
    raw = card_path.read_text()
    card_path.write_text(raw.replace('"core_probability": 0.6', '"core_probability": 0.1'))
    with pytest.raises(InputError, match="malformed operating_point"):
        ms_learned.model_operating_point(str(model))
    card_path.write_text(raw)
    weights = next(model.glob("*.pt"))
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(ProcessingError, match="failed verification"):
        ms_learned.set_operating_point(str(model), learned=(0.1, 0.5))
    assert verify(model) != []
    ms_learned.learned_segmenter.cache_clear()


def test_shipped_model_runs_bfloat16_where_the_cpu_has_it_and_its_onnx_fallback_elsewhere(monkeypatch) -> None:
    """The shipped card prefers torch-bf16 on the benchmark's evidence (session 40) and falls back on ONNX float32
    on a CPU without native bfloat16; both engines compute the same network (probabilities within a few hundredths
    on a brain-like pair), and the record names the engine that ran."""
    from neurorad.segment import engine as engine_module
    from neurorad.segment.engine import bf16_supported, load_segmenter
    from neurorad.segment.registry import find_model

    inference = find_model(ms_learned.LEARNED_MODEL).card["inference"]
    assert (inference["preferred_engine"], inference["fallback_engine"]) == ("torch-bf16", "onnx")
    assert inference["onnx_export"]["bf16_accepted_by"].strip()  # accepted on recorded evidence, not the voxel check
    ms_learned.learned_segmenter.cache_clear()
    try:
        with monkeypatch.context() as mp:
            mp.setattr(engine_module, "bf16_supported", lambda: False)
            assert ms_learned.learned_segmenter(ms_learned.LEARNED_MODEL).engine == "onnx"
            assert ms_learned.engine_record(ms_learned.LEARNED_MODEL)["inference_engine"] == "onnx"
    finally:
        ms_learned.learned_segmenter.cache_clear()
    if not bf16_supported():
        return
    assert ms_learned.engine_record(ms_learned.LEARNED_MODEL)["inference_engine"] == "torch-bf16"
    rng = np.random.default_rng(5)
    shape = (48, 48, 40)
    brain = np.zeros(shape, bool)
    brain[6:-6, 6:-6, 6:-6] = True
    bn = np.where(brain, 1.0 + rng.normal(0, 0.05, shape), 0).astype(np.float32)
    fn = bn.copy()
    fn[20:26, 20:26, 18:24] += 0.8  # a bright new blob
    ref = Volume(bn, np.diag([1.5, 1.5, 1.5, 1.0]))
    p_bf16 = ms_learned.learned_probability(load_segmenter(ms_learned.LEARNED_MODEL, engine="torch-bf16"), ref, fn,
                                            brain)
    p_onnx = ms_learned.learned_probability(load_segmenter(ms_learned.LEARNED_MODEL, engine="onnx"), ref, fn, brain)
    assert 0 < float(np.abs(p_bf16 - p_onnx).max()) < 0.15
    assert float(p_onnx[20:26, 20:26, 18:24].max()) > 0.5 and float(p_bf16[20:26, 20:26, 18:24].max()) > 0.5
    ms_learned.learned_segmenter.cache_clear()


def test_shipped_model_is_verified_small_carded_and_a_two_time_point_model() -> None:
    from neurorad.segment.registry import SHIPPED_ROOT, find_model

    info = find_model(ms_learned.LEARNED_MODEL)  # verifies every file's sha256
    assert info.path.parent == SHIPPED_ROOT
    assert sum(p.stat().st_size for p in info.path.rglob("*") if p.is_file()) / 1e6 <= 25.0
    card = info.card
    assert "SYNTHETIC" in card["training_data"] and "NOT FIT" in card["limitations"]
    assert card["validation"]["command"].startswith("python -m neurorad.workflows.ms_lesions.train --out RUN")
    # the shipped model carries its swept operating point for both engines, and how it was chosen
    point = ms_learned.model_operating_point(ms_learned.LEARNED_MODEL)
    assert point is not None and set(point) == {"learned", "fusion"}
    assert "bench/ms_sweep.py" in card["operating_point"]["chosen_by"]
    _, record = LearnedParams().resolve(point)
    assert {record[e]["source"] for e in ("learned", "fusion")} == {"model card"}
    ms_learned.learned_segmenter.cache_clear()
    seg = ms_learned.learned_segmenter(ms_learned.LEARNED_MODEL)  # loads it; refuses a wrong channel count
    assert seg.contrasts == ("baseline_flair", "followup_flair") and seg.labels[1] == "new_or_enlarging"
    ms_learned.learned_segmenter.cache_clear()


@pytest.mark.parametrize("engine,expected", [("fusion", "segment.ms_difference + ms-unet3d 0.3.0 (fusion)"),
                                             ("learned", "ms-unet3d 0.3.0 (learned)")])
def test_candidate_step_provenance_names_the_engines_that_made_the_score(tmp_path: Path, engine, expected) -> None:
    """The candidates step's provenance names every engine behind the score: fusion is the classical
    difference engine AND the network (the shipped model, on a small 1.5 mm pair)."""
    from neurorad.pipelines import ms_lesions as ms

    rng = np.random.default_rng(0)
    shape = (40, 40, 32)
    brain = np.zeros(shape, bool)
    brain[4:-4, 4:-4, 4:-4] = True
    bn = np.where(brain, 1.0 + rng.normal(0, 0.03, shape), 0).astype(np.float32)
    fn = bn + np.where(brain, rng.normal(0, 0.03, shape), 0).astype(np.float32)
    ctx = ms.MSContext(ms.MSConfig(lesion_engine=engine), tmp_path, "b", "f")
    ctx.ref = Volume(np.zeros(shape, np.float32), np.diag([1.5, 1.5, 1.5, 1.0]))
    ctx.bn, ctx.fn, ctx.brain = bn, fn, brain
    ms.step_candidates(ctx)
    step = next(s for s in ctx.prov.steps if s.name == "candidates")
    assert step.engine == expected
    assert step.parameters["learned_model"]["name"] == "ms-unet3d"
    # which numeric engine ran the network is part of the provenance (bfloat16 where the card prefers it)
    assert step.parameters["learned_model"]["inference_engine"] == ms_learned.learned_segmenter(
        ms_learned.LEARNED_MODEL).engine
    # and so is its test-time mirroring (none by default; session 50 tried left-right)
    assert step.parameters["learned_model"]["mirror_axes"] == list(LearnedParams().mirror_axes) == []
