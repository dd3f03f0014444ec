"""Decode: encoded bytes -> model-ready pixels, in DALI batches, one bad file never costing a batch.

Every file is first probed from its header with Pillow (cheap): that refuses decompression
bombs before any pixel is decoded and names non-images. DALI then decodes and resizes the
batch (on the GPU when there is one); when DALI fails a batch, it is split in halves until
the bad files are alone, and each of those goes to Pillow, which either decodes it (formats
DALI lacks, such as GIF, HEIC and AVIF) or says what is wrong with it.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from aidetect.preprocess import Preprocess, center_crop, open_rgb, reduced_jpeg_rgb, resized_rgb
from aidetect.provenance import NONE as NO_PROVENANCE
from aidetect.provenance import Provenance
from aidetect.sources import ImageRef

DEFAULT_MAX_PIXELS = 200_000_000
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


def read_file(ref: ImageRef) -> bytes:
    # O_NONBLOCK: a FIFO named like an image must not hang the scan; it is refused below.
    fd = os.open(ref.path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile("not a regular file")
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


def probe(ref: ImageRef, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Encoded:
    """Check the header only: is it an image, of what format, and is it small enough to decode."""
    if not data:
        return Encoded(ref, error="empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt = image.width, image.height, image.format
    except UnidentifiedImageError:
        return Encoded(ref, error="not an image")
    except Exception as exc:  # Pillow raises many types on malformed headers
        return Encoded(ref, error=f"bad image header: {_short(exc)}")
    if width * height > max_pixels:
        return Encoded(ref, format=fmt, error=f"image too large: {width}x{height}")
    return Encoded(ref, data=data, format=fmt, width=width, height=height)


def load(ref: ImageRef, max_pixels: int = DEFAULT_MAX_PIXELS, reader=read_file) -> Encoded:
    """Read and probe one file; every failure becomes an error, never an exception."""
    try:
        data = reader(ref)
    except OSError as exc:
        return Encoded(ref, error=describe_os_error(exc))
    return probe(ref, data, max_pixels)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


def pillow_decode(item: Encoded, pre: Preprocess, reduced: bool = False) -> Decoded:
    """Decode with Pillow, the same transform training uses; explains failures in a few words.

    `reduced` decodes a large JPEG at 1/2, 1/4 or 1/8 size (DCT scaling, never below twice the
    resize target): several times faster when the photo is far larger than the model input."""
    try:
        if reduced:
            array, width, height = reduced_jpeg_rgb(item.data, pre)
        else:
            image = open_rgb(item.data)
            width, height = image.size
            array = resized_rgb(image, pre)
        return Decoded(item.ref, center_crop(array, pre), width, height)
    except Exception as exc:
        return Decoded(item.ref, None, error=_decode_error(item.format, exc))


def wants_reduced_decode(item: Encoded, pre: Preprocess) -> bool:
    """JPEGs at least four times the resize target on their short side decode at 1/2 or less."""
    return item.format in ("JPEG", "MPO") and min(item.width or 0, item.height or 0) >= 4 * pre.resize_size


def _decode_error(fmt: str | None, exc: BaseException) -> str:
    text = _short(exc)
    kind = fmt or "image"
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated {kind}"
    return f"corrupt {kind}: {text}"


class DaliDecoder:
    """Decodes and resizes batches with DALI: CPU operators, or `mixed` (nvJPEG) on a GPU.

    The pipeline is built when a batch first needs it: importing DALI and building cost
    ~0.6 s, which a scan whose files all take the reduced-size path never pays."""

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


class BatchDecoder:
    """The decode stage: a list of `Encoded` in, one `Decoded` per item out, in order.

    DALI decodes the batch (nvJPEG on a GPU). On the CPU, large JPEGs go to Pillow's
    DCT-scaled decode instead, which DALI's CPU decoder lacks; formats DALI cannot read go
    to Pillow too. Pillow work runs on a small thread pool (it releases the GIL)."""

    def __init__(self, pre: Preprocess, batch_size: int, device: str = "cpu", threads: int | None = None) -> None:
        self.pre = pre
        threads = threads or max(1, (os.cpu_count() or 1))
        self.dali = DaliDecoder(pre, batch_size, device, threads)
        self.reduce_on_cpu = device == "cpu"
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="pillow")

    def decode(self, items: Sequence[Encoded]) -> list[Decoded]:
        out: list[Decoded | None] = [None] * len(items)
        dali_idx, pillow_jobs = [], []
        for i, item in enumerate(items):
            if item.error:
                out[i] = Decoded(item.ref, None, error=item.error)
            elif self.reduce_on_cpu and wants_reduced_decode(item, self.pre):
                pillow_jobs.append((i, self.pool.submit(pillow_decode, item, self.pre, True)))
            elif item.format in DALI_FORMATS:
                dali_idx.append(i)
            else:
                pillow_jobs.append((i, self.pool.submit(pillow_decode, item, self.pre)))
        self._decode_dali(items, dali_idx, out)
        for i, job in pillow_jobs:
            out[i] = job.result()
        return out  # type: ignore[return-value]

    def _decode_dali(self, items: Sequence[Encoded], idx: list[int], out: list) -> None:
        """Decode a group; on failure split it in halves so each bad file ends up alone."""
        if not idx:
            return
        self.dali.pipe  # noqa: B018 -- a failed build fails the scan, not these files
        try:
            results = self.dali.run([items[i].data for i in idx])
        except Exception:
            if len(idx) == 1:
                out[idx[0]] = pillow_decode(items[idx[0]], self.pre)
                return
            half = len(idx) // 2
            self._decode_dali(items, idx[:half], out)
            self._decode_dali(items, idx[half:], out)
            return
        for i, (array, height, width) in zip(idx, results):
            out[i] = Decoded(items[i].ref, center_crop(array, self.pre), width, height)
