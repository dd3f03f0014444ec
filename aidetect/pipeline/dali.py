"""DALI: batches of encoded images decoded and resized by one pipeline, on the CPU or a GPU."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from aidetect.pipeline.preprocess import (
    Preprocess,
)


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
