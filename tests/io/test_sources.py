"""Sources: the folder walk streams images, survives loops and odd names, skips FIFOs."""

from __future__ import annotations

import os

from helpers.images import jpeg

from aidetect.io.sources import WalkStats, walk_images


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
