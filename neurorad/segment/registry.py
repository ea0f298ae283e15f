"""Model registry: a model is a folder with weights, a model card and the sha256 of every file.

Folder layout::

    <model>/
      model.json        the card (below) + "files": {relative path: sha256} of every other file
      fold_0.pt         weights of ensemble member 0 (one file per k-fold member)
      fold_1.pt ...
      model.onnx        optional: ONNX export of member 0 (``neurorad model export-onnx``)
      curves.png/.csv   optional: training curves of the run that made it

The card (after Mitchell et al., "Model Cards for Model Reporting", FAT* 2019) holds: ``name``,
``version`` (semantic version), ``task``, ``labels`` (class index -> name, 0 = background),
``contrasts`` (input order), ``preprocessing`` (spacing_mm, normalization), ``architecture``,
``inference`` (patch size, overlap, mirror TTA), ``training_data`` (a plain statement),
``validation`` (metrics and the command that measured them), ``intended_use``,
``limitations``, ``licence``, ``training`` (the run's config and seed) and ``files``.

Where models are found: the models shipped inside neurorad (``neurorad/segment/models/``),
then the site registry ``$NEURORAD_MODELS`` (default ``~/.local/share/neurorad/models``).
A model whose files do not match their recorded sha256 refuses to run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurorad.atomic import atomic_dir
from neurorad.errors import InputError, ProcessingError
from neurorad.provenance import sha256_file, sha256_files

CARD = "model.json"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
REQUIRED = ("name", "version", "task", "labels", "contrasts", "preprocessing", "training_data", "validation",
            "intended_use", "licence", "files")
SHIPPED_ROOT = Path(__file__).parent / "models"


def site_root() -> Path:
    """The site registry folder (``$NEURORAD_MODELS`` or ``~/.local/share/neurorad/models``)."""
    return Path(os.environ.get("NEURORAD_MODELS", Path.home() / ".local" / "share" / "neurorad" / "models"))


def roots() -> list[Path]:
    return [SHIPPED_ROOT, site_root()]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: where it is and its card."""

    path: Path
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def weights_sha256(self) -> str:
        """One hash over the weight files (what results record)."""
        return sha256_files([self.path / f for f in weight_files(self.card)])

    @property
    def shipped(self) -> bool:
        return SHIPPED_ROOT in self.path.parents


def weight_files(card: dict[str, Any]) -> list[str]:
    return sorted(f for f in card.get("files", {}) if f.endswith(".pt"))


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of a model folder, checked for the required fields (no hashing)."""
    folder = Path(folder)
    path = folder / CARD
    if not path.is_file():
        raise InputError(f"not a model folder: no {CARD}", folder)
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"model card is not valid JSON ({exc})", path) from exc
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise InputError(f"model card lacks {', '.join(missing)}", path)
    if not SEMVER.match(str(card["version"])):
        raise InputError(f"model version {card['version']!r} is not a semantic version (MAJOR.MINOR.PATCH)", path)
    if not isinstance(card["files"], dict) or not card["files"]:
        raise InputError("model card lists no files", path)
    return card


def verify(folder: str | Path) -> list[str]:
    """Problems found (empty when every listed file exists with its recorded sha256)."""
    folder = Path(folder)
    card = read_card(folder)
    problems = []
    for rel, expected in sorted(card["files"].items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        got = sha256_file(p)
        if got != expected:
            problems.append(f"{rel}: sha256 {got[:12]}... does not match the card's {str(expected)[:12]}...")
    if not weight_files(card) and not card.get("engine"):
        problems.append("no weight files (*.pt) listed")
    return problems


def open_model(folder: str | Path, check: bool = True) -> ModelInfo:
    """The model in ``folder``; with ``check`` a file whose sha256 changed refuses to run."""
    folder = Path(folder)
    card = read_card(folder)
    if check:
        problems = verify(folder)
        if problems:
            raise ProcessingError(f"model {card['name']} {card['version']} at {folder} failed verification, "
                                  f"refusing to run: {'; '.join(problems)}")
    return ModelInfo(folder, card)


def list_models() -> list[ModelInfo]:
    """Every model folder under the registry roots (unverified; unreadable cards skipped)."""
    out = []
    for root in roots():
        if not root.is_dir():
            continue
        for card in sorted(root.rglob(CARD)):
            try:
                out.append(ModelInfo(card.parent, read_card(card.parent)))
            except InputError:
                continue
    return out


def _semver_key(v: str) -> tuple[int, int, int, int]:
    m = SEMVER.match(v)
    if not m:
        return (-1, -1, -1, -1)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if "-" in v else 1)


def find_model(ref: str, version: str | None = None, check: bool = True) -> ModelInfo:
    """A model by folder path, ``name``, ``name@version`` (newest version when none given)."""
    p = Path(ref)
    if (p / CARD).is_file():
        return open_model(p, check)
    if "@" in ref and version is None:
        ref, version = ref.split("@", 1)
    hits = [m for m in list_models() if m.name == ref and (version is None or m.version == version)]
    if not hits:
        known = sorted({f"{m.name}@{m.version}" for m in list_models()})
        raise InputError(f"no model {ref}{'@' + version if version else ''} in the registry "
                         f"({', '.join(known) or 'no models registered'})")
    best = max(hits, key=lambda m: _semver_key(m.version))
    return open_model(best.path, check)


def finalize_folder(folder: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``folder`` (except the card) into ``card['files']`` and write the card."""
    folder = Path(folder)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != CARD:
            files[p.relative_to(folder).as_posix()] = sha256_file(p)
    card = {**card, "files": files}
    tmp = folder / (CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=str) + "\n")
    tmp.replace(folder / CARD)
    read_card(folder)
    return card


def import_model(src: str | Path, root: str | Path | None = None, overwrite: bool = False) -> ModelInfo:
    """Verify a model folder and copy it into the site registry as ``<root>/<name>/<version>/``."""
    info = open_model(src, check=True)
    dest = Path(root or site_root()) / info.name / info.version
    if dest.exists() and not overwrite:
        raise InputError(f"model {info.name} {info.version} is already registered (use --overwrite)", dest)
    with atomic_dir(dest) as tmp:
        for rel in [*info.card["files"], CARD]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(info.path / rel, tmp / rel)
    return open_model(dest, check=True)
