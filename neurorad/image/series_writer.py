"""Write a DICOM series (:func:`neurorad.image.dicom_series.write_dicom_series`) in a child process.

Building and writing one pydicom object per slice is pure Python (about 1.4 s for a 176-slice 1 mm
series on one core). In a thread it would hold the interpreter lock that the caller's own steps need
(tried for the MS workflow: the time moved but did not go away, docs/ms-lesions-log.md "Workflow 1.5.1"); a
child process runs it on whatever core the caller leaves idle. The child is a fresh interpreter started
with ``subprocess`` (``python -m neurorad.image.series_writer JOB``), not a fork of a process that may hold
threads (ITK, torch) and their locks, and it lowers its own priority, so it takes CPU mostly where the
caller's steps leave a core idle. The series itself is the one :func:`write_dicom_series` writes in
process (same attributes and pixel data; UIDs and the creation date/time are new on every write either
way), written into a temporary folder and renamed into place: all or nothing.

The job (the volume and the arguments) is handed over in a pickle file beside the output folder and
removed once the child is done or cancelled. The child builds the series in a temporary folder whose name
starts with a prefix the parent chose for it, so a cancel removes that folder even when the child could not:
a child killed after the SIGTERM grace period, or one that took the signal between creating the folder and
guarding it.
"""

from __future__ import annotations

import glob
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from neurorad.errors import ProcessingError
from neurorad.image.volume import Volume

#: the child's scheduling priority offset (``os.nice``): it yields to the caller's own steps
CHILD_NICE = 10


class SeriesWriterProcess:
    """One :func:`write_dicom_series` call running in a child process.

    ``SeriesWriterProcess(volume, out_dir, **kwargs)`` starts it; :meth:`result` waits and returns the
    folder (or raises :class:`ProcessingError` with the child's message); :meth:`cancel` stops it and
    removes what it left. Use it as a context manager to cancel it when the caller fails.
    """

    def __init__(self, volume: Volume, out_dir: str | Path, **kwargs: Any) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._job = self.out_dir.parent / f".{self.out_dir.name}.job.pkl"
        self._log = self.out_dir.parent / f".{self.out_dir.name}.log"
        # the child's temporary folder: this writer's own prefix, so cancel() can find what a killed child left
        self._tmp_prefix = f".tmp-dicom-{self.out_dir.name}-{secrets.token_hex(4)}-"
        with self._job.open("wb") as fh:
            pickle.dump({"data": volume.data, "affine": volume.affine, "metadata": dict(volume.metadata),
                         "out_dir": str(self.out_dir), "kwargs": {**kwargs, "tmp_prefix": self._tmp_prefix}}, fh,
                        protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        # the child finds this neurorad even when it is not installed (a source checkout on PYTHONPATH)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        with self._log.open("wb") as log:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "neurorad.image.series_writer", str(self._job)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)

    def result(self, timeout_s: float | None = 600.0) -> Path:
        """Wait for the child (at most ``timeout_s``); the written folder, or :class:`ProcessingError`."""
        if self._proc is None:
            raise ProcessingError(f"{self.out_dir}: the DICOM series writer was cancelled")
        try:
            code = self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise ProcessingError(f"{self.out_dir}: the DICOM series writer took longer than {timeout_s:g} s") from None
        message = self._log.read_text(encoding="utf-8", errors="replace").strip() if self._log.exists() else ""
        self._proc = None
        self._cleanup()
        if code != 0 or not self.out_dir.is_dir():
            last = message.splitlines()[-1] if message else f"exit status {code}"
            raise ProcessingError(f"{self.out_dir}: the DICOM series writer failed: {last}")
        return self.out_dir

    def cancel(self) -> None:
        """Stop the child if it still runs and remove its job file and any temporary folder it left (the series
        folder appears only whole)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()  # the child removes its half-written temporary folder on SIGTERM ...
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc.wait()
            self._proc = None
        # ... unless it was killed, or took the signal before its folder was guarded: the folder is removed here
        for left in self.out_dir.parent.glob(f"{glob.escape(self._tmp_prefix)}*"):
            shutil.rmtree(left, ignore_errors=True)
        self._cleanup()

    def _cleanup(self) -> None:
        self._job.unlink(missing_ok=True)
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> SeriesWriterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _main(argv: list[str]) -> int:
    """The child: read the job, write the series, exit 0 (non-zero with the error on stderr)."""
    try:
        os.nice(CHILD_NICE)
    except OSError:  # not permitted: run at the caller's priority
        pass
    # SIGTERM (cancel) unwinds like an error, so write_dicom_series removes its temporary folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    from neurorad.image.dicom_series import write_dicom_series

    job = pickle.loads(Path(argv[0]).read_bytes())
    vol = Volume(job["data"], job["affine"], job["metadata"])
    write_dicom_series(vol, job["out_dir"], **job["kwargs"])
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
