"""Workflow registry: installed workflows come from Python entry points (group ``neurorad.workflows``).

A third-party package adds a workflow by declaring, in its own ``pyproject.toml``::

    [project.entry-points."neurorad.workflows"]
    my-workflow = "my_package.workflow:MyWorkflow"

The built-in workflows register the same way (neurorad's own pyproject.toml). Tests and
embedding code may also :func:`register` a class in-process. Loading is lazy: listing the
installed workflows imports nothing; :func:`load` imports one and checks it against the
contract, raising :class:`WorkflowLoadError` (name + cause) instead of falling back to anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from neurorad.errors import NeuroradError
from neurorad.workflows.contract import Requirements, ReviewForm, ViewerLayout, Workflow

__all__ = ["GROUP", "WorkflowLoadError", "InstalledWorkflow", "installed", "load", "load_enabled", "register",
           "unregister"]

GROUP = "neurorad.workflows"

_LOCAL: dict[str, type[Workflow]] = {}
_CACHE: dict[str, Workflow] = {}


class WorkflowLoadError(NeuroradError):
    """An installed or enabled workflow cannot be imported or does not meet the contract."""


@dataclass(frozen=True)
class InstalledWorkflow:
    name: str
    target: str  # "module:attr" or "<registered in process>"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def installed() -> list[InstalledWorkflow]:
    """Every workflow that could be loaded (entry points plus in-process registrations), by name."""
    out = {name: InstalledWorkflow(name, ep.value) for name, ep in _entry_points().items()}
    for name, cls in _LOCAL.items():
        out[name] = InstalledWorkflow(name, f"{cls.__module__}:{cls.__qualname__}")
    return [out[k] for k in sorted(out)]


def register(cls: type[Workflow]) -> type[Workflow]:
    """Register a workflow class in this process (tests, embedding); usable as a decorator."""
    _check(cls, cls.name or "?")
    _LOCAL[cls.name] = cls
    _CACHE.pop(cls.name, None)
    return cls


def unregister(name: str) -> None:
    _LOCAL.pop(name, None)
    _CACHE.pop(name, None)


def _check(cls: object, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Workflow)):
        raise WorkflowLoadError(f"workflow {name!r}: {cls!r} is not a neurorad.workflows.Workflow subclass")
    if not cls.name:
        raise WorkflowLoadError(f"workflow {name!r}: class {cls.__qualname__} has no name")
    if name != "?" and cls.name != name:
        raise WorkflowLoadError(f"workflow {name!r}: the entry point loads a class named {cls.name!r}")
    for attr, typ in (("requirements", Requirements), ("review_form", ReviewForm), ("viewer", ViewerLayout)):
        if not isinstance(getattr(cls, attr, None), typ):
            raise WorkflowLoadError(f"workflow {name!r}: {attr} must be a {typ.__name__}")
    if cls.run is Workflow.run:
        raise WorkflowLoadError(f"workflow {name!r}: class {cls.__qualname__} does not implement run()")


def load(name: str) -> Workflow:
    """The workflow instance called ``name``; :class:`WorkflowLoadError` if unknown or broken."""
    if name in _CACHE:
        return _CACHE[name]
    if name in _LOCAL:
        cls: object = _LOCAL[name]
    else:
        eps = _entry_points()
        if name not in eps:
            known = sorted(set(eps) | set(_LOCAL))
            raise WorkflowLoadError(f"unknown workflow {name!r}; installed: {', '.join(known) or 'none'}")
        try:
            cls = eps[name].load()
        except Exception as err:  # noqa: BLE001 - any import failure is reported with its cause
            raise WorkflowLoadError(
                f"workflow {name!r} ({eps[name].value}) cannot be imported: {type(err).__name__}: {err}") from err
    _check(cls, name)
    wf = cls()  # type: ignore[operator]
    _CACHE[name] = wf
    return wf


def load_enabled(names: list[str] | tuple[str, ...]) -> list[Workflow]:
    """Load every enabled workflow or fail at once, naming each that cannot be loaded (start-up check
    of ``neurorad serve`` / ``worker``: nothing falls back silently)."""
    loaded, errors = [], []
    for n in names:
        try:
            loaded.append(load(n))
        except WorkflowLoadError as err:
            errors.append(str(err))
    if errors:
        raise WorkflowLoadError("; ".join(errors))
    return loaded


def preload_modules(names: list[str] | tuple[str, ...]) -> list[str]:
    """The modules the enabled workflows ``names`` ask a job process to have imported
    (:attr:`Workflow.preload`), in order, without repeats; workflows that cannot be loaded are
    skipped here (:func:`load_enabled` reports them)."""
    out: list[str] = []
    for n in names:
        try:
            wf = load(n)
        except WorkflowLoadError:
            continue
        out += [m for m in getattr(wf, "preload", ()) if m not in out]
    return out
