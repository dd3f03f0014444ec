"""`aidetect report`: one self-contained HTML page for looking through a scan's output."""

from __future__ import annotations

from typing import Annotated

import typer

from aidetect.cli.guard import run_guarded


def report(
    output: Annotated[
        str, typer.Argument(help="A scan's OUTPUT (Parquet folder, file, or s3:// prefix).", show_default=False)
    ],
    html_path: Annotated[
        str,
        typer.Option("-o", "--output", help="HTML file to write (self-contained: open it in any browser, offline)."),
    ] = "report.html",
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Where the histogram marks the threshold and 'closest calls' are measured from (default: the scan's own, read back from its labels).",
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML page for looking through a scan: counts, histogram, likely-AI, uncertain, errors, provenance."""
    from aidetect.evaluation.report import write_report

    def work(console):
        write_report(output, html_path, threshold)
        console.print(f"wrote {html_path}")

    raise typer.Exit(run_guarded(work))
