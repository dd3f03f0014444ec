"""Training: layouts, the tiny end-to-end run, exact resume, export, and train/scan parity."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
import typer
from helpers.cli import run_cli
from helpers.images import encode, jpeg, photo
from helpers.models import TINY_ARCH
from rich.console import Console
from typer.testing import CliRunner

from aidetect.errors import DataError, ExportError
from aidetect.pipeline.decode import BatchDecoder, wants_reduced_decode
from aidetect.pipeline.preprocess import Preprocess, open_upright
from aidetect.pipeline.read import probe
from aidetect.pipeline.views import reference_input
from aidetect.records import ImageRef
from train.data import find_splits
from train.export import check_parity
from train.loop import TrainConfig, Trainer

pytestmark = [pytest.mark.train]

METADATA_KEYS = {
    "arch",
    "preprocess",
    "class_names",
    "ai_index",
    "threshold",
    "training",
    "metrics",
    "aidetect_version",
}


def make_labelled(root: Path, per_class: int = 12, size: int = 40) -> Path:
    """Real images are noisy photos, fakes are smooth: a difference a tiny model can learn."""
    for label in ("REAL", "FAKE"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            arr = photo(size, size, seed=i + (1000 if label == "FAKE" else 0))
            if label == "FAKE":
                arr = (arr.astype(np.float32) * 0.3 + 90).astype(np.uint8)
            (root / label / f"{i:03d} ({i % 10}).jpg").write_bytes(encode(arr, "JPEG", quality=95))
    return root


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        output=str(out),
        arch=TINY_ARCH,
        img_size=32,
        epochs=2,
        batch_size=8,
        workers=1,
        val_split=0.25,
        lr=2e-3,
    )
    return TrainConfig(**{**base, **kw})


# ---- data layouts ----------------------------------------------------------------------


def test_layouts_and_counts(tmp_path):
    flat = make_labelled(tmp_path / "flat", per_class=10)
    splits = find_splits(str(flat), val_split=0.2, seed=1)
    assert splits.counts() == {"train": {"real": 8, "ai": 8}, "val": {"real": 2, "ai": 2}}
    assert splits.val == find_splits(str(flat), val_split=0.2, seed=1).val  # seeded
    nested = tmp_path / "nested"
    make_labelled(nested / "train", per_class=6)
    make_labelled(nested / "test", per_class=3)
    make_labelled(nested / "val", per_class=2)
    splits = find_splits(str(nested))
    assert splits.counts() == {s: {"real": n, "ai": n} for s, n in (("train", 6), ("val", 2), ("test", 3))}


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"real": 3}, "only one class; add a fake/ or ai/ folder"),
        ({"real": 3, "fake": 0}, "'ai' class has no images"),
        ({"cats": 3, "dogs": 3}, "no class folders"),
    ],
)
def test_bad_layouts_are_refused_clearly(tmp_path, layout, message):
    for name, count in layout.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i}.jpg").write_bytes(jpeg(seed=i))
    with pytest.raises(DataError, match=message):
        find_splits(str(tmp_path))


@pytest.mark.slow
def test_unreadable_files_beyond_a_small_fraction_are_listed(tmp_path):
    data = make_labelled(tmp_path / "d", per_class=6)
    (data / "REAL" / "broken.jpg").write_bytes(b"garbage")
    proc = run_cli(
        "train",
        str(data),
        "-o",
        str(tmp_path / "m.onnx"),
        "--arch",
        TINY_ARCH,
        "--img-size",
        "32",
        "--epochs",
        "1",
        "--workers",
        "1",
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "cannot be read" in err and "broken.jpg" in err and "Traceback" not in err


def test_train_without_the_extra_says_what_to_install():
    from aidetect.cli.app import register_training

    app = typer.Typer()
    register_training(app, ["torch"])
    result = CliRunner().invoke(app, ["train", "data"])
    assert result.exit_code == 2 and "pip install 'aidetect[train]'" in result.output


# ---- the tiny run end to end -------------------------------------------------------------


@pytest.mark.slow
def test_tiny_training_run_end_to_end(tmp_path):
    data = tmp_path / "data"
    make_labelled(data / "train", per_class=12)
    make_labelled(data / "test", per_class=4)
    out = tmp_path / "model.onnx"
    proc = run_cli(
        "train",
        str(data),
        "-o",
        str(out),
        "--arch",
        TINY_ARCH,
        "--img-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--val-split",
        "0.25",
        "--lr",
        "2e-3",
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "train: 9 real, 9 ai" in err and "val: 3 real, 3 ai" in err and "test: accuracy" in err
    assert "lr_scheduler.step()" not in err
    records = [json.loads(line) for line in (tmp_path / "model.run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records[:2]] == [1, 2]
    assert set(records[2]["calibration"]) >= {"temperature", "ece_before", "ece_after"}
    for key in ("train_loss", "val_accuracy", "val_loss", "val_f1", "val_roc_auc", "lr", "images_per_s"):
        assert key in records[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.onnx", "model.run"]  # no .onnx.data
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["aidetect"])
    assert METADATA_KEYS <= set(meta)
    assert meta["class_names"] == ["real", "ai"] and meta["preprocess"]["input_size"] == 32
    assert meta["training"]["data"]["counts"]["train"] == {"real": 9, "ai": 9}
    assert meta["training"]["domain"] == {"short_side": [40, 40], "formats": ["JPEG"]}  # for in_domain
    assert meta["metrics"]["test"]["count"] == 8 and "confusion" in meta["metrics"]["test"]
    assert meta["temperature"] == records[2]["calibration"]["temperature"] and "calibration" in meta
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]

    scan_out = tmp_path / "verdicts.parquet"
    scan = run_cli("scan", str(data / "test"), "-o", str(scan_out), "--model", str(out))
    assert scan.returncode == 0, scan.stderr
    df = pd.read_parquet(scan_out)
    assert len(df) == 8 and df.error.isna().all()

    exported = tmp_path / "half.onnx"
    again = run_cli("export", str(tmp_path / "model.run" / "best.pt"), "-o", str(exported), "--fp16-weights")
    assert again.returncode == 0, again.stderr
    assert exported.stat().st_size < 0.6 * out.stat().st_size
    from aidetect.pipeline.detector import Detector

    batch = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    full, half = Detector(str(out)), Detector(str(exported))
    assert np.abs(full.margins(batch) - half.margins(batch)).max() < 0.05
    check_ensemble_export(tmp_path, data / "test", batch)


def check_ensemble_export(tmp_path: Path, test_dir: Path, batch: np.ndarray) -> None:
    """Two checkpoints -> one file averaging their logits; int8 storage stays close to float32."""
    from aidetect.pipeline.detector import Detector
    from train.export import module_for
    from train.model import LogitMean

    run = tmp_path / "model.run"
    members = [str(run / "best.pt"), str(run / "last.pt")]
    full, small = tmp_path / "ens.onnx", tmp_path / "ens-int8.onnx"
    assert run_cli("export", *members, "-o", str(full)).returncode == 0
    done = run_cli("export", *members, "-o", str(small), "--int8-weights")
    assert done.returncode == 0, done.stderr
    assert small.stat().st_size < 0.35 * full.stat().st_size
    ensemble, compact = Detector(str(full)), Detector(str(small))
    meta = compact.info.metadata
    assert meta["name"].startswith("mean(") and len(meta["members"]) == 2
    assert meta["weights"].startswith("int8") and meta["preprocess"]["input_size"] == 32
    assert meta["training"]["domain"] == {"short_side": [40, 40], "formats": ["JPEG"]}  # the members' union
    assert isinstance(module_for(meta), LogitMean)  # the benchmark's PyTorch baseline
    assert np.abs(ensemble.margins(batch) - compact.margins(batch)).max() < 0.25

    # What the file computes is the mean of its members' logits.
    assert run_cli("export", members[1], "-o", str(tmp_path / "last.onnx")).returncode == 0
    best, last = Detector(str(tmp_path / "model.onnx")), Detector(str(tmp_path / "last.onnx"))
    mean = (best.margins(batch) + last.margins(batch)) / 2
    assert np.abs(ensemble.margins(batch) - mean).max() < 1e-3

    scan_out = tmp_path / "ens.parquet"
    scan = run_cli("scan", str(test_dir), "-o", str(scan_out), "--model", str(small))
    assert scan.returncode == 0, scan.stderr
    assert len(pd.read_parquet(scan_out)) == 8

    both = run_cli("export", *members, "-o", str(tmp_path / "x.onnx"), "--int8-weights", "--fp16-weights")
    assert both.returncode == 2 and "choose one" in both.stderr.decode()


def tiny_trainers(tmp_path: Path):
    """A small labelled folder and a maker of trainers on its split (quiet console)."""
    data = make_labelled(tmp_path / "d", per_class=8)
    splits = find_splits(str(data), 0.25, 0)
    console = Console(quiet=True)
    return data, lambda name, **kw: Trainer(tiny_config(data, tmp_path / name, **kw), splits, console)


def trained(trainer: Trainer, until: int | None = None) -> Trainer:
    trainer.make_datasets()
    trainer.fit(until=until)
    return trainer


@pytest.mark.slow
def test_resume_continues_exactly_and_scheduler_order_is_right(tmp_path):
    _, make = tiny_trainers(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        straight = trained(make("a.onnx"))
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]

    trained(make("b.onnx"), until=1)
    resumed = make("b.onnx")
    resumed.load(str(tmp_path / "b.run" / "last.pt"))
    assert resumed.epoch == 1
    resumed.make_datasets()
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b), name


@pytest.mark.slow
def test_init_warm_starts_weights_with_a_fresh_schedule(tmp_path):
    data, make = tiny_trainers(tmp_path)
    trained(make("a.onnx"))
    best = str(tmp_path / "a.run" / "best.pt")
    saved = torch.load(best, weights_only=False)["model"]

    warm = make("b.onnx", lr=1e-3)
    warm.init_weights(best)
    assert warm.epoch == 0 and warm.optimizer.param_groups[0]["lr"] == 1e-3
    for name, value in warm.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    trained(warm, until=1)
    assert torch.load(str(tmp_path / "b.run" / "last.pt"), weights_only=False)["config"]["init"] == best

    other = make("c.onnx", img_size=64)
    with pytest.raises(ValueError, match="not a checkpoint of this model"):
        other.init_weights(best)
    proc = run_cli("train", str(data), "--resume", best, "--init", best)
    assert proc.returncode == 2 and "pick one" in proc.stderr.decode()
    not_a_checkpoint = tmp_path / "model.onnx"
    not_a_checkpoint.write_bytes(b"\x08\x07onnx")
    for path, message in (
        (tmp_path / "nope.pt", "no such checkpoint"),
        (not_a_checkpoint, "not a training checkpoint"),
    ):
        for flag in ("--init", "--resume"):
            proc = run_cli("train", str(data), flag, str(path), "--arch", TINY_ARCH, "--img-size", "32")
            err = proc.stderr.decode()
            assert proc.returncode == 2 and message in err and "Traceback" not in err, (flag, err)


def test_export_parity_check_catches_a_mismatch(tmp_path, model_path):
    from train.loop import build_model

    other = build_model(TINY_ARCH, 32, 2).eval()
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_parity(other, model_path, 32)


def test_an_ensemble_of_different_input_sizes_is_refused():
    from train.export import ensemble_metadata

    def state(size: int, rescale: float) -> dict:
        recipe = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 0, "seed": 0}
        config = {"arch": TINY_ARCH, **recipe, "augment": {"rescale": rescale}}
        return {"config": config, "preprocess": Preprocess(size, size).to_dict(), "epoch": 1}

    mixed = ensemble_metadata([state(32, 0.3), state(32, 0.0)])
    assert mixed["training"]["recipe"]["augment"] == {}  # no rescale variant unless every member learned it
    assert ensemble_metadata([state(32, 0.3)] * 2)["training"]["recipe"]["augment"] == {"rescale": 0.3}
    with pytest.raises(ValueError, match="differ in input size"):
        ensemble_metadata([state(32, 0.0), state(64, 0.0)])


# ---- train/scan preprocessing parity -------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_training_and_scan_preprocessing_agree(size):
    pre = Preprocess(size, size)
    cases = {}
    for h, w in [(20, 30), (48, 64), (300, 400), (size, size), (401, 299)]:
        cases[f"jpeg {h}x{w}"] = jpeg(h, w, seed=h)
        cases[f"png {h}x{w}"] = encode(photo(h, w, seed=w), "PNG")
        cases[f"rotated jpeg {h}x{w}"] = jpeg(h, w, seed=h, orientation=6)
    items = [probe(ImageRef(k, k, 0, 0), v) for k, v in cases.items()]
    reduced = 0
    for item, decoded in zip(items, BatchDecoder(pre, 8).decode(items)):
        train_tensor = pre.normalize(reference_input(item.data, pre))
        scan_tensor = pre.normalize(decoded.pixels)
        diff = np.abs(train_tensor - scan_tensor) * 0.226 * 255  # back to 8-bit levels
        # Large JPEGs decode at reduced size on the CPU (DCT scaling): a little further from the
        # full decode, but still well under one 8-bit level on average.
        is_reduced = wants_reduced_decode(item, pre)
        reduced += is_reduced
        mean_limit = 1.0 if is_reduced else 0.5
        assert diff.mean() < mean_limit and diff.max() < 6, (item.ref.key, diff.mean(), diff.max())
    assert reduced, "the cases should include photos large enough for the reduced-size decode"


def test_crop_view_windows_are_native_in_training_and_equal_the_scan_in_evaluation(tmp_path):
    from train.data import Augment, ImageDataset, Item

    pre = Preprocess(32, 32, view="crop", crops=4)
    cases = {"wide.jpg": jpeg(40, 57, seed=1), "turned.jpg": jpeg(45, 70, seed=2, orientation=6)}
    cases["small.png"] = encode(photo(20, 28, seed=3), "PNG")
    items = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        items.append(Item(str(tmp_path / name), 1))
    evaluation = ImageDataset(items, pre, train=False)
    decoded = BatchDecoder(pre, 8).decode(
        [probe(ImageRef(i.path, i.path, 0, 0), cases[Path(i.path).name]) for i in items]
    )
    for i, d in enumerate(decoded):
        windows, _ = evaluation[i]
        assert np.array_equal(windows.numpy().transpose(0, 2, 3, 1), d.pixels), items[i][0]
    training = ImageDataset(items, pre, train=True, aug=Augment(flip=False))
    upright = np.asarray(open_upright(cases["turned.jpg"]))  # 70 x 45, as displayed
    window = training[1][0][0].numpy().transpose(1, 2, 0)
    found = [
        (top, left)
        for top in range(upright.shape[0] - 31)
        for left in range(upright.shape[1] - 31)
        if np.array_equal(upright[top : top + 32, left : left + 32], window)
    ]
    assert found, "a training window is a native-resolution cut of the upright image"


@pytest.mark.slow
def test_crop_view_trains_exports_and_scans(tmp_path):
    data = make_labelled(tmp_path / "data", per_class=8, size=48)
    out = tmp_path / "crop.onnx"
    args = ["--arch", TINY_ARCH, "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "1"]
    proc = run_cli("train", str(data), "-o", str(out), *args, "--val-split", "0.25", "--view", "crop", "--crops", "4")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["aidetect"])
    assert {k: meta["preprocess"][k] for k in ("view", "crops", "combine")} == {
        "view": "crop",
        "crops": 4,
        "combine": "mean",
    }
    scan = run_cli("scan", str(data), "-o", "-", "--model", str(out))
    rows = pd.read_parquet(io.BytesIO(scan.stdout))
    assert len(rows) == 16 and set(rows.crops) == {4} and rows.prob_ai_max.notna().all()
    assert (rows.prob_ai_max >= rows.prob_ai - 1e-6).all()
    bad = run_cli("train", str(data), "-o", str(tmp_path / "x.onnx"), *args, "--view", "crop", "--crops", "3")
    assert bad.returncode == 2 and "crops must be one of" in bad.stderr.decode()
