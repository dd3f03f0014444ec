"""Decode: encoded bytes -> model-ready pixels, in batches, one bad file never costing a batch.

Every file is read within a byte limit and probed from its header with Pillow (cheap): that
refuses oversized files, decompression bombs and JPEGs that cannot hold their claimed size
before any pixel is decoded, and names non-images. Then `BatchDecoder` decodes and resizes:
DALI batches (on the GPU when there is one), strict libjpeg-turbo for JPEGs on the CPU, Pillow
for the rest. When DALI fails a batch, it is split in halves until the bad files are alone, and
each of those goes to the CPU path, which either decodes it or says what is wrong with it.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from aidetect.io.sources import ImageRef
from aidetect.pipeline import jpeg
from aidetect.pipeline.limits import MIB, Limits
from aidetect.pipeline.preprocess import (
    TURNED,
    Preprocess,
    aspect_box,
    center_crop,
    finish_reduced,
    open_upright,
    reduced_min_size,
    resized_rgb,
    upright,
)
from aidetect.pipeline.provenance import NONE as NO_PROVENANCE
from aidetect.pipeline.provenance import Provenance

DEFAULT_LIMITS = Limits()
# Formats the DALI decoder reads; the rest (GIF, HEIC, AVIF, ...) are decoded by Pillow.
DALI_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})


@dataclass(slots=True)
class Encoded:
    """A listed image with its bytes read and its header probed (or the reason it failed)."""

    ref: ImageRef
    data: bytes | None = None
    format: str | None = None
    error: str | None = None
    width: int | None = None  # as stored, before EXIF orientation
    height: int | None = None
    orientation: int = 1  # EXIF orientation of JPEGs (1: as stored)
    mode: str = "RGB"  # Pillow's mode: what decoding it costs in memory
    provenance: Provenance = NO_PROVENANCE  # filled by the provenance stage, when it runs


@dataclass(slots=True)
class Decoded:
    """Model-ready pixels (uint8 HWC, input_size square) or the reason there are none."""

    ref: ImageRef
    pixels: np.ndarray | None
    width: int | None = None  # as displayed, after EXIF orientation
    height: int | None = None
    error: str | None = None


class NotRegularFile(OSError):
    pass


HEAD_BYTES = 64 << 10  # enough for the header of every format we decode, bar rare JPEGs (read whole then)
# First bytes of the formats aidetect decodes: a file named like an image that starts otherwise
# is refused from its first 64 KiB, without reading the rest.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


@contextlib.contextmanager
def open_local(ref: ImageRef) -> Iterator[BinaryIO]:
    """A local file opened for reading; never a FIFO, device or folder."""
    # O_NONBLOCK: a FIFO named like an image must not hang the scan; it is refused below.
    fd = os.open(ref.path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile("not a regular file")
        yield f


def read_file(ref: ImageRef) -> bytes:
    """The whole file (tests and tools; the scan reads through `load`, which bounds it)."""
    with open_local(ref) as f:
        return f.read()


def describe_os_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, NotRegularFile):
        return "not a regular file"
    if exc.strerror is None:  # raised with a message of ours (object stores)
        return str(exc)
    return f"read error: {exc.strerror}"


def too_many_bytes(size: int | None, limits: Limits) -> str:
    """The error of a file over --max-file-mb; `size` None when it was found reading, not listed."""
    limit = f"{limits.max_bytes / MIB:g} MiB" if limits.max_bytes >= MIB else f"{limits.max_bytes} bytes"
    if size is None:
        return f"file too large: more than {limit} (--max-file-mb)"
    return f"file too large: {size} bytes (limit {limit}, --max-file-mb)"


def probe(ref: ImageRef, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Encoded:
    """Check the header only: is it an image, of what format, and is it small enough to decode."""
    if not data:
        return Encoded(ref, error="empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt, mode = image.width, image.height, image.format, image.mode
            orientation = _orientation(image) if fmt in ("JPEG", "MPO") else 1
    except UnidentifiedImageError:
        return Encoded(ref, error="not an image")
    except Exception as exc:  # Pillow raises many types on malformed headers
        return Encoded(ref, error=f"bad image header: {_short(exc)}")
    if width <= 0 or height <= 0:
        return Encoded(ref, format=fmt, error=f"bad image header: size {width}x{height}")
    if fmt in ("JPEG", "MPO"):  # before the size limit: a 772-byte "14000x14000" JPEG is truncated
        problem = jpeg.structure_problem(data, width, height, limits.max_jpeg_scans)
        if problem:
            return Encoded(ref, format=fmt, error=problem)
    if width * height > limits.max_pixels:
        return Encoded(ref, format=fmt, error=f"image too large: {width}x{height}")
    return Encoded(ref, data=data, format=fmt, width=width, height=height, orientation=orientation, mode=mode)


_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_TEXT_ALLOWED = 16  # chunks; real files carry a handful (a few are Stable Diffusion's prompts)


def png_without_text(data: bytes) -> bytes:
    """The PNG without its text chunks when it has many: libpng inflates every zTXt into a cache
    of up to 1,000 chunks of up to 8 MB, so 3 MB of them costs gigabytes in any decoder. Pixels
    never depend on text, and the provenance stage reads the original bytes."""
    chunks, pos, texts = [], 8, 0
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if data[pos + 4 : pos + 8] in _PNG_TEXT:
            texts += 1
        else:
            chunks.append((pos, end))
        if data[pos + 4 : pos + 8] == b"IEND" or end > len(data):
            break
        pos = end
    if texts <= _PNG_TEXT_ALLOWED:
        return data
    return data[:8] + b"".join(data[start:end] for start, end in chunks)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return value if value in range(1, 9) else 1
    except Exception:  # a broken EXIF block: Pillow's exif_transpose ignores it too
        return 1


def _refused_from_head(ref: ImageRef, head: bytes, limits: Limits) -> Encoded | None:
    """A refusal decided from the first bytes of a longer file, or None to read the rest."""
    if not head.startswith(_SIGNATURES) and head[4:8] != b"ftyp":
        return Encoded(ref, error="not an image")
    try:
        with Image.open(io.BytesIO(head)) as image:
            width, height, fmt = image.width, image.height, image.format
    except Exception:  # a header longer than the first bytes: probed again whole
        return None
    if width * height > limits.max_pixels:
        return Encoded(ref, format=fmt, error=f"image too large: {width}x{height}")
    return None


Opener = Callable[[ImageRef], contextlib.AbstractContextManager[BinaryIO]]


def load(ref: ImageRef, limits: Limits = DEFAULT_LIMITS, opener: Opener = open_local) -> Encoded:
    """Read and probe one file, never more than `limits.max_bytes` of it: its size is checked
    from the listing before opening, its header from the first 64 KiB before reading the rest.
    Every failure becomes an error, never an exception."""
    if ref.size is not None and ref.size > limits.max_bytes:
        return Encoded(ref, error=too_many_bytes(ref.size, limits))
    try:
        with opener(ref) as stream:
            head = stream.read(HEAD_BYTES)
            if len(head) == HEAD_BYTES:
                refused = _refused_from_head(ref, head, limits)
                if refused is not None:
                    return refused
            data = head + stream.read(limits.max_bytes + 1 - len(head))
    except OSError as exc:
        return Encoded(ref, error=describe_os_error(exc))
    if len(data) > limits.max_bytes:  # the listing said less, or could not say
        return Encoded(ref, error=too_many_bytes(None, limits))
    return probe(ref, data, limits)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


def pillow_decode(item: Encoded, pre: Preprocess, reduced: bool = False) -> Decoded:
    """Decode on the CPU with the transform training uses; explains failures in a few words.

    JPEGs go to libjpeg-turbo in strict mode (damaged data is an error, not grey pixels);
    `reduced` decodes a large one at 1/2, 1/4 or 1/8 size (DCT scaling, never below twice the
    resize target): several times faster when the photo is far larger than the model input.
    Other formats, and JPEGs in colour spaces libjpeg-turbo cannot make RGB (CMYK), go to Pillow."""
    try:
        if item.format in ("JPEG", "MPO"):
            try:
                return _jpeg_decode(item, pre, reduced)
            except LookupError:
                pass
        image = open_upright(item.data)
        width, height = image.size
        return Decoded(item.ref, center_crop(resized_rgb(image, pre), pre), width, height)
    except Exception as exc:
        return Decoded(item.ref, None, error=_decode_error(item.format, exc))


def _jpeg_decode(item: Encoded, pre: Preprocess, reduced: bool) -> Decoded:
    stored = (item.width, item.height)
    turned = item.orientation in TURNED
    width, height = (item.height, item.width) if turned else stored
    if reduced:
        array = jpeg.decode_rgb(item.data, reduced_min_size(stored, item.orientation, pre))
        pixels = finish_reduced(array, stored, item.orientation, pre)
    else:
        pixels = resized_rgb(upright(jpeg.decode_rgb(item.data), item.orientation), pre)
    return Decoded(item.ref, center_crop(pixels, pre), width, height)


def wants_reduced_decode(item: Encoded, pre: Preprocess) -> bool:
    """JPEGs at least four times the resize target on their short side decode at 1/2 or less
    (unless their aspect ratio is extreme: those are cut first, at full size)."""
    return (
        item.format in ("JPEG", "MPO")
        and min(item.width or 0, item.height or 0) >= 4 * pre.resize_size
        and not is_extreme(item)
    )


def is_extreme(item: Encoded) -> bool:
    return aspect_box(item.width or 1, item.height or 1) is not None


def _decode_error(fmt: str | None, exc: BaseException) -> str:
    text = _short(exc)
    kind = fmt or "image"
    if isinstance(exc, jpeg.TruncatedJPEG | EOFError) or "truncated" in text.lower():
        return f"truncated {kind}"
    return f"corrupt {kind}: {text}"


class DaliDecoder:
    """Decodes and resizes batches with DALI: CPU operators, or `mixed` (nvJPEG) on a GPU.

    The pipeline is built when a batch first needs it: importing DALI and building cost
    ~0.6 s, which a scan whose files all take the Pillow path never pays."""

    def __init__(self, pre: Preprocess, batch_size: int, device: str = "cpu", threads: int = 1) -> None:
        self.pre, self.device, self.batch_size, self.threads = pre, device, batch_size, threads
        self._pipe = None
        self._lock = threading.Lock()

    @property
    def pipe(self):
        with self._lock:
            if self._pipe is None:
                self._pipe = _build_pipeline(self.pre, self.batch_size, self.device, self.threads)
            return self._pipe

    def run(self, blobs: Sequence[bytes]) -> list[tuple[np.ndarray, int, int]]:
        """Resized uint8 HWC arrays and the decoded (oriented) height and width; raises if any fails."""
        self.pipe.feed_input("encoded", [np.frombuffer(b, dtype=np.uint8) for b in blobs])
        images, shapes = self.pipe.run()
        if self.device == "gpu":
            images = images.as_cpu()
        return [(np.array(images[i]), *map(int, np.array(shapes[i])[:2])) for i in range(len(blobs))]


def _build_pipeline(pre: Preprocess, batch_size: int, device: str, threads: int):
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    size = float(pre.resize_size)

    @pipeline_def(
        batch_size=batch_size,
        num_threads=max(1, threads),
        device_id=0 if device == "gpu" else None,
        prefetch_queue_depth=1,
        exec_dynamic=True,
    )
    def pipeline():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, no_copy=False)
        image = fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
        shape = image.shape(dtype=types.FLOAT)
        height, width = shape[0], shape[1]
        # Same arithmetic as Preprocess.resize_shape, so Pillow and DALI agree on every size.
        scale = size / dmath.min(height, width)
        new_h = dmath.max(dmath.floor(height * scale + 0.5), size)
        new_w = dmath.max(dmath.floor(width * scale + 0.5), size)
        resized = fn.resize(image, size=fn.stack(new_h, new_w), interp_type=types.INTERP_LINEAR, antialias=True)
        return resized, shape

    pipe = pipeline()
    pipe.build()
    return pipe


# Peak bytes a pixel costs while decoding, by path and Pillow mode: the decoded image plus the
# conversion that follows (grey stays grey until resized; RGBA and CMYK are converted to RGB whole).
_PILLOW_BYTES = {"1": 2, "L": 2, "LA": 3, "La": 3, "P": 4, "PA": 5, "RGB": 4, "I": 9, "F": 9}
_PILLOW_DEFAULT_BYTES = 7  # RGBA, CMYK, YCbCr, ...
_JPEG_BYTES = 4  # RGB array, plus its upright copy when EXIF turns it
_DALI_BYTES = 6  # decoded RGB plus the resize's working buffers


def decode_cost(item: Encoded, path: str) -> int:
    """Bytes of memory decoding `item` takes at its peak on `path` ("dali", "jpeg", "jpeg-reduced", "pillow")."""
    pixels = (item.width or 0) * (item.height or 0)
    if path == "jpeg-reduced":
        return pixels * 3 // 4  # at most half size each way
    if path == "jpeg":
        return pixels * _JPEG_BYTES
    if path == "dali":
        return pixels * _DALI_BYTES
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


class _Timed:
    """Runs a function after taking its memory budget, noting when it really started, so a
    deadline counts decode time, not the wait for a thread or for the budget."""

    def __init__(self, budget: MemoryBudget, cost: int, fn: Callable, *args) -> None:
        self.budget, self.cost, self.fn, self.args = budget, cost, fn, args
        self.started: float | None = None

    def __call__(self):
        with self.budget.hold(self.cost):
            self.started = time.monotonic()
            return self.fn(*self.args)

    def result(self, future: Future, timeout: float):
        """The function's result, or raises TimeoutError once it has run `timeout` seconds."""
        while True:
            wait = 0.05 if self.started is None else self.started + timeout - time.monotonic()
            try:
                return future.result(timeout=max(wait, 0))
            except FutureTimeout:
                if self.started is not None and time.monotonic() >= self.started + timeout:
                    raise TimeoutError from None


class BatchDecoder:
    """The decode stage: a list of `Encoded` in, one `Decoded` per item out, in order.

    On the CPU, JPEGs go to libjpeg-turbo (strict, DCT-scaled when large) and the other formats
    DALI reads to DALI; on a GPU, DALI decodes everything it reads with nvJPEG after a strict
    CPU check of each JPEG. Formats DALI lacks (GIF, HEIC, AVIF) and images of extreme aspect
    ratio take the Pillow path, and so do large non-JPEGs on the CPU (`limits.dali_max_pixels`).
    Bounds, whatever the input: the memory decoding takes at once stays within
    `limits.decode_bytes`, and a file that decodes longer than `limits.decode_timeout`
    becomes an error row (its thread finishes in the background, holding its budget; native code
    cannot be stopped) while the scan goes on."""

    def __init__(
        self,
        pre: Preprocess,
        batch_size: int,
        device: str = "cpu",
        threads: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.pre, self.limits, self.device, self.batch_size = pre, limits, device, batch_size
        self.threads = threads or max(1, (os.cpu_count() or 1))
        self.dali = DaliDecoder(pre, batch_size, device, self.threads)
        self.budget = MemoryBudget(limits.decode_bytes)
        self.reduce_on_cpu = device == "cpu"  # DCT-scaled JPEG decoding (the bench turns it off)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pillow")
        self.dali_runner = ThreadPoolExecutor(1, thread_name_prefix="dali")

    def decode(self, items: Sequence[Encoded]) -> list[Decoded]:
        out: list[Decoded | None] = [None] * len(items)
        dali_idx, cpu_jobs = [], []
        for i, item in enumerate(items):
            if item.format == "PNG" and item.data:
                item.data = png_without_text(item.data)  # provenance has read the text already
            if item.error:
                out[i] = Decoded(item.ref, None, error=item.error)
            elif self._takes_dali(item):
                dali_idx.append(i)
            else:
                reduced = self.reduce_on_cpu and wants_reduced_decode(item, self.pre)
                cpu_jobs.append((i, self._cpu_job(item, reduced)))
        if self.device == "gpu":
            dali_idx = self._strict_jpeg_check(items, dali_idx, out)
        for group in self._groups(items, dali_idx):
            self._decode_dali(items, group, out)
        for i, job in cpu_jobs:
            out[i] = self._collect(items[i], *job)
        return out  # type: ignore[return-value]

    def _takes_dali(self, item: Encoded) -> bool:
        if item.format not in DALI_FORMATS or is_extreme(item):
            return False
        if item.format in ("JPEG", "MPO"):
            return self.device == "gpu"
        return (item.width or 0) * (item.height or 0) <= self.limits.dali_max_pixels

    def _submit(self, item: Encoded, path: str, fn: Callable, *args) -> tuple[_Timed, Future]:
        """Queue CPU work on one item, costed by the path it takes (see `decode_cost`)."""
        timed = _Timed(self.budget, self.budget.cost([item], path), fn, *args)
        return timed, self.pool.submit(timed)

    def _cpu_job(self, item: Encoded, reduced: bool = False) -> tuple[_Timed, Future]:
        strict_jpeg = item.format in ("JPEG", "MPO") and item.mode in ("RGB", "L")
        path = ("jpeg-reduced" if reduced else "jpeg") if strict_jpeg else "pillow"
        return self._submit(item, path, pillow_decode, item, self.pre, reduced)

    def _collect(self, item: Encoded, timed: _Timed, future: Future) -> Decoded:
        try:
            return timed.result(future, self.limits.decode_timeout)
        except TimeoutError:
            self._abandon_pool()
            return Decoded(item.ref, None, error=f"decode timed out after {self.limits.decode_timeout:g} s")

    def _abandon_pool(self) -> None:
        """A thread stuck in native code cannot be stopped: leave it, and queue new work elsewhere."""
        self.pool.shutdown(wait=False)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pillow")

    def _strict_jpeg_check(self, items: Sequence[Encoded], idx: list[int], out: list) -> list[int]:
        """nvJPEG fills damaged data with grey: check JPEGs strictly (1/8 scale) first."""
        checks = []
        for i in idx:
            if items[i].format in ("JPEG", "MPO"):
                checks.append((i, self._submit(items[i], "jpeg-reduced", _jpeg_intact, items[i])))
        for i, job in checks:
            verdict = self._collect(items[i], *job)
            if verdict.error is not None:
                out[i] = verdict
        return [i for i in idx if out[i] is None]

    def _groups(self, items: Sequence[Encoded], idx: list[int]) -> Iterator[list[int]]:
        """DALI runs whose memory fits the budget (at most the batch size each)."""
        group, held = [], 0
        for i in idx:
            cost = self.budget.cost([items[i]], "dali")
            if group and (held + cost > self.budget.capacity or len(group) >= self.batch_size):
                yield group
                group, held = [], 0
            group.append(i)
            held += cost
        if group:
            yield group

    def _decode_dali(self, items: Sequence[Encoded], idx: list[int], out: list) -> None:
        """Decode a group; on failure split it in halves so each bad file ends up alone."""
        self.dali.pipe  # noqa: B018 -- a failed build fails the scan, not these files
        timed = _Timed(
            self.budget, self.budget.cost([items[i] for i in idx], "dali"), self.dali.run, [items[i].data for i in idx]
        )
        try:
            results = timed.result(self.dali_runner.submit(timed), self.limits.decode_timeout)
        except TimeoutError:
            # The pipeline is busy until its run ends: leave it, and decode each file alone, so
            # only the slow one times out.
            self.dali_runner.shutdown(wait=False)
            self.dali_runner = ThreadPoolExecutor(1, thread_name_prefix="dali")
            self.dali = DaliDecoder(self.pre, self.batch_size, self.device, self.threads)
            jobs = [(i, self._cpu_job(items[i])) for i in idx]
            for i, job in jobs:
                out[i] = self._collect(items[i], *job)
            return
        except Exception:
            if len(idx) == 1:
                out[idx[0]] = self._collect(items[idx[0]], *self._cpu_job(items[idx[0]]))
                return
            half = len(idx) // 2
            self._decode_dali(items, idx[:half], out)
            self._decode_dali(items, idx[half:], out)
            return
        for i, (array, height, width) in zip(idx, results):
            out[i] = Decoded(items[i].ref, center_crop(array, self.pre), width, height)


def _jpeg_intact(item: Encoded) -> Decoded:
    """An error Decoded when a strict 1/8-scale decode fails, else an empty one."""
    try:
        jpeg.decode_rgb(item.data, (1, 1))
    except LookupError:
        pass
    except Exception as exc:
        return Decoded(item.ref, None, error=_decode_error(item.format, exc))
    return Decoded(item.ref, None)
