"""Labelled folders (real/ and fake/) for eval and calibrate tests."""

from __future__ import annotations

from helpers.images import jpeg


def make_eval_folder(root, per_class=6, one_class=False):
    for name, seed0 in (("real", 0), ("fake", 100)):
        if one_class and name == "fake":
            continue
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg(seed=seed0 + i))
    (root / "real" / "broken.jpg").write_bytes(b"nope")
    return root
