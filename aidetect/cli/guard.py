"""The one place where exceptions become exit codes and one-line messages, for every command.

0: the work ran (bad files are rows); 2: something the user named cannot be used (every
`UsageError`, and an OSError such as a lost mount); 130: interrupted; 1: an internal error, a bug.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from rich.console import Console

from aidetect.cli.native_log import filtered_stderr
from aidetect.console import styled
from aidetect.errors import UsageError

# Set by a local scan once everything it wrote is committed and closed, so the process can end
# without interpreter teardown: freeing the onnxruntime session, DALI and pandas takes 0.2-0.4 s
# that the operating system does anyway, and a user waits for it after every scan.
_fast_exit = False


def exit_without_teardown() -> None:
    global _fast_exit
    _fast_exit = True


def skips_teardown() -> bool:
    return _fast_exit


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_guarded(work: Callable[[Console], object]) -> int:
    """Run a command's work with native log noise filtered and one-line errors; returns the exit code."""
    with filtered_stderr() as err:
        # markup=False: file names and library messages print literally ("[red]b.jpg" too);
        # our own colours are Text styles.
        console = Console(file=err, stderr=True, markup=False)
        if not console.is_terminal:
            console.width = 200  # logs and pipes: do not fold paths at 80 columns
        try:
            work(console)
        except UsageError as exc:
            console.print(styled("error: ", "red", str(exc)), highlight=False, soft_wrap=True)
            return 2
        except KeyboardInterrupt:
            console.print("interrupted: finished rows are in the output; run the same command to resume")
            return 130
        except OSError as exc:  # a lost mount, a disk gone: committed rows stay, a rerun resumes
            where = getattr(exc, "filename", None)
            message = f"{exc.strerror or exc}{f': {where}' if where else ''}"
            console.print(styled("error: ", "red", message), highlight=False)
            return 2
        except Exception as exc:
            if os.environ.get("AIDETECT_DEBUG"):
                raise
            message = f"{type(exc).__name__}: {_last_line(exc)} (AIDETECT_DEBUG=1 shows where)"
            console.print(styled("internal error: ", "red", message), highlight=False)
            return 1
    return 0
