"""The oracle environment ``.venv-brats`` (repository root) for reference packages that pin numpy < 2
or drag in heavy dependencies: BraTS Toolkit, brats-evaluation (panoptica) and mrqy's metric
functions. Built once (about a minute, needs the package index), reused afterwards; when it
cannot be built, the tests that need it are skipped with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-brats"
PY = VENV / "bin" / "python"
# (requirement, install without dependencies?) - mrqy's own deps (umap-learn, numba, medpy) are not
# needed for its QCF metric functions, which only use numpy/scipy/scikit-image/matplotlib.
PINS = [("brats-toolkit==1.0.18", False), ("brats-evaluation==0.0.10", False), ("matplotlib", False),
        ("mrqy==0.0.3", True)]


@pytest.fixture(scope="session")
def oracle_python() -> Path:
    marker = VENV / ".neurorad-ready"
    done = set(marker.read_text().split()) if marker.exists() else set()
    try:
        if not PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        for req, nodeps in PINS:
            if req in done:
                continue
            cmd = [str(PY), "-m", "pip", "install", "-q", *(["--no-deps"] if nodeps else []), req]
            subprocess.run(cmd, check=True, capture_output=True, timeout=900)
            done.add(req)
            marker.write_text(" ".join(sorted(done)))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot build the oracle environment: {out.decode(errors='replace')[-400:]}")
    return PY
