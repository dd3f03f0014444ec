"""Decode: probed images -> model-ready pixels, in batches, one bad file never costing a batch.

`BatchDecoder` decodes and resizes: DALI batches (on the GPU when there is one), strict
libjpeg-turbo for JPEGs on the CPU, Pillow for the rest. When DALI fails a batch, it is split in
halves until the bad files are alone, and each of those goes to the CPU path, which either
decodes it or says what is wrong with it. Memory and time per image are bounded (budget.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from aidetect.pipeline import jpeg
from aidetect.pipeline.budget import MemoryBudget, TimedJob
from aidetect.pipeline.dali import DaliDecoder
from aidetect.pipeline.limits import Limits, usable_cores
from aidetect.pipeline.preprocess import (
    Preprocess,
    aspect_box,
    center_crop,
    finish_reduced,
    open_upright,
    reduced_min_size,
)
from aidetect.pipeline.read import DEFAULT_LIMITS, Encoded, short_message
from aidetect.pipeline.views import decoded_windows, model_windows, needs_base, upright_size
from aidetect.pipeline.watermark import WatermarkMatch, best_match
from aidetect.records import ImageRef

# Formats the DALI decoder reads; the rest (GIF, HEIC, AVIF, ...) are decoded by Pillow.
DALI_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})


@dataclass(slots=True)
class Decoded:
    """Model-ready pixels (uint8, windows x input_size x input_size x 3: one window in the resize
    view) or the reason there are none."""

    ref: ImageRef
    pixels: np.ndarray | None
    width: int | None = None  # as displayed, after EXIF orientation
    height: int | None = None
    error: str | None = None
    watermark: WatermarkMatch | None = None  # read from the same full-size decode, when asked


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


def pillow_decode(item: Encoded, pre: Preprocess, reduced: bool = False) -> Decoded:
    """Decode on the CPU with the transform training uses; explains failures in a few words.

    JPEGs go to libjpeg-turbo in strict mode (damaged data is an error, not grey pixels);
    `reduced` decodes a large one at 1/2, 1/4 or 1/8 size (DCT scaling, never below twice the
    resize target): several times faster when the photo is far larger than the model input.
    Other formats, and JPEGs in colour spaces libjpeg-turbo cannot make RGB (CMYK), go to Pillow.
    A file that `wants_watermark` is decoded at full size and read for the watermark from that
    same decode, so it is decoded once."""
    try:
        if item.format in ("JPEG", "MPO"):
            try:
                return _jpeg_decode(item, pre, reduced and not item.wants_watermark)
            except LookupError:
                pass
        image = open_upright(item.data)
        width, height = image.size
        mark = best_match(np.asarray(image)) if item.wants_watermark and image.mode == "RGB" else None
        return Decoded(item.ref, model_windows(image, pre), width, height, watermark=mark)
    except Exception as exc:
        return Decoded(item.ref, None, error=_decode_error(item.format, exc))


def _jpeg_decode(item: Encoded, pre: Preprocess, reduced: bool) -> Decoded:
    stored = (item.width, item.height)
    width, height = upright_size(*stored, item.orientation)
    if reduced:
        array = jpeg.decode_rgb(item.data, reduced_min_size(stored, item.orientation, pre))
        pixels = finish_reduced(array, stored, item.orientation, pre)
        return Decoded(item.ref, center_crop(pixels, pre)[None], width, height)
    array = jpeg.decode_rgb(item.data)  # stored orientation: where the watermark was written
    mark = best_match(array) if item.wants_watermark else None
    return Decoded(item.ref, decoded_windows(array, item.orientation, pre), width, height, watermark=mark)


def wants_reduced_decode(item: Encoded, pre: Preprocess) -> bool:
    """JPEGs at least four times the resize target on their short side decode at 1/2 or less
    (unless their aspect ratio is extreme: those are cut first, at full size). Never in the crop
    view: its windows are the native pixels."""
    return (
        pre.view == "resize"
        and item.format in ("JPEG", "MPO")
        and min(item.width or 0, item.height or 0) >= 4 * pre.resize_size
        and not is_extreme(item)
    )


def is_extreme(item: Encoded) -> bool:
    return aspect_box(item.width or 1, item.height or 1) is not None


def _decode_error(fmt: str | None, exc: BaseException) -> str:
    text = short_message(exc)
    kind = fmt or "image"
    if isinstance(exc, jpeg.TruncatedJPEG | EOFError) or "truncated" in text.lower():
        return f"truncated {kind}"
    return f"corrupt {kind}: {text}"


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
        self.threads = threads or usable_cores()
        self.dali = DaliDecoder(pre, batch_size, device, self.threads)
        self.budget = MemoryBudget(limits.decode_bytes)
        self.reduce_on_cpu = device == "cpu"  # DCT-scaled JPEG decoding (the bench turns it off)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pillow")
        self.dali_runner = ThreadPoolExecutor(1, thread_name_prefix="dali")
        self._queued: list[TimedJob] = []  # CPU jobs submitted and not yet collected

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
            out[i] = self._collect(items[i], job)
        return out  # type: ignore[return-value]

    def _takes_dali(self, item: Encoded) -> bool:
        if item.format not in DALI_FORMATS or is_extreme(item) or item.wants_watermark:
            return False
        if self.pre.view == "crop" and needs_base(item.width or 0, item.height or 0, self.pre):
            return False  # smaller than a window: resized first, on the CPU (tiny, so cheap)
        if item.format in ("JPEG", "MPO"):
            return self.device == "gpu"
        return (item.width or 0) * (item.height or 0) <= self.limits.dali_max_pixels

    def _submit(self, item: Encoded, path: str, fn: Callable, *args) -> TimedJob:
        """Queue CPU work on one item, costed by the path it takes (see `decode_cost`)."""
        timed = TimedJob(self.budget, self.budget.cost([item], path), fn, *args)
        timed.future = self.pool.submit(timed)
        self._queued.append(timed)
        return timed

    def _cpu_job(self, item: Encoded, reduced: bool = False) -> TimedJob:
        if item.wants_watermark:  # read from the full-size decode: never the reduced one
            path, reduced = "watermark", False
        elif item.format in ("JPEG", "MPO") and item.mode in ("RGB", "L"):
            path = "jpeg-reduced" if reduced else "jpeg"
        else:
            path = "pillow"
        return self._submit(item, path, pillow_decode, item, self.pre, reduced)

    def _collect(self, item: Encoded, timed: TimedJob) -> Decoded:
        try:
            return timed.result(self.limits.decode_timeout)
        except TimeoutError:
            self._abandon_pool()
            return Decoded(item.ref, None, error=f"decode timed out after {self.limits.decode_timeout:g} s")
        finally:
            self._queued.remove(timed)

    def _abandon_pool(self) -> None:
        """A thread stuck in native code cannot be stopped: leave it, and move the jobs still
        queued behind it to a fresh pool (else they would wait for the stuck decode to end)."""
        self.pool.shutdown(wait=False)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pillow")
        for timed in self._queued:
            if timed.future.cancel():
                timed.future = self.pool.submit(timed)

    def _strict_jpeg_check(self, items: Sequence[Encoded], idx: list[int], out: list) -> list[int]:
        """nvJPEG fills damaged data with grey: check JPEGs strictly (1/8 scale) first."""
        checks = []
        for i in idx:
            if items[i].format in ("JPEG", "MPO"):
                checks.append((i, self._submit(items[i], "jpeg-reduced", _jpeg_intact, items[i])))
        for i, job in checks:
            verdict = self._collect(items[i], job)
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
        blobs = [items[i].data for i in idx]
        shapes = [upright_size(items[i].width, items[i].height, items[i].orientation)[::-1] for i in idx]
        timed = TimedJob(self.budget, self.budget.cost([items[i] for i in idx], "dali"), self.dali.run, blobs, shapes)
        try:
            timed.future = self.dali_runner.submit(timed)
            results = timed.result(self.limits.decode_timeout)
        except TimeoutError:
            # The pipeline is busy until its run ends: leave it, and decode each file alone, so
            # only the slow one times out.
            self.dali_runner.shutdown(wait=False)
            self.dali_runner = ThreadPoolExecutor(1, thread_name_prefix="dali")
            self.dali = DaliDecoder(self.pre, self.batch_size, self.device, self.threads)
            jobs = [(i, self._cpu_job(items[i])) for i in idx]
            for i, job in jobs:
                out[i] = self._collect(items[i], job)
            return
        except Exception:
            if len(idx) == 1:
                out[idx[0]] = self._collect(items[idx[0]], self._cpu_job(items[idx[0]]))
                return
            half = len(idx) // 2
            self._decode_dali(items, idx[:half], out)
            self._decode_dali(items, idx[half:], out)
            return
        for i, shape, (windows, height, width) in zip(idx, shapes, results):
            if self.pre.view == "crop" and (height, width) != shape:  # the windows are not where we meant
                out[i] = self._collect(items[i], self._cpu_job(items[i]))
                continue
            out[i] = Decoded(items[i].ref, windows, width, height)


def _jpeg_intact(item: Encoded) -> Decoded:
    """An error Decoded when a strict 1/8-scale decode fails, else an empty one."""
    try:
        jpeg.decode_rgb(item.data, (1, 1))
    except LookupError:
        pass
    except Exception as exc:
        return Decoded(item.ref, None, error=_decode_error(item.format, exc))
    return Decoded(item.ref, None)
