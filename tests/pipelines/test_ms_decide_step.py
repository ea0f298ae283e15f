"""Step 11 of the MS workflow (workflow 1.18.0): a lesion counts for activity without the reader from
``MSConfig.activity_min_peak_score``; the step records the threshold and the low-confidence lesions, and
result.json's decision says READER TO DECIDE when only such lesions were found."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from neurorad.pipelines import ms_lesions as ms
from neurorad.quantify.lesions import LesionRow


def _decide(tmp_path: Path, scores: list[float], threshold: float | None) -> ms.MSContext:
    ctx = ms.MSContext(replace(ms.MSConfig(), activity_min_peak_score=threshold), tmp_path, None, None)
    ctx.rows = [LesionRow(i + 1, "new", 30.0, 3.9, 0.0, 0.0, 0.0, max_score=s) for i, s in enumerate(scores)]
    ctx.decisions = []
    ms.step_decide(ctx)
    return ctx


def test_the_decide_step_counts_lesions_from_the_activity_threshold(tmp_path: Path) -> None:
    assert ms.MSConfig().activity_min_peak_score == 0.23
    low = _decide(tmp_path, [0.14, 0.2], 0.23)
    assert low.decision is not None and not low.decision.active and low.decision.low_confidence == 2
    assert low.decision.gadolinium_label == "READER TO DECIDE"
    step = low.prov.steps[-1]
    assert step.name == "decide" and step.parameters["activity_min_peak_score"] == 0.23
    assert step.parameters["low_confidence_lesions"] == [1, 2]
    mixed = _decide(tmp_path, [0.14, 0.95], 0.23)
    assert mixed.decision is not None and mixed.decision.active and mixed.decision.n_new == 1
    assert mixed.prov.steps[-1].parameters["low_confidence_lesions"] == [1]
    every = _decide(tmp_path, [0.14], None)  # workflow 1.17.0's rule: every reported lesion counts
    assert every.decision is not None and every.decision.active and every.decision.low_confidence == 0
    assert every.prov.steps[-1].parameters["low_confidence_lesions"] == []
