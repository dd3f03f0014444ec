"""The one definition of how an image becomes a model input.

Training (Pillow) and scanning (DALI) both take their output sizes and crop offsets
from `Preprocess`, and the ONNX file stores it, so a model sees the same tensor in
training, in evaluation and in a scan.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Images are probed and refused by our own pixel limit before decoding (see decode.py).
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `resize_size`, centre-crop `input_size`, normalise."""

    input_size: int = 224
    resize_size: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if self.resize_size < self.input_size:
            raise ValueError("resize_size must be at least input_size")
        if self.interpolation != "bilinear":
            raise ValueError(f"unsupported interpolation: {self.interpolation}")

    def resize_shape(self, height: int, width: int) -> tuple[int, int]:
        """Size after resizing the shorter side to `resize_size` (aspect kept, rounded)."""
        # floor(x + 0.5), not round(): the DALI graph in decode.py computes it this way.
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
        return cls(**known)


def open_rgb(source: str | bytes) -> Image.Image:
    """Open an image with Pillow, first frame only, EXIF orientation applied, as RGB."""
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        # 16-bit and 32-bit integer images: scale to 8 bits instead of clipping.
        peak = 65535 if image.mode.startswith("I;16") or image.getextrema()[1] > 255 else 255
        image = image.convert("I").point(lambda v: v * (255 / peak)).convert("L")
    return image.convert("RGB")


# EXIF orientation -> the transpose that displays the stored image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def reduced_jpeg_rgb(data: bytes, pre: Preprocess) -> tuple[np.ndarray, int, int]:
    """A large JPEG decoded at 1/2, 1/4 or 1/8 size (DCT scaling), then resized as `resized_rgb`
    would resize the full decode; returns the array and the photo's displayed width and height.

    The decode keeps at least twice the resize target (as Pillow's thumbnail does), so the final
    resize still low-passes. A DCT-scaled image is ceil(size / k) pixels: its last row and column
    cover less than k stored pixels, so the resize maps exactly the photo's extent, in stored
    orientation (where that partial edge is), and only then turns the small result upright."""
    image = Image.open(io.BytesIO(data))
    stored_w, stored_h = image.size
    orientation = image.getexif().get(0x0112, 1)
    turned = orientation in (5, 6, 7, 8)
    width, height = (stored_h, stored_w) if turned else (stored_w, stored_h)
    out_h, out_w = pre.resize_shape(height, width)
    target = (out_h, out_w) if turned else (out_w, out_h)  # (width, height) in stored orientation
    image.draft("RGB", (2 * target[0], 2 * target[1]))
    k = round(stored_w / image.width)
    box = (0.0, 0.0, stored_w / k, stored_h / k)
    image = image.convert("RGB").resize(target, Image.BILINEAR, box=box)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return np.asarray(image, dtype=np.uint8), width, height


def resized_rgb(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """Pillow RGB image -> uint8 HWC array resized by `pre.resize_shape` (no crop)."""
    height, width = pre.resize_shape(image.height, image.width)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def center_crop(array: np.ndarray, pre: Preprocess) -> np.ndarray:
    top, left = pre.crop_offset(array.shape[0], array.shape[1])
    size = pre.input_size
    return array[top : top + size, left : left + size]


def reference_input(source: str | bytes, pre: Preprocess) -> np.ndarray:
    """The evaluation transform in Pillow: uint8 HWC, input_size square."""
    return center_crop(resized_rgb(open_rgb(source), pre), pre)
