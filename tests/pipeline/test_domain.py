"""The in-domain rule (pipeline/domain.py): recorded at training, read from the metadata, applied
per row, counted in the summary."""

from __future__ import annotations

import pandas as pd
from helpers.cli import run_cli
from helpers.images import encode, jpeg, photo
from helpers.models import tiny_onnx

from aidetect.pipeline.domain import Domain, domain_of, survey

CIFAKE = Domain((32, 32), ("JPEG",))


def test_the_rule_allows_a_factor_of_two_and_the_learned_format_families():
    assert CIFAKE.outside(64, 48, "JPEG") is None  # shorter side 48 <= 2 x 32
    assert CIFAKE.outside(4000, 3000, "JPEG") == "larger"
    assert CIFAKE.outside(65, 100, "JPEG") == "larger"
    assert CIFAKE.outside(15, 15, "JPEG") == "smaller" and CIFAKE.outside(16, 16, "JPEG") is None
    assert CIFAKE.outside(32, 32, "PNG") == "format" and CIFAKE.outside(32, 32, "MPO") is None
    assert CIFAKE.outside(None, None, "JPEG") is None


def test_ensembles_join_their_members_and_unrecorded_models_are_unknown():
    meta = {
        "members": [
            {"training": {"data": {"domain": {"short_side": [32, 32], "formats": ["JPEG"]}}}},
            {"training": {"data": {"domain": {"short_side": [224, 512], "formats": ["lossless"]}}}},
        ]
    }
    assert domain_of(meta) == Domain((32, 512), ("JPEG", "lossless"))
    assert domain_of({"training": {}}) is None
    assert domain_of({"training": {"domain": CIFAKE.to_dict()}}) == CIFAKE


def test_survey_reads_sizes_and_formats_from_headers(tmp_path):
    files = {"a.jpg": jpeg(40, 60), "b.png": encode(photo(100, 300), "PNG"), "bad.jpg": b"not an image"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert survey([str(tmp_path / n) for n in files]) == Domain((40, 100), ("JPEG", "lossless"))


def test_rows_and_summary_say_which_images_lie_outside(tmp_path):
    model = tiny_onnx(str(tmp_path / "m.onnx"), {"training": {"domain": CIFAKE.to_dict()}})
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "small.jpg").write_bytes(jpeg(32, 32))
    (folder / "big.jpg").write_bytes(jpeg(400, 600))
    (folder / "big2.jpg").write_bytes(jpeg(300, 300, seed=2))
    (folder / "png.png").write_bytes(encode(photo(32, 32), "PNG"))
    (folder / "broken.jpg").write_bytes(b"nope")
    proc = run_cli("scan", str(folder), "-o", str(tmp_path / "out"), "--model", model)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(tmp_path / "out")
    inside = dict(zip(df.path.str.rsplit("/", n=1).str[1], df.in_domain))
    assert inside["small.jpg"] == True and inside["big.jpg"] == False and inside["png.png"] == False  # noqa: E712
    assert pd.isna(inside["broken.jpg"])
    line = next(x for x in proc.stderr.decode().splitlines() if "outside" in x)
    assert line.strip().startswith("3 of 4 images lie outside what this model learned (2 far larger than anything")
    assert "1 in a format family it never learned" in line and "(it learned 32 px on the shorter side, JPEG)" in line

    unknown = run_cli("scan", str(folder), "-o", str(tmp_path / "out2"), "--model", tiny_onnx(str(tmp_path / "u.onnx")))
    assert pd.read_parquet(tmp_path / "out2").in_domain.isna().all() and "outside" not in unknown.stderr.decode()
