"""The Typer app: the commands registered, `--version`, and the exit that skips interpreter teardown."""

from __future__ import annotations

import os
import sys

import typer

from aidetect.cli import evaluate, report, scan
from aidetect.cli.guard import skips_teardown

app = typer.Typer(
    help="Tell AI-generated images from real ones, fast, with one verdict row per image in Parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from aidetect import __version__

        print(f"aidetect {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass  # options for every command; the help text is the Typer app's


app.command()(scan.scan)
app.command("eval")(evaluate.evaluate)
app.command()(evaluate.calibrate)
app.command()(report.report)


def missing_training_packages() -> list[str]:
    import importlib.util

    return [m for m in ("torch", "timm") if importlib.util.find_spec(m) is None]


def register_training(target: typer.Typer, missing: list[str]) -> None:
    """Training commands need the `train` extra; without it they answer with one line saying so."""
    from train.cli import export, train

    if not missing:
        target.command("train")(train)
        target.command("export")(export)
        return

    def unavailable(ctx: typer.Context) -> None:
        typer.echo(
            f"aidetect {ctx.command.name}: needs the training extra ({', '.join(missing)} missing): "
            "pip install 'aidetect[train]'",
            err=True,
        )
        raise typer.Exit(2)

    settings = {"ignore_unknown_options": True, "allow_extra_args": True}
    for name in ("train", "export"):
        target.command(name, context_settings=settings, help=f"(needs aidetect[train]) {name} a detector.")(unavailable)


register_training(app, missing_training_packages())


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        if not skips_teardown() or not isinstance(exc.code, int | None):
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code or 0)
