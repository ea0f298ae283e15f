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
