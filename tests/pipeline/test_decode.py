"""Decode: every hostile file its own reason, one bad file never costs its batch, DALI only when needed,
reduced-size decoding barely moves verdicts."""

from __future__ import annotations

import os

import numpy as np
from helpers.images import encode, hostile_corpus, jpeg, photo

from aidetect.io.sources import walk_images
from aidetect.pipeline.decode import BatchDecoder
from aidetect.pipeline.detector import Detector
from aidetect.pipeline.limits import Limits
from aidetect.pipeline.preprocess import Preprocess
from aidetect.pipeline.read import load
from aidetect.records import ImageRef

PRE = Preprocess(32, 32)


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
            assert got[name].pixels.shape == (1, 32, 32, 3), name
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


def test_reduced_size_decode_of_large_photos_barely_moves_verdicts(model_path):
    """DCT-scaled decoding of big JPEGs (the CPU fast path) against a full decode."""
    import io

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
        full.append(a.pixels[0])
        reduced.append(b.pixels[0])
    p_full, p_reduced = det.predict(pre.normalize(np.stack(full))), det.predict(pre.normalize(np.stack(reduced)))
    assert np.abs(p_full - p_reduced).max() < 0.02
    assert ((p_full >= 0.5) == (p_reduced >= 0.5)).all()


def test_work_queued_behind_a_stuck_decode_moves_to_a_fresh_pool(tmp_path):
    """A decode that never returns (here: one waiting on an event, as a native decoder stuck in a
    loop would) times out, and the files queued behind it on the same thread still decode."""
    import threading

    decoder = BatchDecoder(PRE, batch_size=8, threads=1, limits=Limits(decode_timeout=0.2))
    release = threading.Event()
    items = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        path.write_bytes(encode(photo(40, 40, seed=i), "PNG"))
        items.append(load(ImageRef(str(path), str(path), path.stat().st_size, 0)))
    stuck = decoder._submit(items[0], "pillow", release.wait)
    queued = [decoder._cpu_job(item) for item in items[1:]]
    try:
        assert decoder._collect(items[0], stuck).error == "decode timed out after 0.2 s"
        done: list = []
        collector = threading.Thread(
            target=lambda: done.extend(decoder._collect(item, job) for item, job in zip(items[1:], queued))
        )
        collector.start()
        collector.join(30)  # a guard against hanging the suite, not a speed limit: stuck, it never ends
        assert not collector.is_alive(), "the queued files waited for the stuck decode"
        assert len(done) == 2 and all(d.error is None and d.pixels.shape == (1, 32, 32, 3) for d in done)
        assert not release.is_set()  # the stuck one is still stuck: the others did not wait for it
    finally:
        release.set()
