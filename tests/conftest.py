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
def _torch_threads_start_with_denormals_flushed():
    """Start torch's OpenMP threads once, inside :func:`denormals_flushed`, before any test runs torch.

    The flag lives in each thread's MXCSR register and threads copy it from the thread that starts
    them. A job process first runs torch inside the context, so its pool has it; in one long test
    process an earlier test starts the pool without it, and HD-BET then took 437 s instead of 17 s.
    The main thread's flag is off again after the block (numpy/scipy tests need subnormals).
    """
    import torch

    from neurorad.preprocess.torch_runtime import denormals_flushed

    with denormals_flushed():
        torch.nn.functional.conv3d(torch.ones(1, 2, 24, 24, 24), torch.ones(4, 2, 3, 3, 3)).sum()


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


@pytest.fixture(scope="module", autouse=True)
def _free_memory_back_after_each_module():
    """The test process imports :mod:`neurorad`, whose allocator setting keeps freed memory for speed
    (:mod:`neurorad.runtime`); one process running the whole suite hands it back after each test module, as a
    job process does when it waits, so the suite's resident memory stays that of its largest module."""
    yield
    from neurorad.runtime import release_free_memory

    release_free_memory()
