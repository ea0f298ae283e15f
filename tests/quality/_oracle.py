"""Run code under the oracle interpreter (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path


def run_oracle(py: Path, code: str, tmp: Path) -> dict:
    """Run ``code`` with the oracle interpreter in ``tmp``; its last stdout line is JSON."""
    script = tmp / "oracle.py"
    script.write_text(textwrap.dedent(code))
    res = subprocess.run([str(py), str(script)], capture_output=True, text=True, cwd=tmp, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
