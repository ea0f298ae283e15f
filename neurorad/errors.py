"""Errors that carry a message a technologist can act on.

Every error raised on bad input names the file (when there is one) and the problem.
The CLI turns any :class:`NeuroradError` into that message and a non-zero exit code.
Never put patient identifiers in these messages.
"""

from __future__ import annotations

from pathlib import Path


class NeuroradError(Exception):
    """Base class of all errors neurorad raises on purpose."""

    exit_code = 2


class InputError(NeuroradError):
    """Bad input: missing, unreadable, wrong kind or wrong content."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class ProcessingError(NeuroradError):
    """A step ran but its result cannot be trusted (e.g. registration failed)."""

    exit_code = 3
