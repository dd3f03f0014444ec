"""Keep native libraries' log lines off the user's screen, whatever the library.

DALI's decoders and the image libraries under them (nvImageCodec, libpng, libtiff, libjpeg,
OpenCV) write to file descriptor 2 directly, in formats of their own, once per bad file, and
their threads interleave mid-line. Those files already get an error row, so while a command runs
fd 2 passes only what says the process itself is failing (a Python traceback, a fatal error);
aidetect's own messages go to a separate stream on the real stderr and are never filtered.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

# Lines that say the process is failing: they reach the user.
FATAL = re.compile(
    rb"^(Traceback \(most recent call last\)|Fatal Python error|Segmentation fault|Aborted|terminate called|MemoryError)"
)
ANSI = re.compile(rb"\x1b\[[0-9;]*m")


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


def _pump(read_end: int, out: int) -> None:
    in_traceback = False
    with os.fdopen(read_end, "rb") as src:
        for line in src:
            plain = ANSI.sub(b"", line)
            if FATAL.match(plain):
                in_traceback = plain.startswith(b"Traceback")
                os.write(out, line)
            elif in_traceback:  # its indented frames, then the exception line that ends it
                os.write(out, line)
                in_traceback = plain[:1] in (b" ", b"\t")
