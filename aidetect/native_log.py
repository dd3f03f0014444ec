"""Keep native libraries' log lines (nvImageCodec's per-file decode errors) off the user's screen.

DALI's decoders and the image libraries under them (libpng, libtiff, libjpeg) print to file
descriptor 2 directly, once per bad file; those files already get an error row, so the lines
are noise, with or without --quiet. Everything else written to fd 2 passes through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

# Ray's C++ core logs "[2026-01-01 12:00:00,000 E 123 456] core_worker.cc:..." lines to the driver.
RAY_CORE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,]+ [EWI] \d+ \d+\] \w+\.cc:\d+")
NOISE = re.compile(
    rb"(\[(ERROR|WARNING|WARN|INFO)\].*\[(libjpeg_turbo_decoder|nvjpeg|libtiff|opencv|libpng|nvimgcodec|\w+_parser|\w+_decoder)|nvImageCodec|ImageDecoder"
    rb"|^libpng (warning|error)|^(TIFF|JPEG)[A-Za-z]*: |^Corrupt JPEG data|^Premature end of JPEG)",
    re.I,
)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[TextIO]:
    """Route fd 2 through a filter; yields a text stream on the real stderr for our own output."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):
        yield sys.stderr
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_pump, args=(read_end, saved), daemon=True)
    thread.start()
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield real
    finally:
        real.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end, so the pump sees EOF
        thread.join(timeout=2)
        real.close()
        os.close(saved)


ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def _pump(read_end: int, out: int) -> None:
    with os.fdopen(read_end, "rb") as src:
        for line in src:
            plain = ANSI.sub(b"", line)
            if not NOISE.search(plain) and not RAY_CORE.search(plain):
                os.write(out, line)
