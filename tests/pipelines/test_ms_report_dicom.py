"""Draft report (HTML/PDF) and DICOM results (SEG via highdicom, Encapsulated PDF, secondary capture)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from neurorad.dicom import results as dres
from neurorad.image.volume import Volume
from neurorad.pipelines.ms_report import MSReport, lesion_panels, render_html, render_pdf
from neurorad.quantify.lesions import lesion_table


@pytest.fixture()
def scene():
    rng = np.random.default_rng(0)
    aff = np.array([[0.0, 0.0, 1.2, -40.0], [-1.1, 0.0, 0.0, 30.0], [0.0, 1.3, 0.0, -20.0], [0, 0, 0, 1.0]])
    img = Volume((rng.random((30, 34, 26)) * 100).astype(np.float32), aff)  # oblique-free, non-RAS axis order
    lab = np.zeros(img.spatial_shape, np.int16)
    lab[5:9, 10:13, 4:7] = 1
    lab[20:22, 25:29, 15:19] = 2
    return img, img.with_data(lab)


def _report(rows, images=()):
    return MSReport("Active: 2 new T2-FLAIR lesions since the baseline scan.", True,
                    "Gadolinium is recommended because 2 new lesions were found.", rows,
                    {"post": {"binarise_threshold": 0.01}}, {"software": {"neurorad": "0.1.0"}}, list(images))


def test_html_and_pdf(tmp_path, scene) -> None:
    img, lab = scene
    rows = lesion_table(lab, 2, ["new", "enlarging"])
    rows[0].aal_region = "Frontal Mid L"
    panels = lesion_panels(img.data, img.data, lab.data, ["new", "enlarging"], [(6, 11, 5), (20, 26, 16)])
    assert panels and panels[0].pixels.dtype == np.uint8 and panels[0].pixels.shape[2] == 3
    html = render_html(_report(rows, panels))
    assert "Frontal Mid L" in html and "RECOMMENDED" in html and "data:image/png;base64" in html
    pdf = render_pdf(_report(rows, panels), tmp_path / "r.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page") >= 3
    neg = MSReport("No new or enlarging T2-FLAIR lesion since the baseline scan.", False, "Not needed.", [], {}, {})
    assert "No new or enlarging" in render_html(neg)


def test_seg_geometry_matches_source_series(tmp_path, scene) -> None:
    img, lab = scene
    source = dres.source_series_from_volume(img)
    paths = dres.write_series(source, tmp_path / "src")
    source = [pydicom.dcmread(p) for p in paths]
    seg_path = dres.write_seg(lab, {1: "Lesion 1 (new)", 2: "Lesion 2 (enlarging)"}, source, tmp_path / "seg.dcm")
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 2
    vol = seg.get_volume(combine_segments=True)
    # highdicom's affine is LPS; every labelled voxel must sit at the same world point as in ours
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    for value in (1, 2):
        ours = lab.voxel_to_world(np.argwhere(lab.data == value))
        ijk = np.argwhere(vol.array == value)
        theirs = (ijk @ vol.affine[:3, :3].T + vol.affine[:3, 3]) @ lps_to_ras.T
        assert len(ours) == len(theirs)
        assert np.allclose(np.sort(ours, axis=0), np.sort(theirs, axis=0), atol=1e-3)
    # referenced series is the source
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID


def test_seg_from_the_segment_number_map_equals_the_one_hot_seg(tmp_path, scene) -> None:
    """write_seg hands highdicom a map of segment numbers (segment_pixel_array) instead of one binary channel per
    segment (3x faster). The two SEGs must hold the same frames, the same per-frame positions and segment numbers
    and the same segments, also with a segment that has no pixel, label values that are not 1..n, and a label in
    the array that no segment names; repeated label values fall back to one channel per segment."""
    img, lab = scene
    source = [pydicom.dcmread(p) for p in dres.write_series(dres.source_series_from_volume(img), tmp_path / "src")]
    data = np.asarray(lab.data).astype(np.int16) * 7  # values 7 and 14, and a third lesion-free label 21
    relabelled = lab.with_data(data)
    names = {14: "Lesion 14 (enlarging)", 7: "Lesion 7 (new)", 21: "Lesion 21 (new, no pixel here)"}
    fast = hd.seg.segread(dres.write_seg(relabelled, names, source, tmp_path / "map.dcm", sop_instance_uid="1.2.3.1"))
    slow = hd.seg.segread(dres.write_seg(relabelled, names, source, tmp_path / "hot.dcm", sop_instance_uid="1.2.3.1",
                                         one_hot=True))
    assert fast.number_of_segments == slow.number_of_segments == 3
    assert int(fast.NumberOfFrames) == int(slow.NumberOfFrames) > 0
    assert fast.PixelData == slow.PixelData
    assert fast.PerFrameFunctionalGroupsSequence == slow.PerFrameFunctionalGroupsSequence
    assert fast.SegmentSequence == slow.SegmentSequence
    vol = fast.get_volume(combine_segments=True)
    assert sorted(np.unique(vol.array).tolist()) == [0, 1, 2]  # segments 1, 2 hold pixels (7, 14); 3 (21) none
    assert (vol.array == 1).sum() == (data == 7).sum() and (vol.array == 2).sum() == (data == 14).sum()
    frames = np.arange(24).reshape(2, 3, 4) % 3
    np.testing.assert_array_equal(dres.segment_pixel_array(frames, [2, 1]), np.where(frames == 2, 1, 2 * (frames == 1)))
    assert dres.segment_pixel_array(frames, [1, 1]).shape == (2, 3, 4, 2)  # repeated values: one channel each


def test_labels_on_another_grid_are_refused(scene) -> None:
    img, lab = scene
    source = dres.source_series_from_volume(img)
    shifted = Volume(lab.data, lab.affine + np.pad(np.full((3, 1), 0.4), ((0, 1), (3, 0))))
    with pytest.raises(ValueError):
        dres.labels_to_source_frames(shifted, source)


@pytest.mark.parametrize("seed", range(6))
def test_labels_to_source_frames_matches_per_pixel_world_mapping(seed) -> None:
    """Every frame pixel takes the label of the voxel at its world position (oracle: per-pixel maps)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(3)
    lin = np.zeros((3, 3))
    lin[perm, np.arange(3)] = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.7, 2.5, 3)  # any axis order / flips
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = lin, rng.uniform(-80, 80, 3)
    shape = tuple(int(x) for x in rng.integers(5, 19, 3))
    lab = Volume(rng.integers(0, 5, shape).astype(np.int16), aff)
    source = dres.source_series_from_volume(lab.with_data(lab.data.astype(np.float32)))
    frames = dres.labels_to_source_frames(lab, source)
    inv = np.linalg.inv(aff)
    for ds, frame in zip(source, frames, strict=True):
        ori = np.asarray(ds.ImageOrientationPatient, float)
        dr, dc = (float(x) for x in ds.PixelSpacing)
        for r in range(int(ds.Rows)):
            for c in range(int(ds.Columns)):
                lps = np.asarray(ds.ImagePositionPatient, float) + c * dc * ori[:3] + r * dr * ori[3:]
                ijk = np.rint(inv[:3, :3] @ (lps * [-1, -1, 1]) + inv[:3, 3]).astype(int)
                assert frame[r, c] == lab.data[tuple(ijk)]
    # the same labels half a voxel off the grid, or the series cropped past the grid, are refused
    off = Volume(lab.data, aff + np.pad(lin @ np.full((3, 1), 0.5), ((0, 1), (3, 0))))
    with pytest.raises(ValueError):
        dres.labels_to_source_frames(off, source)
    small = Volume(lab.data[:-1, :-1, :-1], aff)
    with pytest.raises(ValueError):
        dres.labels_to_source_frames(small, source)


def test_encapsulated_pdf_and_secondary_capture(tmp_path, scene) -> None:
    img, lab = scene
    source = dres.source_series_from_volume(img)
    rows = lesion_table(lab, 2, ["new", "new"])
    pdf = render_pdf(_report(rows), tmp_path / "r.pdf")
    p = dres.write_encapsulated_pdf(pdf, source[0], tmp_path / "pdf.dcm")
    ds = pydicom.dcmread(p)
    assert ds.SOPClassUID == dres.ENCAPSULATED_PDF_STORAGE and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength] == pdf.read_bytes()
    assert ds.StudyInstanceUID == source[0].StudyInstanceUID
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200
    sc = dres.write_secondary_captures([rgb], source[0], tmp_path / "sc")
    d = pydicom.dcmread(sc[0])
    assert d.PhotometricInterpretation == "RGB" and d.StudyInstanceUID == source[0].StudyInstanceUID
    assert np.array_equal(d.pixel_array, rgb)
    assert list(d.PatientOrientation) == ["L", "P"]  # default: axial, radiological convention
    # a coronal key image (left edge R, top S) runs to the patient's left and feet; an image with
    # panels of different planes gets an empty PatientOrientation rather than a wrong one
    cor, mixed = dres.write_secondary_captures([(rgb, ("R", "S")), (rgb, ())], source[0], tmp_path / "sc2")
    assert list(pydicom.dcmread(cor).PatientOrientation) == ["L", "F"]
    m = pydicom.dcmread(mixed)
    assert "PatientOrientation" in m and not m.PatientOrientation and np.array_equal(m.pixel_array, rgb)
    from neurorad.workflows.contract import KeyImage

    assert KeyImage.from_dict(KeyImage("k.png", "axial | coronal", 1, ()).to_dict()).orientation == ()
    assert KeyImage.from_dict({"path": "k.png"}).orientation == ("R", "A")
