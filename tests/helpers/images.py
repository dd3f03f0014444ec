"""Images the tests make themselves: photo-like textures and every hostile file a scan may meet."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured RGB array (gradients + noise at several scales), not flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 160
    coarse = rng.random((height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width] * 60
    fine = rng.random((height, width, 3)) * 40
    return np.clip(base + coarse + fine, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg(height: int = 48, width: int = 64, seed: int = 0, orientation: int | None = None) -> bytes:
    exif = None
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
    kwargs = {"exif": exif} if exif is not None else {}
    return encode(photo(height, width, seed), "JPEG", quality=92, **kwargs)


def png_with_size(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR claims another size (a decompression bomb's header)."""
    data = encode(photo(8, 8), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def hostile_corpus(folder: Path) -> dict[str, str | None]:
    """Write every case the scan must survive; returns file name -> expected error (None: a verdict)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg(seed=1)
    files: dict[str, tuple[bytes, str | None]] = {
        "good (1).jpg": (good, None),
        "good two.JPEG": (jpeg(seed=2), None),
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (jpeg(96, 128, seed=3)[:1500], "truncated JPEG"),
        "text.png": (b"this is not an image\n", "not an image"),
        "bomb.png": (png_with_size(30000, 30000), "image too large: 30000x30000"),
        "cmyk.jpg": (encode_image(Image.fromarray(photo(40, 40)).convert("CMYK"), "JPEG"), None),
        "gray.png": (encode(photo(40, 40)[..., 0], "PNG"), None),
        "rgba.png": (encode(np.dstack([photo(40, 40), np.full((40, 40), 128, np.uint8)]), "PNG"), None),
        "sixteen.png": (_png16(), None),
        "animated.gif": (_gif(), None),
        "rotated.jpg": (jpeg(40, 60, seed=4, orientation=6), None),
        "tiny.bmp": (encode(photo(20, 30), "BMP"), None),
        "photo.webp": (encode(photo(50, 70), "WEBP"), None),
        "scan.tiff": (encode(photo(50, 70), "TIFF"), None),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return {name: err for name, (_, err) in files.items()}


def _png16() -> bytes:
    gray = photo(40, 40)[..., 0].astype("<u2") * 257
    image = Image.new("I;16", (40, 40))
    image.frombytes(gray.tobytes())
    return encode_image(image, "PNG")


def _gif() -> bytes:
    frames = [Image.fromarray(photo(40, 40, seed=s)).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()
