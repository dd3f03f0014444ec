"""Engines decide where the batches run; they all drive the same batch worker (pipeline/worker.py).

`create_engine` picks one by name and imports Ray only when asked for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # engines/base.py imports this package first; names only for the signature
    from rich.console import Console

    from aidetect.engines.base import ScanOptions

ENGINES = ("local", "ray")


def create_engine(name: str, opts: ScanOptions, console: Console, **options):
    """A ready engine: `.run()` scans and returns a ScanResult. `options` are the Ray engine's
    (address, workers, gpus_per_worker); the local engine takes none."""
    if name == "ray":
        from aidetect.engines.ray import RayEngine

        return RayEngine(opts, console, **options)
    if name == "local":
        from aidetect.engines.local import LocalEngine

        return LocalEngine(opts, console)
    raise ValueError(f"unknown engine {name!r} (one of {', '.join(ENGINES)})")
