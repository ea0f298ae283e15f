"""Shared fixtures: real reference data (skip nothing silently: missing data is an install bug)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurorad import resources


@pytest.fixture(scope="session")
def colin27_head_path() -> Path:
    return resources.colin27_head()


@pytest.fixture(scope="session")
def colin27_brain_path() -> Path:
    return resources.colin27_brain()


@pytest.fixture(scope="session", autouse=True)
def _flush_denormals_before_torch_starts_threads():
    """Flush subnormal floats before any test runs torch (see neurorad.preprocess.torch_runtime).

    The flag lives in each thread's MXCSR register and new threads copy it from the thread that
    starts them. A job process sets it before its first network runs, so torch's OpenMP threads
    inherit it; in one long test process an earlier test (any torch op) starts those threads
    first, and HD-BET then took 437 s instead of 17 s in the full suite.
    """
    from neurorad.preprocess.torch_runtime import flush_denormals

    flush_denormals()


@pytest.fixture(scope="session", autouse=True)
def _vault_keys_outside_home(tmp_path_factory):
    """Vault keys made by tests (neurorad.server.settings.default_key_dir) go to a temporary
    folder, not ~/.config/neurorad; server processes started by tests inherit it."""
    import os

    old = os.environ.get("NEURORAD_KEY_DIR")
    os.environ["NEURORAD_KEY_DIR"] = str(tmp_path_factory.mktemp("neurorad-keys"))
    yield
    if old is None:
        os.environ.pop("NEURORAD_KEY_DIR", None)
    else:
        os.environ["NEURORAD_KEY_DIR"] = old
