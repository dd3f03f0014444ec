"""Views: window geometry, and the same windows from Pillow, the CPU JPEG path and DALI."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers.images import encode, jpeg, photo
from PIL import Image

from aidetect.errors import UsageError
from aidetect.pipeline.dali import DaliDecoder
from aidetect.pipeline.decode import BatchDecoder
from aidetect.pipeline.preprocess import UPRIGHT, WINDOW_COUNTS, Preprocess
from aidetect.pipeline.read import probe
from aidetect.pipeline.views import (
    reference_input,
    upright_size,
    upright_view,
    window_offsets,
    with_crops,
)
from aidetect.records import ImageRef

CROP9 = Preprocess(32, 32, view="crop", crops=9)


def test_window_offsets_spread_over_the_image_and_stay_inside():
    assert window_offsets(100, 200, 32, 1) == [(34, 84)]
    assert window_offsets(100, 200, 32, 5) == [(0, 0), (0, 168), (68, 0), (68, 168), (34, 84)]
    assert window_offsets(100, 200, 32, 9)[4] == (34, 84)  # the grid's middle is the centre window
    for count in WINDOW_COUNTS:
        spots = window_offsets(77, 131, 32, count)
        assert len(spots) == count and len(set(spots)) == count
        assert all(0 <= top <= 77 - 32 and 0 <= left <= 131 - 32 for top, left in spots)


def test_coinciding_windows_are_scored_once():
    assert window_offsets(32, 32, 32, 9) == [(0, 0)]
    assert window_offsets(32, 40, 32, 9) == [(0, 0), (0, 4), (0, 8)]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_view_turns_as_pillow_does(orientation):
    array = photo(5, 7, seed=orientation)
    image = Image.fromarray(array)
    expected = image.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else image
    assert np.array_equal(upright_view(array, orientation), np.asarray(expected))
    assert upright_size(7, 5, orientation) == expected.size


def _cases() -> dict[str, bytes]:
    """Odd sizes, EXIF turns, images smaller than a window or of extreme aspect, JPEG and PNG, grey."""
    cases = {}
    for h, w in [(45, 67), (301, 199), (32, 32), (20, 30), (20, 100), (12, 400)]:
        cases[f"jpeg {h}x{w}"] = jpeg(h, w, seed=h + w)
        cases[f"png {h}x{w}"] = encode(photo(h, w, seed=h * w), "PNG")
    for orientation in (3, 6, 8):
        cases[f"jpeg turned {orientation}"] = jpeg(70, 110, seed=orientation, orientation=orientation)
    cases["grey png"] = encode(photo(50, 90, seed=5)[..., 0], "PNG")
    cases["grey jpeg"] = encode(photo(50, 90, seed=6)[..., 0], "JPEG", quality=90)
    return cases


@pytest.mark.parametrize("crops", [1, 5, 9])
def test_scan_windows_equal_the_training_windows(crops):
    """The CPU paths (strict libjpeg-turbo for JPEGs, DALI for small PNGs, Pillow for the rest)
    give exactly the windows training's evaluation transform gives."""
    pre = Preprocess(32, 32, view="crop", crops=crops)
    cases = _cases()
    items = [probe(ImageRef(k, k, 0, 0), v) for k, v in cases.items()]
    for item, decoded in zip(items, BatchDecoder(pre, 8).decode(items)):
        assert decoded.error is None, item.ref.key
        expected = reference_input(item.data, pre)
        assert decoded.pixels.shape == expected.shape, item.ref.key
        assert np.array_equal(decoded.pixels, expected), item.ref.key


def test_dali_windows_equal_the_training_windows():
    """The DALI graph (the GPU path; run here on the CPU) slices the same windows, EXIF turns included."""
    cases = {k: v for k, v in _cases().items() if not k.startswith(("jpeg 20", "png 20", "jpeg 12", "png 12"))}
    items = [probe(ImageRef(k, k, 0, 0), v) for k, v in cases.items()]
    shapes = [upright_size(i.width, i.height, i.orientation)[::-1] for i in items]
    results = DaliDecoder(CROP9, len(items)).run([i.data for i in items], shapes)
    for item, shape, (windows, height, width) in zip(items, shapes, results):
        assert (height, width) == shape, item.ref.key
        assert np.array_equal(windows, reference_input(item.data, CROP9)), item.ref.key


def test_a_header_that_lies_about_the_size_still_gets_the_right_windows():
    real = photo(80, 120, seed=3)
    data = encode(real, "PNG")
    item = probe(ImageRef("x", "x", 0, 0), data)
    item.width, item.height = 200, 150  # as if the probe had read a lying header
    (decoded,) = BatchDecoder(CROP9, 4).decode([item])
    assert decoded.error is None and np.array_equal(decoded.pixels, reference_input(data, CROP9))


def test_small_images_are_brought_up_to_the_window():
    windows = reference_input(encode(photo(10, 20, seed=1), "PNG"), CROP9)
    assert windows.shape == (3, 32, 32, 3)  # 32x64 after resizing: three distinct windows of nine


def test_the_resize_view_is_one_centre_window():
    pre = Preprocess(32, 32)
    data = encode(photo(60, 90, seed=2), "PNG")
    image = Image.open(io.BytesIO(data)).resize((48, 32), Image.BILINEAR)
    assert np.array_equal(reference_input(data, pre), np.asarray(image)[None, :, 8:40])


def test_bad_view_settings_are_refused():
    with pytest.raises(ValueError, match="view must be"):
        Preprocess(32, 32, view="tiles")
    with pytest.raises(ValueError, match="crops must be one of"):
        Preprocess(32, 32, view="crop", crops=3)
    with pytest.raises(ValueError, match="crops must be one of"):
        Preprocess(32, 32, crops=5)  # the resize view has one window
    with pytest.raises(ValueError, match="resize_size must be input_size"):
        Preprocess(32, 40, view="crop")
    assert with_crops(CROP9, None) is CROP9 and with_crops(CROP9, 4).crops == 4
    with pytest.raises(UsageError, match="resize view"):
        with_crops(Preprocess(32, 32), 9)
    with pytest.raises(UsageError, match="choose one of"):
        with_crops(CROP9, 7)
