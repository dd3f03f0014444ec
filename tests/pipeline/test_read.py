"""Read and probe: each file read within its limits, or its reason."""

from __future__ import annotations

from helpers.images import jpeg

from aidetect.pipeline.limits import Limits
from aidetect.pipeline.read import describe_os_error, load
from aidetect.records import ImageRef


def test_file_gone_between_listing_and_reading(tmp_path):
    ref = ImageRef(str(tmp_path / "gone.jpg"), str(tmp_path / "gone.jpg"), 10, 1)
    assert load(ref).error == "file not found"
    assert describe_os_error(PermissionError(13, "Permission denied")) == "permission denied"


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg(100, 100))
    ref = ImageRef(str(path), str(path), 1, 1)
    assert load(ref, Limits(max_pixels=5000)).error == "image too large: 100x100"
    assert load(ref).error is None
