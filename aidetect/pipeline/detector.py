"""Inference: one onnxruntime session, the device it really runs on, and the model's metadata."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aidetect.errors import DeviceError, ModelError
from aidetect.pipeline.preprocess import Preprocess

METADATA_KEY = "aidetect"
DEFAULT_MODEL = Path(__file__).parent.parent / "models" / "default.onnx"


@dataclass(frozen=True)
class ModelInfo:
    """What the scanner needs to know about a detector, read from its ONNX metadata."""

    path: str
    name: str
    digest: str
    preprocess: Preprocess
    class_names: tuple[str, ...]
    ai_index: int | None  # a binary model's "ai" output; None when the outputs name generators
    threshold: float
    temperature: float
    metadata: dict
    generators: tuple[str, ...] = ()  # the AI outputs' generator names, in output order

    @property
    def real_index(self) -> int:
        """The "real" output; P(ai) is everything else (see `ai_margin`)."""
        return self.class_names.index("real") if self.generators else 1 - self.ai_index

    @property
    def label(self) -> str:
        """The `model` column: name and a short content hash, so results say which file made them."""
        return f"{self.name}@{self.digest}"


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def parse_metadata(path: str, custom: dict[str, str]) -> ModelInfo:
    if METADATA_KEY not in custom:
        raise ModelError(
            f"{path}: not an aidetect model (no '{METADATA_KEY}' metadata); export one with `aidetect export`"
        )
    try:
        meta = json.loads(custom[METADATA_KEY])
        generators = tuple(str(g) for g in meta.get("generators") or ())
        info = ModelInfo(
            path=path,
            name=meta["name"],
            digest=file_digest(path),
            preprocess=Preprocess.from_dict(meta["preprocess"]),
            class_names=tuple(meta["class_names"]),
            ai_index=None if generators else int(meta["ai_index"]),
            threshold=float(meta.get("threshold", 0.5)),
            temperature=float(meta.get("temperature", 1.0)),
            metadata=meta,
            generators=generators,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable aidetect metadata ({exc})") from None
    problem = metadata_problem(info)
    if problem:
        raise ModelError(f"{path}: incompatible aidetect metadata: {problem}")
    return info


def read_info(path: str) -> ModelInfo:
    """A model's metadata without starting an inference session (for checks on a Ray driver)."""
    import onnx

    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises its own decode errors for foreign files
        raise ModelError(f"{path}: cannot load the model ({str(exc).splitlines()[0][:200]})") from None
    return parse_metadata(path, {prop.key: prop.value for prop in proto.metadata_props})


def metadata_problem(info: ModelInfo) -> str | None:
    """What makes the metadata unusable (the preprocessing checks itself when it is built)."""
    if info.generators:
        if "real" not in info.class_names or [c for c in info.class_names if c != "real"] != list(info.generators):
            return f"class_names {list(info.class_names)} must be 'real' and the generators {list(info.generators)}"
    elif len(info.class_names) != 2:
        return f"needs 2 classes (real and ai), or a list of generators; has {len(info.class_names)} classes"
    elif info.ai_index not in range(len(info.class_names)):
        return f"ai_index {info.ai_index} is not one of the {len(info.class_names)} classes"
    if not 0.0 <= info.threshold <= 1.0:
        return f"threshold {info.threshold:g} is outside 0-1"
    if not (math.isfinite(info.temperature) and info.temperature > 0):
        return f"temperature {info.temperature:g} must be positive"
    return None


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64, written with tanh so large margins never overflow."""
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(x, np.float64)))


def ai_margin(logits: np.ndarray, real_index: int) -> np.ndarray:
    """How much more the logits say "ai" than "real": log P(any AI class) - log P(real)."""
    others = np.delete(logits, real_index, axis=-1)
    peak = others.max(axis=-1, keepdims=True)
    log_ai = (peak + np.log(np.exp(others - peak).sum(axis=-1, keepdims=True)))[..., 0]
    return log_ai - logits[..., real_index]


def gpu_present() -> bool:
    """An NVIDIA driver is loaded; checked before asking onnxruntime, which would only log and fall back."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def _providers(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "gpu" and (not gpu_present() or "CUDAExecutionProvider" not in available):
        raise DeviceError("--device gpu: no usable NVIDIA GPU on this machine (use --device auto or cpu)")
    if not gpu_present():
        return ["CPUExecutionProvider"]
    chosen: list = []
    if "TensorrtExecutionProvider" in available and os.environ.get("AIDETECT_TENSORRT", "1") != "0":
        cache = Path(os.environ.get("AIDETECT_CACHE", Path.home() / ".cache" / "aidetect")) / "trt"
        chosen.append(
            (
                "TensorrtExecutionProvider",
                {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache), "trt_fp16_enable": True},
            )
        )
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    return [*chosen, "CPUExecutionProvider"]


class Detector:
    """Runs a batch of preprocessed images through the model and returns P(ai) per image."""

    def __init__(self, model_path: str, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # its provider fallback warnings are ours to report
        if os.path.isdir(model_path):
            raise ModelError(f"{model_path} is a folder; --model takes an .onnx file")
        if not os.path.isfile(model_path):
            raise ModelError(f"{model_path}: no such model file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Idle inference threads must sleep, not spin: decoding shares these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model_path, options, providers=_providers(device))
        except DeviceError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"{model_path}: cannot load the model ({str(exc).splitlines()[0][:200]})") from None
        self.info = parse_metadata(model_path, self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name
        self._check_shape()
        used = self.session.get_providers()
        if device == "gpu" and used[0] == "CPUExecutionProvider":
            raise DeviceError(
                "--device gpu: onnxruntime could not start CUDA here (check the CUDA 13 and cuDNN 9 libraries)"
            )
        self.providers = used
        self.device = "cpu" if used[0] == "CPUExecutionProvider" else "gpu"

    def _check_shape(self) -> None:
        """Input and output must be what the scan feeds and reads: checked here, with one real
        inference, so an incompatible file fails before any work rather than mid-scan."""
        model_input = self.session.get_inputs()[0]
        shape, size = model_input.shape, self.info.preprocess.input_size
        if len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (size, size):
            raise ModelError(f"{self.info.path}: input shape {shape} does not match its metadata ({size}x{size} RGB)")
        if model_input.type != "tensor(float)":
            raise ModelError(f"{self.info.path}: input type {model_input.type}; aidetect feeds float32 (tensor(float))")
        try:
            out = self.session.run(None, {self.input_name: np.zeros((1, 3, size, size), np.float32)})[0]
        except Exception as exc:
            raise ModelError(
                f"{self.info.path}: the model fails on a test input ({str(exc).splitlines()[0][:200]})"
            ) from None
        classes = len(self.info.class_names)
        if out.shape != (1, classes):
            raise ModelError(f"{self.info.path}: output shape {list(out.shape)}; its metadata names {classes} classes")

    @property
    def runtime(self) -> str:
        return {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA"}.get(self.providers[0], "CPU")

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW batch -> the model's logits, in float64."""
        return self.session.run(None, {self.input_name: batch})[0].astype(np.float64)

    def margins(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW batch -> log P(ai) - log P(real) (before temperature)."""
        return ai_margin(self.logits(batch), self.info.real_index)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW batch -> calibrated probability of the "ai" class for each image."""
        scaled = self.margins(batch) / self.info.temperature
        return sigmoid(scaled).astype(np.float32)
