"""DALI: batches of encoded images decoded and cut into model windows by one pipeline, on the CPU
or a GPU: resized and centre-cropped (the resize view), or sliced at native resolution (crop)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from aidetect.pipeline.preprocess import Preprocess, center_crop
from aidetect.pipeline.views import window_offsets


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

    def run(self, blobs: Sequence[bytes], shapes: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, int, int]]:
        """Window stacks (uint8, windows x size x size x 3) and the decoded (upright) height and
        width of each image; raises if any fails. `shapes` are the upright (height, width) the
        headers say, which place the crop view's windows (a decode of another size fails)."""
        self.pipe.feed_input("encoded", [np.frombuffer(b, dtype=np.uint8) for b in blobs])
        if self.pre.view == "crop":
            offsets = [window_offsets(h, w, self.pre.input_size, self.pre.crops) for h, w in shapes]
            self.pipe.feed_input("anchors", [_padded(o, self.pre.crops) for o in offsets])
        *outputs, decoded_shapes = self.pipe.run()
        if self.device == "gpu":
            outputs = [out.as_cpu() for out in outputs]
        results = []
        for i in range(len(blobs)):
            height, width = map(int, np.array(decoded_shapes[i])[:2])
            if self.pre.view == "crop":
                windows = np.stack([np.array(outputs[j][i]) for j in range(len(offsets[i]))])
            else:
                windows = center_crop(np.array(outputs[0][i]), self.pre)[None]
            results.append((windows, height, width))
        return results


def _padded(offsets: list[tuple[int, int]], count: int) -> np.ndarray:
    """The graph slices `count` windows from every image; images with fewer distinct ones repeat
    their last (and the copy is dropped after the run)."""
    rows = offsets + [offsets[-1]] * (count - len(offsets))
    return np.asarray(rows, dtype=np.int32)


def _build_pipeline(pre: Preprocess, batch_size: int, device: str, threads: int):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

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
        if pre.view == "crop":
            return (*_window_cuts(image, pre), shape)
        return _resized(image, shape, pre), shape

    pipe = pipeline()
    pipe.build()
    return pipe


def _resized(image, shape, pre: Preprocess):
    """The resize view: the shorter side to `resize_size`, with Preprocess.resize_shape's
    arithmetic, so Pillow and DALI agree on every size."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    size = float(pre.resize_size)
    height, width = shape[0], shape[1]
    scale = size / dmath.min(height, width)
    new_h = dmath.max(dmath.floor(height * scale + 0.5), size)
    new_w = dmath.max(dmath.floor(width * scale + 0.5), size)
    return fn.resize(image, size=fn.stack(new_h, new_w), interp_type=types.INTERP_LINEAR, antialias=True)


def _window_cuts(image, pre: Preprocess) -> list:
    """The crop view: `crops` windows sliced from one decode at the anchors fed beside the bytes
    (never resized: images smaller than a window, or of extreme aspect, take the CPU path)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    anchors = fn.external_source(name="anchors", dtype=types.INT32, ndim=2, no_copy=False)
    window = np.array([pre.input_size, pre.input_size], dtype=np.int32)
    return [
        fn.slice(
            image,
            anchors[j],
            window,
            normalized_anchor=False,
            normalized_shape=False,
            axis_names="HW",
            out_of_bounds_policy="error",
        )
        for j in range(pre.crops)
    ]
