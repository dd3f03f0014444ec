"""Training for aidetect: data layout (data.py), model (model.py), loop (loop.py), ONNX export (export.py)."""

DEFAULT_ARCH = "coatnet_2_rw_224"  # the seed recipe's model; here, where importing it loads no torch
