"""Export a checkpoint to one self-describing ONNX file, and prove it computes what PyTorch does."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

import aidetect
from aidetect.infer import METADATA_KEY
from aidetect.preprocess import Preprocess
from train.data import CLASS_NAMES
from train.loop import build_model, read_checkpoint

PARITY_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2  # float16 weights round each weight to 3 significant digits


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


def load_checkpoint(path: str) -> tuple[torch.nn.Module, dict]:
    state = read_checkpoint(path)
    cfg = state["config"]
    model = build_model(cfg["arch"], cfg["img_size"], cfg.get("stem_stride", 2))
    model.load_state_dict(state["model"])
    return model.eval(), state


def base_metadata(arch: str, stem_stride: int, pre: Preprocess) -> dict:
    """What the scanner needs to preprocess the input and read the output."""
    return {
        "format": 1,
        "name": arch if stem_stride == 2 else f"{arch}-s1",
        "arch": arch,
        "stem_stride": stem_stride,
        "preprocess": {**pre.to_dict(), "resize": "shorter-side", "crop": "center"},
        "class_names": list(CLASS_NAMES),
        "ai_index": CLASS_NAMES.index("ai"),
        "output": "logits",
        "temperature": 1.0,
        "threshold": 0.5,
        "aidetect_version": aidetect.__version__,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def model_metadata(state: dict, test_metrics: dict | None = None, calibration: dict | None = None) -> dict:
    """Base metadata plus where the model came from: recipe, data summary, metrics, calibration."""
    cfg = state["config"]
    meta = base_metadata(cfg["arch"], cfg.get("stem_stride", 2), Preprocess.from_dict(state["preprocess"]))
    meta["training"] = {
        "epochs": state["epoch"],
        "recipe": {
            k: cfg[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "seed", "augment")
        },
        "data": state.get("data", {}),
    }
    meta["metrics"] = {"val": state.get("best") or {}, "test": test_metrics}
    if calibration:
        meta["temperature"] = calibration["temperature"]
        meta["calibration"] = {**calibration, "fitted_on": "validation split, at the end of training"}
    return meta


def export_onnx(model: torch.nn.Module, metadata: dict, output: str, fp16_weights: bool = False) -> None:
    """Write `output` atomically: one file, dynamic batch, fixed height and width."""
    pre = Preprocess.from_dict(metadata["preprocess"])
    size = pre.input_size
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    dummy = torch.randn(2, 3, size, size)
    out_dir = Path(output).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=out_dir)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                tmp,
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        proto = onnx.load(tmp)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        proto.doc_string = f"aidetect detector {metadata['name']}: class order {metadata['class_names']}"
        onnx.save(proto, tmp)
        check_parity(model, tmp, size)
        if fp16_weights:
            metadata["weights"] = "float16 storage, float32 compute"
            entry.value = json.dumps(metadata)
            onnx.save(fp16_weight_storage(proto), tmp)
            check_parity(model, tmp, size, tolerance=FP16_TOLERANCE)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model is meant to be shared
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fp16_weight_storage(proto: onnx.ModelProto, min_elements: int = 1024) -> onnx.ModelProto:
    """Store large float32 weights as float16, each followed by a Cast back to float32.

    The graph still computes in float32 (onnxruntime folds the casts when it loads the model),
    so speed is unchanged and the file is about half the size."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def check_parity(
    model: torch.nn.Module, onnx_path: str, size: int, batch: int = 4, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Fail when onnxruntime's probabilities differ from PyTorch's by more than `tolerance`."""
    import onnxruntime as ort

    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.softmax(model(x), 1).numpy()
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x.numpy()})[0]
    got = np.exp(logits - logits.max(1, keepdims=True))
    got /= got.sum(1, keepdims=True)
    diff = float(np.abs(got - expected).max())
    if diff > tolerance:
        raise ExportError(f"ONNX export differs from PyTorch by {diff:.2e} (limit {tolerance})")
    return diff


def export_checkpoint(
    checkpoint: str,
    output: str,
    test_metrics: dict | None = None,
    calibration: dict | None = None,
    fp16_weights: bool = False,
) -> dict:
    model, state = load_checkpoint(checkpoint)
    metadata = model_metadata(state, test_metrics, calibration)
    export_onnx(model, metadata, output, fp16_weights)
    return metadata
