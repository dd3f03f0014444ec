"""Running the CLI as a user would, in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run `python -m aidetect ARGS` as a user would, capturing stdout (bytes) and stderr."""
    env = {**(env or os.environ), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "aidetect", *args], cwd=cwd, capture_output=True, timeout=timeout, env=env, **kwargs
    )
