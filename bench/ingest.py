"""Ingest throughput over C-STORE on loopback: neurorad (receive + validate + de-identify +
store + record) versus Orthanc's own ingest of the same instances, in the same run.

Instances: 512x512 head CT (the real CQ500 slice shipped with pydicom-data, copied with new
UIDs) and 256x256 MR (Colin27 axial slices). Sender: DCMTK ``storescu`` (one association per
run) for both receivers. Orthanc binds every interface, so the benchmark re-executes itself
in a private network namespace (``unshare -n``; needs root).

    .venv/bin/python bench/ingest.py [--n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ct(out: Path, n: int) -> list[Path]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    study, series = generate_uid(), generate_uid()
    out.mkdir(parents=True)
    paths = []
    for i in range(n):
        ds = src.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.PatientName, ds.PatientID = "Bench^Patient", "BENCH-CT-1"
        p = out / f"ct{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def make_mr(out: Path, n: int) -> list[Path]:
    import nibabel as nib
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from neurorad import resources

    vol = np.asarray(nib.load(str(resources.colin27_head())).dataobj, dtype=np.float32)
    study, series = generate_uid(), generate_uid()
    out.mkdir(parents=True)
    paths = []
    for i in range(n):
        k = 20 + (i % 140)
        sl = np.zeros((256, 256), np.float32)
        sl[:181, :217] = vol[:, :, k]
        px = np.clip(sl / vol.max() * 4000, 0, 4095).astype(np.uint16)
        ds = Dataset()
        sop = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Bench^Patient", "BENCH-MR-1", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, generate_uid()
        ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240101", "MR", 1, i + 1
        ds.SeriesDescription, ds.RepetitionTime, ds.EchoTime, ds.InversionTime = "AX FLAIR", 9000.0, 90.0, 2500.0
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(i)], [1.0, 0, 0, 0, 1.0, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [1.0, 1.0], 1.0, 256, 256
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = px.tobytes()
        p = out / f"mr{i:04d}.dcm"
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
        paths.append(p)
    return paths


def storescu(port: int, aec: str, files: list[Path]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(["storescu", "-aec", aec, "-aet", "BENCH", "127.0.0.1", str(port), *map(str, files)],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return dt


def run(n: int) -> dict:
    from neurorad.server.orchestration import DataPlane
    from neurorad.server.services import make_receiver
    from neurorad.server.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="neurorad-bench-"))
    try:
        sets = {"CT 512x512": make_ct(tmp / "ct", n), "MR 256x256": make_mr(tmp / "mr", n)}
        # neurorad: receiver + validate + de-identify + atomic store (fsync) + database record
        settings = Settings(data_dir=tmp / "neurorad", dicom_port=_free_port(), allowed_calling_aets=["BENCH"])
        plane = DataPlane(settings)
        plane.db.migrate()
        rx = make_receiver(settings, plane).start()
        # Orthanc, default SQLite index and file storage
        o_port, o_http = _free_port(), _free_port()
        (tmp / "orthanc").mkdir()
        cfg = {"StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"), "HttpPort": o_http,
               "DicomPort": o_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
               "AuthenticationEnabled": True, "RegisteredUsers": {"b": "b"}, "DicomCheckCalledAet": False}
        (tmp / "orthanc.json").write_text(json.dumps(cfg))
        orthanc = subprocess.Popen(["/usr/sbin/Orthanc", str(tmp / "orthanc.json")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if subprocess.run(["echoscu", "127.0.0.1", str(o_port)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            out = {"n_instances": n, "cpu_count": os.cpu_count(), "results": {}}
            for name, files in sets.items():
                t_nr = storescu(rx.port, settings.ae_title, files)
                t_or = storescu(o_port, "ORTHANC", files)
                size_mb = sum(f.stat().st_size for f in files) / 1e6
                out["results"][name] = {
                    "neurorad_instances_per_s": round(n / t_nr, 1), "orthanc_instances_per_s": round(n / t_or, 1),
                    "neurorad_s": round(t_nr, 2), "orthanc_s": round(t_or, 2), "mb": round(size_mb, 1)}
            return out
        finally:
            rx.stop()
            orthanc.terminate()
            orthanc.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="instances per set")
    args = ap.parse_args()
    if os.environ.get("NEURORAD_NETNS") != "1":
        cmd = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} --n {args.n}"
        env = dict(os.environ, NEURORAD_NETNS="1")
        sys.exit(subprocess.run(["unshare", "-n", "sh", "-c", cmd], env=env).returncode)
    res = run(args.n)
    print(f"ingest over C-STORE on loopback, {res['n_instances']} instances per set, {res['cpu_count']} CPUs")
    print(f"{'set':<12} {'neurorad inst/s':>16} {'Orthanc inst/s':>15} {'MB':>7}")
    for name, r in res["results"].items():
        print(f"{name:<12} {r['neurorad_instances_per_s']:>16} {r['orthanc_instances_per_s']:>15} {r['mb']:>7}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
