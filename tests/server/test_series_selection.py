"""Series selection honours ``SeriesRole.prefer_3d``: of two candidate series of one class, a 3D acquisition
is taken over a 2D one with more instances (before, the most instances won and the flag was ignored)."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from neurorad.store.models import Job, Series
from neurorad.workflows.contract import Requirements, SeriesRole
from neurorad.workflows.summary import SummaryWorkflow
from tests.server.dicomdata import write_series
from tests.server.test_flow import _app


@pytest.mark.parametrize("prefer_3d", [True, False])
def test_prefer_3d_takes_the_3d_series_over_a_larger_2d_one(settings, tmp_path, monkeypatch, prefer_3d):
    monkeypatch.setattr(SummaryWorkflow, "requirements",
                        Requirements((SeriesRole("flair", ("FLAIR",), ("MR",), prefer_3d=prefer_3d),)))
    app = _app(settings)
    plane = app.state.plane
    study = generate_uid()
    two_d = write_series(tmp_path / "2d", "FLAIR", n_slices=4, size=16, study_uid=study, series_number=3)
    three_d = write_series(tmp_path / "3d", "FLAIR", n_slices=3, size=16, study_uid=study, series_number=4)
    for f in three_d:  # a thin 3D FLAIR with fewer slices
        ds = pydicom.dcmread(f)
        ds.MRAcquisitionType, ds.SliceThickness = "3D", 1.0
        ds.save_as(f)
    for f in two_d + three_d:
        plane.ingest_bytes(f.read_bytes(), "MOD")
    plane.complete_quiet_studies()
    with plane.db.session() as s:
        job = s.scalars(select(Job)).one()
        chosen = s.get(Series, job.payload["series"]["flair"]).series_number
    assert chosen == (4 if prefer_3d else 3)
