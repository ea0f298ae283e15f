"""Progress bars for long CLI work (rich), silent under ``--quiet``.

Science functions stay pure: they accept an optional ``progress: Callable[[int], None]``
callback (called with the number of finished units); the CLI passes :func:`bar`'s advance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a bar on stderr unless ``--quiet``."""
    from neurorad.cli import quiet

    if quiet():
        yield lambda n=1: None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    ) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)
