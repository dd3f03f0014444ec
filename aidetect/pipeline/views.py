"""Views: which pixels of an image the model sees, as one stack of `input_size` windows.

`resize` (the default, and every model made before views existed): the shorter side resized to
the input size, then the centre square: one window. Fast, but a 4000-pixel photo shrunk to 224
keeps none of the top-octave traces generators leave.

`crop`: windows cut at native resolution with no resize, `Preprocess.crops` of them spread over
the image (1 = centre, 5 = corners and centre, 4, 9 or 16 = an even grid). Images smaller than a
window on a side are first brought up to it (their shorter side resized to the input size), and
extreme aspect ratios are cut to their centre 8:1 part, as in the resize view. Windows that
coincide (an image barely larger than one) are scored once.

Training, the CPU decode path and DALI all take their windows from `window_offsets`, so a model
sees the same tensors wherever its image is decoded.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from PIL import Image

from aidetect.errors import UsageError
from aidetect.pipeline.preprocess import (
    TURNED,
    WINDOW_COUNTS,
    Preprocess,
    aspect_box,
    center_crop,
    open_upright,
    resized_rgb,
    upright,
)

VIEWS = ("resize", "crop")


def with_crops(pre: Preprocess, crops: int | None) -> Preprocess:
    """The model's preprocessing with the window count `--crops` asks for (None: the model's own)."""
    if crops is None or crops == pre.crops:
        return pre
    if pre.view != "crop":
        raise UsageError(
            f"--crops {crops}: this model uses the resize view (the whole image, resized, in one window); "
            "windows need a model trained with --view crop"
        )
    if crops not in WINDOW_COUNTS:
        raise UsageError(f"--crops {crops}: choose one of {', '.join(map(str, WINDOW_COUNTS))}")
    return replace(pre, crops=crops)


def window_offsets(height: int, width: int, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners (top, left) of `count` windows of `size` spread over an image at least
    `size` on each side; distinct, in a fixed order (row by row, centre last for 5)."""
    bottom, right = height - size, width - size
    if count == 1:
        spots = [(bottom // 2, right // 2)]
    elif count == 5:
        spots = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    else:
        side = math.isqrt(count)
        spots = [(bottom * i // (side - 1), right * j // (side - 1)) for i in range(side) for j in range(side)]
    return list(dict.fromkeys(spots))


def needs_base(width: int, height: int, pre: Preprocess) -> bool:
    """Whether the crop view must resize or cut the image before its windows: smaller than a
    window on a side, or of extreme aspect ratio. Otherwise windows come straight from the decode."""
    return min(width, height) < pre.input_size or aspect_box(width, height) is not None


def window_base(image: Image.Image, pre: Preprocess) -> Image.Image:
    """The upright image the crop view's windows are cut from (see `needs_base`)."""
    box = aspect_box(image.width, image.height)
    if box is not None:
        image = image.crop(box)
    if min(image.width, image.height) < pre.input_size:
        height, width = pre.resize_shape(image.height, image.width)
        image = image.resize((width, height), Image.BILINEAR)
    return image


def window_stack(array: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 (windows, size, size, 3) cut from an upright array (HW or HWC, a view is fine)."""
    size = pre.input_size
    offsets = window_offsets(array.shape[0], array.shape[1], size, pre.crops)
    stack = np.stack([array[top : top + size, left : left + size] for top, left in offsets])
    if stack.ndim == 3:  # grey: made RGB only now, window by window
        stack = np.repeat(stack[..., None], 3, axis=3)
    return stack


def view_base(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """The upright array a view's windows are cut from: resized RGB (resize view), or the native
    pixels, grey kept grey (crop view). Training caches it and cuts random windows from it."""
    if pre.view == "resize":
        return resized_rgb(image, pre)
    return np.asarray(window_base(image, pre))


def view_windows(base: np.ndarray, pre: Preprocess) -> np.ndarray:
    """The evaluation windows of a `view_base` array: uint8 (windows, size, size, 3)."""
    if pre.view == "resize":
        return center_crop(base, pre)[None]
    return window_stack(base, pre)


def model_windows(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """The model's input for an upright Pillow image (RGB or L), as a stack of windows."""
    return view_windows(view_base(image, pre), pre)


def upright_view(array: np.ndarray, orientation: int) -> np.ndarray:
    """A decode in stored orientation seen upright, as a numpy view (no copy): windows are then
    cut from it and only they are copied, not the 12 MP photo."""
    turns = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return turns[orientation](array) if orientation in turns else array


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) as displayed, from the stored size and the EXIF orientation."""
    return (height, width) if orientation in TURNED else (width, height)


def decoded_windows(array: np.ndarray, orientation: int, pre: Preprocess) -> np.ndarray:
    """The model's input from a full-size decode in stored orientation (the CPU JPEG path)."""
    if pre.view == "crop" and not needs_base(array.shape[1], array.shape[0], pre):
        return window_stack(upright_view(array, orientation), pre)
    return model_windows(upright(array, orientation), pre)


def reference_input(source: str | bytes, pre: Preprocess) -> np.ndarray:
    """The evaluation transform in Pillow, the reference the other paths are tested against."""
    return model_windows(open_upright(source), pre)
