"""What decoding may hold at once and for how long: a byte budget shared by every decoder thread
and a deadline that counts only the time a decode really runs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from aidetect.pipeline.read import Encoded

# Peak bytes a pixel costs while decoding, by path and Pillow mode: the decoded image plus the
# conversion that follows (grey stays grey until resized; RGBA and CMYK are converted to RGB whole).
_PILLOW_BYTES = {"1": 2, "L": 2, "LA": 3, "La": 3, "P": 4, "PA": 5, "RGB": 4, "I": 9, "F": 9}
_PILLOW_DEFAULT_BYTES = 7  # RGBA, CMYK, YCbCr, ...
_JPEG_BYTES = 4  # RGB array, plus its upright copy when EXIF turns it
_DALI_BYTES = 6  # decoded RGB plus the resize's working buffers
_WATERMARK_BYTES = 16  # an RGB decode, its array copy and the U plane's float32 temporaries


def decode_cost(item: Encoded, path: str) -> int:
    """Bytes of memory decoding `item` takes at its peak on `path` ("dali", "jpeg", "jpeg-reduced", "pillow",
    "watermark": a full-size decode read for the watermark too)."""
    pixels = (item.width or 0) * (item.height or 0)
    if path == "jpeg-reduced":
        return pixels * 3 // 4  # at most half size each way
    if path == "jpeg":
        return pixels * _JPEG_BYTES
    if path == "dali":
        return pixels * _DALI_BYTES
    if path == "watermark":
        return pixels * _WATERMARK_BYTES
    mode = "I" if item.mode.startswith("I") else item.mode
    return pixels * _PILLOW_BYTES.get(mode, _PILLOW_DEFAULT_BYTES)


class MemoryBudget:
    """A counting semaphore of bytes shared by every decoder thread: whatever the batch size, the
    memory that decoding takes at once stays under `capacity` (one image costing more than the
    whole budget waits until it has all of it, and runs alone)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.free = capacity, capacity
        self._cond = threading.Condition()

    def cost(self, items: Sequence[Encoded], path: str) -> int:
        return min(self.capacity, sum(decode_cost(i, path) for i in items))

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.free >= amount)
            self.free -= amount
        try:
            yield
        finally:
            with self._cond:
                self.free += amount
                self._cond.notify_all()


class TimedJob:
    """Runs a function after taking its memory budget, noting when it really started, so a
    deadline counts decode time, not the wait for a thread or for the budget."""

    def __init__(self, budget: MemoryBudget, cost: int, fn: Callable, *args) -> None:
        self.budget, self.cost, self.fn, self.args = budget, cost, fn, args
        self.started: float | None = None
        self.future: Future | None = None  # set by whoever submits it

    def __call__(self):
        with self.budget.hold(self.cost):
            self.started = time.monotonic()
            return self.fn(*self.args)

    def result(self, timeout: float):
        """The function's result, or raises TimeoutError once it has run `timeout` seconds."""
        while True:
            wait = 0.05 if self.started is None else self.started + timeout - time.monotonic()
            try:
                return self.future.result(timeout=max(wait, 0))
            except FutureTimeout:
                if self.started is not None and time.monotonic() >= self.started + timeout:
                    raise TimeoutError from None
