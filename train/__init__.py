"""Training for aidetect: data layout (data.py), model (model.py), loop (loop.py), ONNX export (export.py)."""
