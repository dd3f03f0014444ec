"""Unit tests for each scan stage: sources, decode, infer, sink."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from images import encode, hostile_corpus, jpeg, photo

from aidetect.errors import DeviceError, ModelError
from aidetect.io.parts import LocalPartStore
from aidetect.io.resume import load_index
from aidetect.io.sink import ParquetSink
from aidetect.io.sources import WalkStats, walk_images
from aidetect.pipeline.decode import BatchDecoder
from aidetect.pipeline.detector import Detector
from aidetect.pipeline.limits import Limits
from aidetect.pipeline.preprocess import Preprocess
from aidetect.pipeline.read import describe_os_error, load
from aidetect.records import ImageRef, Row

PRE = Preprocess(32, 32)


# ---- sources -------------------------------------------------------------------------


def test_walk_streams_images_only_and_counts_the_rest(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ["x.jpg", "a/y.PNG", "a/b/z.webp", "a/b/skip.txt", "readme.md"]:
        (tmp_path / rel).write_bytes(b"x")
    stats = WalkStats()
    walk = walk_images(str(tmp_path), stats=stats)
    first = next(walk)  # yields before the walk is over
    assert first.path.startswith(str(tmp_path))
    names = sorted(os.path.basename(r.path) for r in [first, *walk])
    assert names == ["x.jpg", "y.PNG", "z.webp"]
    assert stats.ignored == 2 and stats.listed == 3
    assert [os.path.basename(r.path) for r in walk_images(str(tmp_path), recursive=False)] == ["x.jpg"]


def test_walk_survives_symlink_loops_and_odd_names(tmp_path):
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    odd = os.fsencode(str(tmp_path)) + b"/caf\xe9 (1) x.jpg"
    with open(odd, "wb") as f:
        f.write(jpeg())
    refs = list(walk_images(str(tmp_path)))
    assert len(refs) == 1
    assert refs[0].key.endswith("caf\\xe9 (1) x.jpg")
    assert refs[0].key.encode("utf-8")  # valid UTF-8 for Parquet
    assert os.path.exists(refs[0].path)


def test_walk_skips_fifos(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "ok.jpg").write_bytes(jpeg())
    assert [os.path.basename(r.path) for r in walk_images(str(tmp_path))] == ["ok.jpg"]


# ---- decode --------------------------------------------------------------------------


def test_hostile_files_each_get_their_own_reason(tmp_path):
    expected = hostile_corpus(tmp_path)
    refs = {os.path.basename(r.path): r for r in walk_images(str(tmp_path))}
    decoder = BatchDecoder(PRE, batch_size=64)
    decoded = decoder.decode([load(r) for r in refs.values()])
    got = {os.path.basename(d.ref.path): d for d in decoded}
    assert set(got) == set(expected)
    for name, error in expected.items():
        assert got[name].error == error, name
        if error is None:
            assert got[name].pixels.shape == (32, 32, 3), name
    assert (got["rotated.jpg"].width, got["rotated.jpg"].height) == (40, 60)  # EXIF orientation applied


def test_one_bad_file_does_not_cost_its_batch(tmp_path):
    refs = []
    for i in range(7):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg(64, 64, seed=i) if i != 3 else jpeg(64, 64)[:900])
        refs.append(ImageRef(str(path), str(path), path.stat().st_size, 0))
    decoded = BatchDecoder(PRE, batch_size=8).decode([load(r) for r in refs])
    assert [d.error for d in decoded] == [None, None, None, "truncated JPEG", None, None, None]


def test_dali_is_built_only_when_a_batch_needs_it(tmp_path):
    """JPEGs take libjpeg-turbo's strict path on the CPU: such a scan never pays for DALI; a PNG builds it."""
    refs = []
    for name, data in [("0.jpg", jpeg(400, 300)), ("1.jpg", jpeg(32, 32)), ("2.png", encode(photo(32, 32), "PNG"))]:
        path = tmp_path / name
        path.write_bytes(data)
        refs.append(ImageRef(str(path), str(path), path.stat().st_size, 0))
    decoder = BatchDecoder(PRE, batch_size=8)
    large = decoder.decode([load(refs[0])])
    assert large[0].error is None and decoder.dali._pipe is None
    small = decoder.decode([load(refs[1])])
    assert small[0].error is None and decoder.dali._pipe is None
    png = decoder.decode([load(refs[2])])
    assert png[0].error is None and decoder.dali._pipe is not None


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


# ---- infer ---------------------------------------------------------------------------


def test_detector_reads_metadata_and_reports_cpu(model_path):
    det = Detector(model_path, "auto")
    assert det.device == "cpu" and det.runtime == "CPU"
    assert det.info.preprocess.input_size == 32
    assert det.info.class_names == ("real", "ai")
    assert len(det.info.digest) == 12 and det.info.label.startswith("coatnet_nano_rw_224@")
    probs = det.predict(PRE.normalize(np.stack([photo(32, 32, s) for s in range(3)])))
    assert probs.shape == (3,) and np.all((probs >= 0) & (probs <= 1))


def test_detector_refuses_gpu_without_one(model_path):
    with pytest.raises(DeviceError, match="no usable NVIDIA GPU"):
        Detector(model_path, "gpu")


def test_detector_refuses_non_models(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        Detector(str(bad))
    with pytest.raises(ModelError, match="no such model"):
        Detector(str(tmp_path / "missing.onnx"))


# ---- sink ----------------------------------------------------------------------------


def _row(tmp_path, name: str, size: int = 1) -> Row:
    path = str(tmp_path / name)
    return Row(ImageRef(path, path, size, 1_700_000_000_000_000_000), "real", 0.25, None, 4, 3)


def test_sink_commits_parts_atomically_and_indexes_them(tmp_path):
    out = tmp_path / "out.parquet"
    sink = ParquetSink(str(out), "m@1", flush_rows=2)
    assert len(sink.open(overwrite=False)) == 0
    sink.write([_row(tmp_path, "a.jpg"), _row(tmp_path, "b.jpg"), _row(tmp_path, "c.jpg")])
    assert len(pq.read_table(out)) == 3  # committed at the flush threshold
    sink.close()
    assert [n for n in os.listdir(out) if n.startswith(".")] == [".aidetect.lock"]  # no temporary files
    index = load_index(LocalPartStore(str(out)))
    assert index.status(_row(tmp_path, "a.jpg").ref) == "done"
    assert index.status(_row(tmp_path, "a.jpg", size=2).ref) == "changed"
    assert index.status(_row(tmp_path, "new.jpg").ref) == "new"


def test_sink_replaces_superseded_rows(tmp_path):
    out = str(tmp_path / "out.parquet")
    first = ParquetSink(out, "m@1")
    first.open(False)
    first.write([_row(tmp_path, "a.jpg"), _row(tmp_path, "b.jpg")])
    first.close()
    second = ParquetSink(out, "m@1")
    second.open(False)
    second.superseded.add(str(tmp_path / "a.jpg"))
    second.write([_row(tmp_path, "a.jpg", size=9)])
    second.close()
    table = pq.read_table(out).to_pandas()
    assert sorted(table.path) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert int(table.set_index("path").loc[str(tmp_path / "a.jpg"), "bytes"]) == 9


def test_reduced_size_decode_of_large_photos_barely_moves_verdicts(model_path):
    """DCT-scaled decoding of big JPEGs (the CPU fast path) against a full decode."""
    import io
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
    from corpus import photo_like

    from aidetect.pipeline.decode import pillow_decode, wants_reduced_decode
    from aidetect.pipeline.read import probe

    det = Detector(model_path)
    pre = det.info.preprocess
    full, reduced = [], []
    for seed, (w, h) in enumerate([(4000, 3000), (1920, 1080), (1280, 960)]):
        buf = io.BytesIO()
        photo_like(w, h, np.random.default_rng(seed)).save(buf, "JPEG", quality=90)
        item = probe(ImageRef("x", "x", 0, 0), buf.getvalue())
        assert wants_reduced_decode(item, pre)
        a, b = pillow_decode(item, pre, reduced=False), pillow_decode(item, pre, reduced=True)
        assert (a.width, a.height) == (b.width, b.height) == (w, h)
        assert np.abs(a.pixels.astype(int) - b.pixels).mean() < 0.5
        full.append(a.pixels)
        reduced.append(b.pixels)
    p_full, p_reduced = det.predict(pre.normalize(np.stack(full))), det.predict(pre.normalize(np.stack(reduced)))
    assert np.abs(p_full - p_reduced).max() < 0.02
    assert ((p_full >= 0.5) == (p_reduced >= 0.5)).all()
