"""Classical difference-based engine for new and enlarging MS lesions on a FLAIR pair.

The engine joins two published systems:

* the T2-FLAIR subtraction CAD used during the scan session to decide on gadolinium
  (voxel-wise subtraction of co-registered, intensity-normalised FLAIR; a candidate whose
  centre-of-gravity intensity is higher at baseline is a false positive), and
* the regional candidate-lesion workflow (post-processing: binarise the score at 0.01,
  26-connected components, keep components > 12 mm^3 with at least one voxel > 0.1; 20 mm^3 here since
  workflow 1.16.0, and a voxel > 0.0787 since 1.34.0, chosen by the FROC rule on the tuning pairs: ``PostParams``).

All functions are pure: arrays (baseline and follow-up on ONE grid, already registered and
jointly normalised so that normal-appearing white matter has the same intensity at both
time points) in, arrays and tables out. Array axes are the Volume's ``[i, j, k]``;
``spacing_mm`` gives the voxel size along them.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy import ndimage

from neurorad.quantify.components import (
    connected_components,
    label_centroids_ijk,
    label_maximum,
    label_sums,
    label_voxel_counts,
)
from neurorad.quantify.lesions import equivalent_diameter_mm


@dataclass(frozen=True)
class CandidateParams:
    """Step 6: difference map -> per-voxel score in [0, 1].

    ``method='local'`` (default) normalises the change by local tissue statistics: the noise of
    the difference in a Gaussian neighbourhood (``local_sigma_mm``) and the local level of normal
    tissue at baseline, so the thresholds are contrasts relative to the surrounding tissue, not
    fractions of the whole-brain median. ``method='global'`` is the original engine (whole-brain
    robust z, fixed change in brain-median units, white-matter-like baseline only), kept for
    regression. The ``z_at_core``/``rel_at_core`` operating point was chosen by the FROC sweep of
    ``bench/ms_sweep.py`` on tuning phantoms (seeds apart from the benchmark's).
    """

    method: str = "local"  # local | global
    smoothing_fwhm_mm: float = 1.5  # Gaussian pre-smoothing of both images (noise vs small lesions)
    # anisotropic voxels: smooth in-plane up to the slice thickness as well. True until workflow 1.12.0: chosen on
    # 2026-11-27, before both images were resampled with identical interpolation weights and the finer one
    # anti-aliased to the coarser voxel (the thick-slice fix) and before the local normalisation; since then it
    # only blurred small lesions in-plane into the thick slices' noise. Sweep on the 96 widened tuning pairs at
    # 1 mm (bench/ms_sweep.py --set candidate.isotropic_smoothing=False; docs/ms-lesions-log.md "Workflow 1.12.0"):
    # 173 -> 179 of 203 lesions at the same 0.115 FP per patient, more sensitive at every score threshold 0.1-0.5
    isotropic_smoothing: bool = False
    highpass_sigma_mm: float = 10.0  # slowly varying difference (residual bias, scaling) removed; 0 = off
    z_at_extent: float = 3.0  # z of the difference that maps to score 0.01 (lesion extent)
    # z that maps to score 0.1 (lesion core): the FROC sweep on 29 widened tuning pairs (bench/ms_sweep.py,
    # the most sensitive point with <= 0.3 FP per patient); 4.5076 / 0.1052 before (chosen on 10 pairs)
    z_at_core: float = 4.8839
    border_margin_mm: float = 3.0  # voxels closer than this to the brain edge get score 0
    # local engine
    local_sigma_mm: float = 8.0  # neighbourhood of the local noise and tissue level (Gaussian sigma)
    local_sigma_floor: float = 0.6  # local noise SD >= this x the whole-brain robust SD
    rel_at_extent: float = 0.06  # change / local tissue level that maps to score 0.01
    rel_at_core: float = 0.1165  # change / local tissue level that maps to score 0.1 (same sweep)
    csf_rel: float = 0.6  # tissue (not CSF) at baseline: baseline > csf_rel x local tissue level
    intensity_mapping: bool = True  # subtract the follow-up expected from the baseline intensity (protocol change)
    mapping_bins: int = 200  # quantile bins of the baseline for that mapping
    # global engine (method='global', the original thresholds)
    hyper_z: float = 2.0  # follow-up FLAIR must be this many robust SDs above the brain median
    csf_fraction: float = 0.75  # tissue (not CSF) where baseline > csf_fraction * brain median
    wm_upper_z: float = 2.0  # white-matter-like at baseline: below brain median + wm_upper_z robust SDs
    change_at_extent: float = 0.15  # difference (normalised units, brain median = 1) that maps to score 0.01
    change_at_core: float = 0.45  # difference that maps to score 0.1 (lesion core)


@dataclass(frozen=True)
class FPParams:
    """Step 5: false-positive reduction."""

    # CAD rule: centre-of-gravity brighter at baseline -> false positive. Off by default since
    # workflow 1.1.0: on 47 tuning pairs (29 widened, 18 original-style; never evaluated) it dropped
    # 3 enlarging lesions (a rim's centre lies next to the old lesion, brighter at baseline when the
    # lesion dimmed or by partial volume) and no false positive that the shift, dipole and drift
    # rules did not drop anyway, at any threshold 0.05-0.9 (docs/ms-lesions-log.md)
    cog_rule: bool = False
    shift_radius_mm: float = 1.5  # misregistration test: baseline max over this radius explains follow-up
    # ... along an axis whose voxels are coarser than this (thick slices), the shift allowed there, read between the
    # slices by linear interpolation (:func:`shifted_baseline_max`), where one input resolved that axis (next field).
    # None: that axis' radius rounds up to one whole voxel (3-6 mm on thick slices), and the cortex or ventricle wall
    # one slice away "explains" a faint lesion beside it: six lesions an ideal observer sees (z 5.7-11) were dropped
    # that way, >= 95 % explained with a matching loss of only 0.06-0.12 x their gain. 1.5 (workflow 1.17.0; None
    # before; docs/ms-lesions-log.md "Workflow 1.17.0"): on the 192 widened tuning pairs at 1 mm (bench/ms_sweep.py
    # --cases 0-191 --set fp.shift_thick_axis_mm=V) 349 of 395 lesions at the same 20 false positives as None's 346;
    # on the sets the choice never saw (fresh widened seeds 40-79, the independent simulator in Colin27 and MNI152)
    # one lesion more for three false positives more, none lost; applied on every thick axis (session 34) it added
    # false positives on pairs of two thick images instead
    shift_thick_axis_mm: float | None = 1.5
    # ... and only when one of the two INPUT images has voxels no coarser than this along every axis (a 3D
    # acquisition; None: always): that image is anti-aliased to the thick one's voxel and sampled on its slices
    # before the common grid (resample_pair), so an edge's partial volume matches between the time points and the
    # whole-slice shift is not needed. Two thick acquisitions (the same orientation or crossed) sit at different slice
    # positions with different slice profiles, an edge's partial volume differs between them by up to half a slice,
    # and the whole-slice shift is what absorbs that: applied there it added 5 false positives on the widened held-out
    # pairs 0-39 (both images 3-5 mm) and 8 on the independent simulator's pair 8 (5 mm axial slices against 5 mm
    # coronal ones 6.4 mm apart). Needs the inputs' geometry (false_positive_reduction's ``finer_input_voxel_mm``)
    shift_thick_axis_finer_input_mm: float | None = 1.5
    shift_explained_fraction: float = 0.8  # drop when this fraction of voxels is explained by a shift
    shift_margin_z: float = 2.0  # follow-up must exceed the shifted baseline by this many robust SDs
    # ... after taking off this multiple of the pair's typical excess of the shifted baseline over the baseline (the
    # median of the difference over the brain): the maximum over a shift's ~20 noisy neighbours sits above the
    # baseline wherever there is noise, by 0.08-0.19 (2-4 SDs of the difference) on 1 mm widened tuning pairs, so
    # the test "explains" any gain under about that much, a faint lesion's whole contrast. None or 0: off. Tried in
    # session 46 (docs/ms-lesions-log.md, "Tried 2026-12-06 (session 46)"): 1.0 recovers faint lesions (widened
    # tuning pairs 0-191: 354 -> 359 of 395) but lets the faint blobs of 5 mm pairs through with them (25 -> 42 false
    # positives); on tuning pairs 192-383 341 -> 345 of 372 for 24 -> 55 false positives, six stable patients more
    # called active; 0.5: 355 lesions, 38 false positives. Off
    shift_noise_bias: float | None = None
    # ... only for a candidate the other engine of the fusion sees: its score (``false_positive_reduction``'s
    # ``confirm``: the learned engine's for the classical candidates, and the reverse) reaches this inside the
    # candidate; the others keep the uncorrected test. The faint false positives the correction lets through have no
    # learned probability, the faint lesions it recovers mostly have one (session 46's trace). The multiple is
    # shift_noise_bias, 1.0 when that is unset. None: off. 0.1 (the other engine's own operating point; workflow
    # 1.26.0), swept in session 46: widened tuning pairs 0-191 354 -> 357 of 395 lesions for 25 -> 26 false positives
    # (patient specificity 0.891 both); pairs 192-383 341 -> 342 of 372 at the same 24; held out, widened 160 pairs
    # 272 -> 274 of 308 at the same false positives; 0.05 and 0.3 give 0.1's detections on the tuning pairs (session
    # 47: a plateau). On slices of two orientations it is not applied
    # (shift_confirm_crossed, below). docs/ms-lesions-log.md, "Tried 2026-12-06 (session 46)" and "Workflow 1.26.0"
    shift_confirm_score: float | None = 0.1
    # ... and on a pair of two thick acquisitions of different orientations too (``false_positive_reduction``'s
    # ``crossed_slices``: axial slices at one time point, coronal at the other). False: there the uncorrected test
    # stays. Neither engine was tuned or trained on such a pair (the widened phantom slices one orientation), and
    # each image's edges carry the other's slice profile, so a faint blob both engines see is partial volume as often
    # as a lesion: the independent simulator's Colin27 pair 8 (5 mm axial against 5 mm coronal) gained three
    # confident false positives with the correction; its seven other crossed pairs (Colin27 and MNI152) changed
    # nothing (session 47, docs/ms-lesions-log.md "Workflow 1.26.0"). Swept in session 48 on 96 crossed widened
    # tuning pairs (bench/ms_sweep.py --phantom widened-crossed; workflow 1.27.0): True gains one lesion for four
    # false positives ("Workflow 1.27.0")
    shift_confirm_crossed: bool = False
    # ... read as one coherent shift per candidate instead of a maximum per voxel: a candidate's fraction explained
    # is the largest fraction that any ONE shift of the baseline (each offset of the test's box, the thick-axis
    # fraction read between slices as above) explains. Misregistration moves a neighbourhood as one, so one shift
    # explains its gain; the per-voxel maximum takes each voxel's brightest of up to 125 noisy neighbours (the box
    # of a 1.5 mm radius rounds to +-2 voxels on a 1 mm grid), which sits 2-4 robust SDs above the baseline and
    # "explains" a faint lesion's whole gain in homogeneous white matter (shift_noise_bias above). None: the per-voxel
    # maximum (workflow 1.35.0 and before); "finer-input": one coherent shift only where one input image is a 3D
    # acquisition (:func:`thick_axis_shift_applies`, the bound shift_thick_axis_finer_input_mm; two thick
    # acquisitions keep the per-voxel maximum, which absorbs their different slice profiles at edges); "always".
    # Tried in session 56 and NOT adopted (docs/ms-lesions-log.md, "Tried 2026-12-07 (session 56)"): with
    # shift_coherent_always 0.8, on the 384 widened tuning pairs at 1 mm "finer-input" found 707 instead of 704 of
    # 767 lesions at every threshold (0.198 instead of 0.172 FP per patient at 0.0787), but on the held-out sets it
    # gained two widened lesions and none on the independent simulator, lost one there (Colin27 84 -> 83 of 101), and
    # added 18 false positives (widened +9, MNI152 +5, oriented +3, Colin27 +1): the faint noise blobs of the
    # independent simulator's 3D pairs are explained by one shift no more than a faint lesion is (0.42-0.56 against
    # 0.45-0.51). "always" (all pairs) 707 at 0.253 on the tuning pairs
    shift_coherent: str | None = None
    # ... and where that one-shift test applies, a candidate that one shift explains to at least this fraction is
    # dropped whatever the matching loss: the one-shift counterpart of shift_explained_always, which the per-voxel
    # maximum reaches on nearly every faint candidate in homogeneous tissue, while one shift's fraction of a faint
    # lesion stays near 0.5 (session 56's trace: true lesions 0.45-0.51, the faint false positives the one-shift
    # test lets through 0.18-0.93). None: only the clauses above. Swept with "finer-input" on the 384 tuning pairs:
    # 0.6 / 0.7 / 0.8 / None 704 / 706 / 707 / 707 lesions at 0.180 / 0.190 / 0.198 / 0.216 FP per patient (0.6
    # loses two lesions the per-voxel test kept). An enlarging rim is a lesion's edge moving outwards, which one shift
    # of the old lesion also explains: at 0.8 a Colin27 enlarging rim (0.93 explained voxel by voxel, 0.87 by one
    # shift, no loss), kept by the per-voxel clauses, was dropped. Read only when shift_coherent applies
    shift_coherent_always: float | None = 0.8
    cap_z: float | None = 3.0  # baseline capped at median + cap_z SD before the shift test (None: no cap)
    border_fraction: float = 0.5  # drop when this fraction of voxels lies within border_margin_mm of the edge
    border_margin_mm: float = 5.0
    # a tissue border may hold a lesion: a candidate explained by a shift is dropped only when the
    # difference around it also holds the matching loss (misregistration moves signal: the gain
    # on one side of an edge comes with a loss on the other; a lesion only gains)
    dipole_rule: bool = True
    dipole_shell_mm: float = 3.0  # shell around the candidate searched for the matching loss
    dipole_ratio: float = 0.4  # drop when loss in the shell >= this x gain in the candidate
    shift_explained_always: float = 0.95  # ... or when nearly all of it is explained by a shift
    # a loss around the candidate larger than its own gain is something that moved (a stable lesion displaced
    # by non-rigid motion, a ventricle or cortex edge), whatever the shift test explains (the capped baseline
    # cannot explain a bright lesion's displaced edge): a new lesion only gains. None: off. 1.0 (workflow
    # 1.4.0; "more lost around than gained inside"): on the tuning pairs at 1 mm no kept true lesion had a
    # ratio above 0.75 and the kept false positives it drops had 2.0-6.6; sweep 0.7-1.25 identical on 48
    # widened (FP per patient 0.146 -> 0.125, specificity 0.875 -> 0.94) and 16 original-style pairs (0.31 ->
    # 0.25), lesions lost from 0.5, gains lost from 2.0 (docs/ms-lesions-log.md). A new lesion right beside a
    # shrinking one would be dropped as well
    loss_alone_ratio: float | None = 1.0
    # the moved-structure rule (loss_alone_ratio) counts only the loss that exceeds the shell's noise: the sum of
    # max(-change, 0) over a shell of N voxels of pure noise of SD sigma is already N x 0.399 sigma (the mean of a
    # half-normal), as large as a faint lesion's whole gain. This multiple of that expectation (with the
    # difference's robust SD) is taken off the loss; None or 0: the raw loss (workflow 1.24.0 and before). 1.0
    # (workflow 1.25.0): the expectation itself; on the 192 widened tuning pairs 352 -> 354 of 395 lesions (two
    # faint ones whose raw loss of 1.1-1.4 x their gain was noise) for one false positive more on an active pair
    # (24 -> 25), the same from 1.0 to 2.0 (docs/ms-lesions-log.md, "Workflow 1.25.0")
    loss_noise_floor: float | None = 1.0
    # ... and the dipole clause of the misregistration test too (True), where the loss only confirms the shift
    # test's evidence. Swept on the 192 tuning pairs (docs/ms-lesions-log.md)
    dipole_loss_noise_floor: bool = False
    # signal drift of a lesion already there: the baseline was already as bright (relative to the
    # local tissue) as the follow-up -> not a new lesion
    drift_rule: bool = True
    # drop when baseline contrast >= this x follow-up contrast (candidate mean). 0.5: sweep of 0.35-0.6 on 47
    # tuning pairs (29 widened + 18 original-style): sensitivity flat from 0.45 to 0.6 (one lesion lost at
    # 0.4), FP per patient 0.21 -> 0.17 (widened) and 0.17 -> 0.11 (original) from 0.6 to 0.5, away from the
    # 0.4 edge; the stable lesions whose signal drifted by 10-15 % had ratios 0.43-0.57
    drift_ratio: float = 0.5
    # ... and this ratio for a candidate that touches no baseline lesion (the baseline-lesion mask of step 9, within
    # ClassifyParams.touch_radius_mm; pass ``baseline_lesions`` to false_positive_reduction). Such a candidate claims
    # tissue with no lesion at baseline, so its baseline contrast should be near zero; a third or more of its
    # follow-up contrast means a lesion was already there, too faint at baseline for the lesion mask (thick-slice
    # partial volume, a protocol change). An enlarging rim keeps drift_ratio: it holds part of the old lesion.
    # None: off (drift_ratio for every candidate). 0.35 (workflow 1.14.0): on the 192 widened tuning pairs at 1 mm
    # 296 of 297 true detections classified new had ratios up to 0.29, the false positives it drops 0.38-0.49
    # (faint stable lesions at baseline, region-wide drift on 5 mm pairs); sweep (bench/ms_sweep.py --set
    # fp.drift_ratio_new=...) off / 0.45 / 0.4 / 0.35 / 0.3: 347 / 347 / 346 / 346 / 346 of 395 lesions at
    # 33 / 30 / 27 / 23 / 22 false positives, patient specificity 0.89 / 0.91 / 0.91 / 0.94 / 0.94; the lesion lost
    # (pair 125) is an enlarging lesion whose baseline lesion is too faint for the mask, so it reads as new
    # (docs/ms-lesions-log.md "Workflow 1.14.0"). 0.35: the middle of the gap between 0.29 and 0.38
    drift_ratio_new: float | None = 0.35
    # the contrast the drift rule compares: "shell" (workflow 1.7.0: each time point's candidate mean over the
    # median of ITS OWN surround, the dipole rule's 3 mm shell with other candidates left out; a regional
    # intensity shift between the time points, e.g. partial volume of thicker slices or a bias residual, scales
    # the lesion and its surround alike and cancels), "level" (before 1.7.0: both time points over the baseline's
    # local tissue level) or "either" (the larger ratio). Sweep on the 96 widened tuning pairs at 1 mm
    # (bench/ms_sweep.py --set fp.drift_reference=..., docs/ms-lesions-log.md "Workflow 1.7.0"): level 173 lesions at
    # 0.177 FP per patient, shell 174 at 0.115, either 173 at 0.094; with shell, drift_ratio 0.4 / 0.5 / 0.6 gave
    # 171 / 174 / 174 lesions at 0.104 / 0.115 / 0.146 FP per patient
    drift_reference: str = "shell"
    # ... the shell's reference leaving out voxels under this x the local tissue level at either time point (CSF:
    # the candidate step's csf_rel). Without it (0.0) a periventricular lesion's shell holds ventricle, the
    # reference drops and both contrasts rise, their ratio towards 1: a widened held-out enlarging lesion at the
    # ventricle measured 0.60 (dropped), 0.48 with it. Tuning sweep: 174 lesions at 0.115 FP per patient either way
    drift_shell_tissue_rel: float = 0.6
    # diffuse change: a candidate far larger than a new lesion whose peak score stays low is a
    # region-wide change (thick-slice partial volume against a thin-slice scan, an intensity artefact),
    # not a focal lesion; it is dropped and the workflow raises a quality warning instead (never silent).
    # From 67 tuning pairs (widened 0-46, original-style 18): every true detection over 500 mm^3 had a peak
    # >= 0.66 (largest 1411 mm^3), the four region-wide false positives were 1867-18562 mm^3 at peaks
    # 0.11-0.17, all on pairs mixing 5 mm and 1 mm slices
    # diffuse_max_peak 0.5 -> 0.8 (workflow 1.3.0): at 1 mm an original-style tuning pair with a strong bias field
    # (strength 0.28) had four 1.3-1.7 mL regions at peaks 0.57-0.67; sweep on 48 widened + 16 original-style
    # tuning pairs at 1 mm: no lesion lost from 0.5 to 0.9 (one at 0.97), original-style FP per patient 0.56 ->
    # 0.31 from 0.7 up (0.44 at 0.6); widened unchanged. 0.8: the middle of that plateau
    diffuse_rule: bool = True
    diffuse_min_volume_mm3: float = 1000.0
    diffuse_max_peak: float = 0.8
    # ... and a candidate whose half-maximum extent (the partial-volume rule of classify, the size the report
    # would state) is larger than a 20 mm sphere (4.19 mL, the size above which a demyelinating lesion is called
    # tumefactive) is region-wide change whatever its peak score (workflow 1.5.0): at 1 mm on 64 tuning pairs
    # the largest true lesion measured 1.41 mL at half maximum, and a 6.3 mL intensity change at the inferior
    # brain on 5 mm slices (6.3 mL at half maximum too: flat) peaked at 0.99; 48 further tuning pairs, not used
    # for the choice, had three such regions (8.4-21 mL, peaks 0.91-1.0). Dropped with the same quality warning,
    # which names the size, so a tumefactive lesion is shown to the reader, not counted. Needs the difference
    # map. None: off
    diffuse_max_focal_volume_mm3: float | None = 4189.0


@dataclass(frozen=True)
class PostParams:
    """Step 6: post-processing of the regional workflow."""

    binarise_threshold: float = 0.01
    connectivity: int = 26
    # a candidate's extent (score > binarise_threshold) must hold more than this. 12 -> 20 (workflow 1.16.0): the
    # regional workflow's 12 mm^3 let small noise clusters through (the three tuning false positives removed were
    # 13-17 mm^3 on 1 mm pairs; on the MNI152 independent pairs six of 12-19 mm^3 on 1-5 mm pairs). Sweep on the
    # 96 widened tuning pairs at 1 mm (bench/ms_sweep.py --set post.min_volume_mm3=V; docs/ms-lesions-log.md "Workflow
    # 1.16.0"): 12 179/203 lesions with 10 false positives, 15 179/8, 20 179/7 (patient specificity 0.969 -> 1.0),
    # 30 179/6, 45 175/6; the smallest true detections measured 17 (not its lesion's only one), 21 and 24 mm^3, so
    # 20 keeps a margin under them that 30 does not
    min_volume_mm3: float = 20.0
    # the lesion operating point: a candidate is reported when a voxel scores above it. 0.1 (the score scale's core
    # anchor, SCORE_AT_CORE) until workflow 1.34.0, which applies the operating-point rule
    # (bench/ms_benchmark.py choose_operating_point: most lesions at <= 0.3 FP per patient, then the best patient
    # specificity, the plateau's geometric middle) to every widened tuning pair, 0-383, at 1.33.0's detections
    # (bench/results/ms_sweep_tuning192_1_33_0.json, ms_sweep_tuning192to383_1_33_0.json): 703 of 767 lesions at
    # 0.172 FP per patient and specificity 0.914 on (0.0777, 0.0798], against 701 at 0.130 and 0.938 at 0.1. The
    # plateau is one lesion on each tuning half (peaks 0.080 and 0.089) and two stable pairs' false positives
    # (0.0776, 0.0777) wide; docs/ms-lesions-log.md "Workflow 1.34.0"
    min_peak_score: float = 0.0787


@dataclass(frozen=True)
class ClassifyParams:
    """Step 7: new vs enlarging."""

    baseline_lesion_z: float = 3.0  # baseline voxel is lesion when this many robust SDs above the brain median
    baseline_lesion_min_mm3: float = 3.0
    touch_radius_mm: float = 1.5  # a candidate within this distance of a baseline lesion is 'enlarging'
    grow_enlarging: bool = True  # report an enlarging lesion as its whole follow-up extent (rim + old lesion)
    followup_lesion_z: float = 3.0  # follow-up voxel is lesion when this many robust SDs above the brain median
    grow_bound_mm: float = 1.5  # growth stays within this distance of the rim or the touched baseline lesion
    # a follow-up voxel also counts as lesion for the growth when it exceeds the local normal-tissue level by this
    # much (normalised units, white matter about 1): a faint enlarging lesion (1.2-1.4 x WM) stays under the
    # brain-wide median + 3 SD and keeps only its rim. None: the brain-wide test alone (tried in session 37 at
    # 1.19.0: no tuning detection changed, not adopted). 0.1 (workflow 1.33.0, session 54): step 9 now cuts every
    # grown lesion back to its half-maximum core and partial-volume level over the same local level, so the growth
    # only has to reach the lesion's edge; the lesion's peak is still read where the brain-wide test grew it
    # (half_maximum_cores' peak_labels). Sweep on the 192 widened tuning pairs at 1 mm (bench/ms_sweep.py --set
    # classify.grow_local_excess=V, the peak read over the whole grown extent): None 357 of 395 lesions at 26 false
    # positives; 0.05, 0.1 and 0.15 all 358 at 26 (pair 29's 1.3 x WM enlarging lesion, covered 34 -> 274 of its 441
    # voxels); 0.1 is the middle of that plateau; with the peak read as now, 0.1 gives the same 358 at 26 and changes
    # three lesions only (pair 148's 0.72 -> 1.03 x its volume; docs/ms-lesions-log.md "Workflow 1.33.0")
    grow_local_excess: float | None = 0.1
    # partial-volume rule: a voxel belongs to a new lesion when its change is at least this
    # fraction of the lesion's peak change (0.5: half maximum, i.e. lesion fraction >= 0.5, the
    # phantom's and most manual delineations' definition); None keeps the candidate extent
    partial_volume_fraction: float | None = 0.5
    peak_percentile: float = 95.0  # the lesion's peak change (robust to one noisy voxel)
    # the peak the partial-volume rule halves is the ``peak_percentile`` of the candidate's change; when the
    # half-maximum core that gives is more than this many times the region around the maximum that reaches half the
    # maximum itself, the candidate is mostly weaker change around a focal lesion (a faint region-wide change, a
    # grown enlarging extent over hyperintense tissue) and its percentile is not the lesion's peak: the peak is then
    # read in that region (half_maximum_core's focal_ratio). None: the candidate's percentile always. 3.7 (workflow
    # 1.19.0): on the 192 widened tuning pairs that ratio is <= 2.03 for 99 % of the kept candidates and 2.72 at most
    # below a gap up to 5.1; 3.7 is the gap's geometric middle. Sweep: the same 349 lesions; a 70 mm^3 lesion measured
    # 37 x its volume now 0.89 x; a 2.8 mL false positive now 345 mm^3; one new false positive of peak 0.14
    # (docs/ms-lesions-log.md "Workflow 1.19.0")
    delineation_focal_ratio: float | None = 3.7
    # an 'enlarging' candidate whose lesion's half-maximum size at follow-up is less than this x
    # its size at baseline is an existing lesion seen differently (protocol, drift), not growth.
    # 1.8 -> 1.5 (workflow 1.11.0): 1.8 was chosen on a phantom whose enlarging lesions all grew by volume x 2.5-4;
    # clinically a lesion has enlarged once it grew by more than repeated measurement varies (45 % in area for a
    # small lesion, about x 1.75 in volume: Molyneux et al., Arch Neurol 1992;49:261-263), and the measure reads a
    # x 1.7 growth as 1.27-1.8 (independent-simulator pair 17: truth x 1.69, measured 1.27). Sweep on the 96 widened
    # tuning pairs at 1 mm with enlarging lesions grown x 1.8-4.1 (phantom.cases.WIDENED_GROWTH_RANGE;
    # docs/ms-lesions-log.md "Workflow 1.11.0"): 1.8 171/203 lesions, 1.5 and 1.3 172, off 172 with more false
    # positives (48 pairs: 0.083 -> 0.146 per patient); 1.5 keeps a margin over the 1.33 x of measurement noise
    enlarging_min_volume_ratio: float | None = 1.5
    # ... on slices of two orientations (ms_lesions.crossed_slices), where each time point reads a lesion's
    # half-maximum size through its own slice axis (the baseline's peak is lowered by partial volume along one axis,
    # the follow-up's along another), and lesions that grew x 2.0-2.4 measure 1.22-1.38 on the crossed tuning pairs
    # (independent-simulator pair 17, axial against coronal 3 mm: x 1.69 measured 1.27). None:
    # enlarging_min_volume_ratio. 1.25 (workflow 1.28.0, session 49): swept on the 96 crossed widened tuning pairs
    # (bench/ms_sweep.py --phantom widened-crossed --set classify.crossed_min_volume_ratio=R): 1.5 168 of 199 lesions
    # at 22 false positives; 1.4 the same; 1.3 and 1.2 170 at 22; 1.1 170 at 23; 1.0 170 at 27 (stable lesions
    # kept by step 8 measure 0.83-1.13 there). 1.25 is the middle of the plateau. Held out: the 40 crossed pairs keep
    # their detections; the independent simulator's crossed Colin27 pairs gain pair 17's enlarging lesion (12 -> 13
    # of 14, no false positive); docs/ms-lesions-log.md "Workflow 1.28.0"
    crossed_min_volume_ratio: float | None = 1.25
    # enlarging-lesion path (workflow 1.4.0): a candidate that the misregistration or drift rule dropped but
    # that touches a baseline lesion whose half-maximum size grew by at least this factor is kept (as
    # enlarging). A shift or a contrast drift leaves the half-maximum size unchanged, so neither explains
    # growth; the rim of a faint lesion that grew is explained by its own shifted baseline (nothing lost) or
    # reads as drift, and was dropped. None: off. 2.5: sweep on 48 widened + 16 original-style tuning pairs at
    # 1 mm (docs/ms-lesions-log.md): 2.0-4.0 all keep one more enlarging lesion and add no false positive; 1.9
    # keeps two, 1.8 adds a false positive (a stable lesion on a 5 mm / 1 mm pair measured 1.8-2.0x larger).
    # 2.5 -> 2.1 (workflow 1.11.0, with the minimum ratio above at 1.5; same 96 pairs with lesions grown x 1.8-4.1):
    # 2.5 172 -> 2.0 and 2.2 both 173 lesions at 0.115 FP per patient (one more than 2.5), 1.8 adds a false
    # positive (0.135); 2.1: inside that plateau
    rescue_growth_ratio: float | None = 2.1
    # ... for the learned engine's candidates (the fusion engine's learned branch) on slices of two orientations
    # (ms_lesions.crossed_slices), where the growth measure reads less (crossed_min_volume_ratio). None:
    # rescue_growth_ratio and rescue_growth_ratio_low_drift as on any pair. 1.55 (workflow 1.29.0, session 49): on
    # the 96 crossed widened tuning pairs the learned branch's candidates dropped as drift or misregistration next
    # to a baseline lesion measure up to 1.43 when stable and from 1.64 when on an enlarging lesion (the classical
    # branch's stable ones reach 1.62, so it keeps 2.1 / 1.8); sweep (bench/ms_sweep.py --phantom widened-crossed
    # --set classify.crossed_learned_rescue_ratio=R): off 170 of 199 lesions at 22 false positives; 1.3 and 1.4 173
    # at 23; 1.5, 1.55 and 1.6 173 at 22 (pairs 82, 85, 92). docs/ms-lesions-log.md "Workflow 1.29.0"
    crossed_learned_rescue_ratio: float | None = 1.55
    # ... and this smaller growth for a candidate whose baseline contrast ratio (the drift rule's,
    # FPDecision.baseline_contrast_ratio) is under rescue_low_drift_below: its signal rose where the baseline had
    # little, which drift explains less, so growth is asked for at about repeated measurement's x 1.75 (Molyneux
    # et al. 1992, above) rather than at 2.1. None: off (rescue_growth_ratio for every candidate). 1.8 under 0.6
    # (workflow 1.24.0), from the classical engine's candidates on the 192 widened tuning pairs at 1 mm (a session
    # script): the dropped candidates on no enlarging lesion with a ratio under 0.6 measured growth 1.6 at most
    # (pair 13), the one on an enlarging lesion 1.96 (pair 148, dropped as misregistration); those on none that grew
    # 1.65-2.0 had ratios of 0.65-1.02, every candidate on an enlarging lesion 0.55 at most. Sweep with the default
    # engine (bench/ms_sweep.py --set classify.rescue_growth_ratio_low_drift=G --set
    # classify.rescue_low_drift_below=R; docs/ms-lesions-log.md "Workflow 1.24.0"): off 351 of 395 lesions at 24
    # false positives; G 1.8, R 0.6: 352 at 24; 1.6, 0.6: 352 at 25 (pair 13); 1.8, 0.7: 352 at 26 (pairs 16, 55).
    # Enlarging lesions of the independent simulator lost on perturbed inputs (stripped series, a stronger bias
    # field) read ratios of 0.525-0.53 with growth under 2.1; 1.24.0 keeps them. Held out: widened 160 pairs
    # 269 -> 270 of 308 lesions, 17 -> 18 false positives; Colin27 81 -> 82 of 101; MNI152 and original unchanged
    rescue_growth_ratio_low_drift: float | None = 1.8
    rescue_low_drift_below: float = 0.6
    # volume-measurability rule (:func:`volume_measurable`): a lesion's volume is reported as
    # measurable when its measured equivalent-sphere diameter reaches this many slice thicknesses
    # of the coarser input AND this many mm; None: every volume reported as measurable. Chosen by
    # the sweep of bench/ms_volume_pv.py --sweep (docs/ms-lesions-log.md, "Volumes of small lesions")
    volume_min_diameter_slices: float | None = 1.7
    volume_min_diameter_mm: float = 0.0
    # a new lesion delineated again on the follow-up's own grid when that grid is finer than the common grid by at
    # least this factor along its coarsest axis (and no coarser along any: a thick-slice baseline against a 3D or
    # thinner-slice follow-up; the common grid is the coarser input's). Delineated on the common grid's thick
    # slices and taken to the follow-up's grid, such a lesion keeps the baseline's slice thickness along its slice
    # axis: the independent simulator's new lesions on 3 or 5 mm baselines against 1 mm follow-ups measured
    # 1.3-2.0 x their truth, 0.87-1.10 x on the follow-up's grid (:func:`delineate_on_finer_grid`;
    # docs/ms-lesions-log.md "Workflow 1.30.0"). None: off (every lesion delineated on the common grid only)
    finer_followup_ratio: float | None = 1.5
    # how far the finer delineation may reach beyond the lesion's mask taken to the follow-up's grid (mm)
    finer_followup_reach_mm: float = 2.0
    # the shell around the lesion (mm from its mask taken to the follow-up's grid) whose tissue predicts the
    # follow-up from the baseline there (a local linear fit: the bias field and the intensity scales are smooth)
    finer_followup_shell_mm: tuple[float, float] = (2.0, 6.0)
    # the finer delineation replaces the mapped one only when its volume lies within these fractions of it (the
    # mapped mask carries the coarse slices, so the finer one is normally smaller; outside, the fit is not trusted).
    # Upper bound 3.0 (workflow 1.32.0; 1.5 before): a flat or capping lesion reads SMALL at half maximum on thick
    # slices (the slab averages it with the tissue beside it), and 1.5 kept such a lesion's thick-slice mask
    # (widened held-out pair 118: a 9 mm periventricular cap on 5 mm slices against a 1 mm follow-up, mapped 135
    # mm^3 covering 40 % of its 250, finer 208 mm^3 covering 64 %); on the 67 widened tuning pairs whose follow-up is
    # the finer grid (pairs 0-199), 3.0 finds one lesion more (pair 142) and changes no other detection or volume
    # (docs/ms-lesions-log.md "Workflow 1.32.0"). The region stays within finer_followup_reach_mm of the mapped mask
    finer_followup_volume_bounds: tuple[float, float] = (0.25, 3.0)
    # the Gaussian smoothing (FWHM, mm) of both images before the finer delineation; None: the candidate step's
    # (CandidateParams.smoothing_fwhm_mm)
    finer_followup_smoothing_fwhm_mm: float | None = None
    # ... and an ENLARGING lesion's whole follow-up extent too, by its follow-up contrast over the local tissue level
    # (as step 9 delineates it); its baseline volume stays the common grid's, the baseline's own (coarser) grid, so
    # each time point is measured on its own grid. False: enlarging lesions keep the common grid's mask. True
    # (workflow 1.30.0, session 51): on the 35 widened tuning pairs with a coarser baseline the enlarging lesions'
    # median volume error 0.122 -> 0.106 (8+ mm, n=12); held out, widened 52 pairs 0.194 -> 0.136 (8+ mm) and
    # 0.196 -> 0.165 (5-8 mm), Colin27 0.100 -> 0.086, MNI152 0.094 -> 0.101 (n=6); the same detections everywhere
    # (docs/ms-lesions-log.md "Workflow 1.30.0")
    finer_followup_enlarging: bool = True
    # lesions delineated again on a THICK follow-up's own slices (largest voxel >= thick_followup_min_mm, slices of
    # one orientation) when it is not the finer grid: the common grid then has the follow-up's layout moved by half
    # the motion, its slices fall between the follow-up's, and the nearest-neighbour mapping back puts a lesion one or
    # two slices thick on the neighbouring slice when its centre maps near a slice boundary (held-out pair 41, fresh
    # pair 160; docs/ms-lesions-log.md "Fresh held-out seeds at 1.35.1"). The delineation then reaches one slice
    # along the thick axis (:func:`delineate_on_finer_grid`'s ``thick_axis``), from the baseline smoothed to the
    # follow-up's slice profile. Chosen on the 40 widened tuning pairs with a thick follow-up (of pairs 0-119; session
    # 58): the benchmark finds 93 instead of 91 of 107 lesions at the same 8 false positives, no lesion lost and no
    # gadolinium call changed; median |volume error| of the measurable 8+ mm lesions 0.122 -> 0.073, 5-8 mm 0.142 ->
    # 0.156 (``--set classify.thick_followup_redelineate=True``; bench/results/ms_tuning40_thick_followup_*; the
    # sweep scores on the common grid and cannot see it). On by default since workflow 1.36.0 (session 59), after the
    # held-out sets with a thick follow-up were rerun with it (docs/ms-lesions-log.md "Workflow 1.36.0")
    thick_followup_redelineate: bool = True
    thick_followup_min_mm: float = 2.5
    # ... and on pairs whose slices lie in two planes (ms_lesions.crossed_slices: e.g. axial 3 mm against coronal 5 mm),
    # whose common grid is built another way (MSConfig.crossed_round_trip). False: those pairs keep the
    # nearest-neighbour mapping (1.36.0). True (workflow 1.37.0, session 59): on the 40 widened-crossed tuning pairs
    # with a follow-up at least as thick as the baseline the benchmark finds 106 instead of 105 of 120 lesions at the
    # same 5 false positives; median |volume error| of the measurable 8+ mm lesions 0.152 -> 0.036, 5-8 mm 0.277 ->
    # 0.077 (bench/results/ms_tuning_crossed40_thick_followup_*; docs/ms-lesions-log.md "Workflow 1.37.0"). Held
    # out: one lesion more and no false positive on each crossed set, but the widened-crossed volumes are mixed (29 of
    # 48 changed lesions nearer their truth, measurable 8+ mm 0.085 -> 0.103)
    thick_followup_crossed: bool = True
    # partial-volume level (:func:`partial_volume_core`): a lesion whose half-maximum core measures at least this
    # equivalent-sphere diameter (mm) is delineated instead at the level of its change whose extent holds its
    # partial-volume sum (the change within ``pv_level_reach_mm`` of that core over the mean change of the core's
    # interior): smoothing moves the half-maximum surface of a convex lesion inwards (by about sigma^2 / R), so the
    # rule reads convex lesions 5-12 % small, while the sum of the change is what blurring keeps. Small lesions keep
    # half maximum (their blurred peak is below their contrast, so the sum over it overestimates them). None: half
    # maximum for every lesion. 5 (workflow 1.31.0, session 52): analytic ellipsoids (bench/ms_volume_pv.py --level
    # --reps 40; 1 / 3 / 5 mm slices, 1 mm acquisition blur) put the measurable 5-8 mm lesions at a median |error|
    # of 0.013 / 0.084 (1 / 3 mm slices) against 0.136 / 0.148 at half maximum (6 mm: 0.037 / 0.084; 7 mm leaves
    # them at half maximum) and the 8-14 mm ones at 0.004-0.043 against 0.079-0.125; on the 40 widened tuning pairs
    # 0-39 (bench/ms_benchmark.py --tuning) the same detections, measurable 5-8 mm 0.130 -> 0.066 and 8+ mm 0.116 ->
    # 0.066 (median ratio 0.90 / 0.89 -> 0.99 / 1.03; 6 mm: 0.093 / 0.066); docs/ms-lesions-log.md "Workflow 1.31.0"
    pv_level_min_diameter_mm: float | None = 5.0
    # how far from the half-maximum core the change is summed (mm; along a coarser axis at least one voxel)
    pv_level_reach_mm: float = 2.0
    # the level stays within these fractions of the lesion's peak change
    pv_level_fraction_bounds: tuple[float, float] = (0.3, 0.6)
    # the lesion's full contrast is the mean change over its core's voxels deeper than this (mm); a core with fewer
    # such voxels than pv_level_min_interior_voxels keeps half maximum
    pv_level_interior_mm: float = 1.0
    pv_level_min_interior_voxels: int = 8
    # separate lesions in one candidate (:func:`separate_lesion_cores`): a new lesion whose own half-maximum core
    # does not touch the candidate's delineated lesion is reported on its own instead of being cut away by the
    # partial-volume rule. Its peak must score above split_min_score and its core hold more than
    # split_min_volume_mm3 (the regional workflow's 0.1 core and 12 mm^3; a half-maximum core, smaller than the
    # candidate extent PostParams.min_volume_mm3 bounds: 20 here changed no detection on the 96 tuning pairs,
    # workflow 1.16.0). False: off
    split_separate: bool = True
    split_min_score: float = 0.1
    split_min_volume_mm3: float = 12.0
    # ... a peak whose half-maximum core runs into the candidate's core is still a separate lesion when a dip cuts
    # it off from that core below this fraction of its own peak: a fainter lesion beside a brighter one (or beside
    # an enlarging lesion's grown rim) whose half-maximum region joins the brighter one's flank; its core is then
    # the part above that dip. A shoulder of one lesion has no such dip. None: only cores cut off at half maximum
    # (1.11.0)
    # ... every peak of a candidate's remaining change is judged, not only the highest of each region scoring above
    # split_min_score (workflow 1.12.0): independent-simulator pair 38's 14 mm new lesion (1.7.0's case) shared that
    # region with a brighter enlarging lesion's rim once the smoothing stopped blurring them apart; the highest peak
    # was judged and the whole region left the search with it. A voxel on the flank of a peak judged before is no
    # local maximum and ends the search in its region, as before. False: one peak per region (1.11.0)
    split_every_peak: bool = True
    # 0.7 (workflow 1.12.0): sweep on the 96 widened tuning pairs at 1 mm: 0.6, 0.7 and 0.8 each find one more
    # lesion (173 -> 174 of 203; pair 2's 4-voxel lesion beside a brighter one) at the same 0.115 FP per patient;
    # with the anisotropic smoothing above that lesion is found without it (179 either way)
    split_saddle_fraction: float | None = 0.7
    # ... and in a 'new' candidate a part whose core still touches the candidate's core at that fraction is cut at
    # the level the candidate's own core was cut at (its half maximum; the lowest change of its core) when the part
    # is a component of its own there: a second lesion above half the brighter lesion's peak, joined to it by a dip
    # under that level but over split_saddle_fraction of its own peak. Tuning pair 296 (seed 100296): a 14 mm new
    # lesion at 1.6 x WM 2.5 mm from a 12.7 mm one at 2.1 x; the candidate's half maximum (0.49) holds both as two
    # components, the dip lies at about 0.45, over 0.7 x the fainter lesion's own peak (0.44), and it was neither in
    # the core nor a part: 10 of its 1534 voxels reported. False: the saddle test alone (workflow 1.34.0 and before)
    split_at_core_level: bool = True
    # an 'enlarging' candidate dropped because its baseline lesion did not grow (:func:`drop_unchanged_enlarging`)
    # may hold a new lesion beside that unchanged one (touching it within touch_radius_mm made the whole candidate
    # 'enlarging'): its part farther than touch_radius_mm from every baseline lesion is searched for lesion cores
    # as :func:`separate_lesion_cores` does (:func:`new_beside_unchanged`), and each is judged by the
    # false-positive rules. False: the whole candidate is dropped (1.11.0)
    # True (workflow 1.12.0): the 96 widened tuning pairs are unchanged lesion by lesion and false positive by false
    # positive, alone and with the anisotropic smoothing; it recovers independent-simulator pair 32's and widened
    # held-out pair 13's new lesions (found by analysing misses, not chosen on those sets)
    split_beside_unchanged: bool = True
    # ... and a candidate the false-positive rules of step 8 dropped as a whole (drift, misregistration, a moved
    # structure) while it touched a baseline lesion: the stable lesion's drift or displaced edge decided for the
    # whole candidate, a new lesion beside it included (widened held-out pair 20: a 1.39 x WM periventricular lesion
    # the known-shape observer sees at z 11.7 shared a 150-voxel candidate with a drifting stable lesion, dropped at
    # a drift ratio of 0.74). Searched and judged as above (:func:`dropped_beside_baseline`). False: only the
    # candidates :func:`drop_unchanged_enlarging` dropped. Tried in session 46 (docs/ms-lesions-log.md, "Tried
    # 2026-12-06 (session 46)"): on the widened tuning pairs 0-191 the same 354 lesions and one false positive more,
    # on a stable pair (a drifting lesion's neighbour, 86 % explained by a shift); on tuning pairs 192-383 nothing
    # changes. The case is rare (one lesion of 1,075), so it stays off
    split_beside_dropped: bool = False
    # an 'enlarging' candidate touching two or more baseline lesions (:func:`split_enlarging_candidates`) is judged
    # per touched lesion: its part nearest each one goes through the false-positive rules on its own, and a part
    # they drop (a neighbouring stable lesion's drift) leaves the candidate, so the grown and delineated lesion
    # is the one that changed (:func:`judge_enlarging_parts`, workflow 1.8.0). False: off (1.7.1's whole-candidate
    # judgement)
    split_enlarging: bool = True
    # touched baseline lesions closer than this (or than the coarsest voxel) are judged together, as one lesion:
    # a lesion cut into pieces by the baseline threshold on partial-volume voxels, or two that grew into one
    # (widened held-out pair 37: three pieces 2.2-3.2 mm apart on 5 mm slices; independent pair 11's stable
    # neighbour lay 7 mm away)
    split_enlarging_min_gap_mm: float = 3.0


@dataclass
class Candidates:
    """Output of :func:`candidate_score`."""

    difference: np.ndarray  # follow-up - baseline (normalised units, smoothed)
    z: np.ndarray  # robust z of the difference
    score: np.ndarray  # [0, 1]
    sigma: float  # robust SD of the difference inside the brain
    brain_median: float
    brain_sigma: float
    tissue_mask: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    local_sigma: np.ndarray | None = field(repr=False, default=None)  # local noise SD of the difference
    tissue_level: np.ndarray | None = field(repr=False, default=None)  # local normal-tissue level at baseline
    rel: np.ndarray | None = field(repr=False, default=None)  # difference / tissue_level
    border_distance_mm: np.ndarray | None = field(repr=False, default=None)  # to the brain mask's edge


def _sigma_vox(fwhm_mm: float, spacing_mm: tuple[float, float, float]) -> list[float]:
    s = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    return [s / float(sp) for sp in spacing_mm]


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation: the SD of the Gaussian part, robust to lesions and edges."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return 0.0
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


#: The score scale's two anchors, the regional workflow's binarisation (0.01) and core (0.1) thresholds: every
#: engine maps its evidence to SCORE_AT_EXTENT where a lesion's extent ends and to SCORE_AT_CORE at a lesion core
#: (:func:`score_from_z`, ``ms_learned.probability_to_score``). The lesion operating point,
#: ``PostParams.min_peak_score``, is read on this scale and chosen by the FROC sweep; it is a threshold on the scale,
#: not one of its anchors, so moving it moves no engine's scores (it equalled SCORE_AT_CORE until workflow 1.34.0).
SCORE_AT_EXTENT, SCORE_AT_CORE = 0.01, 0.1


def score_from_z(z: np.ndarray, z_at_extent: float, z_at_core: float) -> np.ndarray:
    """Logistic map of z (or any evidence) to [0, 1] with score(z_at_extent) = SCORE_AT_EXTENT (0.01) and
    score(z_at_core) = SCORE_AT_CORE (0.1).

    The two anchors are the regional workflow's binarisation (0.01) and core (0.1) thresholds, so
    the classical score plugs into the published post-processing unchanged.
    """
    if not z_at_core > z_at_extent:
        raise ValueError("z_at_core must be larger than z_at_extent")
    lo = np.log(SCORE_AT_EXTENT / (1 - SCORE_AT_EXTENT))
    hi = np.log(SCORE_AT_CORE / (1 - SCORE_AT_CORE))
    a = (hi - lo) / (z_at_core - z_at_extent)
    b = z_at_core - hi / a
    return (1.0 / (1.0 + np.exp(-a * (np.asarray(z, dtype=np.float64) - b)))).astype(np.float32)


def smooth_difference(
    diff: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float], sigma_mm: float, clip_z: float = 2.5
) -> np.ndarray:
    """Slowly varying part of the difference: normalised convolution (Knutsson & Westin 1993) over
    ``mask`` voxels whose difference is not an outlier (|z| < ``clip_z``), so lesions do not leak in."""
    m = np.asarray(mask, bool)
    vals = diff[m]
    med, sd = float(np.median(vals)), robust_sigma(vals) or 1.0
    w = (m & (np.abs(diff - med) < clip_z * sd)).astype(np.float32)
    sig = [sigma_mm / float(s) for s in spacing_mm]
    num, den = gaussian_filters([diff * w, w], sig)
    return np.where(den > 0.05, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def _smoothing_sigma_vox(spacing_mm: tuple[float, float, float], params: CandidateParams) -> list[float]:
    if params.isotropic_smoothing:
        # box of the thickest voxel minus each axis' own voxel, plus the base smoothing
        thick = max(spacing_mm)
        fw = [float(np.sqrt(params.smoothing_fwhm_mm**2 + 2.3548**2 * max(thick**2 - s**2, 0.0) / 12.0))
              for s in spacing_mm]
        return [_sigma_vox(w, (s,))[0] for w, s in zip(fw, spacing_mm, strict=True)]
    return _sigma_vox(params.smoothing_fwhm_mm, spacing_mm)


def gaussian_filters(arrays: list[np.ndarray], sigma_vox: list[float] | float) -> list[np.ndarray]:
    """``scipy.ndimage.gaussian_filter`` of each array, several at once on the machine's cores.

    SciPy's filters release the GIL but run one thread each; the candidate step's large-sigma
    filters are independent, so threads give the same arrays (bit for bit) in about half the wall
    time on 2 cores (``bench/ms_speed.py``). An IIR (recursive) Gaussian would be faster still but
    changes the values slightly, and the engine's operating point was chosen with these.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = min(len(arrays), os.cpu_count() or 1)
    if workers <= 1:
        return [ndimage.gaussian_filter(a, sigma_vox) for a in arrays]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ms-gaussian") as ex:
        return list(ex.map(lambda a: ndimage.gaussian_filter(a, sigma_vox), arrays))


def local_moments_many(pairs: list[tuple[np.ndarray, np.ndarray]], spacing_mm: tuple[float, float, float],
                       sigma_mm: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Gaussian-weighted local mean and SD of each ``(values, weight)`` pair over the voxels with
    weight (normalised convolution, Knutsson & Westin 1993): mean = G*(w v) / G*w,
    var = G*(w v^2) / G*w - mean^2. All pairs' filters run together (:func:`gaussian_filters`)."""
    sig = [sigma_mm / float(s) for s in spacing_mm]
    inputs = []
    for values, weight in pairs:
        w = np.asarray(weight, np.float32)
        v = np.asarray(values, np.float32)
        inputs += [w, v * w, v * v * w]
    smoothed = gaussian_filters(inputs, sig)
    out = []
    for k in range(len(pairs)):
        g_w, g_vw, g_vvw = smoothed[3 * k: 3 * k + 3]
        den = np.maximum(g_w, 1e-6)
        m1 = g_vw / den
        m2 = g_vvw / den
        out.append((m1.astype(np.float32), np.sqrt(np.maximum(m2 - m1 * m1, 0.0)).astype(np.float32)))
    return out


def local_moments(values: np.ndarray, weight: np.ndarray, spacing_mm: tuple[float, float, float],
                  sigma_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted local mean and SD of ``values`` over voxels with ``weight``
    (:func:`local_moments_many` of one pair)."""
    return local_moments_many([(values, weight)], spacing_mm, sigma_mm)[0]


def expected_followup(baseline: np.ndarray, followup: np.ndarray, mask: np.ndarray, n_bins: int = 200,
                      min_count: int = 20) -> np.ndarray:
    """The follow-up intensity expected from the baseline intensity: the median follow-up of the
    voxels in each baseline quantile bin (inside ``mask``), interpolated (a non-parametric joint
    histogram mapping; Jain et al. 2016 fit it linearly). A protocol or scanner change alters
    grey/white contrast, CSF suppression and the response curve, which intensity standardisation
    matches only at its landmarks; subtracting this mapping removes any change that depends on
    the baseline intensity alone, and leaves what is local: a new lesion (a few voxels of the
    normal-appearing bins) does not move the bins' medians."""
    m = np.asarray(mask, bool)
    bv = np.asarray(baseline, np.float64)[m]
    fv = np.asarray(followup, np.float64)[m]
    order = np.argsort(bv, kind="stable")
    bv, fv = bv[order], fv[order]
    edges = np.unique(np.linspace(0, bv.size, n_bins + 1).astype(int))
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b - a >= min_count:
            xs.append(float(np.median(bv[a:b])))
            ys.append(float(np.median(fv[a:b])))
    if len(xs) < 2:
        return np.asarray(baseline, np.float32)
    xs_a, ys_a = np.asarray(xs), np.asarray(ys)
    keep = np.concatenate([[True], np.diff(xs_a) > 0])
    xs_a, ys_a = xs_a[keep], ys_a[keep]
    x = np.asarray(baseline, np.float64)
    g = np.interp(x, xs_a, ys_a)
    # beyond the outer bins' centres (the brightest voxels: lesions) the mapping is proportional,
    # not flat: a stable bright lesion maps onto itself instead of onto the last bin's median
    hi = x > xs_a[-1]
    g[hi] = x[hi] * (ys_a[-1] / xs_a[-1]) if xs_a[-1] > 0 else x[hi]
    return g.astype(np.float32)


def candidate_score(
    baseline: np.ndarray,
    followup: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    params: CandidateParams = CandidateParams(),
) -> Candidates:
    """Step 6: difference of the smoothed pair -> evidence -> score in [0, 1].

    A voxel scores when it is brighter at follow-up, lies in brain tissue that is not CSF at
    baseline and away from the brain border, as in FLAIR subtraction CAD. With the ``local``
    method (default) the evidence is the difference over the LOCAL noise SD of the difference
    (Gaussian-weighted moments over voxels that are not outliers) and the change relative to the
    LOCAL normal-tissue level of the baseline; the follow-up must be brighter than that level.
    Both must reach their thresholds (``score = min`` of two logistic maps anchored at the regional
    workflow's 0.01 extent and 0.1 core). The ``global`` method is the original engine.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    if not brain.any():
        raise ValueError("empty brain mask")
    if params.method not in ("local", "global"):
        raise ValueError(f"unknown candidate method {params.method!r} (local, global)")
    sig = _smoothing_sigma_vox(spacing_mm, params)
    # the brain's distance map (~1 s at 1 mm; scipy releases the GIL) runs beside the filtering below
    with ThreadPoolExecutor(1) as pool:
        dist_future = pool.submit(ndimage.distance_transform_edt, brain, sampling=spacing_mm)
        cand = _candidate_maps(baseline, followup, brain, spacing_mm, params, sig, dist_future)
    return cand


def _candidate_maps(baseline: np.ndarray, followup: np.ndarray, brain: np.ndarray,
                    spacing_mm: tuple[float, float, float], params: CandidateParams, sig: list[float],
                    dist_future: Future) -> Candidates:
    """:func:`candidate_score` once the brain's distance map is under way in ``dist_future``."""
    b, f = gaussian_filters([np.asarray(baseline, dtype=np.float32), np.asarray(followup, dtype=np.float32)], sig)
    inner = brain & (b > 0)
    if params.method == "local" and params.intensity_mapping:
        diff = (f - expected_followup(b, f, inner, params.mapping_bins)).astype(np.float32)
    else:
        diff = (f - b).astype(np.float32)
    if params.highpass_sigma_mm > 0:
        diff = diff - smooth_difference(diff, inner, spacing_mm, params.highpass_sigma_mm)
    dvals = diff[inner]
    sigma = robust_sigma(dvals)
    if sigma <= 0:
        sigma = float(np.std(dvals)) or 1.0
    d_med = float(np.median(dvals))
    bvals = b[inner]
    brain_median = float(np.median(bvals))
    brain_sigma = robust_sigma(bvals) or 1.0
    dist_mm = dist_future.result()
    if params.method == "global":
        z = ((diff - d_med) / sigma).astype(np.float32)
        tissue = brain & (b > params.csf_fraction * brain_median) & (b < brain_median + params.wm_upper_z * brain_sigma)
        gate = tissue & (dist_mm > params.border_margin_mm)
        # follow-up hyperintensity as a soft gate: 0 at the brain median, 1 at hyper_z SDs above
        fz = (f - brain_median) / brain_sigma
        hyper = np.clip(fz / max(params.hyper_z, 1e-6), 0.0, 1.0)
        score = np.minimum(score_from_z(z, params.z_at_extent, params.z_at_core),
                           score_from_z(diff, params.change_at_extent, params.change_at_core)) * hyper
        score[~gate] = 0.0
        score[z <= 0] = 0.0
        return Candidates(diff, z, score.astype(np.float32), sigma, brain_median, brain_sigma, gate,
                          border_distance_mm=dist_mm)

    # local statistics: noise of the difference and level of normal tissue around each voxel
    normal_d = inner & (np.abs(diff - d_med) < 3.0 * sigma)
    # normal tissue: not CSF-dark, not hyperintense (lesions) at baseline
    normal_b = inner & (b > 0.5 * brain_median) & (b < brain_median + 3.0 * brain_sigma)
    (_, local_sd), (level, _) = local_moments_many([(diff, normal_d), (b, normal_b)], spacing_mm,
                                                   params.local_sigma_mm)
    local_sd = np.maximum(local_sd, params.local_sigma_floor * sigma)
    level = np.where(level > 0.05 * brain_median, level, brain_median).astype(np.float32)
    z = ((diff - d_med) / local_sd).astype(np.float32)
    rel = ((diff - d_med) / level).astype(np.float32)
    tissue = brain & (b > params.csf_rel * level)
    gate = tissue & (dist_mm > params.border_margin_mm) & (f > level) & (z > 0)
    score = np.minimum(score_from_z(z, params.z_at_extent, params.z_at_core),
                       score_from_z(rel, params.rel_at_extent, params.rel_at_core))
    score[~gate] = 0.0
    return Candidates(diff, z, score.astype(np.float32), sigma, brain_median, brain_sigma, gate,
                      local_sd, level, rel, dist_mm)


def padded_box(sl: tuple[slice, ...], margin_mm: float, spacing_mm: tuple[float, float, float],
               shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The box ``sl`` (from ``ndimage.find_objects``) grown by ``margin_mm`` plus one voxel on every
    side, clipped to ``shape``: everything within ``margin_mm`` of what the box holds lies inside it."""
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing_mm]
    return tuple(slice(max(0, a.start - p), min(dim, a.stop + p)) for a, p, dim in zip(sl, pad, shape, strict=True))


def nearer_to(own: np.ndarray, others: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The voxels at least as near to ``own`` as to ``others`` (a Voronoi split between two masks; Euclidean
    distance in mm). Every voxel when ``others`` is empty."""
    others = np.asarray(others, bool)
    if not others.any():
        return np.ones(np.shape(own), bool)
    sp = tuple(float(v) for v in spacing_mm)
    return (ndimage.distance_transform_edt(~np.asarray(own, bool), sampling=sp)
            <= ndimage.distance_transform_edt(~others, sampling=sp))


def binarise_components(
    score: np.ndarray, voxel_volume_mm3: float, params: PostParams = PostParams()
) -> tuple[np.ndarray, int]:
    """Step 6: score > 0.01, 26-connected components, keep those larger than ``min_volume_mm3`` (20 mm^3 since
    workflow 1.16.0; the regional workflow's 12 before) with a voxel scoring above ``min_peak_score`` (the lesion
    operating point: 0.0787 since workflow 1.34.0, the regional workflow's 0.1 before).

    Returns relabelled components ``(labels, n)`` numbered 1..n in raster order.
    """
    labels, n = connected_components(np.asarray(score) > params.binarise_threshold, params.connectivity)
    if n == 0:
        return labels, 0
    vol = label_voxel_counts(labels, n) * float(voxel_volume_mm3)
    peak = label_maximum(score, labels, n)
    keep = (vol > params.min_volume_mm3) & (peak > params.min_peak_score)
    return relabel(labels, keep)


def relabel(labels: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Keep the components flagged in ``keep`` (index i-1 for label i), renumbered 1..m."""
    keep = np.asarray(keep, dtype=bool)
    lut = np.zeros(keep.size + 1, dtype=np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels], int(keep.sum())


@dataclass(frozen=True)
class FPDecision:
    """Why one candidate was kept or dropped."""

    label: int
    kept: bool
    reason: str
    cog_baseline: float
    cog_followup: float
    shift_explained_fraction: float
    border_fraction: float
    loss_ratio: float = 0.0  # matching loss around / gain inside (misregistration dipole)
    baseline_contrast_ratio: float = 0.0  # baseline / follow-up contrast over local tissue (drift)
    # loss_ratio less the shell's expected noise loss (FPParams.loss_noise_floor; equal to loss_ratio when off)
    loss_excess_ratio: float = 0.0


# reasons of false_positive_reduction that the enlarging-lesion path (rescue_grown_enlarging) may override
REASON_MISREGISTRATION = "explained by misregistration (baseline shifted)"
REASON_DRIFT = "signal drift of a lesion present at baseline"
REASON_MOVED = "moved structure"
# the reason of a candidate that path kept starts with this
KEPT_AS_GROWN = "kept: enlarging"
# the reason of a candidate the diffuse-change rule dropped starts with this (the workflow warns about them);
# the size bound's reason also holds TUMEFACTIVE_SIZE
REASON_DIFFUSE = "diffuse change"
TUMEFACTIVE_SIZE = "tumefactive size"


def shift_box(spacing_mm: tuple[float, float, float], radius_mm: float,
              thick_axis_mm: float | None = None) -> list[tuple[int, float | None]]:
    """The misregistration test's shifts per axis: ``(radius_vox, thick_fraction)``, an axis shifted by whole voxels
    up to ``round(radius_mm / spacing)`` (at least one; ``thick_fraction`` None), or, where its voxels are coarser
    than ``thick_axis_mm`` (a thick-slice axis), by at most ``thick_fraction = thick_axis_mm / spacing`` of a voxel
    read between slices (``radius_vox`` 0). The one definition :func:`shifted_baseline_max` and
    :func:`coherent_shift_explained_fraction` read."""
    out: list[tuple[int, float | None]] = []
    for s in spacing_mm:
        if thick_axis_mm is not None and s > thick_axis_mm:
            out.append((0, float(thick_axis_mm) / float(s)))
        else:
            out.append((max(1, int(round(radius_mm / s))), None))
    return out


def shifted_baseline_max(baseline: np.ndarray, spacing_mm: tuple[float, float, float], radius_mm: float,
                         thick_axis_mm: float | None = None) -> np.ndarray:
    """The brightest the baseline could be at each voxel after a shift of up to ``radius_mm``: a grey-scale maximum
    filter over a box of ``round(radius_mm / spacing)`` voxels per axis (at least one), the misregistration test of
    FLAIR subtraction CAD.

    With ``thick_axis_mm``, an axis whose voxels are coarser than it (a thick-slice axis) is shifted by at most
    ``thick_axis_mm`` instead of a whole voxel, the image read between its slices by linear interpolation: the
    largest value over shifts in ``[-t, t]`` voxels (``t = thick_axis_mm / spacing < 1``) of a piecewise-linear
    profile lies at the voxel itself or at ``+-t``, i.e. ``b + t * max(0, b[+1] - b, b[-1] - b)`` (edges
    replicated). The other axes keep the box."""
    b = np.asarray(baseline, np.float32)
    box = shift_box(spacing_mm, radius_mm, thick_axis_mm)
    out = ndimage.maximum_filter(b, footprint=np.ones([2 * r + 1 for r, _ in box], dtype=bool))
    for axis, (_, frac) in enumerate(box):
        if frac is None:
            continue
        t = np.float32(frac)
        n = out.shape[axis]
        up = np.take(out, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
        down = np.take(out, np.maximum(np.arange(n) - 1, 0), axis=axis)
        out = out + t * np.maximum(np.maximum(up, down) - out, 0.0)
    return out


def coherent_shift_explained_fraction(
    labels: np.ndarray, n: int, baseline: np.ndarray, followup: np.ndarray, spacing_mm: tuple[float, float, float],
    radius_mm: float, margin: float, thick_axis_mm: float | None = None,
) -> np.ndarray:
    """Per candidate of ``labels`` (1..n), the largest fraction of its voxels that ONE shift of ``baseline`` explains
    (``followup <= shifted baseline + margin``), over the offsets of :func:`shift_box`, the box
    :func:`shifted_baseline_max` takes its maximum over (a thick axis shifted by 0 or +-``thick_axis_mm``, read
    between its slices by linear interpolation).

    The misregistration test of FLAIR subtraction CAD asks whether a shifted baseline explains the follow-up. Read
    voxel by voxel (the maximum filter) it lets each voxel pick its own shift: in homogeneous tissue the brightest of
    a box's noisy neighbours lies several noise SDs over the baseline and explains a faint lesion's whole gain. A
    rigid or smooth misregistration moves a candidate's neighbourhood as one, so the test here holds one shift for
    the whole candidate. Boxes are cut per candidate, so the cost is that of the candidates, not of the volume."""
    b = np.asarray(baseline, np.float32)
    f = np.asarray(followup, np.float32)
    out = np.zeros(n)
    if n == 0:
        return out
    per_axis = [[-frac, 0.0, frac] if frac is not None else [float(k) for k in range(-r, r + 1)]
                for r, frac in shift_box(spacing_mm, radius_mm, thick_axis_mm)]
    pad = [int(np.ceil(max(abs(v) for v in offs))) for offs in per_axis]
    bp = np.pad(b, [(p, p) for p in pad], mode="edge")
    # each offset as the integer corners it reads and their weights: the baseline at x - off (a shift by +off moves
    # the baseline's content by off), linear interpolation over each fractional axis (two corners per such axis)
    offsets: list[list[tuple[list[int], float]]] = []
    for off in np.array(np.meshgrid(*per_axis, indexing="ij")).reshape(3, -1).T:
        corners: list[tuple[list[int], float]] = [([], 1.0)]
        for v in off:
            lo = int(np.floor(-v))
            w = float(-v - lo)
            corners = [(c + [lo], cw * (1 - w)) for c, cw in corners] + (
                [(c + [lo + 1], cw * w) for c, cw in corners] if w > 1e-6 else [])
        offsets.append(corners)
    for i, sl in enumerate(ndimage.find_objects(labels, n)):
        if sl is None:
            continue
        own = labels[sl] == i + 1
        fo = f[sl][own]
        best = 0.0
        for corners in offsets:
            shifted = sum(np.float32(cw) * bp[tuple(slice(a.start + p + k, a.stop + p + k)
                                                    for a, p, k in zip(sl, pad, c, strict=True))][own]
                          for c, cw in corners)
            frac = float(np.count_nonzero(fo <= shifted + margin)) / fo.size
            best = max(best, frac)
            if best >= 1.0:
                break
        out[i] = best
    return out


def thick_axis_shift_applies(params: FPParams, finer_input_voxel_mm: float | None) -> bool:
    """Whether the misregistration test reads a thick-slice axis between its slices (``params.shift_thick_axis_mm``):
    always when ``params.shift_thick_axis_finer_input_mm`` is None, else only when the finer input image's largest
    voxel dimension (``finer_input_voxel_mm``; None: unknown) is at most that bound (one time point a 3D image)."""
    bound = params.shift_thick_axis_finer_input_mm
    if bound is None:
        return True
    return finer_input_voxel_mm is not None and finer_input_voxel_mm <= bound + 1e-6


def false_positive_reduction(
    labels: np.ndarray,
    n: int,
    baseline: np.ndarray,
    followup: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    sigma: float,
    brain_median: float,
    brain_sigma: float,
    params: FPParams = FPParams(),
    difference: np.ndarray | None = None,
    tissue_level: np.ndarray | None = None,
    border_distance_mm: np.ndarray | None = None,
    score: np.ndarray | None = None,
    peak_percentile: float = ClassifyParams.peak_percentile,
    baseline_lesions: np.ndarray | None = None,
    touch_radius_mm: float = ClassifyParams.touch_radius_mm,
    finer_input_voxel_mm: float | None = None,
    confirm: np.ndarray | None = None,
    crossed_slices: bool = False,
) -> tuple[np.ndarray, int, list[FPDecision]]:
    """Step 5: drop candidates that are not new tissue change.

    * CAD rule (FLAIR subtraction CAD): the intensity at the candidate's centre of gravity is
      higher (or equal) at baseline -> false positive.
    * Misregistration at tissue/CSF edges: the follow-up is explained by the baseline shifted by
      up to ``shift_radius_mm`` (grey-scale max filter of the baseline with baseline lesions capped
      at the lesion threshold, so an enlarging rim next to an old lesion is not explained away).
    * Brain border / outside brain: most of the candidate lies within ``border_margin_mm`` of the
      brain edge or outside the mask.

    With ``difference`` (the smoothed follow-up - baseline) the misregistration rule needs the
    matching loss too (``dipole_rule``): a lesion at a tissue border (periventricular,
    juxtacortical) is explained by a shifted baseline as well, but only a shift also darkens the
    other side of the edge. With ``tissue_level`` (local normal tissue at baseline) a candidate
    whose baseline was already about as bright as its follow-up is the signal drift of an
    existing lesion (``drift_rule``; each time point's contrast is measured against its own 3 mm surround by
    default, ``drift_reference``). With ``difference``, a candidate whose matching loss is at least
    ``loss_alone_ratio`` x its gain is a moved structure and dropped whatever the shift explains (a new lesion only
    gains); with ``loss_noise_floor`` that loss is counted beyond the shell's expected noise loss
    (``FPDecision.loss_excess_ratio``; in the dipole clause too with ``dipole_loss_noise_floor``). With ``score``
    (the candidate score map) a candidate of at least ``diffuse_min_volume_mm3`` whose peak score stays under
    ``diffuse_max_peak`` is a region-wide change, not a focal lesion (``diffuse_rule``; reason starts with "diffuse
    change"), and so is one whose half-maximum extent in ``difference`` (:func:`half_maximum_core`, its peak being
    the ``peak_percentile`` of its change: pass the run's ``ClassifyParams.peak_percentile`` so the bound measures
    as the report does) is larger than ``diffuse_max_focal_volume_mm3`` (a 20 mm sphere: tumefactive size) whatever
    its peak.
    ``border_distance_mm``: the distance transform of
    ``brain_mask`` when the caller has it (:attr:`Candidates.border_distance_mm`), else computed.
    ``finer_input_voxel_mm``: the largest voxel dimension of the finer of the two input images
    (:func:`neurorad.pipelines.ms_lesions.finer_input_voxel_mm`; ``FPParams.shift_thick_axis_finer_input_mm`` reads
    it); None: unknown, and the thick-axis shift is not applied when that bound is set.
    ``confirm``: the other engine's score map in the fusion engine (``FPParams.shift_confirm_score`` reads it; None:
    no other engine). ``crossed_slices``: the two input images are thick slices of different orientations
    (:func:`neurorad.pipelines.ms_lesions.crossed_slices`; ``FPParams.shift_confirm_crossed`` reads it).
    """
    if params.drift_reference not in ("level", "shell", "either"):
        raise ValueError(f"unknown drift reference {params.drift_reference!r} (level, shell, either)")
    if params.shift_coherent not in (None, "finer-input", "always"):
        raise ValueError(f"unknown shift_coherent {params.shift_coherent!r} (None, 'finer-input', 'always')")
    decisions: list[FPDecision] = []
    if n == 0:
        return labels, 0, decisions
    brain = np.asarray(brain_mask, dtype=bool)
    b = np.asarray(baseline, dtype=np.float32)
    f = np.asarray(followup, dtype=np.float32)
    cap = brain_median + (params.cap_z if params.cap_z is not None else np.inf) * brain_sigma
    b_capped = np.minimum(b, cap)
    thick_shift = thick_axis_shift_applies(params, finer_input_voxel_mm)
    thick_axis_mm = params.shift_thick_axis_mm if thick_shift else None
    b_shift = shifted_baseline_max(b_capped, spacing_mm, params.shift_radius_mm, thick_axis_mm)
    confirming = (params.shift_confirm_score is not None and confirm is not None
                  and (params.shift_confirm_crossed or not crossed_slices))
    # the pair's typical excess of the shifted baseline over the baseline (its noise maximum), when an option reads it
    bias = (float(np.median((b_shift - b_capped)[brain]))
            if (params.shift_noise_bias or confirming) and brain.any() else 0.0)

    def explained_less(multiple: float) -> np.ndarray:
        return f <= b_shift - multiple * bias + params.shift_margin_z * sigma

    explained = explained_less(params.shift_noise_bias or 0.0)
    explained_confirmed = explained_less(params.shift_noise_bias or 1.0) if confirming else None
    dist_mm = (border_distance_mm if border_distance_mm is not None
               else ndimage.distance_transform_edt(brain, sampling=spacing_mm))
    near_edge = (dist_mm <= params.border_margin_mm) | ~brain

    idx = np.arange(1, n + 1)
    counts = label_voxel_counts(labels, n).astype(float)
    volume_mm3 = counts * float(np.prod(spacing_mm))
    peak = label_maximum(score, labels, n) if score is not None else np.ones(n)
    frac_expl = label_sums(explained, labels, n) / counts
    if explained_confirmed is not None:
        seen = label_maximum(np.asarray(confirm, np.float32), labels, n) >= float(params.shift_confirm_score)
        frac_expl = np.where(seen, label_sums(explained_confirmed, labels, n) / counts, frac_expl)
    coherent_always = np.zeros(n, bool)
    if params.shift_coherent == "always" or (params.shift_coherent == "finer-input" and thick_shift):
        # one shift per candidate; never more explained than the per-voxel maximum already says
        coherent = coherent_shift_explained_fraction(
            labels, n, b_capped, f, spacing_mm, params.shift_radius_mm, params.shift_margin_z * sigma, thick_axis_mm)
        frac_expl = np.minimum(frac_expl, coherent)
        if params.shift_coherent_always is not None:
            coherent_always = frac_expl >= params.shift_coherent_always
    frac_edge = label_sums(near_edge, labels, n) / counts
    cogs = label_centroids_ijk(labels, n)
    loss_ratio = np.zeros(n)
    excess_ratio = np.zeros(n)
    drift = np.zeros(n)
    # the drift ratio each candidate is held to: drift_ratio_new where it touches no baseline lesion
    drift_bound = np.full(n, params.drift_ratio)
    if params.drift_ratio_new is not None and baseline_lesions is not None:
        kinds = classify_new_enlarging(labels, n, baseline_lesions, spacing_mm,
                                       replace(ClassifyParams(), touch_radius_mm=touch_radius_mm))
        drift_bound[np.array(kinds) == "new"] = params.drift_ratio_new
    if difference is not None and (params.dipole_rule or params.drift_rule or params.loss_alone_ratio is not None):
        d = np.asarray(difference, np.float32)
        gain = label_sums(np.maximum(d, 0), labels, n)
        objs = ndimage.find_objects(labels, n)
        for i, sl in enumerate(objs):
            if sl is None:
                continue
            box = padded_box(sl, params.dipole_shell_mm, spacing_mm, labels.shape)
            own = labels[box] == i + 1
            shell = (ndimage.distance_transform_edt(~own, sampling=spacing_mm) <= params.dipole_shell_mm) & ~own
            shell &= brain[box]
            loss = float(np.sum(np.maximum(-d[box][shell], 0)))
            loss_ratio[i] = loss / max(float(gain[i]), 1e-9)
            # E[max(-X, 0)] = sigma / sqrt(2 pi) for X ~ N(0, sigma^2), per shell voxel
            noise = (params.loss_noise_floor or 0.0) * float(np.count_nonzero(shell)) * sigma / np.sqrt(2.0 * np.pi)
            excess_ratio[i] = max(0.0, loss - noise) / max(float(gain[i]), 1e-9)
            if tissue_level is not None and params.drift_reference in ("level", "either"):
                lev = np.asarray(tissue_level)[box][own]
                cb = float(np.mean(b[box][own] - lev))
                cf = float(np.mean(f[box][own] - lev))
                drift[i] = cb / cf if cf > 1e-9 else 1.0
            if tissue_level is not None and params.drift_reference in ("shell", "either"):
                # tissue only: CSF in the shell (a periventricular lesion's ventricle) would pull the reference
                # down and both contrasts up, their ratio towards 1
                lev_box = np.asarray(tissue_level)[box] * params.drift_shell_tissue_rel
                around = shell & (labels[box] == 0) & (b[box] > lev_box) & (f[box] > lev_box)
                if np.count_nonzero(around) >= 10:
                    rb, rf = float(np.median(b[box][around])), float(np.median(f[box][around]))
                    cb = float(np.mean(b[box][own])) / rb - 1.0 if rb > 0 else 0.0
                    cf = float(np.mean(f[box][own])) / rf - 1.0 if rf > 0 else 0.0
                    drift[i] = max(drift[i], cb / cf if cf > 1e-9 else 1.0)
    # the tumefactive-size bound measures a candidate at half maximum (the partial-volume rule the report
    # measures lesions with), not its extent, whose faint halo (score > 0.01) can reach 9x a lesion's size where
    # it merges with surrounding change; only candidates whose extent is over the bound can be over it
    half_max_mm3 = np.zeros(n)
    bound = params.diffuse_max_focal_volume_mm3
    if params.diffuse_rule and bound is not None and score is not None and difference is not None:
        objs_all = ndimage.find_objects(labels, n)
        for i in np.flatnonzero(volume_mm3 > bound):
            sl = objs_all[i]
            core = half_maximum_core(labels[sl] == i + 1, np.asarray(difference, np.float32)[sl], 0.5,
                                     peak_percentile)
            half_max_mm3[i] = float(core.sum()) * float(np.prod(spacing_mm)) if core is not None else 0.0
    keep = np.zeros(n, dtype=bool)
    for i, lab in enumerate(idx):
        ijk = tuple(int(round(c)) for c in cogs[i])
        # a non-convex candidate may have its centre outside itself: use its voxel nearest the centre
        if labels[ijk] != lab:
            vox = np.argwhere(labels == lab)
            ijk = tuple(vox[np.argmin(((vox - np.asarray(cogs[i])) ** 2).sum(1))])
        cb, cf = float(b[ijk]), float(f[ijk])
        reason = "kept"
        if params.cog_rule and cb >= cf:
            reason = "centre of gravity brighter at baseline"
        elif frac_edge[i] >= params.border_fraction:
            reason = "at the brain border or outside the brain"
        elif (params.diffuse_rule and score is not None and volume_mm3[i] >= params.diffuse_min_volume_mm3
              and peak[i] < params.diffuse_max_peak):
            reason = (f"{REASON_DIFFUSE} ({volume_mm3[i] / 1000:.1f} mL at peak score {peak[i]:.2f}): "
                      "region-wide, not a focal lesion")
        elif bound is not None and half_max_mm3[i] > bound:  # > 0 only where the bound applies (above)
            reason = (f"{REASON_DIFFUSE} ({half_max_mm3[i] / 1000:.1f} mL at half maximum, peak score {peak[i]:.2f}): "
                      f"larger than a {equivalent_diameter_mm(bound):.0f} mm lesion ({TUMEFACTIVE_SIZE})")
        elif (params.loss_alone_ratio is not None and difference is not None
              and excess_ratio[i] >= params.loss_alone_ratio):
            reason = (f"{REASON_MOVED} (loss around {excess_ratio[i]:.1f} x the gain inside): misregistration or a "
                      "displaced lesion, not new tissue")
        elif frac_expl[i] >= params.shift_explained_fraction and (
                difference is None or not params.dipole_rule
                or (excess_ratio[i] if params.dipole_loss_noise_floor else loss_ratio[i]) >= params.dipole_ratio
                or frac_expl[i] >= params.shift_explained_always) or coherent_always[i]:
            reason = REASON_MISREGISTRATION
        elif params.drift_rule and tissue_level is not None and drift[i] >= drift_bound[i]:
            reason = REASON_DRIFT
        keep[i] = reason == "kept"
        decisions.append(FPDecision(int(lab), bool(keep[i]), reason, cb, cf, float(frac_expl[i]), float(frac_edge[i]),
                                    float(loss_ratio[i]), float(drift[i]), float(excess_ratio[i])))
    out, m = relabel(labels, keep)
    return out, m, decisions


def baseline_lesion_mask(
    baseline: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    brain_median: float,
    brain_sigma: float,
    params: ClassifyParams = ClassifyParams(),
) -> np.ndarray:
    """Hyperintense baseline FLAIR inside the brain (lesions present before), small specks removed."""
    vox_mm3 = float(np.prod(spacing_mm))
    m = np.asarray(brain_mask, bool) & (np.asarray(baseline) > brain_median + params.baseline_lesion_z * brain_sigma)
    labels, n = connected_components(m, 26)
    if n == 0:
        return m
    keep = label_voxel_counts(labels, n) * vox_mm3 >= params.baseline_lesion_min_mm3
    return relabel(labels, keep)[0] > 0


def enlarging_peak_labels(
    labels: np.ndarray, n: int, kinds: list[str], followup: np.ndarray, baseline_lesions: np.ndarray,
    brain_mask: np.ndarray, spacing_mm: tuple[float, float, float], brain_median: float, brain_sigma: float,
    params: ClassifyParams = ClassifyParams(),
) -> np.ndarray | None:
    """Where each lesion's peak is read (:func:`half_maximum_cores`' ``peak_labels``): ``labels`` (before
    :func:`grow_enlarging`) grown by the brain-wide test alone. The voxels ``grow_local_excess`` adds reach a faint
    lesion's edge but are not its contrast. None when that setting is off (the grown extent itself)."""
    if params.grow_local_excess is None:
        return None
    return grow_enlarging(labels, n, kinds, followup, baseline_lesions, brain_mask, spacing_mm, brain_median,
                          brain_sigma, replace(params, grow_local_excess=None))[0]


def touched_baseline_ids(own: np.ndarray, baseline_box: np.ndarray, radius_mm: float,
                         spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The non-zero values of ``baseline_box`` (baseline lesion component ids, or a boolean baseline lesion mask)
    within ``radius_mm`` of a voxel of ``own`` (a candidate in the same box): the baseline lesions a candidate
    touches, as step 9 classifies new vs enlarging. The box must hold every voxel within the radius of ``own``
    (:func:`padded_box` by at least the radius), so the distance map of the box alone is exact: one whole-volume
    distance transform cost ~0.8 s of a 1 mm pair's ~20 s."""
    if not np.any(baseline_box):
        return np.zeros(0, np.asarray(baseline_box).dtype)
    near = ndimage.distance_transform_edt(~np.asarray(own, bool), sampling=spacing_mm) <= radius_mm
    vals = np.asarray(baseline_box)[near]
    return np.unique(vals[vals != 0])


def classify_new_enlarging(
    labels: np.ndarray,
    n: int,
    baseline_lesions: np.ndarray,
    spacing_mm: tuple[float, float, float],
    params: ClassifyParams = ClassifyParams(),
) -> list[str]:
    """Step 7: 'enlarging' when the component touches a baseline lesion, else 'new'."""
    if n == 0:
        return []
    base = np.asarray(baseline_lesions, bool)
    kinds = []
    for i, sl in enumerate(ndimage.find_objects(labels, n)):
        hit = False
        if sl is not None:
            box = padded_box(sl, params.touch_radius_mm, spacing_mm, labels.shape)
            hit = touched_baseline_ids(labels[box] == i + 1, base[box], params.touch_radius_mm, spacing_mm).size > 0
        kinds.append("enlarging" if hit else "new")
    return kinds


@dataclass(frozen=True)
class EnlargingExtent:
    """Volumes of one enlarging lesion (mm^3): at baseline, at follow-up, and the new rim detected."""

    label: int
    baseline_volume_mm3: float
    followup_volume_mm3: float
    rim_volume_mm3: float


def grow_enlarging(
    labels: np.ndarray,
    n: int,
    kinds: list[str],
    followup: np.ndarray,
    baseline_lesions: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    brain_median: float,
    brain_sigma: float,
    params: ClassifyParams = ClassifyParams(),
    tissue_level: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, EnlargingExtent]]:
    """Grow each enlarging component (the detected new rim) into the whole follow-up lesion.

    The subtraction finds only the tissue that changed: for an enlarging lesion that is the rim
    around the old lesion. Radiologists report the lesion's extent and its change (e.g. the
    MAGNIMS 2016 consensus counts "new or enlarging" lesions, and an enlarging lesion is the
    whole follow-up lesion that grew). The grown lesion is the 26-connected region of
    follow-up-hyperintense voxels (follow-up > median + ``followup_lesion_z`` robust SD, in the
    brain; with ``tissue_level`` and ``grow_local_excess`` also those that much over the local tissue level, where a
    faint lesion lies) together with the rim, restricted to ``grow_bound_mm`` around the rim and the baseline
    lesion components the rim touches (so it cannot leak into an unrelated confluent area), and
    connected to the rim. Voxels of other components are never taken. New lesions are unchanged.

    Returns the new label map and, per enlarging label, the baseline lesion volume (the touched
    baseline lesion components inside the grown region), the follow-up volume and the rim volume.
    """
    labels = np.asarray(labels).copy()
    extents: dict[int, EnlargingExtent] = {}
    if n == 0 or not params.grow_enlarging:
        return labels, extents
    vox_mm3 = float(np.prod(spacing_mm))
    brain = np.asarray(brain_mask, bool)
    base = np.asarray(baseline_lesions, bool)
    hyper = brain & (np.asarray(followup) > brain_median + params.followup_lesion_z * brain_sigma)
    if params.grow_local_excess is not None and tissue_level is not None:
        hyper |= brain & (np.asarray(followup) - np.asarray(tissue_level) > params.grow_local_excess)
    base_lab, _ = connected_components(base, 26)
    near_vox = [max(1, int(np.ceil(params.grow_bound_mm / s))) for s in spacing_mm]
    objs = ndimage.find_objects(labels.astype(np.int32), n)
    struct = ndimage.generate_binary_structure(3, 3)
    for lab in range(1, n + 1):
        if kinds[lab - 1] != "enlarging" or objs[lab - 1] is None:
            continue
        rim_full = labels == lab
        # touched baseline components: within the touch radius of the rim
        pad = [max(1, int(np.ceil((params.touch_radius_mm + params.grow_bound_mm) / s))) + 1 for s in spacing_mm]
        sl = objs[lab - 1]
        box = tuple(slice(max(0, a.start - p), min(dim, a.stop + p)) for a, p, dim in zip(sl, pad, labels.shape,
                                                                                          strict=True))
        touched_ids = touched_baseline_ids(rim_full[box], base_lab[box], params.touch_radius_mm, spacing_mm)
        if touched_ids.size:
            # enlarge the box to hold the whole touched baseline components
            for obj in ndimage.find_objects(np.where(np.isin(base_lab, touched_ids), base_lab, 0)):
                if obj is None:
                    continue
                box = tuple(slice(max(0, min(b.start, o.start - p)), min(dim, max(b.stop, o.stop + p)))
                            for b, o, p, dim in zip(box, obj, near_vox, labels.shape, strict=True))
        rim = rim_full[box]
        old = np.isin(base_lab[box], touched_ids) if touched_ids.size else np.zeros_like(rim)
        seed = rim | old
        bound = ndimage.distance_transform_edt(~seed, sampling=spacing_mm) <= params.grow_bound_mm
        free = (labels[box] == 0) | rim
        cand = (hyper[box] & bound & free) | rim
        comp, _ = ndimage.label(cand, struct)
        keep_ids = np.unique(comp[rim])
        grown = np.isin(comp, keep_ids[keep_ids > 0])
        sub = labels[box]
        sub[grown & (sub == 0)] = lab
        labels[box] = sub
        extents[lab] = EnlargingExtent(
            label=lab,
            baseline_volume_mm3=round(float(np.count_nonzero(old)) * vox_mm3, 2),
            followup_volume_mm3=round(float(np.count_nonzero(grown)) * vox_mm3, 2),
            rim_volume_mm3=round(float(np.count_nonzero(rim)) * vox_mm3, 2),
        )
    return labels, extents


def half_max_extent(contrast: np.ndarray, region: np.ndarray, seed: np.ndarray, percentile: float = 95.0) -> int:
    """Voxels of ``region`` whose ``contrast`` reaches half the peak contrast of ``seed``
    (contrast-invariant size: the same lesion seen with more or less contrast keeps its size)."""
    vals = contrast[seed]
    if vals.size == 0:
        return 0
    peak = float(np.percentile(vals, percentile))
    if peak <= 0:
        return 0
    return int(np.count_nonzero(region & (contrast >= 0.5 * peak)))


def enlarging_growth(
    labels: np.ndarray, n: int, kinds: list[str], baseline: np.ndarray, followup: np.ndarray,
    baseline_lesions: np.ndarray, tissue_level: np.ndarray | None, spacing_mm: tuple[float, float, float],
    params: ClassifyParams = ClassifyParams(),
) -> dict[int, float]:
    """Growth factor of the baseline lesion each 'enlarging' candidate touches: follow-up / baseline size.

    The touched baseline lesion's size is measured at half its own peak contrast over the local
    tissue level at each time point (:func:`half_max_extent`; at follow-up the candidate counts as
    part of the lesion); a lesion whose contrast changed (protocol change, signal drift) or that
    moved (misregistration) keeps its half-maximum size, one that grew does not. Labels without a
    touched baseline lesion (or of size 0 at baseline) are absent from the result.
    """
    out: dict[int, float] = {}
    if n == 0 or "enlarging" not in kinds:
        return out
    b = np.asarray(baseline, np.float32)
    f = np.asarray(followup, np.float32)
    lev = np.asarray(tissue_level, np.float32) if tissue_level is not None else np.float32(np.median(b[b > 0]))
    base_lab, _ = connected_components(np.asarray(baseline_lesions, bool), 26)
    objs = ndimage.find_objects(np.asarray(labels, np.int32), n)
    for lab in range(1, n + 1):
        if kinds[lab - 1] != "enlarging" or objs[lab - 1] is None:
            continue
        box = padded_box(objs[lab - 1], params.touch_radius_mm + 6.0, spacing_mm, labels.shape)
        own = labels[box] == lab
        old = np.isin(base_lab[box], touched_baseline_ids(own, base_lab[box], params.touch_radius_mm, spacing_mm))
        if not old.any():
            continue
        region = ndimage.distance_transform_edt(~(old | own), sampling=spacing_mm) <= 2.0
        lv = lev[box] if np.ndim(lev) else lev
        size_b = half_max_extent(b[box] - lv, region, old, params.peak_percentile)
        size_f = half_max_extent(f[box] - lv, region, old | own, params.peak_percentile)
        if size_b > 0:
            out[lab] = size_f / size_b
    return out


def drop_unchanged_enlarging(
    labels: np.ndarray, n: int, kinds: list[str], baseline: np.ndarray, followup: np.ndarray,
    baseline_lesions: np.ndarray, tissue_level: np.ndarray | None, spacing_mm: tuple[float, float, float],
    params: ClassifyParams = ClassifyParams(),
) -> tuple[np.ndarray, int, list[str], list[int]]:
    """Drop 'enlarging' candidates that did not grow (before :func:`grow_enlarging`): the touched
    baseline lesion's half-maximum size at follow-up (:func:`enlarging_growth`) is less than
    ``enlarging_min_volume_ratio`` x its size at baseline. Returns the relabelled map, count, kinds
    and the dropped labels (old numbering).
    """
    ratio = params.enlarging_min_volume_ratio
    if n == 0 or ratio is None or "enlarging" not in kinds:
        return labels, n, kinds, []
    growth = enlarging_growth(labels, n, kinds, baseline, followup, baseline_lesions, tissue_level, spacing_mm, params)
    dropped = sorted(lab for lab, g in growth.items() if g < ratio)
    if not dropped:
        return labels, n, kinds, []
    keep = np.ones(n, bool)
    keep[np.asarray(dropped) - 1] = False
    out, m = relabel(labels, keep)
    return out, m, [k for k, kp in zip(kinds, keep, strict=True) if kp], dropped


def rescue_grown_enlarging(
    labels0: np.ndarray, n0: int, decisions: list[FPDecision], baseline: np.ndarray, followup: np.ndarray,
    baseline_lesions: np.ndarray, tissue_level: np.ndarray | None, spacing_mm: tuple[float, float, float],
    params: ClassifyParams = ClassifyParams(),
) -> tuple[np.ndarray, int, list[FPDecision]]:
    """The enlarging-lesion path: give back candidates that a shift or drift rule dropped although the
    baseline lesion they touch grew.

    ``labels0``/``n0`` are the candidates before :func:`false_positive_reduction`, ``decisions`` its
    verdicts. A candidate dropped as misregistration or drift (:data:`REASON_MISREGISTRATION`,
    :data:`REASON_DRIFT`) that touches a
    baseline lesion (:func:`classify_new_enlarging`) whose half-maximum size grew by at least
    ``rescue_growth_ratio`` (:func:`enlarging_growth`), or by ``rescue_growth_ratio_low_drift`` when its baseline
    contrast ratio (:attr:`FPDecision.baseline_contrast_ratio`) is under ``rescue_low_drift_below`` (workflow
    1.24.0), is kept; its decision says so and names the rule it overrode. ``rescue_growth_ratio`` None turns
    the path off. Those rules judge the rim in the difference image, where a faint lesion's own baseline,
    shifted by a voxel or two, explains its new rim and nothing is lost; the size comparison is
    invariant to that shift and to a contrast drift. Returns the kept candidates relabelled 1..m (as
    :func:`false_positive_reduction` does) and the updated decisions.
    """
    keep = np.array([d.kept for d in decisions], bool)
    ratio = params.rescue_growth_ratio
    dropped = np.array([d.reason in (REASON_MISREGISTRATION, REASON_DRIFT) for d in decisions], bool)
    if ratio is not None and n0 and dropped.any():
        sub, m = relabel(labels0, dropped)
        kinds = classify_new_enlarging(sub, m, baseline_lesions, spacing_mm, params)
        growth = enlarging_growth(sub, m, kinds, baseline, followup, baseline_lesions, tissue_level, spacing_mm,
                                  params)
        old_ids = np.flatnonzero(dropped)
        decisions = list(decisions)
        low = params.rescue_growth_ratio_low_drift
        for j, g in growth.items():
            i = int(old_ids[j - 1])
            bound = ratio
            if low is not None and decisions[i].baseline_contrast_ratio < params.rescue_low_drift_below:
                bound = min(ratio, low)
            if g >= bound:
                keep[i] = True
                decisions[i] = replace(decisions[i], kept=True, reason=(
                    f"{KEPT_AS_GROWN} (baseline lesion's half-maximum size x{g:.1f}), not {decisions[i].reason}"))
    out, m = relabel(labels0, keep)
    return out, m, decisions


def split_enlarging_candidates(
    labels: np.ndarray, n: int, kinds: list[str], baseline_lesions: np.ndarray,
    spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams(),
) -> tuple[np.ndarray, int, list[int]]:
    """The parts of each 'enlarging' candidate that touches two or more separate baseline lesions: one part per
    touched lesion, the candidate's voxels nearest to it (Euclidean distance in mm). Touched baseline lesions within
    ``split_enlarging_min_gap_mm`` (or the coarsest voxel size) of each other count as one
    (:func:`_baseline_lesion_groups`): pieces of one lesion cut by the baseline threshold, or two that grew into one.

    One 26-connected candidate (score > 0.01) can hold the rim of a lesion that grew and the drift rim of a
    stable neighbour. Judged as a whole it passes the false-positive rules (the grown part is real), and
    :func:`grow_enlarging` and :func:`delineate` then keep the core around the brightest follow-up peak, which
    may be the stable neighbour's: the report named an enlarging lesion of the neighbour's volume and the lesion
    that grew had no voxel (an independent-simulator pair, docs/ms-lesions-log.md, workflow 1.8.0). Touch is
    :func:`classify_new_enlarging`'s (within ``touch_radius_mm``).

    Returns the parts as a label map (1..m; zero elsewhere), m, and the candidate label each part came from.
    Nothing when ``split_enlarging`` is False.
    """
    parts = np.zeros(np.shape(labels), np.int32)
    owners: list[int] = []
    if n == 0 or not params.split_enlarging or "enlarging" not in kinds:
        return parts, 0, owners
    base_lab, _ = connected_components(np.asarray(baseline_lesions, bool), 26)
    objs = ndimage.find_objects(np.asarray(labels, np.int32), n)
    m = 0
    for lab in range(1, n + 1):
        if kinds[lab - 1] != "enlarging" or objs[lab - 1] is None:
            continue
        box = padded_box(objs[lab - 1], params.touch_radius_mm, spacing_mm, parts.shape)
        own = labels[box] == lab
        bl = base_lab[box]
        ids = touched_baseline_ids(own, bl, params.touch_radius_mm, spacing_mm)
        if ids.size < 2:
            continue
        groups = _baseline_lesion_groups(base_lab, ids, max(params.split_enlarging_min_gap_mm, *spacing_mm), spacing_mm)
        if len(set(groups.values())) < 2:
            continue
        # each voxel goes to the nearest touched baseline lesion (the touching voxels of every one lie in the box)
        _, idx = ndimage.distance_transform_edt(~np.isin(bl, ids), sampling=spacing_mm, return_indices=True)
        nearest = bl[tuple(idx)]
        sub = parts[box]
        for g in dict.fromkeys(groups.values()):
            piece = own & np.isin(nearest, [j for j in ids if groups[int(j)] == g])
            if piece.any():
                m += 1
                sub[piece] = m
                owners.append(lab)
        parts[box] = sub
    return parts, m, owners


def _baseline_lesion_groups(base_lab: np.ndarray, ids: np.ndarray, gap_mm: float,
                            spacing_mm: tuple[float, float, float]) -> dict[int, int]:
    """Baseline lesion components ``ids`` of ``base_lab`` grouped by single linkage: two lie in one group when
    they come within ``gap_mm`` of each other (voxel centre to voxel centre). Returns component id -> group id
    (the smallest component id of its group)."""
    ids = [int(j) for j in ids]
    sel = np.where(np.isin(base_lab, ids), base_lab, 0)
    objs = ndimage.find_objects(sel)
    boxes = [objs[j - 1] for j in ids]
    start = [min(b[a].start for b in boxes) for a in range(3)]
    stop = [max(b[a].stop for b in boxes) for a in range(3)]
    box = padded_box(tuple(slice(a, b) for a, b in zip(start, stop, strict=True)), gap_mm, spacing_mm, base_lab.shape)
    sub = sel[box]
    group = {j: j for j in ids}

    def root(j: int) -> int:
        while group[j] != j:
            j = group[j]
        return j

    for a in ids[:-1]:
        dist = ndimage.distance_transform_edt(sub != a, sampling=spacing_mm)
        for b in ids[ids.index(a) + 1:]:
            if float(dist[sub == b].min()) <= gap_mm:
                ra, rb = root(a), root(b)
                group[max(ra, rb)] = min(ra, rb)
    return {j: root(j) for j in ids}


def judge_enlarging_parts(
    labels: np.ndarray, n: int, kinds: list[str], cand: Candidates, baseline: np.ndarray, followup: np.ndarray,
    brain_mask: np.ndarray, baseline_lesions: np.ndarray, spacing_mm: tuple[float, float, float],
    fp_params: FPParams = FPParams(), post: PostParams = PostParams(), params: ClassifyParams = ClassifyParams(),
    finer_input_voxel_mm: float | None = None,
) -> tuple[np.ndarray, list[FPDecision], list[int]]:
    """Each part of :func:`split_enlarging_candidates` judged on its own, as a candidate of step 6-8 would be:
    the false-positive rules (:func:`false_positive_reduction`), the enlarging-lesion path
    (:func:`rescue_grown_enlarging`) and the post-processing's size and peak (``post``: more than
    ``min_volume_mm3`` and a score above ``min_peak_score``).

    A candidate keeps only its parts that pass, as one lesion under its own label: two parts that both pass are one
    lesion that grew over two baseline components (a lesion split by the baseline threshold, or two lesions that
    grew together), not two lesions (widened held-out pair 37: one 750 mm^3 enlarging lesion was reported as two
    when passing parts were made lesions of their own). When every part passes, or none does alone, the candidate
    stays whole, as it was judged in step 8 (it passed as a whole, and none of its parts can be preferred on that
    evidence).

    Returns the new label map (same labels, count unchanged), the parts' decisions (numbered as the parts) and the
    candidate labels that lost a part. ``finer_input_voxel_mm``: as :func:`false_positive_reduction`'s.
    """
    parts, m, owners = split_enlarging_candidates(labels, n, kinds, baseline_lesions, spacing_mm, params)
    if m == 0:
        return labels, [], []
    _, _, decisions = false_positive_reduction(
        parts, m, baseline, followup, brain_mask, spacing_mm, cand.sigma, cand.brain_median, cand.brain_sigma,
        fp_params, difference=cand.difference, tissue_level=cand.tissue_level,
        border_distance_mm=cand.border_distance_mm, score=cand.score, peak_percentile=params.peak_percentile,
        finer_input_voxel_mm=finer_input_voxel_mm)
    _, _, decisions = rescue_grown_enlarging(parts, m, decisions, baseline, followup, baseline_lesions,
                                             cand.tissue_level, spacing_mm, params)
    vol_mm3 = label_voxel_counts(parts, m) * float(np.prod(spacing_mm))
    peak = label_maximum(cand.score, parts, m)
    passed = [d.kept and vol_mm3[i] > post.min_volume_mm3 and peak[i] > post.min_peak_score
              for i, d in enumerate(decisions)]
    decisions = [d if d.kept == ok else replace(
        d, kept=False, reason=f"{post.min_volume_mm3:g} mm^3 or less, or peak score {peak[i]:.3f} at most "
                              f"{post.min_peak_score:g}, on its own") for i, (d, ok) in enumerate(zip(
                                  decisions, passed, strict=True))]
    out = np.asarray(labels).copy()
    changed: list[int] = []
    for lab in dict.fromkeys(owners):
        mine = [i for i, o in enumerate(owners) if o == lab]
        failed = [i for i in mine if not passed[i]]
        if not failed or len(failed) == len(mine):
            continue  # every part passes (one lesion), or none does alone: the candidate stays as it was judged
        changed.append(lab)
        out[np.isin(parts, np.asarray(failed) + 1)] = 0
    return out, decisions, changed


def delineate(
    labels: np.ndarray,
    n: int,
    kinds: list[str],
    difference: np.ndarray,
    params: ClassifyParams = ClassifyParams(),
    followup: np.ndarray | None = None,
    tissue_level: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Partial-volume delineation: keep the voxels of each new component whose change reaches
    ``partial_volume_fraction`` of its peak change (half maximum), the part connected to the
    peak. A voxel whose change is half the lesion's full contrast is half lesion, so this counts
    voxels with a lesion fraction >= 0.5 (the truth definition of the phantom, and how a
    partial-volume voxel is usually counted in manual delineation); the candidate extent (score
    > 0.01) reaches much further (1.4-2.1x the truth volume before). An enlarging lesion (its
    grown follow-up extent) is delineated the same way on its follow-up contrast over the local
    tissue level (``followup``, ``tissue_level``; without them it keeps its grown extent). With
    ``spacing_mm`` and ``ClassifyParams.pv_level_min_diameter_mm``, a lesion of that size or larger is delineated
    at the level whose extent holds its partial-volume sum instead (:func:`partial_volume_levels`).
    Returns the new label map (same label numbers).
    """
    labels, peaks = half_maximum_cores(labels, n, kinds, difference, params, followup, tissue_level)
    if spacing_mm is None:
        return labels
    return partial_volume_levels(labels, n, kinds, difference, spacing_mm, params, followup, tissue_level, peaks)


def half_maximum_cores(
    labels: np.ndarray, n: int, kinds: list[str], difference: np.ndarray, params: ClassifyParams = ClassifyParams(),
    followup: np.ndarray | None = None, tissue_level: np.ndarray | None = None,
    peak_labels: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, float]]:
    """The half-maximum rule of :func:`delineate` alone: each component cut to its half-maximum core
    (:func:`half_maximum_core`). Returns the label map (same numbers) and each delineated lesion's peak change (the
    change its core is ``partial_volume_fraction`` of), for :func:`partial_volume_levels`.

    ``peak_labels``: where each label's peak (and its maximum) is read, when not over its whole extent: a subset of
    ``labels`` with the same numbers. Step 9 passes the enlarging lesions grown by the brain-wide test alone
    (:func:`grow_enlarging` without ``grow_local_excess``): the faint voxels the local test adds reach a lesion's
    edge but must not lower its peak, or the half-maximum core of an enlarging candidate that also holds a brighter
    new lesion reaches across the dip between them and the two become one lesion (independent-simulator Colin27 pair
    38, workflow 1.33.0 without it)."""
    labels = np.asarray(labels).copy()
    peaks: dict[int, float] = {}
    if n == 0 or params.partial_volume_fraction is None:
        return labels, peaks
    d_new, d_enl = _change_maps(difference, followup, tissue_level)
    objs = ndimage.find_objects(labels.astype(np.int32), n)
    struct = ndimage.generate_binary_structure(3, 3)
    for lab in range(1, n + 1):
        d = d_new if kinds[lab - 1] == "new" else d_enl
        if d is None or objs[lab - 1] is None:
            continue
        sl = objs[lab - 1]
        own = labels[sl] == lab
        at_peak = None if peak_labels is None else (np.asarray(peak_labels)[sl] == lab) & own
        found = _half_maximum_core_peak(own, d[sl], params.partial_volume_fraction, params.peak_percentile, struct,
                                        params.delineation_focal_ratio, at_peak)
        if found is None:
            continue
        sub = labels[sl]
        sub[own & ~found[0]] = 0
        labels[sl] = sub
        peaks[lab] = found[1]
    return labels, peaks


def _change_maps(difference: np.ndarray, followup: np.ndarray | None, tissue_level: np.ndarray | None,
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """The change a new lesion is delineated on (``difference``) and an enlarging lesion's (its follow-up over the
    local tissue level; None without them)."""
    d_enl = (np.asarray(followup, np.float32) - np.asarray(tissue_level, np.float32)
             if followup is not None and tissue_level is not None else None)
    return np.asarray(difference, np.float32), d_enl


def partial_volume_levels(
    labels: np.ndarray, n: int, kinds: list[str], difference: np.ndarray, spacing_mm: tuple[float, float, float],
    params: ClassifyParams = ClassifyParams(), followup: np.ndarray | None = None,
    tissue_level: np.ndarray | None = None, peaks: dict[int, float] | None = None,
) -> np.ndarray:
    """Each lesion of a half-maximum label map (:func:`half_maximum_cores`, and the separate lesions added to it) at
    its partial-volume level (:func:`partial_volume_core`; ``ClassifyParams.pv_level_min_diameter_mm``).

    A lesion's change is summed over its own core and the unlabelled voxels nearer to it than to any other lesion
    (a Voronoi split of the voxels between the cores), so that a second lesion in the same candidate, or a
    neighbour, adds nothing to its sum and loses no voxel to its lower level; a voxel one lesion's level took is
    not another's. ``peaks``: each lesion's peak change as :func:`half_maximum_cores` found it; a lesion without one
    (a part of :func:`separate_lesion_cores` or :func:`new_beside_unchanged`) takes the lowest change of its core
    over ``partial_volume_fraction`` (the core is the region above that fraction of its peak). Returns the label map
    (same numbers); unchanged when the setting is off."""
    labels = np.asarray(labels).copy()
    fraction = params.partial_volume_fraction
    if n == 0 or fraction is None or params.pv_level_min_diameter_mm is None:
        return labels
    d_new, d_enl = _change_maps(difference, followup, tissue_level)
    start = labels.astype(np.int32)
    objs = ndimage.find_objects(start, n)
    struct = ndimage.generate_binary_structure(3, 3)
    sp = tuple(float(v) for v in spacing_mm)
    free = start == 0  # the voxels a lesion's lower level may take, until one takes them
    for lab in range(1, n + 1):
        d = d_new if kinds[lab - 1] == "new" else d_enl
        if d is None or objs[lab - 1] is None:
            continue
        # the sum and the mask reach pv_level_reach_mm from the core, its background ring twice that; the box
        # reaches three times, so every lesion nearer than the core to a summed voxel lies in it (the ring's split
        # does not see a lesion beyond the box)
        box = padded_box(objs[lab - 1], 3.0 * params.pv_level_reach_mm, sp, labels.shape)
        core = start[box] == lab
        allowed = free[box] & nearer_to(core, (start[box] > 0) & ~core, sp)
        d_box = d[box]
        peak = peaks.get(lab) if peaks is not None else None
        if peak is None:  # a core holds at least one voxel: its label has a box
            peak = float(d_box[core].min()) / fraction
        level = partial_volume_core(core | allowed, d_box, core, peak, sp, params, struct)
        sub = labels[box]
        sub[core & ~level] = 0
        sub[level] = lab
        labels[box] = sub
        free[box] &= ~level
    return labels


def separate_lesion_cores(
    labels: np.ndarray, n: int, kinds: list[str], difference: np.ndarray, score: np.ndarray,
    baseline_lesions: np.ndarray, spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams(),
    followup: np.ndarray | None = None, tissue_level: np.ndarray | None = None, cores: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """New lesions that share a candidate with a brighter one: the parts :func:`delineate` would cut away.

    One 26-connected candidate (score > 0.01) can hold two lesions whose low-score surroundings touch; the
    partial-volume rule keeps only the half-maximum core around the brightest peak, so the fainter lesion
    gets no voxel although it scores high where it lies. Here, after the candidate's own core (the one
    :func:`delineate` keeps) is set aside, each remaining peak of the change (``difference``) whose score
    exceeds ``split_min_score`` is delineated at half ITS OWN peak (95th percentile of the change in the
    voxels around it that score above that threshold), connected to the peak, inside the candidate. It is a
    separate lesion when that core neither touches the candidate's core (a shoulder of one lesion rises
    into its core above half its own height; a second lesion's core is cut off from it by a dip; with
    ``split_saddle_fraction`` a core that touches is cut at the dip when the dip lies under that fraction of its
    peak, :func:`_core_above_saddle`; with ``split_at_core_level``, in a 'new' candidate, a core that still touches
    is cut at the level the candidate's own core was cut at when it is a component of its own there) nor lies
    within ``touch_radius_mm`` of a baseline lesion (a peak beside an old lesion stays part of that
    candidate's enlarging lesion, as now), and holds more than ``split_min_volume_mm3``.

    Returns the parts as a label map (1..m; zero elsewhere) and m; the caller judges each part with the
    false-positive rules and adds the kept ones (:func:`add_parts`). Off (nothing returned) when
    ``split_separate`` is False or ``partial_volume_fraction`` is None. ``cores``: the candidates' own cores as
    :func:`half_maximum_cores` cut them (same numbers), so that a part is sought beside the core step 9 keeps (an
    enlarging lesion's peak read where :func:`half_maximum_cores` read it); None: each core found here again.
    """
    parts = np.zeros(np.shape(labels), np.int32)
    if n == 0 or not params.split_separate or params.partial_volume_fraction is None:
        return parts, 0
    fraction = params.partial_volume_fraction
    d_new, d_enl = _change_maps(difference, followup, tissue_level)
    s_all = np.asarray(score, np.float32)
    base = np.asarray(baseline_lesions, bool)
    vox_mm3 = float(np.prod(spacing_mm))
    min_vox = params.split_min_volume_mm3 / vox_mm3
    struct = ndimage.generate_binary_structure(3, 3)
    objs = ndimage.find_objects(np.asarray(labels, np.int32), n)
    m = 0
    for lab in range(1, n + 1):
        sl = objs[lab - 1]
        if sl is None:
            continue
        box = padded_box(sl, params.touch_radius_mm, spacing_mm, parts.shape)
        own = labels[box] == lab
        d_own = d_new if kinds[lab - 1] == "new" else d_enl
        if d_own is None:
            continue
        main = (half_maximum_core(own, d_own[box], fraction, params.peak_percentile, struct,
                                  params.delineation_focal_ratio) if cores is None
                else (np.asarray(cores)[box] == lab) & own)
        if main is None or not main.any():
            continue
        d, s = d_new[box], s_all[box]
        # the level the candidate's core was cut at, where it is read on the same change map as the parts
        main_level = (float(d[main].min()) if params.split_at_core_level and kinds[lab - 1] == "new" else None)
        taken = ndimage.binary_dilation(main, struct)  # a part must not touch the candidate's core
        near_old = (ndimage.distance_transform_edt(~base[box], sampling=spacing_mm) <= params.touch_radius_mm
                    if base[box].any() else np.zeros_like(own))
        free = own & ~taken
        for _ in range(8):  # a candidate seldom holds more than two lesions; bounded all the same
            peak = _highest_peak(free, d, s, params, struct)
            if peak is None:
                break
            top, hill, pk = peak
            if params.split_every_peak and not _local_maximum(d, own, top):
                free &= ~hill  # the flank of a peak judged before: nothing higher is left here
                continue
            core = _core_at(own, d, top, fraction * pk, struct)
            # this peak is judged once: with split_every_peak its own half-maximum region leaves the search and a
            # second peak in the same hill (above the score threshold all the way between them) is judged next;
            # before (1.11.0) the whole hill left with its highest peak
            free &= ~core if params.split_every_peak else ~hill
            if (core & taken).any() and params.split_saddle_fraction is not None:
                core = _core_above_saddle(own, d, top, pk, taken, fraction, params.split_saddle_fraction, struct)
            if (core is None or (core & taken).any()) and main_level is not None and d[top] >= main_level:
                core = _core_at(own, d, top, main_level, struct)  # a component of its own at the core's level
            if core is None or (core & taken).any() or (core & near_old).any() or core.sum() <= min_vox:
                continue
            m = _add_part(parts, box, core, m)
            taken |= ndimage.binary_dilation(core, struct)
            free &= ~taken
    return parts, m


def _highest_peak(free: np.ndarray, d: np.ndarray, s: np.ndarray, params: ClassifyParams, structure: np.ndarray,
                  ) -> tuple[tuple[int, ...], np.ndarray, float] | None:
    """The highest change ``d`` among the ``free`` voxels scoring above ``split_min_score``: its position, its hill
    (those voxels connected to it) and the hill's peak (``peak_percentile`` of ``d`` in it); None when none scores."""
    peaks = free & (s > params.split_min_score)
    if not peaks.any():
        return None
    top = np.unravel_index(np.argmax(np.where(peaks, d, -np.inf)), d.shape)
    hills, _ = ndimage.label(peaks, structure)
    hill = hills == hills[top]
    return top, hill, float(np.percentile(d[hill], params.peak_percentile))


def _core_at(region: np.ndarray, d: np.ndarray, top: tuple[int, ...], level: float,
             structure: np.ndarray) -> np.ndarray:
    """The voxels of ``region`` where ``d`` reaches ``level``, connected to ``top``."""
    comp, _ = ndimage.label(region & (d >= level), structure)
    return comp == comp[top]


def _add_part(parts: np.ndarray, box: tuple[slice, ...], core: np.ndarray, m: int) -> int:
    """Label ``core`` (in ``box``) as part m + 1 of ``parts`` where no part is yet; returns m + 1."""
    sub = parts[box]
    sub[core & (sub == 0)] = m + 1
    parts[box] = sub
    return m + 1


def _local_maximum(d: np.ndarray, own: np.ndarray, at: tuple[int, ...]) -> bool:
    """Whether ``d`` at ``at`` is at least as high as at each of its 26 neighbours inside ``own``."""
    near = tuple(slice(max(0, t - 1), t + 2) for t in at)
    return bool(d[at] >= float(np.max(np.where(own[near], d[near], -np.inf))))


def _core_above_saddle(own: np.ndarray, d: np.ndarray, top: tuple[int, ...], peak: float, taken: np.ndarray,
                       fraction: float, saddle_fraction: float, structure: np.ndarray) -> np.ndarray | None:
    """The part of ``own`` around ``top`` above the lowest level (from ``fraction`` up to ``saddle_fraction`` of
    ``peak``, in steps of 0.05) at which it no longer touches ``taken``: a second lesion's core cut off at the dip
    between it and the candidate's core, as a watershed would cut it. None when no such level exists (a
    shoulder)."""
    for level in np.arange(fraction + 0.05, saddle_fraction + 1e-9, 0.05):
        comp, _ = ndimage.label(own & (d >= level * peak), structure)
        if comp[top] == 0:
            return None
        core = comp == comp[top]
        if not (core & taken).any():
            return core
    return None


def new_beside_unchanged(
    labels: np.ndarray, dropped: list[int], difference: np.ndarray, score: np.ndarray, baseline_lesions: np.ndarray,
    spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams(),
) -> tuple[np.ndarray, int]:
    """New lesions inside 'enlarging' candidates that :func:`drop_unchanged_enlarging` dropped.

    A candidate within ``touch_radius_mm`` of a baseline lesion is 'enlarging' as a whole; when that lesion did
    not grow the whole candidate was dropped, and with it a new lesion that appeared beside the unchanged one
    (independent-simulator pair 32: a 5-voxel new lesion at 1.8 x WM beside a stable one; widened held-out pair 13
    likewise). Here each dropped candidate (``labels`` before the drop, ``dropped`` its labels) is searched
    outside ``touch_radius_mm`` of every baseline lesion, as :func:`separate_lesion_cores` searches a candidate
    outside its core: each peak of the change (``difference``) scoring above ``split_min_score`` that is a local
    maximum of the change in the whole candidate, delineated at half its own peak and connected to it within that
    free part, is a part when it holds more than ``split_min_volume_mm3``. The rim of an unchanged lesion seen
    differently (protocol, drift, misregistration) falls away from it: its highest voxel outside the touch radius
    has a higher neighbour inside, so it is no peak. Returns the parts as a label map (1..m) and m; the caller
    judges them with the false-positive rules (:func:`judge_and_add_parts`) and decides whether to search
    (``split_beside_unchanged``). Nothing when ``partial_volume_fraction`` is None.
    """
    parts = np.zeros(np.shape(labels), np.int32)
    if not dropped or params.partial_volume_fraction is None:
        return parts, 0
    fraction = params.partial_volume_fraction
    d_all = np.asarray(difference, np.float32)
    s_all = np.asarray(score, np.float32)
    base = np.asarray(baseline_lesions, bool)
    min_vox = params.split_min_volume_mm3 / float(np.prod(spacing_mm))
    struct = ndimage.generate_binary_structure(3, 3)
    lab_arr = np.asarray(labels, np.int32)
    objs = ndimage.find_objects(lab_arr, int(max(dropped)))
    m = 0
    for lab in dropped:
        sl = objs[lab - 1]
        if sl is None:
            continue
        box = padded_box(sl, params.touch_radius_mm, spacing_mm, parts.shape)
        own = lab_arr[box] == lab
        near_old = (ndimage.distance_transform_edt(~base[box], sampling=spacing_mm) <= params.touch_radius_mm
                    if base[box].any() else np.zeros_like(own))
        d, s = d_all[box], s_all[box]
        allowed = own & ~near_old
        free = allowed.copy()
        for _ in range(8):  # bounded, as in separate_lesion_cores
            peak = _highest_peak(free, d, s, params, struct)
            if peak is None:
                break
            top, hill, pk = peak
            core = _core_at(allowed, d, top, fraction * pk, struct)
            free &= ~hill
            # a lesion's own peak, not the edge of the searched part on the flank of the old lesion's change (a rim
            # falling away from the old lesion has its highest free voxel next to the touch radius)
            if not _local_maximum(d, own, top) or core.sum() <= min_vox:
                continue
            m = _add_part(parts, box, core, m)
            taken = ndimage.binary_dilation(core, struct)
            allowed &= ~taken
            free &= ~taken
    return parts, m


def dropped_beside_baseline(decisions: list[FPDecision], labels: np.ndarray, n: int, baseline_lesions: np.ndarray,
                            spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams(),
                            ) -> list[int]:
    """The candidates (labels of ``labels``, 1..n, as :func:`false_positive_reduction` numbered its ``decisions``)
    that step 8 dropped as the change of a lesion already there (drift, misregistration, a moved structure) while
    touching a baseline lesion within ``touch_radius_mm``: the candidates :func:`new_beside_unchanged` searches for
    a new lesion beside that lesion (``ClassifyParams.split_beside_dropped``). Candidates dropped at the brain
    border or as diffuse change are not: their whole region is what the rule judged."""
    reasons = (REASON_DRIFT, REASON_MISREGISTRATION, REASON_MOVED)
    dropped = sorted(d.label for d in decisions if not d.kept and d.reason.startswith(reasons))
    if not dropped:
        return []
    keep = np.zeros(n, bool)
    keep[np.asarray(dropped) - 1] = True
    sub, m = relabel(labels, keep)  # only the dropped candidates, renumbered 1..m in order
    kinds = classify_new_enlarging(sub, m, baseline_lesions, spacing_mm, params)
    return [lab for lab, kind in zip(dropped, kinds, strict=True) if kind == "enlarging"]


def judge_and_add_parts(
    parts: np.ndarray, m: int, delineated: np.ndarray, n: int, kinds: list[str], cand: Candidates,
    baseline: np.ndarray, followup: np.ndarray, brain_mask: np.ndarray, spacing_mm: tuple[float, float, float],
    fp_params: FPParams = FPParams(), params: ClassifyParams = ClassifyParams(),
    baseline_lesions: np.ndarray | None = None, finer_input_voxel_mm: float | None = None,
) -> tuple[np.ndarray, int, list[str], list[FPDecision]]:
    """Parts (1..m; :func:`separate_lesion_cores`, :func:`new_beside_unchanged`) judged by
    :func:`false_positive_reduction` (with ``baseline_lesions``: a part touching none is held to
    ``FPParams.drift_ratio_new``), the kept ones added to ``delineated`` as new lesions (:func:`add_parts`).
    A part's voxels already in a lesion of ``delineated`` are left to it. Returns the labels, count, kinds and the
    parts' decisions (empty when there was none). ``finer_input_voxel_mm``: as :func:`false_positive_reduction`'s."""
    if m == 0:
        return delineated, n, kinds, []
    parts = np.where(np.asarray(delineated) > 0, 0, parts).astype(np.int32)
    # a part wholly inside a lesion is gone; the others are renumbered 1..m
    parts, m = relabel(parts, np.bincount(parts.ravel(), minlength=m + 1)[1:m + 1] > 0)
    if m == 0:
        return delineated, n, kinds, []
    _, _, decisions = false_positive_reduction(
        parts, m, baseline, followup, brain_mask, spacing_mm, cand.sigma, cand.brain_median, cand.brain_sigma,
        fp_params, difference=cand.difference, tissue_level=cand.tissue_level,
        border_distance_mm=cand.border_distance_mm, score=cand.score, peak_percentile=params.peak_percentile,
        baseline_lesions=baseline_lesions, touch_radius_mm=params.touch_radius_mm,
        finer_input_voxel_mm=finer_input_voxel_mm)
    out, n2, kinds2 = add_parts(delineated, n, kinds, parts, np.array([d.kept for d in decisions], bool))
    return out, n2, kinds2, decisions


def add_parts(labels: np.ndarray, n: int, kinds: list[str], parts: np.ndarray, keep: np.ndarray,
              ) -> tuple[np.ndarray, int, list[str]]:
    """The parts of :func:`separate_lesion_cores` flagged in ``keep`` (index i-1 for part i) as new lesions
    numbered n+1.., their voxels taken from the candidate that held them."""
    sub, k = relabel(parts, np.asarray(keep, bool))
    if k == 0:
        return labels, n, kinds
    out = np.asarray(labels).copy()
    out[sub > 0] = sub[sub > 0] + n
    return out, n + k, list(kinds) + ["new"] * k


def add_separate_lesions(
    grown: np.ndarray, delineated: np.ndarray, n: int, kinds: list[str], cand: Candidates, baseline: np.ndarray,
    followup: np.ndarray, brain_mask: np.ndarray, baseline_lesions: np.ndarray, spacing_mm: tuple[float, float, float],
    fp_params: FPParams = FPParams(), params: ClassifyParams = ClassifyParams(),
    finer_input_voxel_mm: float | None = None,
) -> tuple[np.ndarray, int, list[str], list[FPDecision]]:
    """:func:`separate_lesion_cores` of the grown candidates (before :func:`delineate`), each part judged by
    :func:`false_positive_reduction`, the kept ones added to the ``delineated`` map (:func:`add_parts`).
    Returns the labels, count, kinds and the parts' decisions (empty when there was none).
    ``finer_input_voxel_mm``: as :func:`false_positive_reduction`'s."""
    parts, m = separate_lesion_cores(grown, n, kinds, cand.difference, cand.score, baseline_lesions, spacing_mm,
                                     params, followup, cand.tissue_level, cores=delineated)
    return judge_and_add_parts(parts, m, delineated, n, kinds, cand, baseline, followup, brain_mask, spacing_mm,
                               fp_params, params, baseline_lesions, finer_input_voxel_mm)


def half_maximum_core(own: np.ndarray, d: np.ndarray, fraction: float, peak_percentile: float,
                      structure: np.ndarray | None = None, focal_ratio: float | None = None) -> np.ndarray | None:
    """The voxels of one component (``own``, a box of ``d``) whose change reaches ``fraction`` of its peak change
    (``peak_percentile`` of its voxels), the part connected to the peak: the partial-volume rule of
    :func:`delineate`. None when the component has no positive change. (:func:`half_max_extent` counts such
    voxels in a region around a baseline seed, unconnected, for the growth comparison.)

    ``focal_ratio`` (``ClassifyParams.delineation_focal_ratio``): when that core holds more than this many times the
    voxels of the region around the maximum that reaches ``fraction`` of the maximum itself, the component is
    mostly weaker change around a focal lesion and its percentile is not the lesion's peak (a widened tuning pair:
    a 70 mm^3 lesion inside a 3.5 mL candidate of faint cortical change; the percentile lay at 0.58 x the maximum
    and the core was the whole candidate). The peak is then the ``peak_percentile`` of that region, and the core
    is measured at ``fraction`` of it; it lies between the region and the first core."""
    found = _half_maximum_core_peak(own, d, fraction, peak_percentile, structure, focal_ratio)
    return None if found is None else found[0]


def _half_maximum_core_peak(own: np.ndarray, d: np.ndarray, fraction: float, peak_percentile: float,
                            structure: np.ndarray | None = None, focal_ratio: float | None = None,
                            at_peak: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
    """:func:`half_maximum_core` and the peak change it took the fraction of; ``at_peak`` (a part of ``own``): where
    the peak and the maximum are read, when not over all of ``own``."""
    if at_peak is None or not at_peak.any():
        at_peak = own
    vals = d[at_peak]
    if vals.size == 0:
        return None
    peak = float(np.percentile(vals, peak_percentile))
    if peak <= 0:
        return None
    struct = structure if structure is not None else ndimage.generate_binary_structure(3, 3)
    top = np.unravel_index(np.argmax(np.where(at_peak, d, -np.inf)), own.shape)

    def core_at(level: float) -> np.ndarray | None:
        comp, m = ndimage.label(own & (d >= level), struct)
        if m == 0:
            return None
        keep_id = comp[top] if comp[top] > 0 else int(np.argmax(np.bincount(comp[comp > 0])))
        return comp == keep_id

    core = core_at(fraction * peak)
    if core is None:
        return None
    if focal_ratio is None:
        return core, peak
    around_max = core_at(fraction * float(d[top]))
    if around_max is None or core.sum() <= focal_ratio * around_max.sum():
        return core, peak
    peak = float(np.percentile(d[around_max], peak_percentile))
    core = core_at(fraction * peak)
    return None if core is None else (core, peak)


def partial_volume_core(own: np.ndarray, d: np.ndarray, core: np.ndarray, peak: float,
                        spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams(),
                        structure: np.ndarray | None = None) -> np.ndarray:
    """A lesion's mask at the level of its change whose extent holds its partial-volume sum
    (``ClassifyParams.pv_level_min_diameter_mm``); ``core`` (its half-maximum core in ``own``, a box of ``d``) is
    returned unchanged for a smaller lesion, when the setting is off, or when no level is found.

    The lesion fraction of a voxel is its change over the lesion's full contrast: the mean change over the core's
    voxels deeper than ``pv_level_interior_mm`` (the 95th-percentile ``peak`` lies above a faint lesion's plateau by
    its noise); a core with fewer than ``pv_level_min_interior_voxels`` such voxels has no plateau and keeps half
    maximum. Blurring (the acquisition's and the candidate step's smoothing) spreads the change but keeps its sum,
    so the sum of the fractions near the lesion is its volume, while the half-maximum surface of a convex lesion
    moves inwards by about sigma^2 / R (mean-curvature flow of the blurred level sets; a ball of 8 mm blurred by the
    candidate step's 1.5 mm FWHM reads 0.91 x at half maximum on 1 mm voxels, 1.00 x by the sum). The fractions are
    summed over ``own`` (the voxels the lesion may take: not another lesion's) within ``pv_level_reach_mm`` of
    ``core`` (a coarser axis reaches at least one voxel; unclipped, negative change included, so that noise cancels;
    the change's median in the ring out to twice the reach taken off as its local level), and the mask is the part
    of that region connected to the core's maximum whose change reaches the level (within
    ``pv_level_fraction_bounds`` x ``peak``) whose voxel count is nearest that sum: still an iso-contour of the
    change, as the reader reviews it. A lesion below the diameter keeps half maximum: its blurred peak is under its
    contrast, so the sum over it would overestimate it (``bench/ms_volume_pv.py``); so does one whose volume is not
    measurable at the grid's slice thickness (:func:`volume_measurable` on its half-maximum volume and the coarsest
    spacing)."""
    min_d = params.pv_level_min_diameter_mm
    sp = np.asarray(spacing_mm, float)
    n_core = int(np.count_nonzero(core))
    if min_d is None or n_core == 0 or not peak > 0:
        return core
    core_mm3 = n_core * float(np.prod(sp))
    if equivalent_diameter_mm(core_mm3) < min_d or not volume_measurable(core_mm3, float(sp.max()), params):
        return core
    reach = float(params.pv_level_reach_mm)
    # a step along an axis coarser than the reach counts as the reach: one voxel of a thick slice is summed
    dist = ndimage.distance_transform_edt(~core, sampling=np.minimum(sp, reach))
    allowed = np.asarray(own, bool)
    near = allowed & (dist <= reach)
    # the change's local level (an offset, a slow residual) from the ring just beyond the sum, where a blurred
    # lesion's tail has gone (the reach is about three smoothing SDs beyond its half-maximum surface)
    ring = allowed & (dist > reach) & (dist <= 2.0 * reach)
    background = float(np.median(d[ring])) if np.count_nonzero(ring) >= 20 else 0.0
    # the full contrast: the mean change over the core's interior, chosen by depth rather than by value so that the
    # noise does not select it (the 95th percentile lies above a faint lesion's plateau by its noise). A core too
    # thin for an interior has no plateau to read its contrast on: it keeps half maximum
    # (depth from the core's surface: half a voxel short of the distance to the nearest voxel outside it)
    depth = ndimage.distance_transform_edt(np.pad(core, 1), sampling=sp)[1:-1, 1:-1, 1:-1] - 0.5 * float(sp.min())
    interior = depth > params.pv_level_interior_mm
    if np.count_nonzero(interior) < params.pv_level_min_interior_voxels:
        return core
    contrast = float(d[interior].mean()) - background
    if not contrast > 0:
        return core
    target = float((d[near] - background).sum()) / contrast
    struct = structure if structure is not None else ndimage.generate_binary_structure(3, 3)
    top = np.unravel_index(np.argmax(np.where(core, d, -np.inf)), core.shape)

    def mask_at(fraction: float) -> np.ndarray:
        comp, _ = ndimage.label(near & (d >= fraction * peak), struct)
        return comp == comp[top] if comp[top] > 0 else core

    lo, hi = params.pv_level_fraction_bounds
    best, best_err = core, abs(n_core - target)
    for _ in range(12):  # bisection: the extent shrinks as the level rises
        mid = 0.5 * (lo + hi)
        m = mask_at(mid)
        n = int(np.count_nonzero(m))
        if abs(n - target) < best_err:
            best, best_err = m, abs(n - target)
        if n > target:
            lo = mid
        else:
            hi = mid
    return best


def delineate_on_finer_grid(followup: np.ndarray, baseline: np.ndarray, mapped: np.ndarray, tissue: np.ndarray,
                            spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams(),
                            smoothing_fwhm_mm: float = 1.5, whole_extent: bool = False,
                            others: np.ndarray | None = None, thick_axis: int | None = None) -> np.ndarray | None:
    """A lesion delineated by the partial-volume rule on the follow-up's own, finer grid (a box of it): a new lesion,
    or with ``whole_extent`` an enlarging lesion's whole follow-up extent.

    ``followup``: the follow-up as acquired (any intensity units); ``baseline``: the baseline sampled on the same
    box through the registration; ``mapped``: the lesion's mask from the common grid taken to this box (nearest
    neighbour: the coarse slices' blocks); ``tissue``: brain tissue (not CSF) on the box. Both images are smoothed
    as the candidate step smooths (``smoothing_fwhm_mm``). In the shell ``params.finer_followup_shell_mm`` around
    ``mapped`` the follow-up is fitted as a linear function of the baseline (least squares, refitted once without
    residuals beyond 3 robust SD: other lesions, vessels); within a few mm the bias fields and the two protocols'
    intensity scales are smooth, so the fit is the follow-up expected without the lesion, and the change is what
    the lesion adds. The lesion is then its voxels within ``finer_followup_reach_mm`` of ``mapped`` whose change
    reaches ``partial_volume_fraction`` of its peak (``peak_percentile`` of the change inside ``mapped``), the
    part connected to the maximum: the rule of :func:`delineate` at the follow-up's resolution (a voxel at half
    the full contrast is half lesion; the truth rule of both simulators).

    ``whole_extent``: an enlarging lesion, present at baseline: the change is then the follow-up over the local
    tissue level (the fit's median over the shell's tissue), its whole follow-up extent, as step 9 delineates an
    enlarging lesion on its follow-up contrast over the local tissue level.

    ``others``: the other lesions' voxels on the box (their mapped masks): the lesion is delineated, and its
    partial-volume sum taken, only where a voxel is nearer to ``mapped`` than to them.

    ``thick_axis``: the box is a THICK follow-up's (``ClassifyParams.thick_followup_redelineate``), whose slices
    the mapped mask may have missed by one: the reach is measured from ``mapped`` and its copies one slice up and
    down, the shell starts beyond the neighbouring slice (the lesion may lie there, and the fit must not see it),
    and the peak is read where ``mapped`` moved by -1, 0 or +1 slice holds the most change (the largest
    ``peak_percentile``), the part connected to the maximum there.

    Returns the mask, or None where it cannot be trusted: too few shell voxels, a fit with a non-positive slope,
    no positive peak, or a volume outside ``finer_followup_volume_bounds`` x the mapped one.
    """
    mapped = np.asarray(mapped, bool)
    if params.partial_volume_fraction is None or not mapped.any():
        return None
    sp = np.asarray(spacing_mm, float)
    sig = smoothing_fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / sp
    f, b = gaussian_filters([np.asarray(followup, np.float32), np.asarray(baseline, np.float32)], list(sig))
    dist = ndimage.distance_transform_edt(~mapped, sampling=sp)
    inner, outer = params.finer_followup_shell_mm
    if thick_axis is not None:  # the neighbouring slice may hold the lesion: the shell starts beyond it
        inner = max(inner, float(sp[thick_axis]) + 0.01)
        outer = max(outer, inner + (params.finer_followup_shell_mm[1] - params.finer_followup_shell_mm[0]))
    shell = (dist > inner) & (dist <= outer) & np.asarray(tissue, bool)
    if np.count_nonzero(shell) < 30:
        return None
    x, y = b[shell].astype(np.float64), f[shell].astype(np.float64)

    def line(keep: np.ndarray) -> tuple[float, float]:  # least-squares slope and intercept of y on x
        (s, c), *_ = np.linalg.lstsq(np.stack([x[keep], np.ones(np.count_nonzero(keep))], 1), y[keep], rcond=None)
        return float(s), float(c)

    slope, icpt = line(np.ones(x.size, bool))
    res = y - (slope * x + icpt)
    keep = np.abs(res - np.median(res)) <= 3.0 * robust_sigma(res) + 1e-12
    if np.count_nonzero(keep) < 30:
        return None
    slope, icpt = line(keep)  # refitted without the outliers (other lesions, vessels)
    if not slope > 0:
        return None
    expected = slope * b + icpt
    d = f - (float(np.median(expected[shell])) if whole_extent else expected)
    # the mapped mask, and on a thick follow-up its copies one slice down and up, which the reach is measured from
    moved = [mapped] if thick_axis is None else [_slice_shift(mapped, s, thick_axis) for s in (0, -1, 1)]
    if thick_axis is None:
        region = dist <= params.finer_followup_reach_mm
    else:
        region = ndimage.distance_transform_edt(~np.logical_or.reduce(moved), sampling=sp) <= \
            params.finer_followup_reach_mm
    if others is not None:  # a neighbour's change is not this lesion's
        region &= nearer_to(mapped, others, spacing_mm)
    seed = mapped
    if thick_axis is not None:  # the mapped mask moved by at most one slice, where it holds the most change
        moved = [m & region for m in moved if (m & region).any()]
        if not moved:
            return None
        seed = max(moved, key=lambda m: float(np.percentile(d[m], params.peak_percentile)))
    peak = float(np.percentile(d[seed], params.peak_percentile))
    if not peak > 0:
        return None
    comp, n = ndimage.label(region & (d >= params.partial_volume_fraction * peak),
                            ndimage.generate_binary_structure(3, 3))
    top = np.unravel_index(np.argmax(np.where(seed, d, -np.inf)), d.shape)
    if n == 0 or comp[top] == 0:
        return None
    core = partial_volume_core(region, d, comp == comp[top], peak, spacing_mm, params)
    lo, hi = params.finer_followup_volume_bounds
    ratio = np.count_nonzero(core) / np.count_nonzero(mapped)
    return core if lo <= ratio <= hi else None


def _slice_shift(mask: np.ndarray, shift: int, axis: int) -> np.ndarray:
    """``mask`` moved by ``shift`` voxels along ``axis``; what leaves the array is dropped (not wrapped round)."""
    if shift == 0:
        return mask
    out = np.zeros_like(mask)
    src = [slice(None)] * mask.ndim
    dst = [slice(None)] * mask.ndim
    src[axis] = slice(0, -shift) if shift > 0 else slice(-shift, None)
    dst[axis] = slice(shift, None) if shift > 0 else slice(0, shift)
    out[tuple(dst)] = mask[tuple(src)]
    return out


def finer_followup(followup_spacing_mm: tuple[float, float, float], common_spacing_mm: tuple[float, float, float],
                   params: ClassifyParams = ClassifyParams()) -> bool:
    """Whether lesions are delineated again on the follow-up's own grid (:func:`delineate_on_finer_grid`):
    its voxels no larger than the common grid's along any axis (5 % tolerance) and its coarsest axis finer than the
    common grid's coarsest by ``finer_followup_ratio`` (spacings in the same axis order, RAS)."""
    if params.finer_followup_ratio is None:
        return False
    f, c = np.asarray(followup_spacing_mm, float), np.asarray(common_spacing_mm, float)
    return bool(np.all(f <= c * 1.05) and c.max() >= params.finer_followup_ratio * f.max())


def thick_followup(followup_spacing_mm: tuple[float, float, float], params: ClassifyParams = ClassifyParams()) -> bool:
    """Whether lesions are delineated again on a thick follow-up's own slices when it is not the finer grid
    (``ClassifyParams.thick_followup_redelineate``; :func:`delineate_on_finer_grid`'s ``thick_axis``): the option
    on, and the follow-up's largest voxel at least ``thick_followup_min_mm`` and 1.5 x its smallest (2D slices)."""
    f = np.asarray(followup_spacing_mm, float)
    return bool(params.thick_followup_redelineate and f.max() >= params.thick_followup_min_mm
                and f.max() >= 1.5 * f.min())


def volume_measurable(volume_mm3: float, slice_thickness_mm: float,
                      params: ClassifyParams = ClassifyParams()) -> bool:
    """Whether a delineated lesion's volume can be measured at this slice thickness.

    A lesion smaller than about 1.2-1.5 slice thicknesses is not identifiable in volume: the blurred
    profile on thick slices fixes only contrast x volume, so a small bright lesion and a larger faint
    one look alike, and the half-maximum (partial-volume) rule of :func:`delineate` then measures 2-3.5x
    its volume (analytic study, ``bench/ms_volume_pv.py``; docs/ms-lesions-log.md "Volumes of small
    lesions"). The rule uses only what the workflow knows at run time: the lesion's MEASURED volume
    (its equivalent-sphere diameter ``(6 V / pi)^(1/3)``) and ``slice_thickness_mm``, the largest voxel
    spacing of either input (both are resampled into one space, so the coarser one limits). Measurable
    when the diameter is >= ``volume_min_diameter_slices`` x the slice thickness and >=
    ``volume_min_diameter_mm``; the constants were chosen by the sweep of ``bench/ms_volume_pv.py
    --sweep`` (median |error| of the kept lesions <= 20 % in every size bin and every slice x size
    cell, fewest flagged): 1.7 slice thicknesses, no floor in mm. A flagged lesion's measured volume is
    neither an upper nor a lower bound (0.7-4.3x the truth, 5th-95th percentile, in that sweep).
    """
    if not (np.isfinite(volume_mm3) and volume_mm3 >= 0):
        raise ValueError(f"lesion volume must be a finite non-negative number of mm3, got {volume_mm3!r}")
    if not (np.isfinite(slice_thickness_mm) and slice_thickness_mm > 0):
        raise ValueError(f"slice thickness must be a positive number of mm, got {slice_thickness_mm!r}")
    if params.volume_min_diameter_slices is None:
        return True
    diameter_mm = equivalent_diameter_mm(float(volume_mm3))
    limit_mm = max(params.volume_min_diameter_slices * float(slice_thickness_mm), params.volume_min_diameter_mm)
    return bool(diameter_mm >= limit_mm)


def volume_rule_text(params: ClassifyParams = ClassifyParams()) -> str:
    """The volume-measurability rule of :func:`volume_measurable` in words (report Method, provenance)."""
    if params.volume_min_diameter_slices is None:
        return "every lesion volume reported as measured (no measurability rule)"
    floor = f" and >= {params.volume_min_diameter_mm:g} mm" if params.volume_min_diameter_mm > 0 else ""
    finer = ("" if params.finer_followup_ratio is None else
             " (of the follow-up for a lesion delineated on the follow-up's own grid, which is done when that "
             f"grid is {params.finer_followup_ratio:g} x finer than the coarser input's)")
    return (f"a lesion volume is reported as measurable when the lesion's measured equivalent-sphere diameter is "
            f">= {params.volume_min_diameter_slices:g} x the slice thickness of the coarser input{finer}{floor}; "
            "below that the volume is not identifiable from the images (partial volume): it is shown as approximate "
            "and flagged")


def delineation_rule_text(params: ClassifyParams = ClassifyParams()) -> str:
    """How :func:`delineate` measures a lesion (its partial-volume rule), in words (report Method, result.json)."""
    if params.partial_volume_fraction is None:
        return "each lesion's whole candidate extent (no partial-volume rule)"
    f = params.partial_volume_fraction
    text = (f"the lesion's voxels whose change reaches {'half' if f == 0.5 else f'{f:g} x'} its peak change "
            "(partial-volume rule: a voxel at half the lesion's contrast is half lesion)")
    if params.pv_level_min_diameter_mm is None:
        return text
    return (text + f"; a lesion measuring >= {params.pv_level_min_diameter_mm:g} mm (and measurable at the slice "
            "thickness) at the level of its change whose extent holds its partial-volume sum (its change within "
            f"{params.pv_level_reach_mm:g} mm, over its contrast), since smoothing reads a convex lesion small at "
            "half maximum")


def params_dict(*params: object) -> dict:
    """Flatten parameter dataclasses for provenance."""
    return {type(p).__name__: asdict(p) for p in params}  # type: ignore[call-overload]
