"""``bench/ms_froc.py``: the FROC staircase per engine, read off benchmark records. The expected points are counted
by hand from the benchmark's definitions (found: detections of peak >= T cover >= 40 % of the lesion; a false
positive: a detection of peak >= T touching no lesion; a stable patient is called active by any detection)."""

from __future__ import annotations

import json

import pytest

from tests._bench import load_bench


def _lesion(voxels: int, hits: list[tuple[int, float, int]]) -> dict:
    """``hits``: (detection, its peak, covered voxels)."""
    return {"id": 0, "kind": "new", "diameter_mm": 6.0, "location": "deep", "shape": "blob", "contrast_to_wm": 1.8,
            "slice_mm": 1.0, "voxels": voxels, "volume_mm3": float(voxels),
            "hits": [{"det": d, "peak": p, "covered": c, "volume_mm3": float(c)} for d, p, c in hits]}


def _records() -> list[dict]:
    def det(peak: float, fp: bool) -> dict:
        return {"peak": peak, "fp": fp}

    return [
        # active: A found by a confident detection, B covered half by a weaker one; a faint false positive
        {"case": 0, "truth_active": True, "slice_mm": 1.0,
         "lesions": [_lesion(10, [(1, 0.8, 10)]), _lesion(10, [(2, 0.3, 5)])],
         "detections": [det(0.8, False), det(0.3, False), det(0.05, True)]},
        # active: C touched but covered 30 % (never found); a false positive at 0.6
        {"case": 1, "truth_active": True, "slice_mm": 1.0, "lesions": [_lesion(10, [(4, 0.5, 3)])],
         "detections": [det(0.5, False), det(0.6, True)]},
        {"case": 2, "truth_active": False, "slice_mm": 1.0, "lesions": [], "detections": [det(0.2, True)]},
        {"case": 3, "truth_active": False, "slice_mm": 1.0, "lesions": [], "detections": []},
        {"case": 4, "error": "registration failed"},  # left out, as the summary leaves it out
    ]


def test_the_staircase_has_one_point_per_detection_peak_counted_by_hand() -> None:
    fr = load_bench("ms_froc")
    curve = fr.froc_curve(_records(), floor=0.02)
    got = [(p["threshold"], p["found"], p["fp_per_patient"], p["patient_specificity"]) for p in curve]
    assert got == [
        (0.02, 2, 3 / 4, 0.5),
        (0.05, 2, 3 / 4, 0.5),
        (0.2, 2, 2 / 4, 0.5),
        (0.3, 2, 1 / 4, 1.0),
        (0.5, 1, 1 / 4, 1.0),
        (0.6, 1, 1 / 4, 1.0),
        (0.8, 1, 0.0, 1.0),
    ]
    assert all(p["lesions"] == 3 for p in curve)
    # within a budget: the most lesions, then the fewest false positives (the highest threshold)
    assert fr.best_within(curve, 0.25)["threshold"] == 0.3
    assert fr.best_within(curve, 0.0)["threshold"] == 0.8
    assert fr.best_within(curve, 1.0)["threshold"] == 0.3
    # a threshold between two peaks keeps the detections of the next peak up: at 0.1 the faint false positive
    # (0.05) is gone, the 0.2 one stays
    op = fr.at_threshold(curve, 0.1)
    assert (op["threshold"], op["found"], op["fp_per_patient"]) == (0.2, 2, 2 / 4)
    assert fr.at_threshold(curve, 0.3)["threshold"] == 0.3
    with pytest.raises(ValueError, match="floor"):
        fr.at_threshold(curve, 0.01)
    with pytest.raises(ValueError, match="over every"):
        fr.at_threshold(curve, 0.9)
    # the operating point asked for is a point of its own, the same as the next peak's
    with_op = fr.froc_curve(_records(), floor=0.02, also_at=(0.1,))
    assert [p["threshold"] for p in with_op] == [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8]
    assert {k: v for k, v in with_op[2].items() if k != "threshold"} == \
        {k: v for k, v in with_op[3].items() if k != "threshold"}
    with pytest.raises(ValueError, match="under the runs' floor"):
        fr.froc_curve(_records(), floor=0.02, also_at=(0.01,))
    with pytest.raises(ValueError, match="no scored case"):
        fr.froc_curve([{"case": 0, "error": "x"}])


def test_the_cli_pools_runs_per_engine_and_draws_them(tmp_path, capsys) -> None:  # noqa: ANN001 - pytest fixtures
    fr = load_bench("ms_froc")
    recs = _records()
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    # a two-engine run of cases 0-1 and a single-engine jsonl of cases 2-4
    rows = [dict(r, engine=e) for r in recs[:2] for e in ("learned", "fusion")]
    a.write_text(json.dumps({"summary": {}, "cases": rows}))
    b.write_text("\n".join(json.dumps(dict(r, engine="fusion")) for r in recs[2:]))
    png, out = tmp_path / "froc.png", tmp_path / "froc.json"
    assert fr.main(["--curve", "fusion", "fusion", str(a), str(b), "--point", "observer=0.9@0.5",
                    "--png", str(png), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| fusion | 3 |" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.read_text())
    assert [p["found"] for p in saved["curves"]["fusion"]] == [2, 2, 2, 2, 2, 1, 1, 1]  # with the operating point
    assert saved["points"]["observer"] == [0.9, 0.5]
    # the same case in two files is refused, naming it
    with pytest.raises(SystemExit):
        fr.main(["--curve", "x", "fusion", str(a), str(a)])
    assert "case 0 is in both" in capsys.readouterr().err
