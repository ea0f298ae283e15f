"""Runs tests/integration inside a private network namespace (``unshare -n``, loopback only).

Debian's Orthanc cannot be told which address to bind; inside the namespace the only
interface is loopback, so nothing the tests start is reachable from outside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.integration.conftest import IN_NETNS, REPO


@pytest.mark.slow
@pytest.mark.services
def test_integration_suite_in_private_network_namespace():
    if IN_NETNS:
        pytest.skip("already inside the namespace")
    if shutil.which("unshare") is None:
        pytest.fail("util-linux `unshare` is required for the integration tests")
    cmd = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider -x "
           f"{REPO / 'tests' / 'integration'}")
    r = subprocess.run(["unshare", "-n", "sh", "-c", cmd], env=dict(os.environ, NEURORAD_NETNS="1"),
                       capture_output=True, text=True, timeout=1200, cwd=REPO)
    out = r.stdout[-6000:] + r.stderr[-3000:]
    print(out)
    if r.returncode != 0 and "Operation not permitted" in r.stderr and "unshare" in r.stderr:
        pytest.fail("unshare -n needs root or user namespaces (run `make test` as root, as the Makefile does)")
    assert r.returncode == 0, out
    assert " passed" in r.stdout and " failed" not in r.stdout
