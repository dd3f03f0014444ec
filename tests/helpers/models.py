"""Models for tests: the tiny CoAtNet the `model_path` fixture exports, and small real ONNX files
with aidetect metadata (valid, or broken in one way each, for the model checks)."""

from __future__ import annotations

import json

import numpy as np

TINY_ARCH = "coatnet_nano_rw_224"
TINY_SIZE = 32


def tiny_onnx(
    path: str,
    meta_changes: dict | None = None,
    outputs: int = 2,
    dtype: str = "float32",
    size: int = 32,
    weights: np.ndarray | None = None,
) -> str:
    """A mean-pool + linear classifier: input [N, 3, size, size] -> [N, outputs] logits (all
    outputs equal unless `weights`, 3 x outputs, says otherwise)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    matrix = np.ones((3, outputs)) if weights is None else np.asarray(weights)
    weight = numpy_helper.from_array(matrix.astype(np.dtype(dtype)), "weight")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", elem, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", elem, ["batch", outputs])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "name": "tiny",
        "preprocess": {"input_size": size, "resize_size": size, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "class_names": ["real", "ai"],
        "ai_index": 1,
        "threshold": 0.5,
        "temperature": 1.0,
    }
    for key, value in (meta_changes or {}).items():
        if key.startswith("preprocess."):
            meta["preprocess"][key.split(".", 1)[1]] = value
        else:
            meta[key] = value
    helper.set_model_props(model, {"aidetect": json.dumps(meta)})
    onnx.save(model, path)
    return path


# Logits (real, ai) = (-b, b), b the summed channel means of the normalised input: a bright
# window reads "ai" (margin +6 for white, -6 for black), so tests know what every window scores.
BRIGHTNESS = np.array([[-1.0, 1.0]] * 3)


def brightness_onnx(path: str, view: str = "crop", crops: int = 5, combine: str = "mean") -> str:
    changes = {"preprocess.view": view, "preprocess.crops": crops, "preprocess.combine": combine}
    return tiny_onnx(path, changes, weights=BRIGHTNESS)
