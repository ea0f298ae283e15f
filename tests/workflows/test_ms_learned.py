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

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.segment import ms_learned
from neurorad.segment.ms_difference import PostParams, binarise_components
from neurorad.segment.ms_learned import (
    LearnedParams,
    disagreement_warning,
    engine_disagreement,
    fuse_scores,
    fusion_components,
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


def test_fusion_components_keep_either_engines_own_candidates_and_the_classical_extent() -> None:
    """Oracle by construction: A classical only, B learned only, C weak in both, D confident in both with the
    learned blob larger, E a classical blob next to a learned one that touches it. The union holds A, B and
    the classical D and E with their own classical extents (no learned duplicate), C is dropped."""
    shape = (48, 48, 24)
    cls, lrn = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    m = {"A": _ball(shape, (8, 8, 12), 3), "B": _ball(shape, (8, 38, 12), 3), "C": _ball(shape, (38, 8, 12), 3),
         "D": _ball(shape, (38, 38, 12), 3), "D_big": _ball(shape, (38, 38, 12), 5),
         "E": _ball(shape, (24, 20, 12), 3), "E_next": _ball(shape, (24, 27, 12), 3)}
    cls[m["A"]], lrn[m["B"]] = 0.8, 0.9
    cls[m["C"]], lrn[m["C"]] = 0.05, 0.06
    cls[m["D"]], lrn[m["D_big"]] = 0.7, 0.95
    cls[m["E"]], lrn[m["E_next"] | m["E"]] = 0.6, 0.9
    lab, n = fusion_components(cls, lrn, 1.0, PostParams())
    assert n == 4  # A, D, E (classical) + B (learned); C below the peak in both
    for k in ("A", "D", "E"):
        ids = np.unique(lab[m[k]])
        assert len(ids) == 1 and ids[0] > 0 and np.array_equal(lab == ids[0], m[k])  # the classical extent
    assert np.array_equal(lab == int(lab[m["B"]].max()), m["B"]) and not lab[m["C"]].any()
    assert not lab[m["D_big"] & ~m["D"]].any()  # the overlapping learned blob is not a second candidate
    # voxel-wise max fusion would have merged D with its larger learned blob (the shape the rules then judge)
    lab_max, _ = binarise_components(fuse_scores(cls, lrn), 1.0, PostParams())
    assert np.count_nonzero(lab_max == lab_max[38, 38, 12]) == int(m["D_big"].sum())


def _segmenter(contrasts: tuple[str, ...]):  # noqa: ANN202
    from neurorad.segment.base import ClassicalSegmenter

    return ClassicalSegmenter("one-channel", lambda vols: np.zeros(vols[0].spatial_shape, np.int64),
                              {0: "background", 1: "lesion"}, contrasts, version="0.0.1")


def test_a_model_with_the_wrong_channel_count_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    import neurorad.segment.engine as engine_mod
    from neurorad.pipelines import ms_lesions as ms

    ms_learned.learned_segmenter.cache_clear()
    monkeypatch.setattr(engine_mod, "open_model_reference", lambda ref: _segmenter(("FLAIR",)))
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
    assert card["name"] == "ms-unet3d" and card["version"] == "0.1.0"
    assert card["contrasts"] == ["baseline_flair", "followup_flair"] and card["architecture"]["in_channels"] == 2
    assert "SYNTHETIC" in card["training_data"]
    assert card["validation"]["command"].startswith("python -m neurorad.workflows.ms_lesions.train --out RUN")

    ms_learned.learned_segmenter.cache_clear()
    d = _tiny_pair(1)
    ref = Volume(d["bn"], d["affine"])
    cand = candidate_score(d["bn"], d["fn"], d["brain"], (2.0, 2.0, 2.0), CandidateParams())
    params = LearnedParams(model=str(model))
    c_l, classical, learned, rec = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "learned", params)
    assert rec["name"] == "ms-unet3d" and rec["version"] == "0.1.0" and len(rec["sha256"]) == 64
    assert np.array_equal(classical, cand.score) and np.array_equal(c_l.score, learned)
    assert learned.shape == d["brain"].shape and 0 <= learned.min() and learned.max() <= 1
    assert not learned[~d["brain"]].any()
    c_f, _, _, _ = ms_learned.apply_lesion_engine(cand, ref, d["fn"], d["brain"], "fusion", params)
    assert np.array_equal(c_f.score, np.maximum(classical, learned))
    assert np.array_equal(c_f.difference, cand.difference)  # the FP rules still see the classical difference
    ms_learned.learned_segmenter.cache_clear()


def test_shipped_model_is_verified_small_carded_and_a_two_time_point_model() -> None:
    from neurorad.segment.registry import SHIPPED_ROOT, find_model

    info = find_model(ms_learned.LEARNED_MODEL)  # verifies every file's sha256
    assert info.path.parent == SHIPPED_ROOT
    assert sum(p.stat().st_size for p in info.path.rglob("*") if p.is_file()) / 1e6 <= 25.0
    card = info.card
    assert "SYNTHETIC" in card["training_data"] and "NOT FIT" in card["limitations"]
    assert card["validation"]["command"].startswith("python -m neurorad.workflows.ms_lesions.train --out RUN")
    ms_learned.learned_segmenter.cache_clear()
    seg = ms_learned.learned_segmenter(ms_learned.LEARNED_MODEL)  # loads it; refuses a wrong channel count
    assert seg.contrasts == ("baseline_flair", "followup_flair") and seg.labels[1] == "new_or_enlarging"
    ms_learned.learned_segmenter.cache_clear()


@pytest.mark.parametrize("engine,expected", [("fusion", "segment.ms_difference + ms-unet3d 0.1.0 (fusion)"),
                                             ("learned", "ms-unet3d 0.1.0 (learned)")])
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
