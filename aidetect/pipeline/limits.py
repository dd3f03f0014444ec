"""The scan's bounds: what one file may cost, and what the pipeline holds at once, whatever the input.

Every limit is enforced before the expensive step it guards (bytes from the listing before a
read, pixels from the header before a decode, progressive scans from the markers), so a hostile
file costs one error row. The defaults keep a scan at the default batch size under 1.5 GB of
resident memory on any input (measured by `scripts/bench.py`'s hostile corpus; README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1 << 20

DEFAULT_MAX_BYTES = 100 * MIB  # a 100 MP JPEG is ~30 MB, an 8K PNG screenshot ~60 MB
DEFAULT_MAX_PIXELS = 110_000_000  # a 102 MP medium-format photo still decodes
DEFAULT_DECODE_TIMEOUT = 30.0  # seconds; a 100 MP PNG decodes in ~2 s on one core
# Progressive JPEG encoders write 3-12 scans (mozjpeg and jpegtran ~10); each scan re-walks the
# whole coefficient buffer, so a file repeating one scan thousands of times decodes for minutes.
MAX_JPEG_SCANS = 100


def usable_cores() -> int:
    """The cores this process may run on (its affinity), which containers often set below the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """Per-file limits (error rows past them) and in-flight budgets (work waits within them)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT
    max_jpeg_scans: int = MAX_JPEG_SCANS
    read_ahead_bytes: int = 64 * MIB  # encoded bytes read ahead of the decoder
    batch_bytes: int = 32 * MIB  # a batch is cut early when its files reach this size
    # Memory all decoders together may hold at once (decoded pixels and their conversions): one
    # 110 MP RGBA PNG, or a dozen 12 MP photos. A scan's own footprint (model, libraries) is
    # ~0.5-0.6 GB beside it.
    decode_bytes: int = 800 * MIB
    # DALI keeps buffers sized for the largest image it has decoded, so on the CPU it gets images
    # up to this size and larger ones go to Pillow, which frees them at once.
    dali_max_pixels: int = 16_000_000

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.decode_timeout <= 0:
            raise ValueError("limits must be positive")
