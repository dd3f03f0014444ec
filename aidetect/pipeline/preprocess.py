"""The one definition of how an image becomes a model input.

Training (Pillow) and scanning (DALI) both take their output sizes and crop offsets
from `Preprocess` (through `views.py`, which cuts the windows), and the ONNX file stores it, so a model sees the same tensor in
training, in evaluation and in a scan.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Images are probed and refused by our own pixel limit before decoding (see read.py).
Image.MAX_IMAGE_PIXELS = None
# Pillow refuses any PNG text or ICC chunk inflating past 1 MiB, so a valid PNG with a 2 MiB ICC
# profile would not open. 16 MiB holds any real profile; MAX_TEXT_MEMORY (64 MiB a file) still
# bounds the total.
PngImagePlugin.MAX_TEXT_CHUNK = 16 << 20


# Windows a crop-view model may score per image: the centre, corners and centre, or an even grid.
WINDOW_COUNTS = (1, 4, 5, 9, 16)
# How the windows' logits become one score: their mean (the default: every window votes, so a
# whole generated image scores high and one odd window cannot flip a photo), or the window that
# looks most AI-generated (finds a generated patch in a real photo, at more false positives).
COMBINE_RULES = ("mean", "max")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes model input (`views.py`): the `resize` view resizes the shorter side to
    `resize_size` and centre-crops `input_size`; the `crop` view cuts `crops` windows of
    `input_size` at native resolution and `combine`s their logits. Then normalise."""

    input_size: int = 224
    resize_size: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    view: str = "resize"
    crops: int = 1
    combine: str = "mean"

    def __post_init__(self) -> None:
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, not {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), not {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"std must be positive and finite, mean finite (mean {self.mean}, std {self.std})")
        if self.resize_size < self.input_size:
            raise ValueError("resize_size must be at least input_size")
        if self.interpolation != "bilinear":
            raise ValueError(f"unsupported interpolation: {self.interpolation}")
        if self.view not in ("resize", "crop"):
            raise ValueError(f"view must be resize or crop, not {self.view!r}")
        if self.crops not in WINDOW_COUNTS or (self.view == "resize" and self.crops != 1):
            counts = ", ".join(map(str, WINDOW_COUNTS))
            raise ValueError(f"crops must be one of {counts} with the crop view (1 with resize), not {self.crops}")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine must be mean or max, not {self.combine!r}")
        if self.view == "crop" and self.resize_size != self.input_size:
            raise ValueError("the crop view resizes only images smaller than a window: resize_size must be input_size")

    def resize_shape(self, height: int, width: int) -> tuple[int, int]:
        """Size after resizing the shorter side to `resize_size` (aspect kept, rounded)."""
        # floor(x + 0.5), not round(): the DALI graph in dali.py computes it this way.
        scale = self.resize_size / min(height, width)
        new_h = max(self.resize_size, math.floor(height * scale + 0.5))
        new_w = max(self.resize_size, math.floor(width * scale + 0.5))
        return new_h, new_w

    def crop_offset(self, height: int, width: int) -> tuple[int, int]:
        """Top-left corner of the centre crop in an image of the resized size."""
        return (height - self.input_size) // 2, (width - self.input_size) // 2

    def normalize(self, batch_nhwc: np.ndarray) -> np.ndarray:
        """uint8 NHWC batch -> float32 NCHW batch, normalised with mean/std."""
        scale = np.float32(1 / 255)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        out = (batch_nhwc.astype(np.float32) * scale - mean) / std
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        if "crops" in known:
            known["crops"] = int(known["crops"])
        return cls(**known)


GREY_MODES = ("1", "L", "LA", "La", "I", "F")  # and the I;16 variants: they stay grey until resized


def open_upright(source: str | bytes) -> Image.Image:
    """Open an image with Pillow, first frame only, EXIF orientation applied, as RGB, or as L when
    it is grey: resizing grey and then making it RGB gives the same pixels for a third of the
    memory (a 100 MP grey PNG decodes into 100 MB, not 400)."""
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        # 16-bit and 32-bit integer images: scale to 8 bits instead of clipping.
        peak = 65535 if image.mode.startswith("I;16") or image.getextrema()[1] > 255 else 255
        return image.convert("I").point(lambda v: v * (255 / peak)).convert("L")
    if image.mode.startswith(GREY_MODES):
        return image if image.mode == "L" else image.convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def open_rgb(source: str | bytes) -> Image.Image:
    """Open an image with Pillow, first frame only, EXIF orientation applied, as RGB."""
    image = open_upright(source)
    return image if image.mode == "RGB" else image.convert("RGB")


# EXIF orientation -> the transpose that displays the stored image upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
TURNED = frozenset({5, 6, 7, 8})  # orientations that swap width and height

# Images longer than this on one side relative to the other are first cut to their centre
# MAX_ASPECT:1 part. The model sees only a centre square, so a 1x2,000,000 strip would otherwise
# be resized into a 64-megapixel ribbon only to throw nearly all of it away.
MAX_ASPECT = 8.0


def aspect_box(width: int, height: int) -> tuple[int, int, int, int] | None:
    """The centre box (left, top, right, bottom) of at most MAX_ASPECT:1, or None when the image fits."""
    short, long = min(width, height), max(width, height)
    keep = max(1, math.floor(short * MAX_ASPECT))
    if long <= keep:
        return None
    start = (long - keep) // 2
    return (start, 0, start + keep, height) if width > height else (0, start, width, start + keep)


def _stored_target(stored: tuple[int, int], orientation: int, pre: Preprocess) -> tuple[int, int]:
    """The resize target (width, height) in the stored orientation of a file."""
    stored_w, stored_h = stored
    turned = orientation in TURNED
    width, height = (stored_h, stored_w) if turned else (stored_w, stored_h)
    out_h, out_w = pre.resize_shape(height, width)
    return (out_h, out_w) if turned else (out_w, out_h)


def reduced_min_size(stored: tuple[int, int], orientation: int, pre: Preprocess) -> tuple[int, int]:
    """The smallest (width, height) a DCT-scaled JPEG decode may stop at: twice the resize target,
    as Pillow's thumbnail keeps, so the final resize still low-passes."""
    target_w, target_h = _stored_target(stored, orientation, pre)
    return 2 * target_w, 2 * target_h


def finish_reduced(array: np.ndarray, stored: tuple[int, int], orientation: int, pre: Preprocess) -> np.ndarray:
    """A DCT-scaled decode (stored orientation) resized as `resized_rgb` would resize the full
    decode, then turned upright.

    A DCT-scaled image is ceil(size / k) pixels: its last row and column cover less than k stored
    pixels, so the resize maps exactly the photo's extent, in stored orientation (where that
    partial edge is), and only then turns the small result upright."""
    stored_w, stored_h = stored
    k = round(stored_w / array.shape[1])
    box = (0.0, 0.0, stored_w / k, stored_h / k)
    image = Image.fromarray(array).resize(_stored_target(stored, orientation, pre), Image.BILINEAR, box=box)
    if orientation in UPRIGHT:
        image = image.transpose(UPRIGHT[orientation])
    return np.asarray(image, dtype=np.uint8)


def upright(array: np.ndarray, orientation: int) -> Image.Image:
    """A decoded array in stored orientation -> the upright Pillow image (as open_rgb gives)."""
    image = Image.fromarray(array)
    return image.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else image


def resized_rgb(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """Pillow RGB image -> uint8 HWC array resized by `pre.resize_shape` (no crop), after cutting
    an extreme aspect ratio to its centre MAX_ASPECT:1 part."""
    box = aspect_box(image.width, image.height)
    if box is not None:
        image = image.crop(box)
    height, width = pre.resize_shape(image.height, image.width)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.BILINEAR)
    if image.mode != "RGB":
        image = image.convert("RGB")  # grey from open_upright, made RGB once small
    return np.asarray(image, dtype=np.uint8)


def center_crop(array: np.ndarray, pre: Preprocess) -> np.ndarray:
    top, left = pre.crop_offset(array.shape[0], array.shape[1])
    size = pre.input_size
    return array[top : top + size, left : left + size]
