"""The ``neurorad`` command.

Each area registers its subcommands from its own module (``neurorad/cli/<area>.py``, a
``register(app)`` function), so that areas can grow without touching each other.
Any :class:`neurorad.errors.NeuroradError` becomes a one-line message and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys

import typer

from neurorad import __version__
from neurorad.errors import NeuroradError

app = typer.Typer(
    name="neurorad",
    help="Brain MRI/CT AI from PACS to verified, versioned, quantitative reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"quiet": False, "verbose": False}


def quiet() -> bool:
    """True when ``--quiet`` was given: no progress bars, only errors and results."""
    return bool(_state["quiet"])


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neurorad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step (DEBUG)."),
    quiet_: bool = typer.Option(False, "--quiet", "-q", help="Only errors and final results; no progress bars."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    log_json: bool = typer.Option(False, "--log-json", help="Logs as JSON lines with request/job ids (also "
                                  "$NEURORAD_LOG_FORMAT=json); docs/operations.md."),
) -> None:
    from neurorad.server.logs import configure, json_wanted

    _state["verbose"], _state["quiet"] = verbose, quiet_
    level = logging.DEBUG if verbose else (logging.WARNING if quiet_ else logging.INFO)
    configure(level, use_json=log_json or json_wanted(), stream=sys.stderr)


def _register_all() -> None:
    from neurorad.cli import (
        cohort,
        data,
        demo,
        evaluate,
        genomics,
        image,
        ms,
        ops,
        phantom,
        preprocess,
        reference_set,
        segment,
        server,
        workflows,
    )

    # workflows last: it adds a command for each installed workflow without a command of its own
    for mod in (image, preprocess, phantom, ms, data, server, genomics, evaluate, cohort, demo, segment, ops,
                reference_set, workflows):
        mod.register(app)


_register_all()


def main() -> None:
    """Entry point: run the app, turning neurorad errors into clean messages."""
    try:
        # without standalone mode, typer returns the code of a typer.Exit instead of raising it
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except NeuroradError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
