"""The layer rules of docs/architecture.md, enforced on the source (AST imports)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "neurorad"
COMMON = {"errors", "provenance", "resources", "atomic", "runtime"}  # cross-cutting modules any layer may use

# layer -> neurorad layers it may import (docs/architecture.md, "Layers and folders")
ALLOWED: dict[str, set[str]] = {
    "image": set(),
    "dicom": {"image", "workflows.contract"},
    "preprocess": {"image"},
    "segment": {"image", "preprocess", "quantify"},
    "quantify": {"image"},
    "quality": {"image", "quantify"},
    "evaluate": {"image", "quantify", "quality"},
    "genomics": {"image", "quantify"},
    "clinical": {"quantify"},
    "phantom": {"image"},
    # the cohort toolkit: cohort tables from workflow results, Table 1, prognostic models
    "cohort": {"image", "quantify", "quality", "evaluate", "clinical", "workflows.contract"},
    "pipelines": {"image", "dicom", "preprocess", "segment", "quantify", "quality", "evaluate",
                  "genomics", "clinical", "phantom", "report"},
    # the workflow contract (types only) and every clinical workflow plug-in
    "workflows": {"image", "dicom", "preprocess", "segment", "quantify", "quality", "evaluate",
                  "genomics", "clinical", "phantom", "pipelines", "report", "cohort", "workflows.contract"},
    "report": {"image", "quantify", "dicom", "clinical", "workflows.contract"},
    "store": set(),
    # the platform knows workflows through the contract and the registry, never by name
    "server": {"image", "dicom", "preprocess", "segment", "quantify", "quality", "evaluate", "genomics",
               "clinical", "phantom", "pipelines", "report", "store", "workflows", "cohort", "workflows.contract"},
    "cli": {"image", "dicom", "preprocess", "segment", "quantify", "quality", "evaluate", "genomics",
            "clinical", "phantom", "pipelines", "report", "store", "server", "workflows", "cohort",
            "workflows.contract"},
}


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from neurorad.workflows import registry` names the module neurorad.workflows.registry
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "neurorad.workflows" \
                else [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "neurorad" and len(parts) > 1:
                # the contract's types are the one part of `workflows` the platform layers may use
                # the registry only names installed workflows (entry points): part of the same surface
                surface = parts[1:3] in (["workflows", "contract"], ["workflows", "registry"])
                out.add("workflows.contract" if surface else parts[1])
    return out


def test_every_layer_imports_only_what_the_architecture_allows():
    violations = []
    for layer, allowed in ALLOWED.items():
        for f in sorted((PKG / layer).rglob("*.py")):
            bad = _imported_layers(f) - allowed - COMMON - {layer, "__init__"}
            if bad:
                violations.append(f"{f.relative_to(PKG.parent)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_every_layer_is_listed():
    layers = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers == set(ALLOWED)


# Words that belong to one clinical workflow: the platform layers must not contain them (a workflow
# that needs something from the platform extends the contract instead). The installed workflows'
# names are added; "summary" (the generic reading workflow) is an ordinary word.
WORKFLOW_WORDS = {"glioma", "gadolinium", "microbleed", "haemorrhage", "hemorrhage", "hyperintensit",
                  "multiple sclerosis", "tumour", "tumor", "haematoma", "hematoma", "fazekas", "rano"}
PLATFORM = ("server", "report", "dicom", "store")


def test_platform_layers_do_not_name_a_workflow():
    import re

    from neurorad.workflows import registry

    names = {w.name for w in registry.installed() if w.name != "summary"}
    names |= {n.replace("-", "_") for n in names}
    pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(sorted(map(re.escape, names))) + r")(?![a-z0-9])"
                         r"|" + "|".join(sorted(map(re.escape, WORKFLOW_WORDS))), re.IGNORECASE)
    hits = []
    for layer in PLATFORM:
        for f in sorted((PKG / layer).rglob("*")):
            if f.suffix not in {".py", ".html", ".js", ".css", ".j2", ".toml", ".json"} or "dist" in f.parts:
                continue
            for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                if m := pattern.search(line):
                    hits.append(f"{f.relative_to(PKG.parent)}:{i}: {m.group(0)!r}: {line.strip()[:100]}")
    assert not hits, "workflow-specific words in the platform (extend the contract instead):\n" + "\n".join(hits)
