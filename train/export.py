"""Export a checkpoint to one self-describing ONNX file, and prove it computes what PyTorch does."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

import aidetect
from aidetect.errors import ExportError
from aidetect.io.atomic import atomic_path
from aidetect.pipeline.detector import METADATA_KEY
from aidetect.pipeline.domain import Domain
from aidetect.pipeline.preprocess import Preprocess
from train.data import CLASS_NAMES
from train.loop import build_model, read_checkpoint
from train.model import LogitMean

PARITY_TOLERANCE = 1e-4


def load_checkpoint(path: str) -> tuple[torch.nn.Module, dict]:
    state = read_checkpoint(path)
    cfg = state["config"]
    model = build_model(cfg["arch"], cfg["img_size"], cfg.get("stem_stride", 2), len(checkpoint_classes(state)))
    model.load_state_dict(state["model"])
    return model.eval(), state


def module_for(metadata: dict) -> torch.nn.Module:
    """The PyTorch module an exported file describes, with random weights (for speed baselines)."""
    size, classes = metadata["preprocess"]["input_size"], len(metadata["class_names"])
    members = [
        build_model(m["arch"], size, m.get("stem_stride", 2), classes) for m in metadata.get("members", [metadata])
    ]
    return members[0] if "members" not in metadata else LogitMean(members)


def checkpoint_classes(state: dict) -> tuple[str, ...]:
    """A checkpoint's outputs (those written before generator labels existed are binary)."""
    return tuple(state["config"].get("class_names") or CLASS_NAMES)


def _outputs(classes: tuple[str, ...]) -> dict:
    """How the scanner reads the outputs: a binary model's "ai" index, or the generators' names."""
    if tuple(classes) == CLASS_NAMES:
        return {"class_names": list(CLASS_NAMES), "ai_index": CLASS_NAMES.index("ai")}
    return {"class_names": list(classes), "generators": [c for c in classes if c != "real"]}


def base_metadata(arch: str, stem_stride: int, pre: Preprocess, classes: tuple[str, ...] = CLASS_NAMES) -> dict:
    """What the scanner needs to preprocess the input and read the output."""
    return {
        "format": 1,
        "name": arch if stem_stride == 2 else f"{arch}-s1",
        "arch": arch,
        "stem_stride": stem_stride,
        "preprocess": {**pre.to_dict(), **_view_notes(pre)},
        **_outputs(classes),
        "output": "logits",
        "temperature": 1.0,
        "threshold": 0.5,
        "aidetect_version": aidetect.__version__,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _view_notes(pre: Preprocess) -> dict:
    """Words for people reading the metadata; the scanner reads `view`, `crops` and `combine`."""
    if pre.view == "resize":
        return {"resize": "shorter-side", "crop": "center"}
    return {"resize": "none (smaller images: shorter side up to input_size)", "crop": f"{pre.crops} windows"}


def model_metadata(state: dict, test_metrics: dict | None = None, calibration: dict | None = None) -> dict:
    """Base metadata plus where the model came from: recipe, data summary, metrics, calibration."""
    cfg = state["config"]
    pre = Preprocess.from_dict(state["preprocess"])
    meta = base_metadata(cfg["arch"], cfg.get("stem_stride", 2), pre, checkpoint_classes(state))
    meta["training"] = {
        "epochs": state["epoch"],
        "recipe": {
            k: cfg[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "seed", "augment")
        },
        "data": state.get("data", {}),
    }
    processes = state.get("processes", 1)
    meta["training"]["recipe"].update(
        processes=processes, global_batch=cfg["batch_size"] * processes, lr_applied=cfg["lr"] * processes
    )
    if state.get("data", {}).get("domain"):
        meta["training"]["domain"] = state["data"]["domain"]
    if cfg.get("exclude_generators"):  # what `aidetect eval --unseen` may call unseen
        meta["training"]["excluded_generators"] = list(cfg["exclude_generators"])
    meta["metrics"] = {"val": state.get("best") or {}, "test": test_metrics}
    if calibration:
        meta["temperature"] = calibration["temperature"]
        meta["calibration"] = {**calibration, "fitted_on": "validation split, at the end of training"}
    return meta


def ensemble_metadata(states: list[dict]) -> dict:
    """One file's metadata for the mean of several checkpoints; each member's story is kept."""
    metas = [model_metadata(state) for state in states]
    if len({json.dumps(m["preprocess"], sort_keys=True) for m in metas}) > 1:
        raise ValueError("the checkpoints differ in input size, normalisation or view; an ensemble needs one input")
    if len({tuple(m["class_names"]) for m in metas}) > 1:
        lists = "; ".join(", ".join(m["class_names"]) for m in metas)
        raise ValueError(f"the checkpoints' outputs differ ({lists}); an ensemble needs one list of generators")
    augments = [m["training"]["recipe"]["augment"] for m in metas]
    classes = checkpoint_classes(states[0])
    meta = base_metadata("ensemble", 2, Preprocess.from_dict(states[0]["preprocess"]), classes)
    del meta["stem_stride"]
    meta["name"] = "mean(" + ", ".join(m["name"] for m in metas) + ")"
    # Test-time variants follow what every member learned (see aidetect.pipeline.tta).
    meta["training"] = {"recipe": {"augment": augments[0] if all(a == augments[0] for a in augments) else {}}}
    meta["members"] = [{k: m[k] for k in ("name", "arch", "stem_stride", "training", "metrics")} for m in metas]
    domains = [m["training"].get("domain") for m in metas]
    if all(domains):
        meta["training"]["domain"] = Domain.union([Domain.from_dict(d) for d in domains]).to_dict()
    return meta


def export_onnx(model: torch.nn.Module, metadata: dict, output: str, weights: str = "float32") -> None:
    """Write `output` atomically: one file, dynamic batch, fixed height and width."""
    pre = Preprocess.from_dict(metadata["preprocess"])
    size = pre.input_size
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    dummy = torch.randn(2, 3, size, size)
    with atomic_path(output) as tmp:
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
        if weights != "float32":
            storage = WEIGHT_STORAGE[weights]
            metadata["weights"] = storage.note
            entry.value = json.dumps(metadata)
            onnx.save(compact_weight_storage(proto, weights), tmp)
            check_parity(model, tmp, size, tolerance=storage.tolerance)


def compact_weight_storage(proto: onnx.ModelProto, dtype: str, min_elements: int = 1024) -> onnx.ModelProto:
    """Store large float32 weights as float16 or int8, each decoded back to float32 in the graph.

    The graph still computes in float32 (onnxruntime folds the decoding into constants when it
    loads the model), so a batch runs as fast; float16 halves the file, int8 quarters it."""
    encode = WEIGHT_STORAGE[dtype].encode
    graph = proto.graph
    decoders, keep = [], []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_elements:
            stored, decoder = encode(init.name, numpy_helper.to_array(init))
            keep.extend(stored)
            decoders.extend(decoder)
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = decoders + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def _as_float16(name: str, weight: np.ndarray) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    half = numpy_helper.from_array(weight.astype(np.float16), name + "__fp16")
    return [half], [helper.make_node("Cast", [half.name], [name], to=onnx.TensorProto.FLOAT)]


def _as_int8(name: str, weight: np.ndarray) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    """Symmetric int8 with one scale per output channel (axis 0), so a channel of small weights
    keeps its precision beside one of large weights. Decoded by Cast and Mul, which onnxruntime
    folds into constants (a DequantizeLinear would stay in the graph and run on every batch)."""
    rows = weight.reshape(len(weight), -1) if weight.ndim >= 2 else weight.reshape(1, -1)
    peak = np.abs(rows).max(1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    scale = scale.reshape((-1,) + (1,) * (weight.ndim - 1)) if weight.ndim >= 2 else scale.reshape(())
    quantised = numpy_helper.from_array(np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), name + "__int8")
    scales = numpy_helper.from_array(scale, name + "__scale")
    nodes = [
        helper.make_node("Cast", [quantised.name], [name + "__float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [name + "__float", scales.name], [name]),
    ]
    return [quantised, scales], nodes


class WeightStorage(NamedTuple):
    """A compact way to store weights: how to encode them, and what the export then tolerates."""

    encode: Callable[[str, np.ndarray], tuple[list[onnx.TensorProto], list[onnx.NodeProto]]]
    # On probabilities for random-noise inputs, where logits are small and sensitive; accuracy on
    # real images is what the model card compares (within 0.2 points of float32).
    tolerance: float
    note: str


WEIGHT_STORAGE = {
    "float16": WeightStorage(_as_float16, 1e-2, "float16 storage, float32 compute"),
    "int8": WeightStorage(_as_int8, 5e-2, "int8 storage per output channel, float32 compute"),
}


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
    weights: str = "float32",
) -> dict:
    model, state = load_checkpoint(checkpoint)
    metadata = model_metadata(state, test_metrics, calibration)
    export_onnx(model, metadata, output, weights)
    return metadata


def export_ensemble(checkpoints: list[str], output: str, weights: str = "float32") -> dict:
    """One ONNX file that averages the logits of several checkpoints (same input size)."""
    models, states = zip(*(load_checkpoint(path) for path in checkpoints))
    metadata = ensemble_metadata(list(states))
    export_onnx(LogitMean(list(models)).eval(), metadata, output, weights)
    return metadata
