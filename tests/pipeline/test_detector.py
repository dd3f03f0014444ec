"""The detector: metadata read, the CPU reported, non-models and missing GPUs refused."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.images import photo

from aidetect.errors import DeviceError, ModelError
from aidetect.pipeline.detector import Detector
from aidetect.pipeline.preprocess import Preprocess

PRE = Preprocess(32, 32)


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
